"""Code shared by the benchmark scripts in tools/bench/: time budget,
incremental JSON results, device ceilings (copy bandwidth, bf16 GEMM rate),
the asa-1.3b / Llama shapes and their floors.

Works with torch 1.13 (CPU dry runs) and torch 2.x (CUDA).  Only the
standard library is imported at module level, so combine.py can use the
floor formulas without torch.
"""
import json
import os
import statistics
import sys
import time

# ASA-SPEC section 5, asa-1.3b (max_position_embeddings raised for the
# long-context rows, as the spec allows for benchmarks).
ASA_1P3B = {
    "model_type": "asa",
    "vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632,
    "num_hidden_layers": 24, "num_heads": 32, "head_dim": 64, "v_head_dim": 64,
    "rope_dim": 32, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
    "max_position_embeddings": 262144, "tie_word_embeddings": False,
    "layer_types": ["local", "global"] * 12,
    "local": {"latent_heads": 1, "latent_dim": 192, "window": 512},
    "global": {"latent_heads": 2, "latent_dim": 96, "block_size": 16, "top_n": 16,
               "init_blocks": 1, "local_blocks": 2, "selection_share": 4,
               "compression": "mean"},
}

# The Llama of the same width (baseline b).
LLAMA_1P3B = {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32,
              "num_key_value_heads": 2, "intermediate_size": 5632, "vocab_size": 32000}


def log(prog, msg):
    print("%s: %s" % (prog, msg), flush=True)


class BudgetExceeded(Exception):
    """Raised (from SIGALRM) in whatever phase runs when the budget ends."""


class Budget:
    """Wall-clock budget of one script: left() seconds remain; allows(est)
    says whether a phase estimated at est seconds still fits.  arm(grace)
    raises BudgetExceeded in the running phase `grace` seconds after the
    budget ends, so a phase whose estimate was wrong is cut short by the
    script itself (its row is recorded as an error) rather than by the
    driver's timeout."""

    def __init__(self, seconds):
        self.t0 = time.time()
        self.seconds = float(seconds)

    def arm(self, grace=5.0):
        try:
            import signal

            def _hit(signum, frame):
                raise BudgetExceeded("time budget of %.0f s exceeded" % self.seconds)
            signal.signal(signal.SIGALRM, _hit)
            signal.alarm(max(1, int(self.left() + grace)))
        except (ImportError, AttributeError, ValueError):
            pass

    def disarm(self):
        try:
            import signal
            signal.alarm(0)
        except (ImportError, AttributeError, ValueError):
            pass

    def elapsed(self):
        return time.time() - self.t0

    def left(self):
        return self.seconds - self.elapsed()

    def allows(self, est):
        return self.left() > est


class Results:
    """A JSON document rewritten after every update, so a killed run still
    leaves everything measured so far."""

    def __init__(self, path, **meta):
        self.path = path
        self.doc = dict(meta)
        self.doc.setdefault("decode", [])
        self.doc.setdefault("prefill", [])
        self.doc.setdefault("skipped", [])
        self.doc.setdefault("errors", [])
        self.save()

    def add(self, key, row):
        self.doc.setdefault(key, []).append(row)
        self.save()

    def set(self, key, value):
        self.doc[key] = value
        self.save()

    def save(self):
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.doc, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------
# Timing (torch imported lazily by the callers that need it)
# ---------------------------------------------------------------------------

def timer(torch, device):
    """Returns (start, stop) callables measuring milliseconds: CUDA events
    on a CUDA device, a synchronised host clock elsewhere."""
    if device.type == "cuda":
        def start():
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev

        def stop(ev):
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return ev.elapsed_time(end)
        return start, stop

    def hstart():
        return time.perf_counter()

    def hstop(t0):
        return (time.perf_counter() - t0) * 1e3
    return hstart, hstop


def measure_ceilings(torch, device, copy_bytes=2 << 30, gemm_n=8192, reps=10):
    """The two ceilings of the floors, on this device in this process:
    read bandwidth from a device-to-device copy of copy_bytes (bytes read +
    bytes written over the time) and the bf16 GEMM rate of an n^3 product
    (torch.matmul, i.e. cuBLAS on CUDA) on random data.  Medians of reps."""
    start, stop = timer(torch, device)
    out = {}
    n = copy_bytes // 2
    dt = torch.bfloat16
    src = torch.empty(n, dtype=dt, device=device).uniform_(-1, 1)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ts = []
    for _ in range(reps):
        ev = start()
        dst.copy_(src)
        ts.append(stop(ev))
    out["copy_bytes"] = 2 * n * 2
    out["copy_ms"] = median(ts)
    out["bandwidth_GBps"] = 2 * n * 2 / (median(ts) * 1e-3) / 1e9
    del src, dst
    a = torch.randn(gemm_n, gemm_n, device=device).to(dt)
    b = torch.randn(gemm_n, gemm_n, device=device).to(dt)
    c = torch.matmul(a, b)
    for _ in range(2):
        torch.matmul(a, b, out=c)
    ts = []
    for _ in range(reps):
        ev = start()
        torch.matmul(a, b, out=c)
        ts.append(stop(ev))
    out["gemm_n"] = gemm_n
    out["gemm_ms"] = median(ts)
    out["gemm_TFLOPs"] = 2.0 * gemm_n ** 3 / (median(ts) * 1e-3) / 1e12
    del a, b, c
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def device_info(torch, device):
    info = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info["gpu"] = p.name
        info["gpu_mem_GiB"] = round(p.total_memory / 2 ** 30, 1)
        info["cuda"] = torch.version.cuda
    return info


def free_bytes(torch, device):
    """Free device memory (CUDA) or a large number elsewhere."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    return 1 << 40


# ---------------------------------------------------------------------------
# Floors (no torch needed)
# ---------------------------------------------------------------------------

def _asa_layer_params(c, t):
    d, H, dh, dv, dR, F = (c["hidden_size"], c["num_heads"], c["head_dim"],
                           c.get("v_head_dim", c["head_dim"]), c["rope_dim"],
                           c["intermediate_size"])
    G, dg = c[t]["latent_heads"], c[t]["latent_dim"]
    n = H * (dh + dR) * d + (G * dg + dR) * d + H * (dh + dv) * dg + d * H * dv + 3 * F * d
    n += G * dg + 2 * d  # norms
    if t == "global":
        n += 2 * H * d
    return n


def asa_weight_bytes(c=ASA_1P3B, elt=2):
    """Bytes of every weight a decode step reads: all but the embedding
    table (only one row of it is read)."""
    n = sum(_asa_layer_params(c, t) for t in c["layer_types"])
    n += c["vocab_size"] * c["hidden_size"] + c["hidden_size"]
    return n * elt


def asa_entry(c, t):
    """Cached values per token of a layer of type t: G*d_g + d_R."""
    return c[t]["latent_heads"] * c[t]["latent_dim"] + c["rope_dim"]


def asa_kv_bytes_per_token(c=ASA_1P3B, elt=2):
    """Bytes per token at long context (spec 4): global layers keep every
    token plus 1/B compressed entries; local windows are bounded."""
    ng = sum(1 for t in c["layer_types"] if t == "global")
    B = c["global"]["block_size"]
    return ng * asa_entry(c, "global") * elt * (1 + 1.0 / B)


def asa_decode_cost(ctx, batch, c=ASA_1P3B, elt=2):
    """(bytes, flops) of one decode step of `batch` sequences each with
    `ctx` tokens in the cache: weights once, then per sequence the cache
    entries attention must read (local: the window; global: every
    compressed entry plus the selected blocks' tokens), and the FLOPs of the
    products (2 per weight per sequence) and of absorbed attention."""
    H, dh, dv, dR = c["num_heads"], c["head_dim"], c.get("v_head_dim", c["head_dim"]), c["rope_dim"]
    g = c["global"]
    B, n = g["block_size"], g["top_n"]
    t = ctx + 1
    kv = 0.0
    att = 0.0
    for lt in c["layer_types"]:
        dg = c[lt]["latent_dim"]
        if lt == "local":
            keys = min(t, c["local"]["window"])
            kv += keys * asa_entry(c, lt) * elt
        else:
            comp = t // B
            sel = min(t, n * B)
            keys = comp + sel
            kv += keys * asa_entry(c, lt) * elt
        # absorbed: q~ = W_UK^T qC (H dh dg), scores (dg + dR) and pooling (dg)
        # per head and key, W_UV (H dv dg)
        att += 2.0 * H * (dh * dg + dv * dg) + 2.0 * H * keys * (2 * dg + dR)
    wbytes = asa_weight_bytes(c, elt)
    nparams = wbytes / elt
    flops = batch * (2.0 * nparams + att)
    return wbytes + batch * kv, flops


def asa_prefill_flops(T, c=ASA_1P3B):
    """FLOPs of a prefill of T tokens (batch 1), logits for the last token
    only: 2 per weight per token plus attention in the expanded form
    (per query, key and head: scores over d_h + d_R, values over d_v, and
    the kv_b expansion of each key per head)."""
    H, dh, dv, dR, d, V = (c["num_heads"], c["head_dim"], c.get("v_head_dim", c["head_dim"]),
                           c["rope_dim"], c["hidden_size"], c["vocab_size"])
    g = c["global"]
    B, n, w = g["block_size"], g["top_n"], c["local"]["window"]
    layer_w = sum(_asa_layer_params(c, lt) for lt in c["layer_types"])
    flops = 2.0 * layer_w * T + 2.0 * V * d
    per_pair = 2.0 * (dh + dR) + 2.0 * dv
    for lt in c["layer_types"]:
        if lt == "local":
            # sum over t of min(t+1, w)
            m = min(T, w)
            keys = m * (m + 1) / 2.0 + max(0, T - w) * w
        else:
            # compressed: sum of (t+1)//B ~ T^2/(2B); selected: min(t+1, nB)
            m = min(T, n * B)
            keys = T * T / (2.0 * B) + m * (m + 1) / 2.0 + max(0, T - n * B) * n * B
        flops += H * keys * per_pair
        # keys/values expanded per head from latents, once per token (and
        # once per compressed entry in global layers)
        ntok = T if lt == "local" else T * (1 + 1.0 / B)
        flops += 2.0 * ntok * c[lt]["latent_dim"] * H * (dh + dv)
    return flops


def llama_weight_bytes(c=LLAMA_1P3B, elt=2):
    d, L, H, KV, F, V = (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                         c["num_key_value_heads"], c["intermediate_size"], c["vocab_size"])
    hd = d // H
    per = d * d + 2 * KV * hd * d + d * d + 3 * F * d + 2 * d
    return (L * per + V * d + d) * elt


def llama_kv_bytes_per_token(c=LLAMA_1P3B, elt=2):
    hd = c["hidden_size"] // c["num_attention_heads"]
    return c["num_hidden_layers"] * 2 * c["num_key_value_heads"] * hd * elt


def floor_ms(nbytes, flops, ceil):
    """max(bytes / bandwidth, flops / GEMM rate) in ms, with which bound."""
    tb = nbytes / (ceil["bandwidth_GBps"] * 1e9) * 1e3
    tf = flops / (ceil["gemm_TFLOPs"] * 1e12) * 1e3
    return (tb, "bytes") if tb >= tf else (tf, "flops")


def fmt_ctx(n):
    return "%dk" % (n // 1024) if n % 1024 == 0 else str(n)


def stderr(msg):
    print(msg, file=sys.stderr, flush=True)


def _selfcheck():
    wb = asa_weight_bytes()
    assert 2.3e9 < wb < 2.45e9, wb
    assert abs(asa_kv_bytes_per_token() - 5712) < 1e-6
    assert llama_kv_bytes_per_token() == 12288
    return True


if __name__ == "__main__":
    _selfcheck()
    print("weights read per ASA decode step: %.1f MB; Llama %.1f MB; KV bytes/token ASA %.0f, Llama %d"
          % (asa_weight_bytes() / 1e6, llama_weight_bytes() / 1e6, asa_kv_bytes_per_token(),
             llama_kv_bytes_per_token()))
    print("ASA prefill 8k FLOPs %.3g" % asa_prefill_flops(8192))
