#!/bin/sh
# Compares expected_ids.json with the JavaScript port run live, when it is
# installed (cd tests/tokenizer && npm install --no-save @huggingface/tokenizers@0.2.0).
# Skips (77) otherwise.
set -u
DIR="$ASA_SOURCE_DIR/tests/tokenizer"
command -v node >/dev/null 2>&1 || { echo "node not installed: skipped"; exit 77; }
[ -d "$DIR/node_modules/@huggingface/tokenizers" ] || { echo "@huggingface/tokenizers not installed: skipped"; exit 77; }
node "$DIR/gen_expected.mjs" --check
