#!/usr/bin/env python3
"""asa-bench against the real asa-serve (CPU engine) on a small load: the run
completes, every request succeeds, and the result JSON has every field.

usage: test_bench_serve.py ASA_BENCH ASA_SERVE MODEL_DIR
Exits 77 (skipped) when the model directory is missing."""
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

FIELDS = [
    "duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
    "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
    "max_output_tokens_per_s", "max_concurrent_requests",
    "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p50_ttft_ms", "p99_ttft_ms",
    "mean_tpot_ms", "median_tpot_ms", "std_tpot_ms", "p50_tpot_ms", "p99_tpot_ms",
    "mean_itl_ms", "median_itl_ms", "std_itl_ms", "p50_itl_ms", "p99_itl_ms",
    "mean_e2el_ms", "median_e2el_ms", "std_e2el_ms", "p50_e2el_ms", "p99_e2el_ms",
    "server_num_preemptions", "server_request_queue_time_sum_s",
    "server_request_queue_count", "server_mean_request_queue_time_ms",
]
ARRAYS = ["ttfts", "tpots", "itls", "latencies", "start_times", "queue_times",
          "input_lens", "output_lens", "errors"]


def die_with_parent():
    """prctl(PR_SET_PDEATHSIG, SIGKILL): the server never outlives a killed test."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    bench, serve, model = sys.argv[1:4]
    if not os.path.isdir(model):
        print(f"no model at {model}: skipped")
        return 77
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="asa-bench-serve-")
    log = open(os.path.join(tmp, "serve.log"), "w+")
    srv = subprocess.Popen([serve, "--model", model, "--host", "127.0.0.1", "--port", str(port),
                            "--log-level", "warn"], stdout=log, stderr=subprocess.STDOUT,
                           preexec_fn=die_with_parent)
    try:
        deadline = time.time() + 60
        while True:
            if srv.poll() is not None:
                log.seek(0)
                print("asa-serve exited:\n" + log.read()[-3000:])
                return 1
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                print("asa-serve did not become healthy")
                return 1
            time.sleep(0.05)

        out = os.path.join(tmp, "result.json")
        n = 12
        cmd = [bench, "--base-url", f"http://127.0.0.1:{port}", "--num-prompts", str(n),
               "--max-concurrency", "4", "--input-len", "24", "--output-len", "8",
               "--range-ratio", "0.25", "--ignore-eos", "--warmup", "2",
               "--percentiles", "50,99", "--goodput", "e2el:60000", "--result-json", out]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        print(p.stdout)
        print(p.stderr, file=sys.stderr)
        assert p.returncode == 0, f"asa-bench exited {p.returncode}"
        r = json.load(open(out))
        missing = [k for k in FIELDS if not isinstance(r.get(k), (int, float))]
        assert not missing, f"missing or null fields: {missing}"
        for k in ARRAYS:
            assert isinstance(r.get(k), list) and len(r[k]) == n, f"bad array {k}"
        assert r["completed"] == n and r["failed"] == 0, r["errors"]
        assert all(e == "" for e in r["errors"])
        # --ignore-eos: every request produces what it asked for (6..10 tokens)
        assert all(6 <= x <= 10 for x in r["output_lens"]), r["output_lens"]
        assert r["total_output_tokens"] == sum(r["output_lens"])
        assert all(x > 0 for x in r["input_lens"])
        assert r["server_request_queue_count"] == n, "queue-time count is not the run's"
        assert r["max_concurrent_requests"] <= 4
        assert "Serving Benchmark Result" in p.stdout
        print("ok")
        return 0
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
