#!/usr/bin/env python3
"""Writes a small random ASA model with a byte-level tokenizer, for the
server's end-to-end tests: `make_test_model.py OUT_DIR`.

The tokenizer is byte-level BPE with no merges (one id per byte, 0..255) plus
<|bos|> = 256 and <|eos|> = 257, and a post-processor that prepends <|bos|>.
Random weights make the model emit arbitrary bytes, which is what the tests
want: text that often splits UTF-8 characters across tokens.  OUT_DIR-sp gets
the same weights with a SentencePiece-style tokenizer (see there)."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "reference"))

import asa_ref  # noqa: E402
import make_fixtures  # noqa: E402


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json():
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    special = [("<|bos|>", 256), ("<|eos|>", 257)]
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for s, i in special]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None, "pre_tokenizer": byte_level,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|bos|>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<|bos|>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|bos|>": {"id": "<|bos|>", "ids": [256], "tokens": ["<|bos|>"]}},
        },
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


CONFIG = {
    "model_type": "asa", "vocab_size": 258, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_heads": 2, "head_dim": 16, "rope_dim": 8,
    "max_position_embeddings": 4096, "tie_word_embeddings": True,
    "bos_token_id": 256, "eos_token_id": 257,
    "local": {"latent_heads": 1, "latent_dim": 16, "window": 32},
    "global": {"latent_heads": 2, "latent_dim": 8, "block_size": 8, "top_n": 4,
               "init_blocks": 1, "local_blocks": 2, "selection_share": 4},
}


def sentencepiece_tokenizer_json():
    """The same ids in the SentencePiece layout (Llama-2 style): ids 0..255
    are byte-fallback tokens <0xNN>, <s> = 256, </s> = 257; the decoder
    strips the space at the start of a text, so a stream that does not know
    the prompt loses the space of the first generated token."""
    vocab = {"<0x%02X>" % b: b for b in range(256)}
    vocab["<s>"] = 256
    vocab["</s>"] = 257
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for s, i in (("<s>", 256), ("</s>", 257))]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [256], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


def write_model(out, tok, weights):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=1)
    asa_ref.write_safetensors(os.path.join(out, "model.safetensors"),
                              [(k, "F32", v) for k, v in weights.items()])
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)


def main():
    out = sys.argv[1]
    weights = make_fixtures.make_weights(CONFIG, seed=1234)
    write_model(out, tokenizer_json(), weights)
    # OUT-sp: the same weights with the SentencePiece tokenizer.
    write_model(out.rstrip("/") + "-sp", sentencepiece_tokenizer_json(), weights)


if __name__ == "__main__":
    main()
