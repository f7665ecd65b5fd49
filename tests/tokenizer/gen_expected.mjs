// Writes expected_ids.json: for every test text (texts.json) and both
// vocabularies, the ids that the JavaScript port of Hugging Face tokenizers
// gives with add_special_tokens on and off, and its decode of those ids.
// Usage: node tests/tokenizer/gen_expected.mjs [--check]
//   --check: compare with the committed file instead of writing it (exit 1 on
//   any difference).
import fs from "node:fs";
import path from "node:path";
import { HERE, VOCABS, HFJS_VERSION, loadPort, loadVocab, loadTexts } from "./hfjs.mjs";

const mod = await loadPort();
if (!mod) {
  console.error("node_modules/@huggingface/tokenizers missing: cd tests/tokenizer && npm install --no-save @huggingface/tokenizers@" + HFJS_VERSION);
  process.exit(77);
}
const texts = loadTexts();
const out = { generator: `@huggingface/tokenizers@${HFJS_VERSION} (npm)`, vocabs: {} };
for (const v of VOCABS) {
  const { json, cfg } = loadVocab(v);
  const tok = new mod.Tokenizer(json, cfg);
  const res = {};
  for (const { name, text } of texts) {
    const special = tok.encode(text, { add_special_tokens: true }).ids;
    const nospecial = tok.encode(text, { add_special_tokens: false }).ids;
    const dec = (ids, skip) => ids.length ? tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false }) : "";
    res[name] = { special, nospecial, decode: dec(special, false), decode_skip: dec(special, true) };
  }
  out.vocabs[v] = res;
}
const file = path.join(HERE, "expected_ids.json");
// One line per text keeps diffs readable.
let s = "{\n" + ` "generator": ${JSON.stringify(out.generator)},\n "vocabs": {\n`;
s += VOCABS.map((v) => `  ${JSON.stringify(v)}: {\n` + Object.entries(out.vocabs[v]).map(
  ([k, r]) => `   ${JSON.stringify(k)}: ${JSON.stringify(r)}`).join(",\n") + "\n  }").join(",\n");
s += "\n }\n}\n";
if (process.argv.includes("--check")) {
  const old = fs.readFileSync(file, "utf8");
  if (old !== s) { console.error("expected_ids.json differs from the live JS port"); process.exit(1); }
  console.log("expected_ids.json matches the live JS port");
} else {
  fs.writeFileSync(file, s);
  console.log(`wrote ${file}`);
}
