#!/bin/sh
# Builds asa-serve and runs the whole test suite, then the CPU tests again
# under AddressSanitizer + UndefinedBehaviorSanitizer.
# Usage: tools/test.sh            (from anywhere; builds into build/ and build-asan/)
set -eu
cd "$(dirname "$0")/.."
JOBS=$(nproc 2>/dev/null || echo 2)

# The OpenAI Node SDK for the end-to-end tests (version pinned in
# tests/server/sdk/package.json and package-lock.json).
if command -v npm >/dev/null 2>&1; then
  (cd tests/server/sdk && npm ci --no-audit --no-fund --loglevel=error)
  # Hugging Face tokenizers' own Node binding (the Rust library) for the live
  # tokenizer parity check; without it that test is reported as skipped.
  (cd tests/tokenizer && npm install --no-save --no-package-lock --no-audit --no-fund \
     --loglevel=error tokenizers@0.23.2 @huggingface/tokenizers@0.2.0) ||
    echo "tools/test.sh: tokenizers npm packages not installed; test_tok_js_live will be skipped"
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j "$JOBS"
ASA_FUZZ_SECONDS=30 ctest --test-dir build --output-on-failure -j "$JOBS"

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DASA_SANITIZE=ON -DASA_CUDA=OFF
cmake --build build-asan -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$JOBS" -L cpu -LE slow
