#!/usr/bin/env python3
"""Puts the benchmark's parts into one table and one JSON document.

  combine.py --work DIR [--out bench.json] [--table bench_table.txt]

Reads from DIR (what run_bench.sh writes there):
  llama.json          llama_baseline.py results (ceilings, decode, prefill)
  eager.json          asa_eager.py results (ceilings, decode, prefill)
  cuda_<mode>_<ctx>.log   bench_cuda_engine output, mode "plain" or "graphs"
                          (cuda_<mode>_<ctx>_wide.log: more batches, decode only)
  gpu.txt             nvidia-smi name line (optional)
Floors use the ceilings measured in the same run (the higher bandwidth and
GEMM rate of the two processes, so the floor is the lower, conservative
one): decode = max(weights + KV bytes read / bandwidth, FLOPs / GEMM rate),
prefill = FLOPs / GEMM rate (formulas in common.py).  Only the standard
library is used.
"""
import argparse
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def parse_cuda_logs(work):
    """{"decode": {(b, ctx): {"ms", "mode"}}, "prefill": {T: {...}}, "kv": x,
    "runs": [...]} from bench_cuda_engine logs; the faster mode wins."""
    out = {"decode": {}, "prefill": {}, "kv_bytes_per_token": None, "runs": []}
    for path in sorted(glob.glob(os.path.join(work, "cuda_*_*.log"))):
        m = re.match(r"cuda_([a-z0-9]+)_(\d+)(_wide)?\.log$", os.path.basename(path))
        if not m:
            continue
        # "_wide": a second run of a context for more batches; its prefill
        # is not a second sample of the prefill figure
        mode, ctx, wide = m.group(1), int(m.group(2)), m.group(3) is not None
        try:
            text = open(path, errors="replace").read()
        except OSError:
            continue
        run = {"mode": mode, "ctx": ctx, "log": os.path.basename(path), "decode": [], "prefill_ms": None,
               "cache": None}
        for line in text.splitlines():
            f = re.match(r"^cache: (\w+)", line)
            if f:
                run["cache"] = f.group(1)  # "prefill" or "random" (pages of a shorter prefill)
            d = re.match(r"^decode batch (\d+) ctx (\d+)\s+([0-9.]+) ms", line)
            if d:
                b, c, ms = int(d.group(1)), int(d.group(2)), float(d.group(3))
                run["decode"].append({"batch": b, "ctx": c, "ms": ms})
                cur = out["decode"].get((b, c))
                if cur is None or ms < cur["ms"]:
                    out["decode"][(b, c)] = {"ms": ms, "mode": mode, "cache": run["cache"]}
            p = re.match(r"^prefill \(one step\)\s+([0-9.]+) ms", line)
            if p and not wide:
                ms = float(p.group(1))
                run["prefill_ms"] = ms
                cur = out["prefill"].get(ctx)
                if cur is None or ms < cur["ms"]:
                    out["prefill"][ctx] = {"ms": ms, "mode": mode}
            k = re.match(r"^kv bytes: ([0-9.]+) per token", line)
            if k:
                out["kv_bytes_per_token"] = float(k.group(1))
        run["status"] = "ok" if run["decode"] or run["prefill_ms"] else "no timing lines (see log)"
        out["runs"].append(run)
    return out


def rows_by(doc, key, keyf):
    res = {}
    if doc:
        for r in doc.get(key, []):
            res[keyf(r)] = r
    return res


def fmt(x, nd=3):
    if x is None:
        return "-"
    if x >= 1000:
        return "%.0f" % x
    if x >= 100:
        return "%.1f" % x
    return ("%." + str(nd) + "f") % x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", default="")
    ap.add_argument("--table", default="")
    ap.add_argument("--notes", default="", help="a text file of notes from run_bench.sh")
    args = ap.parse_args()

    llama = load(os.path.join(args.work, "llama.json"))
    eager = load(os.path.join(args.work, "eager.json"))
    cuda = parse_cuda_logs(args.work)
    gpu = ""
    try:
        gpu = open(os.path.join(args.work, "gpu.txt")).read().strip().splitlines()[0]
    except (OSError, IndexError):
        pass
    for d in (eager, llama):
        if not gpu and d and d.get("gpu"):
            gpu = d["gpu"]

    ceils = [d["ceilings"] for d in (llama, eager) if d and d.get("ceilings")]
    ceil = None
    if ceils:
        ceil = {"bandwidth_GBps": max(c["bandwidth_GBps"] for c in ceils),
                "gemm_TFLOPs": max(c["gemm_TFLOPs"] for c in ceils)}

    e_dec = rows_by(eager, "decode", lambda r: (r["batch"], r["ctx"]))
    l_dec = rows_by(llama, "decode", lambda r: (r["batch"], r["ctx"]))
    e_pre = rows_by(eager, "prefill", lambda r: r["T"])
    l_pre = rows_by(llama, "prefill", lambda r: r["T"])
    dec_keys = sorted(set(e_dec) | set(l_dec) | set(cuda["decode"]), key=lambda k: (k[1], k[0]))
    pre_keys = sorted(set(e_pre) | set(l_pre) | set(cuda["prefill"]))

    table = []
    rows_json = []
    hdr = "%-24s %10s %10s %6s %10s %10s %8s" % ("configuration", "ASA CUDA", "floor", "x flr",
                                                  "ASA eager", "Llama HF", "eagr/CU")
    table.append(hdr)
    table.append("-" * len(hdr))

    def add(name, cu, fl, bound, ea, ll, extra):
        ratio = (cu / fl) if (cu and fl) else None
        speed = (ea / cu) if (cu and ea) else None
        table.append("%-24s %10s %10s %6s %10s %10s %8s" % (
            name, fmt(cu), fmt(fl) + (bound[:1] if fl else ""), fmt(ratio, 2), fmt(ea), fmt(ll), fmt(speed, 1)))
        row = {"config": name, "asa_cuda_ms": cu, "floor_ms": fl, "floor_bound": bound,
               "cuda_over_floor": ratio, "asa_eager_ms": ea, "llama_hf_ms": ll, "eager_over_cuda": speed}
        row.update(extra)
        rows_json.append(row)

    for b, c in dec_keys:
        fl = bound = None
        if ceil:
            nbytes, flops = common.asa_decode_cost(c, b)
            fl, bound = common.floor_ms(nbytes, flops, ceil)
        cu = cuda["decode"].get((b, c))
        add("decode b=%d ctx=%s" % (b, common.fmt_ctx(c)), cu and cu["ms"], fl, bound or "",
            e_dec.get((b, c), {}).get("ms"), l_dec.get((b, c), {}).get("ms"),
            {"kind": "decode", "batch": b, "ctx": c, "cuda_mode": cu and cu["mode"], "cuda_cache": cu and cu.get("cache"),
             "llama_cache": l_dec.get((b, c), {}).get("cache")})
    for T in pre_keys:
        fl = bound = None
        if ceil:
            fl = common.asa_prefill_flops(T) / (ceil["gemm_TFLOPs"] * 1e12) * 1e3
            bound = "flops"
        cu = cuda["prefill"].get(T)
        add("prefill %s" % common.fmt_ctx(T), cu and cu["ms"], fl, bound or "",
            e_pre.get(T, {}).get("ms"), l_pre.get(T, {}).get("ms"),
            {"kind": "prefill", "T": T, "cuda_mode": cu and cu["mode"]})
    kv_floor = common.asa_kv_bytes_per_token()
    table.append("%-24s %10s %10s %6s %10s %10s" % (
        "KV bytes/token", fmt(cuda["kv_bytes_per_token"], 0), "%.0f" % kv_floor, "",
        fmt(eager.get("kv_bytes_per_token_measured") if eager else None, 0),
        fmt(llama.get("kv_bytes_per_token") if llama else None, 0)))

    # the targets, where the numbers exist
    targets = []

    def val(key, col):
        for r in rows_json:
            if r["config"] == key:
                return r.get(col)
        return None
    r = val("decode b=1 ctx=1k", "cuda_over_floor")
    targets.append(("batch 1 ctx 1k: step <= 1.25x floor", r, r is not None and r <= 1.25, "%.2fx" % r if r else "-"))
    cu, fl = val("decode b=64 ctx=4k", "asa_cuda_ms"), val("decode b=64 ctx=4k", "floor_ms")
    frac = (fl / cu) if (cu and fl) else None
    targets.append(("batch 64 ctx 4k: >= 60% of floor tokens/s", frac, frac is not None and frac >= 0.6,
                    "%.0f%%" % (100 * frac) if frac else "-"))
    a, b_ = val("decode b=1 ctx=128k", "asa_cuda_ms"), val("decode b=1 ctx=1k", "asa_cuda_ms")
    g = (a / b_) if (a and b_) else None
    targets.append(("ctx 128k b=1 <= 1.3x ctx 1k", g, g is not None and g <= 1.3, "%.2fx" % g if g else "-"))
    cu, fl = val("prefill 8k", "asa_cuda_ms"), val("prefill 8k", "floor_ms")
    frac = (fl / cu) if (cu and fl) else None
    targets.append(("prefill 8k >= 50% of FLOP floor", frac, frac is not None and frac >= 0.5,
                    "%.0f%%" % (100 * frac) if frac else "-"))
    cu, ll = val("prefill 32k", "asa_cuda_ms"), val("prefill 32k", "llama_hf_ms")
    ok = (cu is not None and ll is not None and cu < ll)
    targets.append(("prefill 32k faster than Llama HF", cu, ok,
                    "%s vs %s ms" % (fmt(cu), fmt(ll)) if (cu or ll) else "-"))
    s = val("decode b=1 ctx=1k", "eager_over_cuda")
    targets.append((">= 10x eager ASA at batch 1 (ctx 1k)", s, s is not None and s >= 10, "%.1fx" % s if s else "-"))

    lines = []
    lines.append("== asa-1.3b benchmark, random bf16 weights; card: %s ==" % (gpu or "?"))
    if ceil:
        lines.append("ceilings (this run): copy %.0f GB/s (read+write), bf16 GEMM %.1f TFLOP/s; "
                     "floor = max(weights %.0f MB + KV read) / bandwidth, FLOPs / GEMM) [b]ytes/[f]lops"
                     % (ceil["bandwidth_GBps"], ceil["gemm_TFLOPs"], common.asa_weight_bytes() / 1e6))
    else:
        lines.append("ceilings: not measured (no floors)")
    lines.append("times in ms (decode: per step; prefill: whole prompt, batch 1); x flr = CUDA / floor; "
                 "eagr/CU = eager / CUDA")
    lines += table
    lines.append("-- targets (issue 6) --")
    for name, v, ok, shown in targets:
        lines.append("  %-42s %-18s %s" % (name, shown, "n/a" if v is None else ("MET" if ok else "NOT MET")))
    srcs = []
    for nm, d in (("llama", llama), ("eager", eager)):
        if d is None:
            srcs.append("%s: no results" % nm)
        else:
            srcs.append("%s: %d decode, %d prefill, %d skipped, %d errors" % (
                nm, len(d.get("decode", [])), len(d.get("prefill", [])), len(d.get("skipped", [])),
                len(d.get("errors", []))))
    srcs.append("cuda: %d runs (%s)" % (len(cuda["runs"]), ", ".join(
        "%s/%s %s%s" % (r["mode"], common.fmt_ctx(r["ctx"]), r["status"],
                        ", cache %s" % r["cache"] if r.get("cache") else "")
        for r in cuda["runs"]) or "none"))
    lines.append("sources: " + "; ".join(srcs))
    if args.notes and os.path.exists(args.notes):
        for ln in open(args.notes).read().splitlines():
            lines.append("note: " + ln)
    text = "\n".join(lines)
    print(text)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")
    if args.out:
        doc = {"gpu": gpu, "ceilings_used": ceil, "rows": rows_json,
               "targets": [{"target": n, "value": v, "met": ok if v is not None else None}
                           for n, v, ok, _ in targets],
               "kv_bytes_per_token": {"asa_spec": kv_floor, "asa_cuda": cuda["kv_bytes_per_token"],
                                      "asa_eager": eager.get("kv_bytes_per_token_measured") if eager else None,
                                      "llama_hf": llama.get("kv_bytes_per_token") if llama else None},
               "llama": llama, "eager": eager,
               "cuda": {"runs": cuda["runs"], "kv_bytes_per_token": cuda["kv_bytes_per_token"]}}
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
