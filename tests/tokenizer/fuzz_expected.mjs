// Random texts and the Rust library's ids for them, for a parity run on many
// more inputs than the committed set (tools/tokenizer/fuzz_parity.sh).
// Usage: node tests/tokenizer/fuzz_expected.mjs OUTDIR COUNT SEED
import fs from "node:fs";
import path from "node:path";
import { VOCABS, loadRust, vocabFile, allTokenizerJson } from "./hfjs.mjs";

const [outdir, countS = "1000", seedS = "1"] = process.argv.slice(2);
const rs = await loadRust();
if (!rs) { console.error("tokenizers (npm) not installed"); process.exit(77); }
let seed = parseInt(seedS, 10) >>> 0 || 1;
const rnd = (n) => { seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0; return seed % n; };
const POOLS = [
  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " ", "   ", "\t", "\n",
  "\r\n", "'s", "'T", "'ll", ".,;:!?-_()[]{}<>\"'/\\@#$%^&*+=~`|", "éèüñçßøåÆŒ", "\u0301\u0308\u0327",
  "一二三日本語あア한中文", "العربية", "абвгдαβγδ", "😀👍🏽\u200d❤️🇯🇵🏳️‍🌈", "\u00a0\u2003\u3000\u2028\u0085\u180e\ufeff\u200b\u000b\u000c",
  "²½Ⅲ०１①", "<s>", "</s>", "<unk>", "<|endoftext|>", "\ufffd", "\u007f\u0001\u001b",
];
const texts = [];
for (let i = 0; i < parseInt(countS, 10); i++) {
  let s = "";
  const n = 1 + rnd(40);
  for (let k = 0; k < n; k++) {
    const pool = POOLS[rnd(POOLS.length)];
    const chars = Array.from(pool);
    if (chars.length > 3 && !pool.startsWith("<")) for (let j = 1 + rnd(6); j > 0; j--) s += chars[rnd(chars.length)];
    else s += pool;
  }
  texts.push({ name: `fuzz_${i}`, text: s });
}
const out = { generator: "fuzz", vocabs: {} };
for (const { name: v, json: tj } of allTokenizerJson()) {
  const tok = rs.Tokenizer.fromString(JSON.stringify(tj));
  out.vocabs[v] = {};
  for (const { name, text } of texts) {
    const special = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
    const nospecial = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
    out.vocabs[v][name] = { special, nospecial, decode: await tok.decode(special, false),
                            decode_skip: await tok.decode(special, true) };
  }
}
fs.mkdirSync(outdir, { recursive: true });
fs.writeFileSync(path.join(outdir, "texts.json"), JSON.stringify(texts));
fs.writeFileSync(path.join(outdir, "expected.json"), JSON.stringify(out));
console.log(`${texts.length} texts -> ${outdir}`);
