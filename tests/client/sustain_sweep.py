#!/usr/bin/env python3
"""How many concurrent streams one asa-bench process follows without its ITL
drifting: runs the scripted server and asa-bench at growing stream counts
and prints, for each, the median ITL over all gaps, over each stream's first
and last 10 gaps, the share of gaps off the script by more than 1 ms, the
median TTFT, the client's p99 read lag, and the client's CPU time.  Not a ctest test (it takes minutes);
the numbers go to BENCHMARKS.md.

usage: sustain_sweep.py BUILD_DIR [--itl-ms 50] [--ttft-ms 100] [--tokens 40]
                        [--streams 1000,2000,4000,8000] [--realtime] [--user-clock]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--itl-ms", type=float, default=50)
    ap.add_argument("--ttft-ms", type=float, default=100)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--streams", default="1000,2000,4000,8000")
    ap.add_argument("--realtime", action="store_true", help="asa-bench --realtime")
    ap.add_argument("--user-clock", action="store_true",
                    help="stamp reads in user space (ASA_BENCH_USER_CLOCK=1)")
    a = ap.parse_args()
    bench = os.path.join(a.build, "client", "asa-bench")
    server = os.path.join(a.build, "tests", "client", "asa_scripted_server")
    srv = subprocess.Popen([server, "--port", "0", "--realtime", "--ttft-ms", str(a.ttft_ms),
                            "--itl-ms", str(a.itl_ms)], stdout=subprocess.PIPE, text=True)
    port = int(srv.stdout.readline().split()[1])
    env = dict(os.environ)
    if a.user_clock:
        env["ASA_BENCH_USER_CLOCK"] = "1"
    print(f"script: TTFT {a.ttft_ms} ms, ITL {a.itl_ms} ms, {a.tokens} tokens; "
          f"{'user-space' if a.user_clock else 'kernel'} receive stamps"
          f"{', --realtime' if a.realtime else ''}")
    print(f"{'streams':>8} {'ok':>6} {'ITL med':>8} {'first10':>8} {'last10':>8} "
          f"{'>1ms off':>9} {'TTFT med':>9} {'lag p99':>8} {'cpu s':>6}")
    try:
        for n in [int(x) for x in a.streams.split(",")]:
            out = tempfile.mktemp(suffix=".json")
            cmd = [bench, "--base-url", f"http://127.0.0.1:{port}", "--num-prompts", str(n),
                   "--max-concurrency", str(n), "--input-len", "16", "--vocab-size", "1000",
                   "--output-len", str(a.tokens), "--no-progress", "--result-json", out]
            if a.realtime:
                cmd.append("--realtime")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            r = json.load(open(out))
            os.unlink(out)
            itls = [g * 1000 for s in r["itls"] for g in s]
            first = [g * 1000 for s in r["itls"] for g in s[:10]]
            last = [g * 1000 for s in r["itls"] for g in s[-10:]]
            off = sum(1 for g in itls if abs(g - a.itl_ms) > 1.0) / max(len(itls), 1)
            print(f"{n:>8} {r['completed']:>6} {statistics.median(itls):>8.3f} "
                  f"{statistics.median(first):>8.3f} {statistics.median(last):>8.3f} "
                  f"{off * 100:>8.1f}% {r['median_ttft_ms']:>9.3f} "
                  f"{r['client_read_lag_p99_ms']:>8.2f} {cpu:>6.2f}")
            sys.stdout.flush()
    finally:
        srv.terminate()
        srv.wait()


if __name__ == "__main__":
    main()
