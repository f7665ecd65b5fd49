#!/bin/sh
# Configures and builds asa-serve into build/ (the CUDA backend too when nvcc
# is found).  Usage: tools/build.sh [extra cmake arguments]
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
cmake --build build -j "$(nproc 2>/dev/null || echo 2)"
