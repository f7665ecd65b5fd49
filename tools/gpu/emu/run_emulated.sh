#!/bin/bash
# tools/gpu/emu/run_emulated.sh - runs the CUDA kernel tests on the CPU, with
# no GPU: the kernels' .cu files are compiled as C++20 against the shim
# headers here (one std::thread per CUDA thread of a block, blocks one after
# another, std::barrier for __syncthreads, a per-warp exchange for
# __shfl_xor_sync; cudaMalloc = malloc), and the unchanged tests are linked
# against them, under AddressSanitizer and UBSan.
#
# It checks indexing, barriers, shuffles and reductions; it says nothing
# about timing, the PTX paths (kernels must give a host fallback under
# !__CUDA_ARCH__ for inline asm) or the memory model.  Slow: ASA_KT_QUICK=1
# (the default here) runs the small shapes in minutes.
# Kernel launches must be on one line: `name<...><<<grid, block[, smem[,
# stream]]>>>(args);` (rewritten to emu_launch); `extern __shared__ float
# NAME[];` becomes a static array.
#
# Usage: tools/gpu/emu/run_emulated.sh [op ...]   (default: all five ops)
set -eu
R=$(cd "$(dirname "$0")/../../.." && pwd)
# The shim (cuda_runtime.h, emu.cpp) is shared with tests/cuda/emu_kernels.sh.
E=$R/tests/cuda/emu
W=${ASA_EMU_DIR:-/tmp/asa-emu}
mkdir -p "$W"
ops=${*:-gemv gemm_small gemm_ring rmsnorm silu_mul topn}
SAN="-fsanitize=address,undefined"
CXX="g++ -std=c++20 -O1 -g $SAN -I$E -I$R/kernels/cuda -I$R/common -Wno-unknown-pragmas"
CC="gcc -std=c11 -O1 -g $SAN -I$E -I$R/kernels/cuda -I$R/common -I$R/tests/kernels"
objs=()
for f in gemv gemm_small gemm_ring rmsnorm silu_mul topn; do
  sed -E 's/^(\s*)(.*)<<<(.*)>>>\((.*)\);/\1emu_launch([\&]() { \2(\4); }, \3);/;
          s/extern __shared__ float (\w+)\[\];/static float \1[65536];/' \
    "$R/kernels/cuda/$f.cu" > "$W/$f.cpp"
  $CXX -c "$W/$f.cpp" -o "$W/$f.o"
  objs+=("$W/$f.o")
done
$CXX -c "$E/emu.cpp" -o "$W/emu.o"
$CC -c "$R/tests/kernels/kt.c" -o "$W/kt.o"
$CC -c "$R/common/asa.c" -o "$W/asa.o"
rc=0
for t in $ops; do
  $CC -c "$R/tests/kernels/test_${t}_cuda.c" -o "$W/test_$t.o"
  $CXX "$W/test_$t.o" "${objs[@]}" "$W/emu.o" "$W/kt.o" "$W/asa.o" -o "$W/test_$t" \
    -lcmocka -lm -lpthread
  ASA_KT_QUICK=${ASA_KT_QUICK:-1} ASAN_OPTIONS=detect_leaks=0 "$W/test_$t" || rc=1
done
exit $rc
