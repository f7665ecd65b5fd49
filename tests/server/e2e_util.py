"""Helpers for the end-to-end tests: start asa-serve on a free port, talk
HTTP with the standard library, parse server-sent events."""
import http.client
import json
import os
import signal
import socket
import subprocess
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, binary, model, extra=(), env=None):
        self.port = free_port()
        self.binary = binary
        args = [binary] + (["--model", model] if model else []) + [
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warn"] + list(extra)
        e = dict(os.environ)
        if env:
            e.update(env)
        self.log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                     f"asa-serve-{self.port}.log"), "w+")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=e)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"asa-serve exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                st, _, _ = self.request("GET", "/health")
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("asa-serve did not become healthy:\n" + self.logs())

    def logs(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def request(self, method, path, body=None, headers=None, timeout=60, raw=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = {"Content-Type": "application/json"}
        if headers:
            h.update(headers)
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        payload = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        return r.status, hdrs, payload

    def post(self, path, body, **kw):
        st, hdrs, payload = self.request("POST", path, body, **kw)
        try:
            j = json.loads(payload)
        except ValueError:
            j = None
        return st, hdrs, j

    def stream(self, path, body, headers=None, timeout=60):
        """Returns (status, [parsed events], raw text).  Events are dicts, or
        the string '[DONE]'."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = {"Content-Type": "application/json"}
        if headers:
            h.update(headers)
        c.request("POST", path, body=json.dumps(body), headers=h)
        r = c.getresponse()
        raw = r.read().decode("utf-8")
        c.close()
        return r.status, parse_sse(raw), raw

    def metrics(self):
        st, _, payload = self.request("GET", "/metrics")
        assert st == 200, st
        out = {}
        for line in payload.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
        return out

    def metric(self, prefix):
        """Sum of every sample whose name (with labels) starts with prefix."""
        return sum(v for k, v in self.metrics().items() if k.split("{")[0] == prefix)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def parse_sse(raw):
    """Strict OpenAI framing: every event is 'data: <json>\\n\\n'."""
    events = []
    assert raw.endswith("\n\n") or raw == "", repr(raw[-50:])
    for block in raw.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), repr(block[:80])
        data = block[len("data: "):]
        events.append("[DONE]" if data == "[DONE]" else json.loads(data))
    return events
