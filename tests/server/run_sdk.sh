#!/bin/sh
# Runs the OpenAI Node SDK tests: run_sdk.sh NODE ASA_SERVE MODEL_DIR
# Exits 77 (skipped) when the SDK is not installed (cd tests/server/sdk && npm ci).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -d "$here/sdk/node_modules/openai" ]; then
  echo "OpenAI SDK not installed (cd tests/server/sdk && npm ci): skipped"
  exit 77
fi
ASA_SERVE="$2" ASA_TEST_MODEL="$3" exec "$1" --test "$here/sdk/test_sdk.mjs"
