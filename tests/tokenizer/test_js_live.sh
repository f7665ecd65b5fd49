#!/bin/sh
# Compares the committed expected_ids.json with Hugging Face tokenizers
# 0.23.2 run live (its Node binding of the Rust library), when installed:
#   cd tests/tokenizer && npm install --no-save --no-package-lock tokenizers@0.23.2 @huggingface/tokenizers@0.2.0
# Skips (77) otherwise.
set -u
DIR="$ASA_SOURCE_DIR/tests/tokenizer"
command -v node >/dev/null 2>&1 || { echo "node not installed: skipped"; exit 77; }
[ -d "$DIR/node_modules/tokenizers" ] || { echo "npm tokenizers@0.23.2 not installed: skipped"; exit 77; }
node "$DIR/gen_expected.mjs" --check
