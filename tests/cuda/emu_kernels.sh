#!/bin/bash
# tests/cuda/emu_kernels.sh - runs test_cuda_kernels on the CPU against the
# kernels themselves (not the host references that emulate.sh substitutes):
# kernels/cuda/{attn_latent,attn_mma,cb_ops,rope_cache,gemv,silu_mul,sample}.cu are compiled as C++20
# against the shim in tests/cuda/emu/ (one std::thread per CUDA thread,
# blocks one after another; tools/gpu/emu extended with grid z and the
# built-ins these kernels use), under AddressSanitizer and UBSan.  Checks
# indexing, barriers, shuffles and reductions; nothing about timing or the
# memory model.  The sampling test compares sample.cu with engine/sample.c
# (compiled here too); ASA_EMU=1 tells the test to use fewer rows.  A few
# minutes.
#
# Usage: tests/cuda/emu_kernels.sh   (from anywhere; work files in
# $ASA_EMU_DIR, default /tmp/asa-emu-cuda)
set -eu
R=$(cd "$(dirname "$0")/../.." && pwd)
E=$R/tests/cuda/emu
W=${ASA_EMU_DIR:-/tmp/asa-emu-cuda}
mkdir -p "$W"
SAN="-fsanitize=address,undefined"
CXX="g++ -std=c++20 -O1 -g $SAN -I$E -I$R/kernels/cuda -I$R/common -I$R/engine -Wno-unknown-pragmas"
CC="gcc -std=c11 -O1 -g $SAN -I$E -I$R/kernels/cuda -I$R/common -I$R/engine -I$R/kvcache"
objs=()
for f in attn_latent attn_mma cb_ops rope_cache gemv silu_mul sample; do
    # one-line launches become emu_launch; dynamic shared arrays static ones
    sed -E 's/^(\s*)(.*)<<<(.*)>>>\((.*)\);/\1emu_launch([\&]() { \2(\4); }, \3);/;
            s/extern __shared__ float (\w+)\[\];/alignas(16) static float \1[65536];/;
            s/cudaFuncSetAttribute\((\w+),/cudaFuncSetAttribute((const void *)0,/' \
        "$R/kernels/cuda/$f.cu" > "$W/$f.cpp"
    $CXX -c "$W/$f.cpp" -o "$W/$f.o"
    objs+=("$W/$f.o")
done
$CXX -c "$E/emu.cpp" -o "$W/emu.o"
$CC -c "$R/common/asa.c" -o "$W/asa.o"
$CC -c "$R/tests/cuda/test_cuda_kernels.c" -o "$W/t.o"
$CC -c "$R/engine/sample.c" -o "$W/smp.o"
g++ $SAN "$W/t.o" "$W/smp.o" "${objs[@]}" "$W/emu.o" "$W/asa.o" -o "$W/test_cuda_kernels" -lcmocka -lm \
    -lpthread
$CC -c "$R/tests/cuda/test_cuda_attn_mma.c" -o "$W/tm.o"
g++ $SAN "$W/tm.o" "${objs[@]}" "$W/emu.o" "$W/asa.o" -o "$W/test_cuda_attn_mma" -lcmocka -lm \
    -lpthread
# ASA_EMU_ONLY=mma: only the tensor-core attention test (the emulated MMAs
# are slow: a few minutes)
if [ "${ASA_EMU_ONLY:-}" != mma ]; then
    ASA_EMU=1 ASAN_OPTIONS=detect_leaks=0 "$W/test_cuda_kernels" "$@"
fi
ASA_EMU=1 ASAN_OPTIONS=detect_leaks=0 "$W/test_cuda_attn_mma" "$@"
