#!/usr/bin/env bash
# tools/gpu/ab_bench.sh - A/B timing of two builds (or two settings) of the
# CUDA engine on the GPU machine, alternated so that drift between runs (the
# decode step moves a few percent between processes, the server's figures
# 15-25 %) does not pass for a difference.
#
#   tools/gpu/ab_bench.sh A B [ARGS...]
#
# A and B: each either a bench_cuda_engine binary, or "ENV=VAL[,ENV=VAL...]"
# settings applied to $ASA_CUDA_BIN/bench_cuda_engine (default
# .devlibs/cuda-bin); "-" for that binary with no settings.  ARGS: the
# benchmark's arguments (default: 1024 20 full 1,8,32,64).  AB_REPEATS
# rounds (default 3), A then B in each.  Prints one line per run (the mean
# step time of every batch, or the prefill time) and, last, the median per
# batch of each side and B / A.
set -u
[ $# -ge 2 ] || { sed -n 2,16p "$0"; exit 2; }
A=$1
B=$2
shift 2
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(1024 20 full "1,8,32,64")
BIN=${ASA_CUDA_BIN:-.devlibs/cuda-bin}/bench_cuda_engine
REP=${AB_REPEATS:-3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# run SIDE SPEC ROUND: one benchmark process; "label=ms" pairs on stdout
run() {
    local spec=$2 exe=$BIN
    local -a envs=()
    if [ "$spec" != "-" ] && [ -x "$spec" ]; then
        exe=$spec
    elif [ "$spec" != "-" ]; then
        IFS=',' read -r -a envs <<< "$spec"
    fi
    env "${envs[@]}" timeout 300 "$exe" "${ARGS[@]}" > "$TMP/$1.$3.log" 2>&1 || {
        echo "$1 round $3: failed (rc $?), log:" >&2
        tail -3 "$TMP/$1.$3.log" >&2
        return 1
    }
    awk '/^decode batch/ {print "b" $3 "=" $6} /^prefill/ {print "prefill=" $4}' \
        "$TMP/$1.$3.log" | tr '\n' ' '
}

for r in $(seq 1 "$REP"); do
    for side in A B; do
        spec=$A
        [ $side = B ] && spec=$B
        line=$(run $side "$spec" "$r") || exit 1
        echo "$side round $r: $line"
        echo "$line" | tr ' ' '\n' | grep -e '=' | sed "s/^/$side /" >> "$TMP/all"
    done
done
echo "== median of $REP rounds (A = $A, B = $B; ${ARGS[*]})"
awk '{split($2, kv, "="); v[$1, kv[1]] = v[$1, kv[1]] " " kv[2]; keys[kv[1]] = 1}
     function med(s,   n, a, i, j, t) {
         n = split(s, a, " ")
         for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
             if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
         return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
     }
     END { for (k in keys) {
             ma = med(v["A", k]); mb = med(v["B", k])
             printf "%-10s A %9.3f  B %9.3f  B/A %.3f\n", k, ma, mb, (ma > 0 ? mb / ma : 0) } }' \
    "$TMP/all" | sort
