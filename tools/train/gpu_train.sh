#!/bin/bash
# The whole asa-tiny training run, in one command on the GPU machine:
#   bash tools/train/gpu_train.sh [extra train.py flags]
# from the repository root, with tools/train/corpus/ (made by corpus.sh on the
# build machine, git-ignored) carried along.  Trains the tokenizer, tokenizes,
# trains ASA and the full-attention baseline on the same batches, evaluates,
# exports; writes into $OUT (at most 6 files, each < 16 MiB) and prints a
# summary table last.  Wall time: about BUDGET seconds (default 500) plus
# python start-up.  Install the result here with install_model.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?OUT must name the output folder}"
CORPUS=${CORPUS:-tools/train/corpus}
BUDGET=${BUDGET:-500}
PY=${PYTHON:-python3}
if [ ! -f "$CORPUS/train.txt.xz" ]; then
  echo "gpu_train.sh: no $CORPUS/train.txt.xz: run tools/train/corpus.sh and carry tools/train/corpus" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PY" tools/train/train.py --corpus "$CORPUS" --out "$OUT" --time-budget "$BUDGET" "$@"
ls -l "$OUT"
"$PY" -c 'import json, sys; sys.path.insert(0, "tools/train"); import card
print(card.summary_table(json.load(open(sys.argv[1]))))' "$OUT/metrics.json"
