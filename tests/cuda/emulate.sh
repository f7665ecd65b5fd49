#!/bin/sh
# tests/cuda/emulate.sh - runs the gpu tests of the CUDA engine with the
# CUDA runtime, cuBLAS and every kernel launcher replaced by the host
# emulation in fake_cuda.c (launchers run their host references), to check
# the backend's host side on a machine without a GPU.
#
# Usage: tests/cuda/emulate.sh BUILD_DIR
#   BUILD_DIR: a -DASA_CUDA=ON build in which test_cuda_engine,
#   test_cuda_kernels and bench_cuda_engine (and optionally test_cuda_model)
#   are built.  For a sanitizer
#   build (-DASA_SANITIZE=ON) set LDFLAGS=-fsanitize=address,undefined.
# The launchers inside the CUDA libraries are made weak (objcopy) so that
# the emulated ones win at link time.
set -eu
B=$(cd "${1:?usage: emulate.sh BUILD_DIR}" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
CUDA=${CUDA_HOME:-/usr/local/cuda}
W=$(mktemp -d)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$W"' EXIT
weak=""
for s in topn_cuda sample_cuda cb_split_bf16_cuda cb_xgather_cuda attn_latent_cuda attn_merge_cuda attn_mma_cuda select_blocks_cuda compress_cuda \
         selstore_cuda rope_cache_cuda cb_absorb_cuda cb_rope_absorb_cuda cb_expand_cuda cb_absorb_mma_cuda cb_rope_absorb_mma_cuda cb_expand_mma_cuda \
         cb_embed_cuda cb_gather_rows_cuda cb_add2_cuda cb_rmsnorm_cuda cb_rmsnorm_split_cuda \
         gemv_bf16_cuda gemm_small_cuda gemm_ring_cuda rmsnorm_cuda silu_mul_cuda \
         cudaFuncSetAttribute cudaGetErrorString cudaGetLastError; do
    weak="$weak --weaken-symbol=$s"
done
objcopy $weak "$B/engine/libasa_cuda_kernels.a" "$W/k1.a"
objcopy $weak "$B/kernels/cuda/libasa_kernels_cuda.a" "$W/k2.a"
cc -O2 -c "$SRC/tests/cuda/fake_cuda.c" -o "$W/fake.o" -I"$CUDA/include" \
    -I"$SRC/common" -I"$SRC/kernels/cuda" -I"$SRC/engine" -I"$SRC/kvcache" ${CFLAGS:-}
LIBS="$B/engine/libasa_engine.a $B/kvcache/libasa_kvcache.a $B/kernels/libasa_kernels.a
      $W/k1.a $W/k2.a $B/common/libasa_common.a -lcmocka -ljansson -lm -lpthread"
D="$B/tests/cuda/CMakeFiles"
# shellcheck disable=SC2086
c++ ${LDFLAGS:-} "$D/test_cuda_engine.dir/test_cuda_engine.c.o" \
    "$D/test_cuda_engine.dir/__/engine/eng_test_util.c.o" \
    "$D/test_cuda_engine.dir/__/engine/model_writer.c.o" "$W/fake.o" -o "$W/engine" $LIBS
# shellcheck disable=SC2086
c++ ${LDFLAGS:-} "$D/test_cuda_kernels.dir/test_cuda_kernels.c.o" "$W/fake.o" -o "$W/kernels" $LIBS
# shellcheck disable=SC2086
c++ ${LDFLAGS:-} "$D/bench_cuda_engine.dir/bench_cuda_engine.c.o" "$W/fake.o" -o "$W/bench" $LIBS
if [ -f "$D/test_cuda_model.dir/test_cuda_model.c.o" ]; then
    TOKLIBS="$B/tokenizer/libasa_tokenizer.a $(pkg-config --libs libpcre2-8) $(pkg-config --libs libutf8proc 2>/dev/null || true)"
    # shellcheck disable=SC2086
    c++ ${LDFLAGS:-} "$D/test_cuda_model.dir/test_cuda_model.c.o" \
        "$D/test_cuda_model.dir/__/engine/eng_test_util.c.o" \
        "$D/test_cuda_model.dir/__/engine/model_writer.c.o" "$W/fake.o" -o "$W/model" \
        $TOKLIBS $LIBS
fi
rc=0
ASA_CUDA_FAKE=1 "$W/kernels" > "$W/k.log" 2>&1 || rc=1
tail -1 "$W/k.log"
ASA_FIXTURES_OVERRIDE=${ASA_FIXTURES_OVERRIDE:-$SRC/tests/fixtures} "$W/engine" > "$W/e.log" 2>&1 || rc=1
grep -E "ERROR|^test_cuda_engine:" "$W/e.log" || true
# the attention input as two products
ASA_CUDA_KCAT=0 ASA_FIXTURES_OVERRIDE=${ASA_FIXTURES_OVERRIDE:-$SRC/tests/fixtures} "$W/engine" \
    > "$W/e2.log" 2>&1 || rc=1
grep -E "ERROR|^test_cuda_engine:" "$W/e2.log" | sed 's/^/ASA_CUDA_KCAT=0: /' || true
# every product of 2..64 rows on gemm_ring (opt-in in the engine)
ASA_CUDA_RING_ROWS=64 ASA_CUDA_SMALL_ROWS=0 ASA_FIXTURES_OVERRIDE=${ASA_FIXTURES_OVERRIDE:-$SRC/tests/fixtures} \
    "$W/engine" > "$W/e3.log" 2>&1 || rc=1
grep -E "ERROR|^test_cuda_engine:" "$W/e3.log" | sed 's/^/ASA_CUDA_RING_ROWS=64: /' || true
if [ -x "$W/model" ]; then
    "$W/model" > "$W/m.log" 2>&1 || rc=1
    grep -E "^test_cuda_model:" "$W/m.log" | tail -1
fi
echo "emulation binaries in $W"
"$W/bench" 64 4 tiny > "$W/b.log" 2>&1 || rc=1
tail -3 "$W/b.log"
"$W/bench" sample 2 > "$W/s.log" 2>&1 || rc=1
tail -2 "$W/s.log"
exit $rc
