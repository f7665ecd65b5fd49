#!/usr/bin/env python3
"""Writes a small random ASA model with a byte-level tokenizer, for the
server's end-to-end tests: `make_test_model.py OUT_DIR`.

The tokenizer is byte-level BPE with no merges (one id per byte, 0..255) plus
<|bos|> = 256 and <|eos|> = 257, and a post-processor that prepends <|bos|>.
Random weights make the model emit arbitrary bytes, which is what the tests
want: text that often splits UTF-8 characters across tokens."""
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


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=1)
    weights = make_fixtures.make_weights(CONFIG, seed=1234)
    asa_ref.write_safetensors(os.path.join(out, "model.safetensors"),
                              [(k, "F32", v) for k, v in weights.items()])
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(), f, ensure_ascii=False)


if __name__ == "__main__":
    main()
