// Shared helpers for the node scripts: load the JavaScript port of Hugging Face
// tokenizers (@huggingface/tokenizers, installed into ./node_modules by
// `npm install --no-save @huggingface/tokenizers@0.2.0`) and the committed
// vocabularies (data/<name>/tokenizer.json.gz).
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const VOCABS = ["gpt2", "mistral"];
export const HFJS_VERSION = "0.2.0";

export async function loadPort() {
  const pkg = path.join(HERE, "node_modules", "@huggingface", "tokenizers");
  if (!fs.existsSync(pkg)) return null;
  const meta = JSON.parse(fs.readFileSync(path.join(pkg, "package.json"), "utf8"));
  if (meta.version !== HFJS_VERSION)
    throw new Error(`@huggingface/tokenizers ${meta.version} installed, ${HFJS_VERSION} pinned`);
  return import(path.join(pkg, "dist", "tokenizers.mjs"));
}

export function loadVocab(name) {
  const dir = path.join(HERE, "data", name);
  const json = JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(dir, "tokenizer.json.gz"))).toString("utf8"));
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  // The Python/Rust library has no post-decode clean-up; the JS port does it
  // by default when the config asks for it.  Turn it off to compare.
  cfg.clean_up_tokenization_spaces = false;
  return { json, cfg };
}

export function loadTexts() {
  return JSON.parse(fs.readFileSync(path.join(HERE, "texts.json"), "utf8"));
}
