#!/usr/bin/env python3
"""Baseline (b) of the benchmark: Hugging Face transformers'
LlamaForCausalLM of the asa-1.3b width (hidden 2048, 24 layers, 32 heads,
2 KV heads, intermediate 5632, vocab 32000), random init (seeded), bf16,
attn_implementation="sdpa", eager (no torch.compile, no CUDA graphs), with
its DynamicCache: what a user would otherwise run.

Measures, in one process on one device:
  - the ceilings of the floors: copy bandwidth (device-to-device copy of
    2 GiB, bytes read + written over the time) and the bf16 GEMM rate
    (8192^3 torch.matmul on random data); medians of 10
  - prefill time of a random prompt of T tokens (batch 1), logits of the
    last token only (logits_to_keep=1); median of 2 after a warm-up
  - decode step time at (batch, context): the cache holds `context` tokens
    (a prefilled random prompt when batch*context <= --prefill-cache-max
    tokens, else DynamicCache.update with random keys/values; the row says
    which), then single-token steps, each timed with CUDA events; median
    of --steps after --warmup steps
JSON rows are written to --json after every measurement.  Phases that do
not fit --budget seconds or the free memory are skipped with a note.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

PROG = "llama_baseline"

try:
    import torch
except Exception as e:  # pragma: no cover
    print("%s: cannot import torch: %s" % (PROG, e), flush=True)
    sys.exit(2)


def parse_list(s):
    return [int(x) for x in s.split(",") if x.strip()]


def build_model(args, dev):
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    c = common.LLAMA_1P3B
    kw = dict(hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
              num_attention_heads=c["num_attention_heads"], num_key_value_heads=c["num_key_value_heads"],
              intermediate_size=c["intermediate_size"], vocab_size=c["vocab_size"],
              max_position_embeddings=args.max_pos, rms_norm_eps=1e-6, tie_word_embeddings=False,
              use_cache=True)
    if args.tiny:
        kw.update(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=512, vocab_size=512)
    try:
        cfg = LlamaConfig(attn_implementation="sdpa", **kw)
    except TypeError:
        cfg = LlamaConfig(**kw)
    try:
        cfg._attn_implementation = "sdpa"
    except Exception:
        pass
    torch.manual_seed(args.seed)
    if dev.type == "cuda":
        torch.cuda.manual_seed(args.seed)
    try:
        with torch.device(dev):
            model = LlamaForCausalLM(cfg)
    except (AttributeError, TypeError):  # torch < 2.0: no device context manager
        model = LlamaForCausalLM(cfg).to(dev)
    model = model.to(dtype=torch.bfloat16).eval()
    # never time on zeros or garbage: re-draw any matrix that came out
    # constant, non-finite or far from the N(0, 0.02) init (should the
    # library have skipped initialisation)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                pf = p.float()
                if not bool(torch.isfinite(pf).all()) or float(pf.std()) == 0.0 or float(pf.abs().max()) > 1.0:
                    p.normal_(0.0, 0.02)
    impl = getattr(model.config, "_attn_implementation", "?")
    return model, cfg, transformers.__version__, impl


class Stepper:
    """model(...) with the cache; logits of the last position only.  Uses
    logits_to_keep=1 (transformers >= 4.45), else num_logits_to_keep, else
    the full logits (noted)."""

    def __init__(self, model):
        self.model = model
        self.kw = None

    def __call__(self, ids, cache):
        if self.kw is None:
            for kw in ({"logits_to_keep": 1}, {"num_logits_to_keep": 1}, {}):
                try:
                    out = self.model(input_ids=ids, past_key_values=cache, use_cache=True, **kw)
                    self.kw = kw
                    return out.logits[:, -1]
                except TypeError:
                    continue
            raise RuntimeError("model(...) accepts none of the logits_to_keep forms")
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True, **self.kw)
        return out.logits[:, -1]


def new_cache():
    from transformers import DynamicCache
    return DynamicCache()


def fill_cache_random(model, cache, batch, ctx, dev, seed):
    """DynamicCache holding ctx tokens of random keys and values per layer."""
    cfg = model.config
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    for layer in range(cfg.num_hidden_layers):
        k = torch.randn(batch, cfg.num_key_value_heads, ctx, hd, generator=gen, device=dev).to(torch.bfloat16)
        v = torch.randn(batch, cfg.num_key_value_heads, ctx, hd, generator=gen, device=dev).to(torch.bfloat16)
        cache.update(k, v, layer)
    if cache.get_seq_length() != ctx:
        raise RuntimeError("random fill: cache reports %d tokens, wanted %d" % (cache.get_seq_length(), ctx))


def prefill_cache(step, cache, batch, ctx, dev, vocab, seed, chunk):
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, ctx), generator=gen, device=dev)
    logits = None
    for a in range(0, ctx, chunk):
        logits = step(ids[:, a:a + chunk], cache)
    return logits


def kv_bytes(cfg, batch, ctx):
    hd = cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * hd * 2 * batch * ctx


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model (dry run of the code path)")
    ap.add_argument("--batches", default="1,8,32,64,128,256")
    ap.add_argument("--contexts", default="1024,4096,8192,32768,131072")
    ap.add_argument("--prefill", default="1024,8192,32768")
    ap.add_argument("--steps", type=int, default=12, help="timed decode steps per configuration")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--prefill-repeats", type=int, default=2)
    ap.add_argument("--prefill-cache-max", type=int, default=65536,
                    help="build a decode cache by prefill up to batch*context tokens, else random fill")
    ap.add_argument("--chunk", type=int, default=8192, help="prefill chunk when building decode caches")
    ap.add_argument("--max-pos", type=int, default=262144)
    ap.add_argument("--budget", type=float, default=170.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="")
    ap.add_argument("--no-ceilings", action="store_true")
    args = ap.parse_args()

    budget = common.Budget(args.budget)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        common.log(PROG, "no CUDA device visible to torch %s: nothing timed" % torch.__version__)
        return 77
    res = common.Results(args.json, baseline="llama_hf", **common.device_info(torch, dev))
    start, stop = common.timer(torch, dev)
    budget.arm()

    if not args.no_ceilings:
        try:
            t0 = time.time()
            ceil = common.measure_ceilings(torch, dev, copy_bytes=(2 << 30) if dev.type == "cuda" else (64 << 20),
                                           gemm_n=8192 if dev.type == "cuda" else 512)
            res.set("ceilings", ceil)
            common.log(PROG, "ceilings: copy %.0f GB/s (read+write, %.1f GB), bf16 GEMM %d^3 %.1f TFLOP/s (%.1f s)"
                       % (ceil["bandwidth_GBps"], ceil["copy_bytes"] / 1e9, ceil["gemm_n"], ceil["gemm_TFLOPs"],
                          time.time() - t0))
        except Exception as e:
            res.add("errors", {"phase": "ceilings", "error": repr(e)[:500]})
            common.log(PROG, "ceilings FAILED: %r" % e)

    try:
        t0 = time.time()
        model, cfg, tv, impl = build_model(args, dev)
    except ImportError as e:
        res.add("errors", {"phase": "import transformers", "error": repr(e)[:500]})
        common.log(PROG, "cannot import transformers (LlamaForCausalLM): %s" % e)
        return 2
    except Exception as e:
        res.add("errors", {"phase": "build model", "error": repr(e)[:500]})
        common.log(PROG, "building LlamaForCausalLM failed: %r" % e)
        return 1
    if dev.type == "cuda":
        torch.cuda.synchronize()
    nparams = sum(p.numel() for p in model.parameters())
    res.set("transformers", tv)
    res.set("attn_implementation", impl)
    res.set("params", nparams)
    res.set("kv_bytes_per_token", kv_bytes(cfg, 1, 1))
    common.log(PROG, "LlamaForCausalLM %.3g parameters, bf16, attn %s, transformers %s, torch %s (%.1f s)"
               % (nparams, impl, tv, torch.__version__, time.time() - t0))
    if impl != "sdpa":
        common.log(PROG, "warning: attention implementation is %r, not sdpa" % impl)
    step = Stepper(model)
    V = cfg.vocab_size

    pre = parse_list(args.prefill)
    dec = [(b, c) for c in parse_list(args.contexts) for b in parse_list(args.batches)]
    first = [(1, 1024), (8, 1024), (64, 4096), (1, 131072), (1, 8192), (1, 32768)]
    plan = [("prefill", 1, T) for T in pre if T <= 8192]
    plan += [("decode", b, c) for b, c in first if (b, c) in dec]
    plan += [("prefill", 1, T) for T in pre if T > 8192]
    plan += [("decode", b, c) for b, c in sorted(dec, key=lambda bc: (bc[0] * bc[1], bc[1])) if (b, c) not in first]

    est_step = {}
    with torch.inference_mode():
        # warm-up: a short prompt and a few steps
        try:
            cache = new_cache()
            prefill_cache(step, cache, 1, 128, dev, V, 1, 128)
            tok = torch.zeros(1, 1, dtype=torch.long, device=dev) + 7
            for _ in range(3):
                tok = step(tok, cache).argmax(-1, keepdim=True)
            del cache
        except Exception as e:
            res.add("errors", {"phase": "warm-up", "error": repr(e)[:500]})
            common.log(PROG, "warm-up failed: %r" % e)
            return 1
        for kind, b, n in plan:
            name = "%s batch %d %s %s" % (kind, b, "prompt" if kind == "prefill" else "ctx", common.fmt_ctx(n))
            if kind == "decode":
                need = kv_bytes(cfg, b, n + args.steps + args.warmup) * 2.2 + (1 << 30)
                byprefill = b * n <= args.prefill_cache_max
                if byprefill:
                    need += b * min(n, args.chunk) * (cfg.intermediate_size * 8 + 16 * cfg.hidden_size)
                est = (args.steps + args.warmup) * est_step.get(b, 0.08) * (1 + n / 32768.0) + \
                    (b * n * 2e-5 if byprefill else 0.5) + 1.0
            else:
                need = n * (cfg.intermediate_size * 8 + 16 * cfg.hidden_size) + kv_bytes(cfg, 1, n) + (1 << 30)
                runs = args.prefill_repeats + 1 if n <= 8192 else 2
                est = runs * n * 3e-5 * (1 + n / 16384.0) + 1.0
            if need > 0.85 * common.free_bytes(torch, dev):
                res.add("skipped", {"kind": kind, "batch": b, "n": n, "why": "memory (%.1f GB needed)" % (need / 1e9)})
                common.log(PROG, "%-32s skipped: memory (needs ~%.1f GB)" % (name, need / 1e9))
                continue
            if not budget.allows(est):
                res.add("skipped", {"kind": kind, "batch": b, "n": n,
                                    "why": "time budget (est %.0f s, %.0f s left)" % (est, budget.left())})
                common.log(PROG, "%-32s skipped: time budget (est %.0f s, %.0f s left)" % (name, est, budget.left()))
                continue
            t0 = time.time()
            cache = None
            try:
                if kind == "prefill":
                    gen = torch.Generator(device=dev)
                    gen.manual_seed(11)
                    ids = torch.randint(0, V, (1, n), generator=gen, device=dev)
                    ts = []
                    for _ in range(runs):
                        cache = new_cache()
                        ev = start()
                        step(ids, cache)
                        ts.append(stop(ev))
                        cache = None
                    ms = common.median(ts[1:]) if len(ts) > 1 else ts[0]
                    res.add("prefill", {"batch": 1, "T": n, "ms": ms, "ms_all": ts, "tokens_per_s": n / (ms * 1e-3)})
                    common.log(PROG, "%-32s %9.3f ms  (%.0f tokens/s; %.1f s)" % (name, ms, n / (ms * 1e-3), time.time() - t0))
                    continue
                how = "prefill"
                cache = new_cache()
                if byprefill:
                    prefill_cache(step, cache, b, n, dev, V, 13, args.chunk)
                else:
                    try:
                        fill_cache_random(model, cache, b, n, dev, 13)
                        how = "random"
                    except Exception as e:
                        common.log(PROG, "%s: random fill of DynamicCache failed (%r); prefilling instead" % (name, e))
                        cache = new_cache()
                        prefill_cache(step, cache, b, n, dev, V, 13, args.chunk)
                gen = torch.Generator(device=dev)
                gen.manual_seed(17)
                tok = torch.randint(0, V, (b, 1), generator=gen, device=dev)
                for _ in range(args.warmup):
                    tok = step(tok, cache).argmax(-1, keepdim=True)
                ts = []
                for _ in range(args.steps):
                    ev = start()
                    tok = step(tok, cache).argmax(-1, keepdim=True)
                    ts.append(stop(ev))
                ms = common.median(ts)
                est_step[b] = max(est_step.get(b, 0), ms * 1e-3)
                res.add("decode", {"batch": b, "ctx": n, "ms": ms, "ms_all": ts, "cache": how,
                                   "tokens_per_s": b / (ms * 1e-3)})
                common.log(PROG, "%-32s %9.3f ms/step  (%.0f tokens/s; cache by %s; %.1f s)"
                           % (name, ms, b / (ms * 1e-3), how, time.time() - t0))
            except Exception as e:
                res.add("errors", {"kind": kind, "batch": b, "n": n, "error": repr(e)[:500]})
                common.log(PROG, "%-32s FAILED: %r" % (name, e))
            finally:
                cache = None
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
    budget.disarm()
    res.set("wall_s", budget.elapsed())
    common.log(PROG, "done in %.1f s" % budget.elapsed())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except Exception as e:
        import traceback
        traceback.print_exc()
        print("%s: error: %r" % (PROG, e), flush=True)
        sys.exit(1)
