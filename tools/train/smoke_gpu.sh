#!/bin/bash
# Quick check of the GPU pipeline (about 30-60 s): the real tokenizer trainer
# on 5% of the corpus with a 2k vocabulary, 10 steps of both models, export.
#   bash tools/train/smoke_gpu.sh
# Same carry as gpu_train.sh (tools/train/corpus).  Writes into $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?OUT must name the output folder}"
BUDGET=120 bash tools/train/gpu_train.sh --corpus-fraction 0.05 --vocab 2048 --max-steps 10 \
  --evals 2 --eval-max-windows 16 --gen-tokens 16 --reserve 30 "$@"
