#!/usr/bin/env python3
"""End-to-end tests of asa-serve with Python's standard library.

usage: test_e2e.py --serve BUILD/server/asa-serve --generate BUILD/engine/asa-generate
                   --model MODEL_DIR [-k NAME]

Starts the real server on free ports and checks the OpenAI shapes,
streaming, stop strings, seeds, errors, metrics, disconnects, overload and
SIGTERM draining."""
import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

from e2e_util import Server, parse_sse

ARGS = None
SRV = None
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def err_shape(j, status=None, param=None):
    assert isinstance(j, dict) and "error" in j, j
    e = j["error"]
    for k in ("message", "type", "param", "code"):
        assert k in e, (k, e)
    assert isinstance(e["message"], str) and e["message"], e
    if param is not None:
        assert e["param"] == param, (param, e)


def complete(body, **kw):
    st, h, j = SRV.post("/v1/completions", body, **kw)
    assert st == 200, (st, j)
    return j


# ---- basic endpoints --------------------------------------------------------

@test
def live_health_models():
    assert SRV.request("GET", "/live")[0] == 200
    assert SRV.request("GET", "/health")[0] == 200
    st, _, body = SRV.request("GET", "/v1/models")
    j = json.loads(body)
    assert st == 200 and j["object"] == "list" and j["data"][0]["id"] == "test-model", j
    st, _, body = SRV.request("GET", "/v1/models/test-model")
    assert st == 200
    st, _, body = SRV.request("GET", "/v1/models/nope")
    assert st == 404
    err_shape(json.loads(body))


@test
def completion_shape_and_usage():
    j = complete({"prompt": "Hello there", "max_tokens": 7, "temperature": 0, "ignore_eos": True})
    assert j["object"] == "text_completion" and j["id"].startswith("cmpl-"), j
    assert j["model"] == "test-model" and isinstance(j["created"], int)
    (c,) = j["choices"]
    assert c["index"] == 0 and isinstance(c["text"], str) and c["logprobs"] is None
    assert c["finish_reason"] == "length", c
    st, _, tk = SRV.post("/tokenize", {"prompt": "Hello there"})
    u = j["usage"]
    assert u["prompt_tokens"] == tk["count"] == len("Hello there") + 1, (u, tk)  # bytes + BOS
    assert u["completion_tokens"] == 7 and u["total_tokens"] == u["prompt_tokens"] + 7, u


@test
def prompt_forms_and_n():
    j = complete({"prompt": [256, 72, 105], "max_tokens": 3, "temperature": 0})
    assert j["usage"]["prompt_tokens"] == 3
    j = complete({"prompt": ["ab", "cde"], "max_tokens": 2, "n": 2, "seed": 5})
    assert [c["index"] for c in j["choices"]] == [0, 1, 2, 3], j
    assert j["usage"]["prompt_tokens"] == 3 + 4, j["usage"]
    j = complete({"prompt": [[256, 1, 2], [256, 3]], "max_tokens": 2, "temperature": 0})
    assert len(j["choices"]) == 2 and j["usage"]["prompt_tokens"] == 5


@test
def greedy_matches_asa_generate():
    ids = [256, 84, 104, 101, 32]
    out = subprocess.run([ARGS.generate, "--model", ARGS.model, "--prompt-ids",
                          ",".join(map(str, ids)), "--max-tokens", "24", "--greedy",
                          "--ignore-eos"], capture_output=True, text=True, check=True)
    gen = [int(x) for x in out.stdout.strip().split(",") if x]
    st, _, dt = SRV.post("/detokenize", {"tokens": gen})
    j = complete({"prompt": ids, "max_tokens": 24, "temperature": 0, "ignore_eos": True})
    assert j["choices"][0]["text"] == dt["prompt"], (j["choices"][0]["text"], dt)


@test
def seeded_reproducible_under_load():
    body = {"prompt": "Seeds", "max_tokens": 24, "temperature": 1.0, "top_p": 0.9, "seed": 1234,
            "ignore_eos": True}
    alone = complete(body)["choices"][0]["text"]
    results, errors = [], []

    def noise(i):
        try:
            complete({"prompt": "x" * (5 + 7 * i), "max_tokens": 20 + i, "temperature": 0.8,
                      "ignore_eos": True})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def target():
        results.append(complete(body)["choices"][0]["text"])

    threads = [threading.Thread(target=noise, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=target) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == [alone, alone], (alone, results)
    other = complete(dict(body, seed=99))["choices"][0]["text"]
    assert other != alone


# ---- streaming ----------------------------------------------------------------

def stream_text(events, index=0, chat=False):
    out = ""
    for e in events:
        if e == "[DONE]" or not e.get("choices"):
            continue
        for c in e["choices"]:
            if c["index"] != index:
                continue
            if chat:
                out += c["delta"].get("content", "") or ""
            else:
                out += c["text"]
    return out


@test
def streaming_shape():
    body = {"prompt": "Stream me", "max_tokens": 30, "temperature": 0.7, "seed": 7,
            "ignore_eos": True}
    full = complete(body)["choices"][0]["text"]
    st, events, raw = SRV.stream("/v1/completions", dict(body, stream=True,
                                                         stream_options={"include_usage": True}))
    assert st == 200
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 30, usage
    body_events = events[:-2]
    for e in body_events[:-1]:
        assert e["choices"][0]["finish_reason"] is None, e
        assert e["usage"] is None and e["object"] == "text_completion"
    assert body_events[-1]["choices"][0]["finish_reason"] == "length"
    assert stream_text(events) == full, (stream_text(events), full)
    ids = {e["id"] for e in events if e != "[DONE]"}
    assert len(ids) == 1


@test
def streaming_without_usage_has_no_usage_field():
    st, events, raw = SRV.stream("/v1/completions", {"prompt": "a", "max_tokens": 3, "stream": True})
    assert events[-1] == "[DONE]"
    for e in events[:-1]:
        assert "usage" not in e, e


@test
def utf8_never_split():
    # Random bytes from a random model: many multi-byte characters get split
    # across tokens; the stream must hold them back, never emit U+FFFD that
    # the one-shot text does not have, and agree with it exactly.
    for seed in range(8):
        body = {"prompt": "\u00e9\u4e2d", "max_tokens": 40, "temperature": 1.5, "seed": seed,
                "ignore_eos": True}
        full = complete(body)["choices"][0]["text"]
        st, events, raw = SRV.stream("/v1/completions", dict(body, stream=True))
        assert stream_text(events) == full
        raw.encode("utf-8")


@test
def stop_strings():
    # Bias the random model towards lower-case ASCII so that the text has
    # substrings to stop on.
    bias = {str(b): 30 for b in range(97, 123)}
    base = {"prompt": "Stop test", "max_tokens": 48, "temperature": 1, "seed": 3, "ignore_eos": True,
            "logit_bias": bias}
    text = complete(base)["choices"][0]["text"]
    # Pick a stop string from the middle of the text (first occurrence).
    cand = None
    for start in range(6, len(text) - 3):
        s = text[start:start + 3]
        if text.find(s) == start and "\ufffd" not in s:
            cand = (start, s)
            break
    assert cand, repr(text)
    start, stop = cand
    j = complete(dict(base, stop=[stop, "never-there"]))
    c = j["choices"][0]
    assert c["text"] == text[:start] and c["finish_reason"] == "stop", (c, text, stop)
    st, events, _ = SRV.stream("/v1/completions", dict(base, stop=stop, stream=True))
    assert stream_text(events) == text[:start]
    finals = [e for e in events if e != "[DONE]" and e["choices"][0]["finish_reason"]]
    assert finals[-1]["choices"][0]["finish_reason"] == "stop"


@test
def stop_strings_wait_for_min_tokens():
    # Regression: a stop string ended the request before min_tokens tokens.
    # As in vLLM, stop strings count only after min_tokens tokens.
    bias = {str(b): 30 for b in range(97, 123)}
    base = {"prompt": "Stop test", "max_tokens": 24, "temperature": 1, "seed": 3, "ignore_eos": True,
            "logit_bias": bias}
    text = complete(base)["choices"][0]["text"]
    assert text.isascii() and len(text) == 24, text  # one token per character
    stop = text[0]
    for stream in (False, True):
        body = dict(base, stop=[stop], min_tokens=4, stream=stream)
        if stream:
            got = stream_text(SRV.stream("/v1/completions", body)[1])
        else:
            got = complete(body)["choices"][0]["text"]
        cut = text.find(stop, 4)
        assert got == (text if cut < 0 else text[:cut]), (stream, got, text, stop)
        assert len(got) >= 4


@test
def stop_token_text_not_in_output():
    # Regression: the text of the token that ends a request (a stop_token_ids
    # entry, or EOS shown with skip_special_tokens false) leaked into the
    # output; vLLM leaves it out.  The token still counts in the usage.
    base = {"prompt": "hello", "max_tokens": 6, "temperature": 0, "ignore_eos": True}
    j = complete(dict(base, logprobs=0))
    toks = j["choices"][0]["logprobs"]["tokens"]
    first = SRV.post("/tokenize", {"prompt": toks[0], "add_special_tokens": False})[2]["tokens"]
    assert len(first) == 1, (toks, first)
    for stream in (False, True):
        body = dict(base, stop_token_ids=[first[0]], stream=stream)
        if stream:
            st, events, _ = SRV.stream("/v1/completions", body)
            text = stream_text(events)
            fin = [e for e in events if e != "[DONE]"][-1]["choices"][0]["finish_reason"]
        else:
            c = complete(body)
            text, fin = c["choices"][0]["text"], c["choices"][0]["finish_reason"]
            assert c["usage"]["completion_tokens"] == 1, c
        assert text == "" and fin == "stop", (stream, text, fin)
    # EOS forced by logit_bias, special tokens not skipped: no "<|eos|>".
    for stream in (False, True):
        body = {"prompt": "hello", "max_tokens": 4, "temperature": 0, "logit_bias": {"257": 100},
                "skip_special_tokens": False, "stream": stream}
        if stream:
            text = stream_text(SRV.stream("/v1/completions", body)[1])
        else:
            text = complete(body)["choices"][0]["text"]
        assert text == "", (stream, text)
    # With ignore_eos the EOS token is ordinary output.
    j = complete({"prompt": "hello", "max_tokens": 2, "temperature": 0, "logit_bias": {"257": 100},
                  "skip_special_tokens": False, "ignore_eos": True})
    assert j["choices"][0]["text"] == "<|eos|><|eos|>", j


@test
def logprobs_and_echo():
    j = complete({"prompt": "lp", "max_tokens": 5, "temperature": 0, "logprobs": 3, "ignore_eos": True})
    lp = j["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 5 and len(lp["token_logprobs"]) == 5
    assert len(lp["top_logprobs"]) == 5 and len(lp["text_offset"]) == 5
    for v, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
        assert v <= 0 and 1 <= len(top) <= 4
        assert abs(max(top.values()) - v) < 1e-4  # greedy: the sampled token is the best
    j = complete({"prompt": "echo me", "max_tokens": 3, "echo": True, "temperature": 0})
    assert j["choices"][0]["text"].startswith("echo me")


@test
def chat_completions():
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    st, _, j = SRV.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 6, "temperature": 0})
    assert st == 200 and j["object"] == "chat.completion", j
    m = j["choices"][0]["message"]
    assert m["role"] == "assistant" and isinstance(m["content"], str)
    st, events, _ = SRV.stream("/v1/chat/completions",
                               {"messages": msgs, "max_tokens": 6, "temperature": 0, "stream": True})
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[0]["object"] == "chat.completion.chunk"
    assert stream_text(events, chat=True) == m["content"]
    st, _, j = SRV.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 3, "logprobs": True,
                                                 "top_logprobs": 2, "temperature": 0})
    content = j["choices"][0]["logprobs"]["content"]
    assert len(content) == 3 and len(content[0]["top_logprobs"]) == 2, content


@test
def tokenize_detokenize():
    st, _, j = SRV.post("/tokenize", {"prompt": "h\u00e9llo"})
    assert st == 200 and j["tokens"][0] == 256 and j["count"] == len(j["tokens"])
    st, _, j2 = SRV.post("/tokenize", {"prompt": "h\u00e9llo", "add_special_tokens": False})
    assert j2["tokens"] == j["tokens"][1:]
    st, _, d = SRV.post("/detokenize", {"tokens": j2["tokens"]})
    assert d["prompt"] == "h\u00e9llo"


# ---- errors -------------------------------------------------------------------

@test
def error_cases():
    cases = [
        ({"prompt": "x", "temperature": -1}, 400, "temperature"),
        ({"prompt": "x", "best_of": 2}, 400, "best_of"),
        ({"prompt": "x", "suffix": "y"}, 400, "suffix"),
        ({"prompt": "x", "logprobs": 21}, 400, "logprobs"),
        ({"prompt": "x", "n": 0}, 400, "n"),
        ({"prompt": "x", "stream_options": {"include_usage": True}}, 400, "stream_options"),
        ({"prompt": "x", "model": "nope"}, 404, "model"),
        ({"prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
        ({"prompt": [], "max_tokens": 1}, 400, "prompt"),
        ({"prompt": [999999]}, 400, "prompt"),
        ({"prompt": "x", "logit_bias": {"abc": 1}}, 400, "logit_bias"),
        ({"prompt": "x", "stop": ""}, 400, "stop"),
        ({"max_tokens": 3}, 400, "prompt"),
    ]
    for body, status, param in cases:
        st, _, j = SRV.post("/v1/completions", body)
        assert st == status, (body, st, j)
        err_shape(j, param=param)
    st, _, j = SRV.post("/v1/completions", {"prompt": "x" * 10, "max_tokens": 100000})
    assert st == 400, (st, j)
    err_shape(j)
    assert "4096" in j["error"]["message"] and "100000" in j["error"]["message"], j
    # Regression: prompt + max_tokens overflowed int in the message (UBSan
    # aborted the server).
    st, _, j = SRV.post("/v1/completions", {"prompt": "x" * 10, "max_tokens": 2147483647})
    assert st == 400 and "2147483658" in j["error"]["message"], (st, j)
    err_shape(j, param="max_tokens")
    st, _, j = SRV.post("/v1/completions", {"prompt": "x", "unknown_field": {"a": 1}, "max_tokens": 1})
    assert st == 200
    st, _, body = SRV.request("POST", "/v1/completions", raw="{not json")
    assert st == 400
    err_shape(json.loads(body))
    st, _, body = SRV.request("GET", "/v1/completions")
    assert st == 405
    st, _, body = SRV.request("GET", "/nope")
    assert st == 404
    err_shape(json.loads(body))
    st, _, body = SRV.request("POST", "/v1/completions", raw="[1, 2]")
    assert st == 400
    st, _, j = SRV.post("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]})
    assert st == 400
    err_shape(j, param="messages")
    st, _, j = SRV.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                 "tools": [{"type": "function"}]})
    assert st == 400
    err_shape(j, param="tools")


def raw_exchange(head, body_chunks=(), read_first=False):
    """Sends a raw HTTP request; returns (status, body bytes)."""
    s = socket.create_connection(("127.0.0.1", SRV.port), timeout=20)
    s.sendall(head)
    try:
        if not read_first:
            for chunk in body_chunks:
                s.sendall(chunk)
    except OSError:
        pass  # the server may answer and close before reading everything
    data = b""
    while True:
        try:
            b = s.recv(65536)
        except OSError:
            break
        if not b:
            break
        data += b
        if b"\r\n\r\n" in data:
            hdr, _, rest = data.partition(b"\r\n\r\n")
            cl = [l for l in hdr.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            if cl and len(rest) >= int(cl[0].split(b":")[1]):
                break
    s.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


@test
def body_too_large():
    # Announced by Content-Length: refused before the body is read.
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 9437184\r\n\r\n")
    st, body = raw_exchange(head, read_first=True)
    assert st == 413, st
    err_shape(json.loads(body))
    # Chunked, no length: refused once the limit is crossed.
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"a" * 65536
    chunks = [b"%x\r\n" % len(piece) + piece + b"\r\n"] * 140 + [b"0\r\n\r\n"]
    st, body = raw_exchange(head, chunks)
    assert st == 413, st
    err_shape(json.loads(body))
    assert SRV.request("GET", "/health")[0] == 200


@test
def garbage_never_500():
    rnd = random.Random(42)
    valid = json.dumps({"prompt": "hi", "max_tokens": 2, "temperature": 0.5, "stop": ["a"],
                        "logit_bias": {"3": 2}, "n": 1})
    for i in range(300):
        b = bytearray(valid.encode())
        for _ in range(rnd.randint(1, 6)):
            op = rnd.random()
            pos = rnd.randrange(len(b) + 1)
            if op < 0.4 and b:
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            elif op < 0.7:
                b[pos:pos] = bytes([rnd.randrange(256)])
            elif b:
                del b[rnd.randrange(len(b))]
        st, _, payload = SRV.request("POST", "/v1/completions", raw=bytes(b))
        assert st < 500, (st, bytes(b), payload)
        if st != 200:
            err_shape(json.loads(payload))
    assert SRV.request("GET", "/health")[0] == 200


# ---- metrics, disconnects -------------------------------------------------------

@test
def metrics_names():
    complete({"prompt": "m", "max_tokens": 2})
    m = SRV.metrics()
    names = {k.split("{")[0] for k in m}
    for n in ["asa:num_requests_running", "asa:num_requests_waiting", "asa:kv_cache_usage_perc",
              "asa:prompt_tokens_total", "asa:generation_tokens_total", "asa:request_success_total",
              "asa:num_preemptions_total", "asa:time_to_first_token_seconds_bucket",
              "asa:inter_token_latency_seconds_bucket", "asa:e2e_request_latency_seconds_count",
              "asa:request_queue_time_seconds_sum"]:
        assert n in names, n
    assert SRV.metric("asa:prompt_tokens_total") > 0
    assert SRV.metric("asa:generation_tokens_total") > 0
    # Regression: token counters moved only when a request finished (vLLM
    # counts each step), so a long request showed no throughput until its end.
    import http.client
    g0 = SRV.metric("asa:generation_tokens_total")
    c = http.client.HTTPConnection("127.0.0.1", SRV.port, timeout=60)
    c.request("POST", "/v1/completions", body=json.dumps(
        {"prompt": "count", "max_tokens": 4000, "stream": True, "ignore_eos": True}),
        headers={"Content-Type": "application/json"})
    r = c.getresponse()
    while b'"text":""' in (line := r.readline()) or not line.strip():
        pass  # the first event with text: at least one token was counted
    mid = SRV.metric("asa:generation_tokens_total") - g0
    r.read()
    c.close()
    assert 1 <= mid < 4000, mid
    assert SRV.metric("asa:generation_tokens_total") - g0 == 4000


def wait_idle(srv, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = srv.metrics()
        run = sum(v for k, v in m.items() if k.startswith("asa:num_requests_running"))
        wait = sum(v for k, v in m.items() if k.startswith("asa:num_requests_waiting"))
        kv = sum(v for k, v in m.items() if k.startswith("asa:kv_cache_usage_perc"))
        if run == 0 and wait == 0 and kv == 0:
            return True
        time.sleep(0.02)
    return False


@test
def disconnect_frees_everything():
    # A second client streams alongside and must be unaffected.
    other = {}

    def bystander():
        other["r"] = SRV.stream("/v1/completions", {"prompt": "by", "max_tokens": 60, "stream": True,
                                                    "ignore_eos": True, "temperature": 0})

    aborts0 = sum(v for k, v in SRV.metrics().items() if 'finished_reason="abort"' in k)
    t = threading.Thread(target=bystander)
    t.start()
    for stream in (True, False):
        s = socket.create_connection(("127.0.0.1", SRV.port))
        body = json.dumps({"prompt": "long", "max_tokens": 4000, "ignore_eos": True, "stream": stream})
        s.sendall(("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        if stream:
            s.recv(200)  # headers and a first chunk
        else:
            time.sleep(0.05)
        s.close()
        assert wait_idle(SRV, 5.0) or t.is_alive(), "request not cancelled"
    t.join()
    st, events, _ = other["r"]
    assert st == 200 and events[-1] == "[DONE]", events[-3:]
    assert wait_idle(SRV, 5.0), SRV.metrics()
    assert SRV.metric("asa:request_success_total") > 0
    aborts = sum(v for k, v in SRV.metrics().items() if 'finished_reason="abort"' in k)
    assert aborts - aborts0 >= 2, (aborts0, aborts)


@test
def disconnect_while_queued_and_after_finish():
    # One sequence at a time: B waits behind a long stream A.  B's client
    # leaves while B is queued: B is cancelled at once (waiting drops to 0
    # while A still runs).  Then a client that leaves after its request has
    # finished but before reading the end, and one that never reads at all.
    s = Server(ARGS.serve, ARGS.model, ["--served-model-name", "q", "--max-num-seqs", "1"])

    def send(body):
        c = socket.create_connection(("127.0.0.1", s.port))
        b = json.dumps(body)
        c.sendall(("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(b)}\r\n\r\n{b}").encode())
        return c

    try:
        a = send({"prompt": "a", "max_tokens": 4000, "ignore_eos": True, "stream": True})
        a.recv(100)
        deadline = time.time() + 10
        while s.metric("asa:num_requests_running") == 0 and time.time() < deadline:
            time.sleep(0.002)
        b = send({"prompt": "b", "max_tokens": 5, "ignore_eos": True})
        deadline = time.time() + 10
        while s.metric("asa:num_requests_waiting") < 1 and time.time() < deadline:
            time.sleep(0.002)
        m = s.metrics()
        assert m['asa:num_requests_waiting{model_name="q"}'] == 1, m
        b.close()
        deadline = time.time() + 5
        while s.metric("asa:num_requests_waiting") > 0 and time.time() < deadline:
            time.sleep(0.002)
        m = s.metrics()
        assert m['asa:num_requests_waiting{model_name="q"}'] == 0, m
        assert m['asa:request_success_total{finished_reason="abort",model_name="q"}'] == 1, m
        assert m['asa:request_success_total{finished_reason="length",model_name="q"}'] == 0, \
            "the stream ended too early for this test"
        a.close()
        assert wait_idle(s)
        # Finished, partly read, then gone; finished and never read.
        for body in ({"prompt": "c", "max_tokens": 200, "ignore_eos": True, "stream": True},
                     {"prompt": "d", "max_tokens": 200, "ignore_eos": True}):
            c = send(body)
            time.sleep(0.01)
            assert wait_idle(s)
            c.recv(10)
            c.close()
        st, _, j = s.post("/v1/completions", {"prompt": "e", "max_tokens": 3})
        assert st == 200, (st, j)
    finally:
        assert s.stop() == 0


# ---- separate servers ------------------------------------------------------------

@test
def api_keys():
    s = Server(ARGS.serve, ARGS.model, ["--served-model-name", "k", "--api-key", "sekret",
                                        "--api-key", "other"])
    try:
        st, _, j = s.post("/v1/completions", {"prompt": "x", "max_tokens": 1})
        assert st == 401, st
        err_shape(j)
        st, _, j = s.post("/v1/completions", {"prompt": "x", "max_tokens": 1},
                          headers={"Authorization": "Bearer wrong"})
        assert st == 401
        for key in ("sekret", "other"):
            st, _, j = s.post("/v1/completions", {"prompt": "x", "max_tokens": 1},
                              headers={"Authorization": f"Bearer {key}"})
            assert st == 200, (st, j)
        assert s.request("GET", "/health")[0] == 200
        assert s.request("GET", "/live")[0] == 200
        assert s.request("GET", "/metrics")[0] == 401
        assert s.request("GET", "/v1/models")[0] == 401
    finally:
        s.stop()


@test
def overload_429():
    s = Server(ARGS.serve, ARGS.model, ["--served-model-name", "o", "--max-num-seqs", "1",
                                        "--max-queued-requests", "2"])
    try:
        out = []

        # long enough generations (and the threads released together) that
        # the one running sequence and the two queued ones are still there
        # when the rest arrive, however fast the machine
        go = threading.Barrier(12)

        def one(i):
            go.wait()
            st, h, j = s.post("/v1/completions", {"prompt": "q" * 4, "max_tokens": 600,
                                                  "ignore_eos": True, "temperature": 0})
            out.append((st, h, j))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(st for st, _, _ in out)
        assert 429 in codes and 200 in codes, codes
        assert set(codes) <= {200, 429}, codes
        for st, h, j in out:
            if st == 429:
                assert "retry-after" in h
                err_shape(j)
            else:
                assert j["usage"]["completion_tokens"] == 600
        assert s.request("GET", "/health")[0] == 200
        # Regression: the choices of a request were queued one by one, so a
        # request with more choices than the bound was refused forever (and
        # the refused one leaked the decoders of the choices not queued).
        # They are queued all or nothing now; an empty queue takes any size.
        assert wait_idle(s)
        st, h, j = s.post("/v1/completions", {"prompt": "q", "max_tokens": 40, "n": 6,
                                              "ignore_eos": True, "temperature": 0})
        assert st == 200 and len(j["choices"]) == 6, (st, j)
        # two long requests sent together (a barrier: CI once saw the
        # second arrive so late that the first finished, the second ran and
        # the queue was empty again when the n = 6 request came), then the
        # n = 6 request while one runs and the other waits
        go2 = threading.Barrier(2)

        def long_one():
            go2.wait()
            s.post("/v1/completions", {"prompt": "w", "max_tokens": 2000, "ignore_eos": True})

        busy = threading.Thread(target=long_one)
        busy2 = threading.Thread(target=long_one)
        busy.start()
        busy2.start()
        deadline = time.time() + 10
        while (s.metric("asa:num_requests_waiting") < 1 or
               s.metric("asa:num_requests_running") < 1) and time.time() < deadline:
            time.sleep(0.002)
        st, h, j = s.post("/v1/completions", {"prompt": "q", "max_tokens": 40, "n": 6,
                                              "ignore_eos": True, "temperature": 0})
        assert st == 429 and "retry-after" in h, (st, j)
        busy.join()
        busy2.join()
        assert wait_idle(s)
    finally:
        assert s.stop() == 0


@test
def preemption_recomputes_identically():
    # A KV cache of ~40 global pages (about 330 tokens) shared by 4 requests of
    # 260 tokens each: the scheduler must preempt and recompute, and seeded
    # outputs must equal the ones of the roomy main server.
    bodies = [{"prompt": "p" * (3 + i), "max_tokens": 250, "temperature": 0.9, "seed": 100 + i,
               "ignore_eos": True} for i in range(4)]
    want = [complete(b)["choices"][0]["text"] for b in bodies]
    s = Server(ARGS.serve, ARGS.model, ["--served-model-name", "p", "--max-num-seqs", "4",
                                        "--max-num-batched-tokens", "64", "--kv-cache-bytes", "60K"])
    try:
        got = [None] * 4

        def one(i):
            st, _, j = s.post("/v1/completions", bodies[i])
            got[i] = (st, j)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(4):
            st, j = got[i]
            assert st == 200, (st, j)
            assert j["choices"][0]["text"] == want[i], i
        assert s.metric("asa:num_preemptions_total") > 0, s.metric("asa:num_preemptions_total")
        assert wait_idle(s)
    finally:
        assert s.stop() == 0


@test
def systemd_ready_notification():
    # READY=1 arrives on $NOTIFY_SOCKET once the model is loaded.
    path = f"/tmp/asa-notify-{os.getpid()}.sock"
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    try:
        s = Server(ARGS.serve, ARGS.model, ["--served-model-name", "n"], env={"NOTIFY_SOCKET": path})
        try:
            msg = sock.recv(4096).decode()
            assert "READY=1" in msg, msg
        finally:
            assert s.stop() == 0
            msg = sock.recv(4096).decode()
            assert "STOPPING=1" in msg, msg
    finally:
        sock.close()
        os.unlink(path)


@test
def bundled_model_real_text():
    # No --model: the server finds models/asa-tiny relative to its executable.
    s = Server(ARGS.serve, None, ["--max-num-seqs", "4"])
    try:
        st, _, body = s.request("GET", "/v1/models")
        assert json.loads(body)["data"][0]["id"] == "asa-tiny"
        body = {"prompt": "It is a truth universally acknowledged, that", "max_tokens": 48,
                "temperature": 0}
        st, _, j = s.post("/v1/completions", body)
        text = j["choices"][0]["text"]
        letters = sum(c.isalpha() or c in " ,.;'\"\n-" for c in text)
        assert letters >= 0.9 * len(text) and len(text.split()) >= 6, text
        # Stop at the first comma of the greedy text; the stream agrees.
        if "," in text:
            cut = text.index(",")
            st, _, j2 = s.post("/v1/completions", dict(body, stop=[","]))
            assert j2["choices"][0]["text"] == text[:cut], (j2, text)
            assert j2["choices"][0]["finish_reason"] == "stop"
        st, events, _ = s.stream("/v1/completions", dict(body, stream=True))
        assert stream_text(events) == text
        # Accented and non-Latin prompts round-trip through /tokenize.
        for t in ["caf\u00e9 na\u00efve", "\u4e2d\u6587", "emoji \U0001F600"]:
            st, _, tk = s.post("/tokenize", {"prompt": t, "add_special_tokens": False})
            st, _, dt = s.post("/detokenize", {"tokens": tk["tokens"]})
            assert dt["prompt"] == t, (t, dt)
        st, _, j = s.post("/v1/completions", {"prompt": "caf\u00e9", "max_tokens": 8, "logprobs": 5,
                                              "temperature": 0})
        lp = j["choices"][0]["logprobs"]
        assert len(lp["tokens"]) == 8 and all(len(t) >= 1 for t in lp["top_logprobs"])
    finally:
        assert s.stop() == 0


@test
def sentencepiece_first_token_keeps_its_space():
    # Regression: the incremental decoder did not know the prompt, so with a
    # SentencePiece decoder (which strips the space at the start of a text)
    # the first generated token lost its leading space.  Hugging Face and
    # vLLM decode it as a continuation of the prompt.
    s = Server(ARGS.serve, ARGS.model.rstrip("/") + "-sp", ["--served-model-name", "sp"])
    try:
        body = {"prompt": "hello", "max_tokens": 3, "temperature": 0, "logit_bias": {"32": 100}}
        st, _, j = s.post("/v1/completions", body)
        assert st == 200 and j["choices"][0]["text"] == "   ", j
        st, events, _ = s.stream("/v1/completions", dict(body, stream=True))
        assert stream_text(events) == "   ", events
        # The tokenizer itself strips at the start of a text, as HF does.
        st, _, d = s.post("/detokenize", {"tokens": [32, 32]})
        assert d["prompt"] == " ", d
    finally:
        assert s.stop() == 0


@test
def model_routes_503_while_loading():
    # Regression: /tokenize, /detokenize and /v1/models ran while the model
    # was loading (a NULL tokenizer gave 400s; the loop and the limits were
    # read while the main thread wrote them).  They must answer 503 with
    # Retry-After until the model is there, then 200.
    from e2e_util import free_port
    import http.client
    port = free_port()
    proc = subprocess.Popen([ARGS.serve, "--port", str(port), "--host", "127.0.0.1",
                             "--log-level", "warn"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    seen = {}
    try:
        deadline = time.time() + 60
        ok = False
        while time.time() < deadline and not ok:
            for method, path, body in (("POST", "/tokenize", {"prompt": "hi"}),
                                       ("POST", "/detokenize", {"tokens": [72]}),
                                       ("GET", "/v1/models", None), ("GET", "/metrics", None)):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    c.request(method, path, body=json.dumps(body) if body else None,
                              headers={"Content-Type": "application/json"})
                    r = c.getresponse()
                    payload = r.read()
                    c.close()
                except OSError:
                    assert proc.poll() is None, proc.returncode
                    time.sleep(0.005)
                    break
                seen[(path, r.status)] = seen.get((path, r.status), 0) + 1
                assert r.status in (200, 503), (path, r.status, payload)
                if r.status == 503:
                    assert r.getheader("Retry-After"), path
                    err_shape(json.loads(payload))
                if path == "/tokenize" and r.status == 200:
                    j = json.loads(payload)
                    assert j["max_model_len"] > 0 and j["count"] == 3, j
                    ok = True
        assert ok, seen
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


@test
def sigterm_drains():
    # SIGTERM while a stream is running and non-streaming requests wait
    # behind it (one sequence at a time): /health and new requests get 503,
    # every in-flight request finishes normally, the exit code is 0.
    import http.client
    s = Server(ARGS.serve, ARGS.model, ["--served-model-name", "d", "--max-num-seqs", "1"])
    res = {}

    def queued(i):
        res[i] = s.post("/v1/completions", {"prompt": "queued", "max_tokens": 400, "ignore_eos": True})

    try:
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        c.request("POST", "/v1/completions",
                  body=json.dumps({"prompt": "drain", "max_tokens": 3000, "stream": True,
                                   "ignore_eos": True, "temperature": 0}),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        first = r.readline()
        assert first.startswith(b"data: "), first
        threads = [threading.Thread(target=queued, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.time() + 10
        while s.metric("asa:num_requests_waiting") < 4 and time.time() < deadline:
            time.sleep(0.002)
        assert s.metric("asa:num_requests_waiting") == 4, "the stream ended before SIGTERM"
        s.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        while time.time() < deadline:
            st, _, _ = s.request("GET", "/health", timeout=5)
            if st == 503:
                break
            time.sleep(0.005)
        assert st == 503, st
        st, h, j = s.post("/v1/completions", {"prompt": "late", "max_tokens": 2}, timeout=5)
        assert st == 503 and "retry-after" in h, (st, j)
        raw = (first + r.read()).decode()
        c.close()
        for t in threads:
            t.join(60)
        events = parse_sse(raw)
        assert events[-1] == "[DONE]", events[-2:]
        assert events[-2]["choices"][0]["finish_reason"] == "length", events[-2]
        for i in range(4):
            st, _, j = res[i]
            assert st == 200 and j["usage"]["completion_tokens"] == 400, (st, j)
        code = s.proc.wait(60)
        assert code == 0, (code, s.logs())
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
        s.log.close()


def main():
    global ARGS, SRV
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", required=True)
    ap.add_argument("--generate", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("-k", default=None)
    ARGS = ap.parse_args()
    SRV = Server(ARGS.serve, ARGS.model, ["--served-model-name", "test-model", "--max-num-seqs", "8",
                                          "--max-num-batched-tokens", "64"])
    passed = failed = 0
    try:
        for fn in TESTS:
            if ARGS.k and ARGS.k not in fn.__name__:
                continue
            t0 = time.time()
            try:
                fn()
                passed += 1
                print(f"PASS {fn.__name__} ({time.time() - t0:.2f}s)", flush=True)
            except Exception:  # noqa: BLE001
                failed += 1
                print(f"FAIL {fn.__name__}", flush=True)
                traceback.print_exc()
    finally:
        code = SRV.stop()
        if failed:
            print(SRV.logs() if not SRV.log.closed else "")
    print(f"{passed} passed, {failed} failed")
    if code != 0:
        print(f"server exit code {code}")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
