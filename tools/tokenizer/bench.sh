#!/bin/sh
# Encode throughput (MB/s of UTF-8 input, 1 MB = 1e6 bytes, single thread) of
# asa-tokenize against Hugging Face tokenizers 0.23.2 (the Rust library via its
# Node binding) and its JavaScript port, on the same machine in the same run.
# Text: Moby Dick (1.2 MB, tests/tokenizer/data/moby-dick.txt.gz).  Modes:
# whole = the file as one encode call; lines = one call per line.
# Usage: tools/tokenizer/bench.sh BUILD_DIR [REPEAT]
# Needs: cd tests/tokenizer && npm install --no-save --no-package-lock tokenizers@0.23.2 @huggingface/tokenizers@0.2.0
# Prints one JSON line per measurement, then a Markdown table.
set -eu
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="$1"; R="${2:-3}"
DATA="$BUILD/tests/tokenizer/data"
TEXT="$DATA/moby-dick.txt"
BENCH="$BUILD/tokenizer/asa-tokenize-bench"
JSTIMEOUT="${JSTIMEOUT:-300}"
export TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 RAYON_RS_NUM_CPUS=1
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT
for v in gpt2 mistral; do
  for m in whole lines; do
    "$BENCH" --tokenizer "$DATA/$v/tokenizer.json" --text "$TEXT" --mode "$m" --repeat "$R" | tee -a "$OUT"
    if [ -d "$ROOT/tests/tokenizer/node_modules/tokenizers" ]; then
      timeout "$JSTIMEOUT" node "$ROOT/tests/tokenizer/bench_rust.mjs" "$v" "$TEXT" "$m" "$R" | tee -a "$OUT" ||
        echo "{\"impl\": \"rust\", \"tokenizer\": \"$v\", \"mode\": \"$m\", \"mb_per_s\": \"timeout\"}" | tee -a "$OUT"
    fi
    if [ -d "$ROOT/tests/tokenizer/node_modules/@huggingface/tokenizers" ]; then
      timeout "$JSTIMEOUT" node "$ROOT/tests/tokenizer/bench_js.mjs" "$v" "$TEXT" "$m" 1 | tee -a "$OUT" ||
        echo "{\"impl\": \"js\", \"tokenizer\": \"$v\", \"mode\": \"$m\", \"mb_per_s\": \"timeout\"}" | tee -a "$OUT"
    fi
  done
done
python3 - "$OUT" <<'PY'
import json, sys, os
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("\n| vocabulary | mode | implementation | tokens | MB/s cold (1st pass) | MB/s warm (mean) | MB/s warm (best) |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    tok = os.path.basename(os.path.dirname(r["tokenizer"])) or r["tokenizer"]
    print(f"| {tok} | {r['mode']} | {r['impl']} | {r.get('tokens', '')} | {r.get('cold_mb_per_s', '')} | {r['mb_per_s']} | {r.get('best_mb_per_s', '')} |")
PY
