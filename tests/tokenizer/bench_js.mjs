// Encode throughput of the JavaScript port on a text file, same protocol as
// asa-tokenize-bench: a first pass on a fresh tokenizer ("cold"), then N timed
// passes with the cache warm.
// Usage: node tests/tokenizer/bench_js.mjs VOCAB(gpt2|mistral) TEXTFILE [whole|lines] [N]
import fs from "node:fs";
import { loadPort, loadVocab, HFJS_VERSION } from "./hfjs.mjs";

const [vocab, file, mode = "whole", reps = "5"] = process.argv.slice(2);
const mod = await loadPort();
if (!mod) { console.error("@huggingface/tokenizers not installed"); process.exit(77); }
const { json, cfg } = loadVocab(vocab);
let t0 = performance.now();
const tok = new mod.Tokenizer(json, cfg);
const load_s = (performance.now() - t0) / 1000;
const buf = fs.readFileSync(file);
const text = buf.toString("utf8");
const units = mode === "lines" ? text.split(/(?<=\n)/) : [text];
const pass = () => { let n = 0; for (const u of units) n += tok.encode(u).ids.length; return n; };
let c0 = performance.now();
let ntok = pass();
const cold = (performance.now() - c0) / 1000;
let total = 0, best = Infinity;
const R = parseInt(reps, 10);
for (let r = 0; r < R; r++) {
  t0 = performance.now(); ntok = pass(); const d = (performance.now() - t0) / 1000;
  total += d; best = Math.min(best, d);
}
console.log(JSON.stringify({ impl: `@huggingface/tokenizers@${HFJS_VERSION} (node ${process.version})`,
  tokenizer: vocab, mode, bytes: buf.length, tokens: ntok, repeat: R, load_s: +load_s.toFixed(3),
  cold_mb_per_s: +(buf.length / 1e6 / cold).toFixed(2), mean_s: +(total / R).toFixed(4), mb_per_s: +(buf.length / 1e6 / (total / R)).toFixed(2),
  best_mb_per_s: +(buf.length / 1e6 / best).toFixed(2) }));
