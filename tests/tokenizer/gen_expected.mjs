// Writes expected_ids.json: for every test text (texts.json) and both
// vocabularies, the ids that Hugging Face tokenizers 0.23.2 (the Rust library,
// through its official Node binding) gives with add_special_tokens on and off,
// and its decode of those ids with and without skip_special_tokens.  Also
// reports where the JavaScript port (@huggingface/tokenizers) differs.
// Usage: node tests/tokenizer/gen_expected.mjs [--check]
//   --check: compare the committed file with the live library instead of
//   writing it (exit 1 on any difference).  Exit 77 when not installed.
import fs from "node:fs";
import path from "node:path";
import { HERE, VOCABS, HFJS_VERSION, RUST_VERSION, loadPort, loadRust, loadVocab,
         loadTexts, vocabFile, allTokenizerJson } from "./hfjs.mjs";

const rs = await loadRust();
if (!rs) {
  console.error(`node_modules/tokenizers missing: cd tests/tokenizer && npm install --no-save --no-package-lock tokenizers@${RUST_VERSION} @huggingface/tokenizers@${HFJS_VERSION}`);
  process.exit(77);
}
const port = await loadPort();
const texts = loadTexts();
const out = { generator: `tokenizers@${RUST_VERSION} (npm: Hugging Face's Node binding of the Rust library)`, vocabs: {} };
let portDiffs = 0;
const all = allTokenizerJson();
for (const { name: v, json: tj } of all) {
  const tok = rs.Tokenizer.fromString(JSON.stringify(tj));
  let js = null;
  if (port && VOCABS.includes(v)) { const { json, cfg } = loadVocab(v); js = new port.Tokenizer(json, cfg); }
  const res = {};
  for (const { name, text } of texts) {
    const special = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
    const nospecial = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
    res[name] = { special, nospecial, decode: await tok.decode(special, false),
                  decode_skip: await tok.decode(special, true) };
    if (js) {
      for (const [k, add] of [["special", true], ["nospecial", false]]) {
        const ids = js.encode(text, { add_special_tokens: add }).ids;
        if (JSON.stringify(ids) !== JSON.stringify(res[name][k])) {
          portDiffs++;
          console.error(`JS port differs: ${v}/${name} ${k}`);
        }
      }
    }
  }
  out.vocabs[v] = res;
}
if (port) console.error(`JS port @huggingface/tokenizers@${HFJS_VERSION}: ${portDiffs} encodings differ from the Rust library`);
const file = path.join(HERE, "expected_ids.json");
// One line per text keeps diffs readable.
let s = "{\n" + ` "generator": ${JSON.stringify(out.generator)},\n "vocabs": {\n`;
s += all.map(({ name: v }) => `  ${JSON.stringify(v)}: {\n` + Object.entries(out.vocabs[v]).map(
  ([k, r]) => `   ${JSON.stringify(k)}: ${JSON.stringify(r)}`).join(",\n") + "\n  }").join(",\n");
s += "\n }\n}\n";
if (process.argv.includes("--check")) {
  const old = fs.readFileSync(file, "utf8");
  if (old !== s) { console.error("expected_ids.json differs from the live library"); process.exit(1); }
  console.log("expected_ids.json matches the live library: 1 passed, 0 failed");
} else {
  fs.writeFileSync(file, s);
  console.log(`wrote ${file}`);
}
