#!/usr/bin/env python3
"""Parity and encode throughput of asa-serve's tokenizer against Hugging Face
`tokenizers` (Python, the Rust library), meant for a machine that has the
Python package (e.g. the GPU machine: tokenizers 0.23.2) and no network.

1. Encodes every text of tests/tokenizer/texts.json with both committed
   vocabularies (GPT-2, Mistral-7B) and the layout variants of
   tests/tokenizer/variants.json, add_special_tokens on and off, decodes
   with and without skip_special_tokens, compares with the committed
   tests/tokenizer/expected_ids.json and writes the ids to OUT/hf_ids.json.
2. Times single-threaded encode (first pass on a fresh tokenizer = cold word
   cache, then warm passes) (TOKENIZERS_PARALLELISM=false,
   RAYON_NUM_THREADS=1) of the Rust library on Moby Dick (1.2 MB): "whole" =
   one encode() call, "lines" = one encode_batch() over the lines; and runs
   asa-tokenize-bench (built elsewhere, carried here) on the same files in the
   same run.  Results: OUT/tok_bench.json and a Markdown table on stdout.

Usage: python3 tools/tokenizer/hf_parity.py [--bench PATH/asa-tokenize-bench]
       [--out DIR (default $OUT or .)] [--repeat N]
Exit status: 0 when every id and decode matches, 1 otherwise.
"""
import argparse, gzip, json, os, platform, subprocess, sys, tempfile, time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["RAYON_RS_NUM_CPUS"] = "1"
import tokenizers  # noqa: E402  (after the environment is set)
from tokenizers import Tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TDIR = os.path.join(ROOT, "tests", "tokenizer")
VOCABS = ["gpt2", "mistral"]


def unpack(tmp):
    """Decompresses the vocabularies and the benchmark text into tmp."""
    paths = {}
    for v in VOCABS:
        os.makedirs(os.path.join(tmp, v), exist_ok=True)
        p = os.path.join(tmp, v, "tokenizer.json")
        with gzip.open(os.path.join(TDIR, "data", v, "tokenizer.json.gz"), "rb") as f, open(p, "wb") as g:
            g.write(f.read())
        paths[v] = p
    text = os.path.join(tmp, "moby-dick.txt")
    with gzip.open(os.path.join(TDIR, "data", "moby-dick.txt.gz"), "rb") as f, open(text, "wb") as g:
        g.write(f.read())
    return paths, text


def all_tokenizers(paths):
    """The two vocabularies and the layout variants of variants.json."""
    out = [(v, Tokenizer.from_file(paths[v])) for v in VOCABS]
    variants = json.load(open(os.path.join(TDIR, "variants.json"), encoding="utf-8"))
    for name, spec in variants.items():
        if name.startswith("_"):
            continue
        j = json.load(open(paths[spec["base"]], encoding="utf-8"))
        j.update(spec["set"])
        out.append((name, Tokenizer.from_str(json.dumps(j))))
    return out


def parity(paths, out):
    texts = json.load(open(os.path.join(TDIR, "texts.json"), encoding="utf-8"))
    expected = json.load(open(os.path.join(TDIR, "expected_ids.json"), encoding="utf-8"))["vocabs"]
    res = {"generator": f"tokenizers=={tokenizers.__version__} (Python)", "vocabs": {}}
    bad = 0
    toks = all_tokenizers(paths)
    for v, tok in toks:
        res["vocabs"][v] = {}
        for t in texts:
            name, text = t["name"], t["text"]
            special = tok.encode(text, add_special_tokens=True).ids
            nospecial = tok.encode(text, add_special_tokens=False).ids
            r = {"special": special, "nospecial": nospecial,
                 "decode": tok.decode(special, skip_special_tokens=False),
                 "decode_skip": tok.decode(special, skip_special_tokens=True)}
            res["vocabs"][v][name] = r
            for k in r:
                if r[k] != expected[v][name][k]:
                    bad += 1
                    print(f"MISMATCH {v}/{name} {k}: python={str(r[k])[:120]} committed={str(expected[v][name][k])[:120]}")
    with open(os.path.join(out, "hf_ids.json"), "w", encoding="utf-8") as f:
        json.dump(res, f, ensure_ascii=True)
    n = len(texts) * len(toks) * 4
    print(f"parity: {n - bad} of {n} ids/decodes match the committed expected_ids.json "
          f"(tokenizers {tokenizers.__version__})")
    return bad


def bench_hf(path, text_path, mode, repeat):
    tok = Tokenizer.from_file(path)
    data = open(text_path, "rb").read()
    text = data.decode("utf-8")
    lines = text.splitlines(keepends=True)

    def one():
        if mode == "lines":
            return sum(len(e.ids) for e in tok.encode_batch(lines))
        return len(tok.encode(text).ids)

    c0 = time.perf_counter()
    ntok = one()  # cold: fresh tokenizer, empty word cache
    cold = time.perf_counter() - c0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ntok = one()
        times.append(time.perf_counter() - t0)
    mean = sum(times) / len(times)
    return {"impl": f"tokenizers {tokenizers.__version__} (Python/Rust)", "tokenizer": path,
            "mode": mode, "bytes": len(data), "tokens": ntok, "repeat": repeat,
            "cold_mb_per_s": round(len(data) / 1e6 / cold, 2), "mean_s": round(mean, 4), "mb_per_s": round(len(data) / 1e6 / mean, 2),
            "best_mb_per_s": round(len(data) / 1e6 / min(times), 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", help="path of asa-tokenize-bench (carried from the build machine)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {platform.node()} {cpu}, {os.cpu_count()} CPUs; python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        paths, text = unpack(tmp)
        bad = parity(paths, a.out)
        rows = []
        for v in VOCABS:
            for mode in ("whole", "lines"):
                if a.bench:
                    p = subprocess.run([a.bench, "--tokenizer", paths[v], "--text", text, "--mode", mode,
                                        "--repeat", str(a.repeat)], capture_output=True, text=True)
                    if p.returncode == 0:
                        rows.append(json.loads(p.stdout))
                    else:
                        print(f"asa-tokenize-bench failed: {p.stderr.strip()}")
                rows.append(bench_hf(paths[v], text, mode, a.repeat))
                print(json.dumps(rows[-1]))
    for r in rows:
        r["tokenizer"] = os.path.basename(os.path.dirname(r["tokenizer"]))
        r["cpu"] = cpu
    with open(os.path.join(a.out, "tok_bench.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("\n| vocabulary | mode | implementation | tokens | MB/s cold (1st pass) | MB/s warm (mean) | MB/s warm (best) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tokenizer']} | {r['mode']} | {r['impl']} | {r['tokens']} | {r['cold_mb_per_s']} | {r['mb_per_s']} | {r['best_mb_per_s']} |")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
