#!/bin/sh
# Parity of the C tokenizer with Hugging Face tokenizers 0.23.2 (the Rust
# library through its Node binding) on COUNT random texts.
# Usage: tools/tokenizer/fuzz_parity.sh BUILD_DIR [COUNT] [SEED]
# Needs: cd tests/tokenizer && npm install --no-save --no-package-lock tokenizers@0.23.2 @huggingface/tokenizers@0.2.0
set -eu
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="$1"; COUNT="${2:-1000}"; SEED="${3:-1}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
node "$ROOT/tests/tokenizer/fuzz_expected.mjs" "$OUT" "$COUNT" "$SEED"
TOK_PARITY_TEXTS="$OUT/texts.json" TOK_PARITY_EXPECTED="$OUT/expected.json" \
  "$BUILD/tests/tokenizer/test_tok_parity"
