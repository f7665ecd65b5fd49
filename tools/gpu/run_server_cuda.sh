#!/bin/bash
# tools/gpu/run_server_cuda.sh - runs on the GPU machine, from the repository
# root: asa-serve with the CUDA backend on the bundled model, driven by curl
# and asa-bench.  Build on the build machine first:
#   cmake -S . -B .devlibs/build-cuda -G Ninja -DASA_CUDA=ON -DCMAKE_BUILD_TYPE=Release
#   cmake --build .devlibs/build-cuda --target asa-serve asa-bench asa-generate
#   mkdir -p .devlibs/srv-bin .devlibs/srv-lib
#   cp .devlibs/build-cuda/server/asa-serve .devlibs/build-cuda/client/asa-bench \
#      .devlibs/build-cuda/engine/asa-generate .devlibs/srv-bin/
#   for l in libmicrohttpd.so.12 libjansson.so.4 libuv.so.1 libpcre2-8.so.0 libutf8proc.so.2; do
#     cp -L /usr/lib/x86_64-linux-gnu/$l .devlibs/srv-lib/; done
# and carry .devlibs/srv-bin and .devlibs/srv-lib.  Logs go to $OUT.
set -u
OUT=${OUT:-/tmp/asa-server-cuda}
mkdir -p "$OUT"
B=.devlibs/srv-bin
export LD_LIBRARY_PATH="$PWD/.devlibs/srv-lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
M=models/asa-tiny
PORT=18080

echo "== asa-generate, greedy, 64 tokens, cpu vs cuda (bundled model)"
IDS=0,36,372,400,7905,15
for be in cpu cuda; do
  "$B/asa-generate" --model $M --prompt-ids $IDS --max-tokens 64 --greedy --ignore-eos \
    --backend $be > "$OUT/gen_$be.txt" 2> "$OUT/gen_$be.err"
  echo "$be rc=$? $(tail -1 "$OUT/gen_$be.err")"
done
if cmp -s "$OUT/gen_cpu.txt" "$OUT/gen_cuda.txt"; then echo "greedy ids: identical"; else
  echo "greedy ids: differ"; cat "$OUT/gen_cpu.txt" "$OUT/gen_cuda.txt"; fi

echo "== asa-serve --backend cuda"
"$B/asa-serve" --model $M --backend cuda --port $PORT --max-num-seqs 64 \
  --kv-cache-bytes 2G > "$OUT/serve.log" 2>&1 &
SP=$!
for i in $(seq 1 200); do
  curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -s "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "Call me Ishmael.", "max_tokens": 40, "temperature": 0}'; echo
curl -sN "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "The whale", "max_tokens": 8, "stream": true, "stream_options": {"include_usage": true}}' | tail -3
for c in 1 16 64; do
  echo "== asa-bench concurrency $c"
  timeout 60 "$B/asa-bench" --base-url "http://127.0.0.1:$PORT" --num-prompts $((c * 4)) \
    --max-concurrency $c --input-len 256 --output-len 128 --ignore-eos --no-progress --seed 1 \
    --result-json "$OUT/bench_c$c.json" > "$OUT/bench_c$c.txt" 2>&1
  grep -E "Successful|Failed requests|Output token throughput|Median TTFT|Median TPOT|Median ITL" "$OUT/bench_c$c.txt"
done
kill -TERM $SP
wait $SP
echo "asa-serve exit code $?"
tail -3 "$OUT/serve.log"
