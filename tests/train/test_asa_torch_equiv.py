#!/usr/bin/python3
"""The training model (tools/train/asa_torch.py) computes the function of
the reference implementation (tools/reference/asa_ref.py): a random small
ASA model is exported with the training exporter (F32), loaded by the
reference, and both forwards run in float64 on sequences long enough that
top-n selection really chooses.  Exit 77 (skip) without torch."""
import os
import sys
import tempfile

SRC = os.environ.get("ASA_SOURCE_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(SRC, "tools", "train"))
sys.path.insert(0, os.path.join(SRC, "tools", "reference"))

try:
    import numpy as np
    import torch
except ImportError as e:
    print("skipped: %s" % e)
    sys.exit(77)

import asa_ref
import asa_torch
import export

TOL = 1e-9


def small_config(tied, vocab=61):
    return {
        "model_type": "asa", "vocab_size": vocab, "hidden_size": 48, "intermediate_size": 80,
        "num_hidden_layers": 4, "num_heads": 4, "head_dim": 12, "v_head_dim": 10,
        "rope_dim": 8, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 512, "tie_word_embeddings": tied,
        "bos_token_id": 0, "eos_token_id": 1,
        "layer_types": ["local", "global", "global", "local"],
        "local": {"latent_heads": 1, "latent_dim": 20, "window": 13},
        "global": {"latent_heads": 2, "latent_dim": 9, "block_size": 8, "top_n": 4,
                   "init_blocks": 1, "local_blocks": 2, "selection_share": 4,
                   "compression": "mean"},
    }


def check(cfg, T, seed, batch=2):
    torch.manual_seed(seed)
    model = asa_torch.LM(cfg, "asa")
    # larger weights than training init, so attention is far from uniform
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 1.0 / p.shape[1] ** 0.5 * 1.5)
            p.copy_(p.to(torch.float32))    # values representable in f32
    model = model.double().eval()
    gen = np.random.default_rng(seed)
    toks = gen.integers(0, cfg["vocab_size"], size=(batch, T))
    with tempfile.TemporaryDirectory() as d:
        export.export_model(model, cfg, d, dtype="F32", max_shard_bytes=40000)
        ref = asa_ref.load_model(d)
        # the exporter's own reader gives back the same tensors
        back = export.load_model_dir(d)
        for k, v in model.export_state().items():
            assert torch.equal(back[k].double(), v), k
    with torch.no_grad():
        got = model(torch.tensor(toks)).numpy()
    worst = 0.0
    for b in range(batch):
        want = asa_ref.forward(ref, toks[b])
        err = np.linalg.norm(got[b] - want) / np.linalg.norm(want)
        worst = max(worst, err)
        # selection must really choose: some anchor has more candidates than slots
        sel = asa_ref.selections(ref, toks[b])
        real = any(g is not None for rec in sel for row in rec["gaps"] for g in row)
        assert real, "selection never chose between candidates"
    print("tied=%s T=%d rel err %.3e" % (cfg["tie_word_embeddings"], T, worst))
    return worst


def check_bf16_export():
    """The bf16 export rounds as the reference (and common/asa.h) do: to
    nearest, ties to even; the shards reassemble to the same tensors."""
    cfg = small_config(True)
    torch.manual_seed(7)
    model = asa_torch.LM(cfg, "asa")
    with torch.no_grad():
        p = model.embed_tokens.weight
        p[0, :4] = torch.tensor([1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, -(1.0 + 2.0 ** -8), 3.0e38])
    with tempfile.TemporaryDirectory() as d:
        files = export.export_model(model, cfg, d, dtype="BF16", max_shard_bytes=20000)
        assert "model.safetensors.index.json" in files and len(files) > 3, files
        tensors = {}
        for fn in files:
            if fn.endswith(".safetensors"):
                tensors.update(asa_ref.read_safetensors(os.path.join(d, fn)))
        state = model.export_state()
        assert sorted(tensors) == sorted(state)
        for name, t in state.items():
            dtype, bits = tensors[name]
            assert dtype == "BF16", name
            want = asa_ref.f32_to_bf16_bits(t.detach().numpy().astype(np.float32))
            assert np.array_equal(bits, want), name
        asa_ref.load_model(d)
    print("bf16 export: rounding and sharding as the reference expects")


def main():
    worst = 0.0
    # T not a multiple of the block size or of s, and >= (n+local+2)*B = 64
    worst = max(worst, check(small_config(False), 101, 1))
    worst = max(worst, check(small_config(True), 80, 2))
    cfg = small_config(True)
    cfg["global"]["selection_share"] = 1      # plain NSA selection
    cfg["global"]["init_blocks"] = 0
    cfg["global"]["local_blocks"] = 1
    worst = max(worst, check(cfg, 70, 3, batch=1))
    check_bf16_export()
    if worst > TOL:
        print("FAIL: relative error %.3e > %.0e" % (worst, TOL))
        return 1
    print("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
