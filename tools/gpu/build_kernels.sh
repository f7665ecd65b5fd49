#!/bin/sh
# tools/gpu/build_kernels.sh - builds the CUDA kernel tests and the kernel
# benchmark on a machine with nvcc (no GPU needed) and stages what the GPU
# machine runs into .devlibs/gpu-bin (git-ignored):
#   test_{gemv,rmsnorm,silu_mul,topn}_cuda, asa-kernel-bench,
#   libcmocka.so.0 (the GPU image has no cmocka), resource-usage.txt
#   (ptxas registers / shared memory / spills of every kernel).
# Then run tools/gpu/run_kernels.sh on the GPU machine with
# .devlibs/gpu-bin carried.
set -eu
cd "$(dirname "$0")/../.."
B=.devlibs/build-cuda
D=.devlibs/gpu-bin
TARGETS="test_gemv_cuda test_rmsnorm_cuda test_silu_mul_cuda test_topn_cuda asa-kernel-bench"

cmake -S . -B "$B" -G Ninja -DASA_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DASA_CUDA_RESOURCE_USAGE=ON >/dev/null
# Rebuild the kernel objects so that ptxas prints their resource usage.
touch kernels/cuda/*.cu
cmake --build "$B" --target $TARGETS 2>&1 | tee "$B/build.log" | grep -E "error|warning" || true

rm -rf "$D"
mkdir -p "$D"
for t in test_gemv_cuda test_rmsnorm_cuda test_silu_mul_cuda test_topn_cuda; do
  cp "$B/tests/kernels/$t" "$D/"
done
cp "$B/kernels/cuda/asa-kernel-bench" "$D/"
cmocka=$(ldd "$D/test_gemv_cuda" | awk '/libcmocka/ {print $3}')
cp -L "$cmocka" "$D/libcmocka.so.0"
# "Compiling entry function 'X' for 'sm_90a'" + usage lines -> one line each.
awk '/Compiling entry function/ {name=$7; gsub(/\047/, "", name)}
     /stack frame/ {frame=$0; sub(/.*: +/, "", frame)}
     /Used [0-9]+ registers/ {u=$0; sub(/.*: +/, "", u); print name ": " u "; " frame}' \
  "$B/build.log" | sort -u | c++filt | sed 's/(anonymous namespace):://' > "$D/resource-usage.txt"
du -sh "$D"
