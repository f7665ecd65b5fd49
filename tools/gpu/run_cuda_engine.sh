#!/usr/bin/env bash
# tools/gpu/run_cuda_engine.sh - runs the CUDA engine's checks and a first
# timing on a GPU machine, from the repository root, with binaries built
# elsewhere (no compiler needed here):
#
#   build machine:  cmake -S . -B .devlibs/build-cuda -G Ninja -DASA_CUDA=ON \
#                     -DCMAKE_BUILD_TYPE=Release
#                   cmake --build .devlibs/build-cuda --target test_cuda_kernels \
#                     test_cuda_engine test_cuda_model bench_cuda_engine \
#                     test_cuda_attn_mma bench_attn_mma
#                   mkdir -p .devlibs/cuda-bin .devlibs/lib
#                   cp .devlibs/build-cuda/tests/cuda/{test_cuda_kernels,test_cuda_engine,\
#                     test_cuda_model,bench_cuda_engine,test_cuda_attn_mma,bench_attn_mma} \
#                     .devlibs/build-cuda/tests/kernels/test_*_cuda \
#                     .devlibs/cuda-bin/          (~10 MB: carry this, not the build)
#                   copy libjansson.so.4 and libcmocka.so.0 (libpcre2-8.so.0 and
#                     libutf8proc.so.2 for test_cuda_model; libuv.so.1,
#                     libmicrohttpd.so.12 for other binaries) into .devlibs/lib
#   GPU machine:    tools/gpu/run_cuda_engine.sh      (logs go to $OUT)
# The binaries are looked up in $ASA_CUDA_BIN (default .devlibs/cuda-bin)
# when it exists, else in $ASA_CUDA_BUILD (default .devlibs/build-cuda)
# under tests/cuda and tests/kernels.
#
# Steps (each with its own time limit, all within ASA_RUN_BUDGET = 330 s;
# a step that would start with less than 15 s left is skipped):
#   1. test_cuda_kernels   kernel unit tests vs host references
#      test_cuda_attn_mma  the tensor-core prefill attention vs the reference
#   2. test_cuda_engine    CUDA engine vs CPU engine on tests/fixtures/*
#      test_cuda_model     the bundled models/asa-tiny on both engines, 64
#                          greedy steps from four prompts (ASA_MODEL_DIR)
#      both again with ASA_CUDA_XATTN_MIN_T=1 (every prefill step's local
#                          layers in the expanded form); test_cuda_engine
#                          with ASA_CUDA_KCAT=0, and with every product of
#                          2..64 rows on gemm_ring (ASA_CUDA_RING_ROWS=64),
#                          and on its warpgroup-MMA form (ASA_CUDA_WG_ROWS=64)
#   3. the kernels/cuda unit tests of the other kernels, when built
#   4. compute-sanitizer memcheck + racecheck on test_cuda_kernels (when the
#      tool is installed)
#   5. bench_cuda_engine sample: the sampler alone at V 32000, batch 1 and
#      64, host path (logits copy + eng_sample) vs sample_cuda
#      bench_cuda_engine   asa-1.3b shape, random weights: prefill of 1k
#      tokens, decode step at batch 1 and 8 with 1k context (decode steps
#      as CUDA graphs, the default); again with ASA_CUDA_TIMING=1 and
#      ASA_CUDA_GRAPHS=0 (GPU time of products / attention / rest per eager
#      step), with ASA_CUDA_GRAPHS=0 alone (eager decode); then prefill of
#      8k and decode at 8k context; 1k with ASA_CUDA_PDL=0 and with
#      ASA_CUDA_FUSE=0; then 1k with ASA_CUDA_GEMV_ROWS=16 (GEMV
#      for every product of up to 16 rows; the default stops at 1); then
#      1k with ASA_CUDA_GPU_SAMPLE=1 (greedy rows by sample_cuda too)
# and prints a short table last.  Exit status: 0 when every check that ran
# passed.
set -u
ROOT=$(pwd)
BUILD=${ASA_CUDA_BUILD:-$ROOT/.devlibs/build-cuda}
OUT=${OUT:-$ROOT/.devlibs/out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$ROOT/.devlibs/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ASA_FIXTURES_OVERRIDE=${ASA_FIXTURES_OVERRIDE:-$ROOT/tests/fixtures}
LOG="$OUT/run_cuda_engine.log"
: > "$LOG"
declare -a ROWS=()
FAILED=0
START=$(date +%s)
BUDGET=${ASA_RUN_BUDGET:-330} # seconds for the whole run (the call allows 6 min)

note() { echo "$*" | tee -a "$LOG"; }

# run NAME LIMIT CMD...: runs CMD with a time limit, output to $OUT/NAME.log;
# records PASS / FAIL / SKIP (exit 77) / TIMEOUT and the last line starting
# with the binary's summary prefix.
run() {
    local name=$1 limit=$2
    shift 2
    local log="$OUT/$name.log" t0 t1 rc status summary left
    left=$((BUDGET - ($(date +%s) - START)))
    if [ "$left" -lt 15 ]; then
        ROWS+=("$(printf '%-26s %-7s %s' "$name" SKIP "time budget spent")")
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    if [ ! -x "$1" ] && ! command -v "$1" >/dev/null 2>&1; then
        ROWS+=("$(printf '%-26s %-7s %s' "$name" MISSING "$1 not built")")
        FAILED=1
        return
    fi
    t0=$(date +%s.%N)
    timeout -k 5 "$limit" "$@" > "$log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    case $rc in
        0) status=PASS ;;
        77) status=SKIP ;;
        124|137) status=TIMEOUT; FAILED=1 ;;
        *) status="FAIL($rc)"; FAILED=1 ;;
    esac
    summary=$(grep -E "^(test_|bench_|=+ ERROR SUMMARY|ERROR SUMMARY|RACECHECK SUMMARY)" "$log" | tail -1 | cut -c1-300)
    [ -z "$summary" ] && summary=$(tail -1 "$log" | cut -c1-300)
    ROWS+=("$(printf '%-26s %-7s %6ss  %s' "$name" "$status" "$(awk "BEGIN{printf \"%.1f\", $t1 - $t0}")" "$summary")")
    note "== $name: $status (rc $rc), log $log"
    tail -5 "$log" >> "$LOG"
}

note "run_cuda_engine: $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
BIN=${ASA_CUDA_BIN:-$ROOT/.devlibs/cuda-bin}
if [ -d "$BIN" ]; then
    T=$BIN
    K=$BIN
else
    T="$BUILD/tests/cuda"
    K="$BUILD/tests/kernels"
fi
MISSING=""
for b in "$T"/*; do
    [ -x "$b" ] && [ -f "$b" ] || continue
    m=$(ldd "$b" 2>/dev/null | grep "not found" | awk '{print $1}' | tr '\n' ' ')
    [ -n "$m" ] && MISSING="$MISSING $(basename "$b"): $m"
done
if [ -n "$MISSING" ]; then
    ROWS+=("$(printf '%-26s %-7s %s' shared_libraries MISSING "$MISSING(copy them into .devlibs/lib)")")
    note "missing shared libraries:$MISSING"
fi

run kernels 120 "$T/test_cuda_kernels"
run attn_mma 60 "$T/test_cuda_attn_mma"
run engine_vs_cpu 150 "$T/test_cuda_engine"
run model_vs_cpu 60 "$T/test_cuda_model" "$ROOT/models/asa-tiny"
# every prefill step's local layers in the expanded form (the default takes
# it from ASA_CUDA_XATTN_MIN_T = 128 tokens a step)
export ASA_CUDA_XATTN_MIN_T=1
run engine_vs_cpu_xattn 150 "$T/test_cuda_engine"
run model_vs_cpu_xattn 60 "$T/test_cuda_model" "$ROOT/models/asa-tiny"
unset ASA_CUDA_XATTN_MIN_T
# the attention input as two products (ASA_CUDA_KCAT=0)
export ASA_CUDA_KCAT=0
run engine_vs_cpu_nokcat 150 "$T/test_cuda_engine"
unset ASA_CUDA_KCAT
# every product of 2..64 rows on gemm_ring (opt-in in the engine)
export ASA_CUDA_RING_ROWS=64 ASA_CUDA_SMALL_ROWS=0
run engine_vs_cpu_ring 150 "$T/test_cuda_engine"
unset ASA_CUDA_RING_ROWS ASA_CUDA_SMALL_ROWS
# every product of 2..64 rows on gemm_ring's warpgroup-MMA form
export ASA_CUDA_WG_ROWS=64 ASA_CUDA_SMALL_ROWS=0
run engine_vs_cpu_wg 150 "$T/test_cuda_engine"
unset ASA_CUDA_WG_ROWS ASA_CUDA_SMALL_ROWS
for k in gemv gemm_small gemm_ring rmsnorm silu_mul topn; do
    b="$K/test_${k}_cuda"
    [ -x "$b" ] && run "kernel_$k" 60 "$b"
done

SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$SAN" ] && [ -x "$T/test_cuda_kernels" ]; then
    run memcheck_kernels 90 "$SAN" --tool memcheck --error-exitcode 3 "$T/test_cuda_kernels"
    run racecheck_kernels 90 "$SAN" --tool racecheck --error-exitcode 3 "$T/test_cuda_kernels"
    [ -x "$T/test_cuda_attn_mma" ] &&
        run racecheck_attn_mma 90 "$SAN" --tool racecheck --error-exitcode 3 "$T/test_cuda_attn_mma"
    if [ -x "$K/test_gemm_small_cuda" ]; then
        ASA_KT_QUICK=1 run memcheck_gemm_small 60 "$SAN" --tool memcheck --error-exitcode 3 \
            "$K/test_gemm_small_cuda"
        ASA_KT_QUICK=1 run racecheck_gemm_small 60 "$SAN" --tool racecheck --error-exitcode 3 \
            "$K/test_gemm_small_cuda"
    fi
    if [ -x "$K/test_gemm_ring_cuda" ]; then
        ASA_KT_QUICK=1 run memcheck_gemm_ring 60 "$SAN" --tool memcheck --error-exitcode 3 \
            "$K/test_gemm_ring_cuda"
        ASA_KT_QUICK=1 run racecheck_gemm_ring 60 "$SAN" --tool racecheck --error-exitcode 3 \
            "$K/test_gemm_ring_cuda"
    fi
else
    ROWS+=("$(printf '%-26s %-7s %s' memcheck_kernels SKIP "compute-sanitizer not found")")
fi

# tensor-core vs FFMA attention kernels, 8k prefill, asa-1.3b shape
run bench_attn_mma 60 "$T/bench_attn_mma" 8192 10
run bench_sample 60 "$T/bench_cuda_engine" sample 50
run bench_1.3b_ctx1k 90 "$T/bench_cuda_engine" 1024 20
# the same with CUDA events between phases (GPU time per category, logged;
# eager steps: graphs off)
export ASA_CUDA_TIMING=1 ASA_CUDA_GRAPHS=0
run bench_1.3b_ctx1k_timed 90 "$T/bench_cuda_engine" 1024 20
unset ASA_CUDA_TIMING
# decode steps without CUDA graphs (the default runs them as graphs)
run bench_1.3b_ctx1k_eager 90 "$T/bench_cuda_engine" 1024 20
unset ASA_CUDA_GRAPHS
run bench_1.3b_ctx8k 90 "$T/bench_cuda_engine" 8192 20
# decode without programmatic dependent launch, then without the fused
# decode kernels (norms in the GEMV prologues, SiLU in the down GEMV, rope +
# absorb, merges and block choice in the last blocks): what each is worth
export ASA_CUDA_PDL=0
run bench_1.3b_ctx1k_nopdl 90 "$T/bench_cuda_engine" 1024 20
unset ASA_CUDA_PDL
export ASA_CUDA_FUSE=0
run bench_1.3b_ctx1k_nofuse 90 "$T/bench_cuda_engine" 1024 20
unset ASA_CUDA_FUSE
# products of 3..16 rows through the GEMV instead of cuBLAS (the previous
# default; kernel lab: cuBLAS stays flat in M where the GEMV grows)
export ASA_CUDA_GEMV_ROWS=16
run bench_1.3b_ctx1k_gemv16 90 "$T/bench_cuda_engine" 1024 20
unset ASA_CUDA_GEMV_ROWS
# the engine against the CPU with both off (tells a PDL/fusion fault from
# another one when engine_vs_cpu fails)
export ASA_CUDA_PDL=0 ASA_CUDA_FUSE=0
run engine_vs_cpu_plain 150 "$T/test_cuda_engine"
unset ASA_CUDA_PDL ASA_CUDA_FUSE
# greedy decode rows through sample_cuda (the default takes plain greedy
# rows through topn_cuda)
export ASA_CUDA_GPU_SAMPLE=1
run bench_1.3b_ctx1k_sample1 90 "$T/bench_cuda_engine" 1024 20
unset ASA_CUDA_GPU_SAMPLE

{
    echo
    echo "== run_cuda_engine summary ($GPU) =="
    for r in "${ROWS[@]}"; do echo "$r"; done
    echo "-- timing (asa-1.3b shape, random bf16 weights; $GPU) --"
    [ -f "$OUT/bench_attn_mma.log" ] && echo "[bench_attn_mma]" &&
        grep -E "^(local|cmp|slc)" "$OUT/bench_attn_mma.log"
    for f in bench_sample bench_1.3b_ctx1k bench_1.3b_ctx1k_timed bench_1.3b_ctx1k_eager bench_1.3b_ctx8k \
        bench_1.3b_ctx1k_nopdl bench_1.3b_ctx1k_nofuse bench_1.3b_ctx1k_gemv16 \
        bench_1.3b_ctx1k_topn; do
        [ -f "$OUT/$f.log" ] && echo "[$f]"
        [ -f "$OUT/$f.log" ] && grep -E "^(bench_cuda_engine:|prefill|decode|kv bytes|sample )|timing, " "$OUT/$f.log" |
            sed -e "s/^.*INFO  \[cuda\] /  /"
    done
} | tee -a "$LOG"
exit $FAILED
