// Code shared by the node scripts.  Two reference implementations come
// from npm into ./node_modules (git-ignored):
//   npm install --no-save --no-package-lock tokenizers@0.23.2 @huggingface/tokenizers@0.2.0
// - tokenizers@0.23.2: Hugging Face's own Node binding of the Rust library
//   (the reference itself, same version as the Python package), prebuilt;
// - @huggingface/tokenizers@0.2.0: the pure JavaScript port.
// The vocabularies are the committed data/<name>/tokenizer.json.gz.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const VOCABS = ["gpt2", "mistral"];
export const HFJS_VERSION = "0.2.0";
export const RUST_VERSION = "0.23.2";

// The Rust library's Node binding, or null when not installed.
export async function loadRust() {
  const pkg = path.join(HERE, "node_modules", "tokenizers");
  if (!fs.existsSync(pkg)) return null;
  const meta = JSON.parse(fs.readFileSync(path.join(pkg, "package.json"), "utf8"));
  if (meta.version !== RUST_VERSION)
    throw new Error(`tokenizers ${meta.version} installed, ${RUST_VERSION} pinned`);
  const { createRequire } = await import("node:module");
  return createRequire(import.meta.url)(pkg);
}

// Decompresses a vocabulary to a temporary file (the binding loads files).
export function vocabFile(name) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tok-"));
  fs.mkdirSync(path.join(dir, name));
  const f = path.join(dir, name, "tokenizer.json");
  fs.writeFileSync(f, zlib.gunzipSync(fs.readFileSync(path.join(HERE, "data", name, "tokenizer.json.gz"))));
  return f;
}

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

// Every tokenizer under test: the two vocabularies and the variants of
// variants.json (base file with whole components replaced), as JSON text.
export function allTokenizerJson() {
  const out = [];
  for (const v of VOCABS) out.push({ name: v, json: loadVocab(v).json, base: v });
  const variants = JSON.parse(fs.readFileSync(path.join(HERE, "variants.json"), "utf8"));
  for (const [name, spec] of Object.entries(variants)) {
    if (name.startsWith("_")) continue;
    const json = structuredClone(loadVocab(spec.base).json);
    Object.assign(json, spec.set);
    out.push({ name, json, base: spec.base });
  }
  return out;
}
