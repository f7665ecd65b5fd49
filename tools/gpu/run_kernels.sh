#!/bin/bash
# tools/gpu/run_kernels.sh - runs on the GPU machine, from the repository
# root, with .devlibs/gpu-bin (made by tools/gpu/build_kernels.sh) carried:
#   1. the gpu-labelled kernel tests (fresh random seed each, printed),
#   2. compute-sanitizer memcheck and racecheck on the kernel tests (their
#      small shapes: ASA_KT_QUICK=1),
#   3. a SASS summary of every kernel (16-byte loads, local memory),
#   4. asa-kernel-bench (ceilings, cuBLAS, gemv vs cuBLAS, small kernels).
# Logs go to $OUT (at most 8 files); a short table is printed last.  The
# whole run keeps inside ~7.5 minutes: each step's timeout is cut to the
# time left.
set -u
D=.devlibs/gpu-bin
OUT=${OUT:-/tmp/asa-kernels-out}
mkdir -p "$OUT"
deadline=$((SECONDS + 450))
left() { # left <wanted seconds>: min(wanted, time to the deadline), >= 1
  local l=$((deadline - SECONDS))
  [ "$l" -lt 1 ] && l=1
  [ "$1" -lt "$l" ] && l=$1
  echo "$l"
}

if [ ! -x "$D/test_gemv_cuda" ]; then
  echo "missing $D: run tools/gpu/build_kernels.sh and carry .devlibs/gpu-bin" >&2
  exit 2
fi
export LD_LIBRARY_PATH="$PWD/$D:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if [ ! -e /usr/local/cuda/lib64/libcublas.so.13 ]; then
  cub=$(find / -name 'libcublas.so.13' -not -path '/proc/*' 2>/dev/null | head -1)
  [ -n "$cub" ] && export LD_LIBRARY_PATH="$(dirname "$cub"):$LD_LIBRARY_PATH"
fi
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
CUOBJ=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv
  "$CS" --version | tail -1
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ldd "$D/asa-kernel-bench" | grep -E 'cublas|not found'
  cat "$D/resource-usage.txt"
} > "$OUT/env.txt" 2>&1

summary=()
tests="gemv rmsnorm silu_mul topn"

# 1. tests
: > "$OUT/tests.log"
for t in $tests; do
  s0=$SECONDS
  timeout "$(left 60)" "$D/test_${t}_cuda" >> "$OUT/tests.log" 2>&1
  rc=$?
  summary+=("$(printf '%-34s rc=%-3s %4ss' "test_${t}_cuda" "$rc" $((SECONDS - s0)))")
done

# 2. compute-sanitizer on the small shapes
: > "$OUT/sanitizer.log"
for tool in memcheck racecheck; do
  for t in $tests; do
    s0=$SECONDS
    echo "=== $tool test_${t}_cuda" >> "$OUT/sanitizer.log"
    ASA_KT_QUICK=1 timeout "$(left 60)" "$CS" --tool "$tool" --error-exitcode 9 \
      "$D/test_${t}_cuda" >> "$OUT/sanitizer.log" 2>&1
    rc=$?
    summary+=("$(printf '%-34s rc=%-3s %4ss' "$tool test_${t}_cuda" "$rc" $((SECONDS - s0)))")
  done
done

# 3. SASS: per kernel, 16-byte global loads, local memory, instructions
"$CUOBJ" --dump-sass "$D/asa-kernel-bench" > /tmp/asa-sass.txt 2>&1
awk '/Function :/ {if (f) printf "%-70s LDG128=%d LDG(other)=%d STG=%d LDL/STL=%d SHFL=%d BAR=%d instr=%d\n", f, l128, lo, st, loc, sh, bar, n;
                   f=$3; l128=lo=st=loc=sh=bar=n=0; next}
     /\/\*[0-9a-f]+\*\// {n++}
     /LDG\..*128/ {l128++; next}
     /LDG/ {lo++}
     /STG/ {st++}
     /LDL|STL/ {loc++}
     /SHFL/ {sh++}
     /BAR/ {bar++}
     END {if (f) printf "%-70s LDG128=%d LDG(other)=%d STG=%d LDL/STL=%d SHFL=%d BAR=%d instr=%d\n", f, l128, lo, st, loc, sh, bar, n}' \
  /tmp/asa-sass.txt | grep -v -E 'cublas|cutlass|sm90_xmma|gemm' > "$OUT/sass-summary.txt"
grep -A400 'Function : .*gemv_kernelILi1EtE' /tmp/asa-sass.txt | head -400 > "$OUT/sass-gemv-m1.txt"

# 4. benchmark
s0=$SECONDS
timeout "$(left 200)" "$D/asa-kernel-bench" --csv "$OUT/bench.csv" > "$OUT/bench.txt" 2>&1
rc=$?
summary+=("$(printf '%-34s rc=%-3s %4ss' "asa-kernel-bench" "$rc" $((SECONDS - s0)))")

{
  echo "---- logs in \$OUT: env.txt tests.log sanitizer.log sass-summary.txt sass-gemv-m1.txt bench.txt bench.csv"
  grep -E 'seed|PASSED|FAILED|ERROR|skipped' "$OUT/tests.log" | head -40
  grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|Error|error' "$OUT/sanitizer.log" | sort | uniq -c | head -20
  grep -E 'gemv_kernel|topn|rmsnorm|silu' "$OUT/sass-summary.txt" | sed 's/_ZN[0-9]*_GLOBAL__N__[0-9a-f_]*cu_[0-9a-f]*//' | cut -c1-160
  echo "---- bench"
  cat "$OUT/bench.txt"
  echo "---- steps (rc 0 = pass, 77 = skipped, 124 = timeout)"
  printf '%s\n' "${summary[@]}"
} | tee "$OUT/summary.txt"
