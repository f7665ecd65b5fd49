// Encode throughput of Hugging Face tokenizers 0.23.2 (the Rust library via
// its Node binding), same protocol as asa-tokenize-bench: a first pass on a fresh
// tokenizer ("cold"), then N timed passes with the cache warm.  whole: one encode() call on the whole text;
// lines: one encodeBatch() over the lines.  Run with TOKENIZERS_PARALLELISM=false
// and RAYON_NUM_THREADS=1 for single-threaded figures (bench.sh does).
// Usage: node tests/tokenizer/bench_rust.mjs VOCAB(gpt2|mistral) TEXTFILE [whole|lines] [N]
import fs from "node:fs";
import { loadRust, vocabFile, RUST_VERSION } from "./hfjs.mjs";

const [vocab, file, mode = "whole", reps = "5"] = process.argv.slice(2);
const rs = await loadRust();
if (!rs) { console.error("tokenizers (npm) not installed"); process.exit(77); }
const f = vocabFile(vocab);
let t0 = performance.now();
const tok = rs.Tokenizer.fromFile(f);
const load_s = (performance.now() - t0) / 1000;
const buf = fs.readFileSync(file);
const text = buf.toString("utf8");
const lines = text.split(/(?<=\n)/);
const pass = async () => {
  if (mode === "lines") {
    const encs = await tok.encodeBatch(lines, { addSpecialTokens: true });
    let n = 0; for (const e of encs) n += e.getIds().length; return n;
  }
  return (await tok.encode(text, null, { addSpecialTokens: true })).getIds().length;
};
let c0 = performance.now();
let ntok = await pass();
const cold = (performance.now() - c0) / 1000;
let total = 0, best = Infinity;
const R = parseInt(reps, 10);
for (let r = 0; r < R; r++) {
  t0 = performance.now(); ntok = await pass(); const d = (performance.now() - t0) / 1000;
  total += d; best = Math.min(best, d);
}
console.log(JSON.stringify({ impl: `tokenizers@${RUST_VERSION} (Rust, Node binding)`, tokenizer: vocab,
  mode, bytes: buf.length, tokens: ntok, repeat: R, load_s: +load_s.toFixed(3),
  cold_mb_per_s: +(buf.length / 1e6 / cold).toFixed(2), mean_s: +(total / R).toFixed(4), mb_per_s: +(buf.length / 1e6 / (total / R)).toFixed(2),
  best_mb_per_s: +(buf.length / 1e6 / best).toFixed(2) }));
