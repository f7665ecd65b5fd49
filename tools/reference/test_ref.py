#!/usr/bin/python3
"""Self-check of the reference implementation (asa_ref.py).

Checks spec identities that can be verified independently of the code under
test: a second, deliberately different implementation (per token, per head,
Python loops, absorbed attention, block choice written as "forced first,
then fill"), absorbed == expanded attention, RoPE against complex rotation,
causality, the exact window boundary, the shared-selection anchor identity,
exact-tie breaking, config checks, safetensors/bf16 round trips and the
consistency of the committed fixtures.

  /usr/bin/python3 tools/reference/test_ref.py        (exit 0: all passed,
                                                        77: numpy missing)
"""

import copy
import json
import math
import os
import sys
import tempfile
import unittest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import numpy as np
except ImportError:
    print("numpy is not installed for this python; skipping")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import asa_ref as R  # noqa: E402
import make_fixtures as MF  # noqa: E402

FIXTURES_DIR = os.path.join(HERE, "..", "..", "tests", "fixtures")


def fixture_config(name):
    for fx in MF.FIXTURES:
        if fx["name"] == name:
            return copy.deepcopy(fx["config"]), fx["seed"]
    raise KeyError(name)


def random_model(cfg, seed):
    """A float64 model with the fixture generator's weights (not rounded
    to bf16), built in memory."""
    c = R.parse_config(cfg)
    w = {k: v.astype(np.float64) for k, v in MF.make_weights(cfg, seed).items()}
    if c["tie_word_embeddings"]:
        w["lm_head.weight"] = w["embed_tokens.weight"]
    return R.Model(c, w, {})


def random_tokens(V, T, seed):
    return [int(v) for v in np.random.default_rng(seed).integers(0, V, size=T)]


# ---------------------------------------------------------------------------
# An independent, slow implementation of spec section 3 (scalar style).
# ---------------------------------------------------------------------------

def slow_forward(model, tokens):
    c = model.config
    w = model.w
    T = len(tokens)
    H, dh, dv, dR = c["num_heads"], c["head_dim"], c["v_head_dim"], c["rope_dim"]
    eps, theta = c["rms_norm_eps"], c["rope_theta"]
    scale = 1.0 / math.sqrt(dh + dR)

    def rms(v, g):
        return v / math.sqrt(float(np.dot(v, v)) / len(v) + eps) * g

    def rot(v, p):
        half = len(v) // 2
        out = np.empty_like(v)
        for k in range(half):
            ang = p * theta ** (-2.0 * k / len(v))
            out[k] = v[k] * math.cos(ang) - v[k + half] * math.sin(ang)
            out[k + half] = v[k] * math.sin(ang) + v[k + half] * math.cos(ang)
        return out

    def softmax_attend(qt, qr, entries):
        """entries: list of (latent, rope key). Returns (sum p_j latent_j, p)."""
        if not entries:
            return None, []
        sc = [(float(np.dot(qt, lat)) + float(np.dot(qr, kr))) * scale for lat, kr in entries]
        m = max(sc)
        e = [math.exp(s - m) for s in sc]
        z = sum(e)
        p = [x / z for x in e]
        pooled = sum(pj * lat for pj, (lat, _) in zip(p, entries))
        return pooled, p

    x = [w["embed_tokens.weight"][tok].copy() for tok in tokens]
    for li, ltype in enumerate(c["layer_types"]):
        pre = f"layers.{li}."
        G, dg = c[ltype]["latent_heads"], c[ltype]["latent_dim"]
        per_group = H // G
        hs = [rms(x[t], w[pre + "attn_norm.weight"]) for t in range(T)]
        Wq = w[pre + "attn.q_proj.weight"]
        Wa = w[pre + "attn.kv_a_proj.weight"]
        Wn = w[pre + "attn.kv_a_norm.weight"]
        Wb = w[pre + "attn.kv_b_proj.weight"]
        W_UK = [Wb[i * (dh + dv): i * (dh + dv) + dh] for i in range(H)]
        W_UV = [Wb[i * (dh + dv) + dh: (i + 1) * (dh + dv)] for i in range(H)]
        qt, qr, lat, kr = [], [], [], []
        for t in range(T):
            q = Wq @ hs[t]
            qt.append([W_UK[i].T @ q[i * (dh + dR): i * (dh + dR) + dh] for i in range(H)])
            qr.append([rot(q[i * (dh + dR) + dh: (i + 1) * (dh + dR)], t) for i in range(H)])
            a = Wa @ hs[t]
            lat.append([rms(a[g * dg:(g + 1) * dg], Wn[g * dg:(g + 1) * dg]) for g in range(G)])
            kr.append(rot(a[G * dg:], t))

        outs = []
        if ltype == "local":
            win = c["local"]["window"]
            for t in range(T):
                o = []
                for i in range(H):
                    g = i // per_group
                    ent = [(lat[j][g], kr[j]) for j in range(max(0, t - win + 1), t + 1)]
                    pooled, _ = softmax_attend(qt[t][i], qr[t][i], ent)
                    o.append(W_UV[i] @ pooled)
                outs.append(np.concatenate(o))
        else:
            gc = c["global"]
            B, n, s = gc["block_size"], gc["top_n"], gc["selection_share"]
            comp = {}  # block -> per group (mean latent, mean rope key)

            def comp_entries(t, g):
                ent = []
                b = 0
                while (b + 1) * B - 1 <= t:
                    if b not in comp:
                        comp[b] = ([sum(lat[j][gg] for j in range(b * B, (b + 1) * B)) / B
                                    for gg in range(G)],
                                   sum(kr[j] for j in range(b * B, (b + 1) * B)) / B)
                    ent.append((comp[b][0][g], comp[b][1]))
                    b += 1
                return ent

            chosen_cache = {}

            def blocks_for(t0, g):
                if (t0, g) in chosen_cache:
                    return chosen_cache[(t0, g)]
                S = None
                for i in range(g * per_group, (g + 1) * per_group):
                    _, p = softmax_attend(qt[t0][i], qr[t0][i], comp_entries(t0, g))
                    S = p if S is None else [a + b for a, b in zip(S, p)]
                cur = t0 // B
                forced = [b for b in range(cur + 1)
                          if b < gc["init_blocks"] or b > cur - gc["local_blocks"]]
                cands = [b for b in range(cur + 1) if b not in forced and (b + 1) * B - 1 <= t0]
                picked = list(forced)
                while len(picked) < n and cands:
                    best = cands[0]
                    for b in cands[1:]:
                        if S[b] > S[best]:      # strict: equal scores keep the lower id
                            best = b
                    picked.append(best)
                    cands.remove(best)
                chosen_cache[(t0, g)] = set(picked)
                return chosen_cache[(t0, g)]

            Wg = w[pre + "attn.g_proj.weight"]
            for t in range(T):
                gate = 1.0 / (1.0 + np.exp(-(Wg @ hs[t])))
                t0 = (t // s) * s
                o = []
                for i in range(H):
                    g = i // per_group
                    pooled, _ = softmax_attend(qt[t][i], qr[t][i], comp_entries(t, g))
                    o_cmp = np.zeros(dv) if pooled is None else W_UV[i] @ pooled
                    blocks = blocks_for(t0, g)
                    ent = [(lat[j][g], kr[j]) for j in range(t + 1) if j // B in blocks]
                    pooled, _ = softmax_attend(qt[t][i], qr[t][i], ent)
                    o_slc = W_UV[i] @ pooled
                    o.append(gate[i] * o_cmp + gate[H + i] * o_slc)
                outs.append(np.concatenate(o))
        Wo = w[pre + "attn.o_proj.weight"]
        for t in range(T):
            x[t] = x[t] + Wo @ outs[t]
            y = rms(x[t], w[pre + "mlp_norm.weight"])
            gte = w[pre + "mlp.gate_proj.weight"] @ y
            up = w[pre + "mlp.up_proj.weight"] @ y
            x[t] = x[t] + w[pre + "mlp.down_proj.weight"] @ (gte / (1.0 + np.exp(-gte)) * up)
    return np.array([w["lm_head.weight"] @ rms(x[t], w["norm.weight"]) for t in range(T)])


def rel_err(a, b):
    return float(np.max(np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)))


# ---------------------------------------------------------------------------

class TestFormats(unittest.TestCase):
    def test_bf16_rounding(self):
        f = np.array([1.0, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, -2.5, 0.0, np.inf, np.nan],
                     dtype=np.float32)
        bits = R.f32_to_bf16_bits(f)
        # 1+2^-8 is a tie between 1 and 1+2^-7 -> even (1); 1+3*2^-8 -> up to 1+2^-6
        self.assertEqual([int(b) for b in bits[:6]], [0x3F80, 0x3F80, 0x3F82, 0xC020, 0, 0x7F80])
        self.assertTrue(np.isnan(R.bf16_bits_to_f32(bits[6:])[0]))
        allbits = np.arange(0, 65536, dtype=np.uint32).astype(np.uint16)
        wide = R.bf16_bits_to_f32(allbits)
        ok = ~np.isnan(wide)
        self.assertTrue(np.array_equal(R.f32_to_bf16_bits(wide)[ok], allbits[ok]))

    def test_safetensors_roundtrip(self):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((3, 5)).astype(np.float32)
        b = R.f32_to_bf16_bits(rng.standard_normal(7).astype(np.float32))
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "m.safetensors")
            R.write_safetensors(p, [("a", "F32", a), ("b", "BF16", b)])
            with open(p, "rb") as f:
                raw = f.read()
            n = int.from_bytes(raw[:8], "little")
            self.assertEqual(n % 8, 0)
            self.assertEqual(len(raw), 8 + n + a.nbytes + b.nbytes)
            got = R.read_safetensors(p)
            self.assertEqual(got["a"][0], "F32")
            self.assertTrue(np.array_equal(got["a"][1], a))
            self.assertEqual(got["b"][0], "BF16")
            self.assertTrue(np.array_equal(got["b"][1], b))


class TestConfig(unittest.TestCase):
    BASE = {"model_type": "asa", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 3, "num_heads": 4, "head_dim": 4, "rope_dim": 2,
            "local": {"latent_heads": 1, "latent_dim": 4, "window": 3},
            "global": {"latent_heads": 2, "latent_dim": 4, "block_size": 4, "top_n": 3,
                       "init_blocks": 1, "local_blocks": 2}}

    def test_defaults(self):
        c = R.parse_config(self.BASE)
        self.assertEqual(c["v_head_dim"], 4)
        self.assertEqual(c["rope_theta"], 10000.0)
        self.assertEqual(c["rms_norm_eps"], 1e-6)
        self.assertEqual(c["max_position_embeddings"], 8192)
        self.assertFalse(c["tie_word_embeddings"])
        self.assertEqual(c["layer_types"], ["local", "global", "local"])
        self.assertEqual(c["global"]["selection_share"], 4)
        self.assertEqual(c["global"]["compression"], "mean")

    def bad(self, field, mutate):
        cfg = copy.deepcopy(self.BASE)
        mutate(cfg)
        with self.assertRaises(R.AsaError) as cm:
            R.parse_config(cfg)
        self.assertIn(field, str(cm.exception))

    def test_checks_name_the_field(self):
        self.bad("model_type", lambda c: c.update(model_type="llama"))
        self.bad("vocab_size", lambda c: c.pop("vocab_size"))
        self.bad("rope_dim", lambda c: c.update(rope_dim=3))
        self.bad("local.latent_heads", lambda c: c["local"].update(latent_heads=3))
        self.bad("global.latent_heads", lambda c: c["global"].update(latent_heads=3))
        self.bad("global.selection_share", lambda c: c["global"].update(selection_share=3))
        self.bad("global.local_blocks", lambda c: c["global"].update(local_blocks=0))
        self.bad("global.top_n", lambda c: c["global"].update(top_n=2))
        self.bad("local.window", lambda c: c["local"].update(window=0))
        self.bad("global.compression", lambda c: c["global"].update(compression="max"))
        self.bad("layer_types", lambda c: c.update(layer_types=["local", "global"]))
        self.bad("head_dim", lambda c: c.update(head_dim=2.5))
        self.bad("global.block_size", lambda c: c["global"].pop("block_size"))

    def test_tie_rule_and_tensor_checks(self):
        cfg, seed = fixture_config("tiny_w1")
        cfg["tie_word_embeddings"] = True
        w = MF.make_weights(cfg, seed)
        self.assertNotIn("lm_head.weight", w)
        with tempfile.TemporaryDirectory() as d:
            def write(conf, tensors):
                with open(os.path.join(d, "config.json"), "w") as f:
                    json.dump(conf, f)
                R.write_safetensors(os.path.join(d, "model.safetensors"),
                                    [(k, "F32", v) for k, v in tensors.items()])
            write(cfg, w)
            R.load_model(d)  # fine
            write(cfg, dict(w, **{"lm_head.weight": w["embed_tokens.weight"]}))
            self.assertRaisesRegex(R.AsaError, "lm_head", R.load_model, d)
            untied = dict(cfg, tie_word_embeddings=False)
            write(untied, w)
            self.assertRaisesRegex(R.AsaError, "missing tensor lm_head.weight", R.load_model, d)
            write(cfg, dict(w, extra=w["norm.weight"]))
            self.assertRaisesRegex(R.AsaError, "unknown tensor extra", R.load_model, d)
            w2 = dict(w)
            w2["layers.0.attn.g_proj.weight"] = w2["layers.0.attn.g_proj.weight"][:-1]
            write(cfg, w2)
            self.assertRaisesRegex(R.AsaError, "g_proj", R.load_model, d)
            m = R.load_model(os.path.join(FIXTURES_DIR, "tiny_w1")) if os.path.isdir(
                os.path.join(FIXTURES_DIR, "tiny_w1")) else None
            if m is not None:
                self.assertRaisesRegex(R.AsaError, "max_position_embeddings",
                                       R.forward, m, [0] * (m.config["max_position_embeddings"] + 1))


class TestPieces(unittest.TestCase):
    def test_rope_is_complex_rotation(self):
        rng = np.random.default_rng(1)
        dR, theta = 8, 10000.0
        x = rng.standard_normal((5, 3, dR))
        pos = np.array([0, 1, 7, 1000, 131071])
        got = R.rope(x, pos, theta)
        half = dR // 2
        z = x[..., :half] + 1j * x[..., half:]
        freqs = np.array([theta ** (-2.0 * k / dR) for k in range(half)])
        zr = z * np.exp(1j * pos[:, None, None] * freqs)
        want = np.concatenate([zr.real, zr.imag], axis=-1)
        self.assertLess(np.max(np.abs(got - want)), 1e-10)
        # relative position: <rope(q, m), rope(k, n)> depends only on m - n
        q, k = rng.standard_normal(dR), rng.standard_normal(dR)
        d1 = R.rope(q[None], np.array([10]), theta) @ R.rope(k[None], np.array([3]), theta).T
        d2 = R.rope(q[None], np.array([1007]), theta) @ R.rope(k[None], np.array([1000]), theta).T
        self.assertAlmostEqual(float(d1[0, 0]), float(d2[0, 0]), places=10)

    def test_absorbed_equals_expanded(self):
        rng = np.random.default_rng(2)
        Tq, Tk, H, G, dh, dv, dg, dR = 7, 9, 6, 3, 5, 4, 6, 4
        qC, qR = rng.standard_normal((Tq, H, dh)), rng.standard_normal((Tq, H, dR))
        c, kR = rng.standard_normal((Tk, G, dg)), rng.standard_normal((Tk, dR))
        W_UK, W_UV = rng.standard_normal((H, dh, dg)), rng.standard_normal((H, dv, dg))
        group = np.arange(H) // (H // G)
        mask = rng.random((H, Tq, Tk)) < 0.6
        mask[:, 0, :] = False            # an empty row: zeros, no NaN
        o1, p1 = R.attend(qC, qR, c, kR, W_UK, W_UV, group, mask, 0.3)
        o2, p2 = R.attend_absorbed(qC, qR, c, kR, W_UK, W_UV, group, mask, 0.3)
        self.assertLess(np.max(np.abs(o1 - o2)), 1e-12)
        self.assertLess(np.max(np.abs(p1 - p2)), 1e-12)
        self.assertTrue(np.all(o1[0] == 0) and np.all(p1[:, 0] == 0))
        self.assertFalse(np.any(np.isnan(o1)))

    def test_choose_blocks_rules(self):
        # cur = 9 (t0 = 36..39 with B=4); init 1, local 2 -> forced {0, 8, 9}
        S = [0.0, 0.5, 0.2, 0.5, 0.1, 0.5, 0.3, 0.0, 0.9, 0.9]
        got, gap, rel = R.choose_blocks(S, 36, 4, 5, 1, 2)
        self.assertEqual(got, [0, 1, 3, 8, 9])            # ties 1,3,5 -> lower ids 1, 3
        self.assertEqual(gap, 0.0)
        self.assertEqual(rel, 0.0)
        got, gap, rel = R.choose_blocks(S, 36, 4, 3, 1, 2)
        self.assertEqual(got, [0, 8, 9])
        self.assertIsNone(gap)                            # all slots forced
        self.assertIsNone(rel)
        got, _, _ = R.choose_blocks(S, 12, 4, 8, 1, 2)       # cur = 3: fewer than n -> all
        self.assertEqual(got, [0, 1, 2, 3])
        got, _, _ = R.choose_blocks(S, 0, 4, 3, 1, 2)        # position 0: only block 0
        self.assertEqual(got, [0])
        got, gap, rel = R.choose_blocks(S, 16, 4, 3, 0, 1)     # s=1 style, init 0, local 1
        self.assertEqual(got, [1, 3, 4])
        self.assertAlmostEqual(gap, 0.5 - 0.2)
        self.assertAlmostEqual(rel, (0.5 - 0.2) / 0.5)
        got, _, _ = R.choose_blocks(S, 19, 4, 3, 0, 1)       # t0 = 19: block 4 complete, still forced
        self.assertEqual(got, [1, 3, 4])


class TestForward(unittest.TestCase):
    def check_against_slow(self, name, T, edit=None):
        cfg, seed = fixture_config(name)
        if edit:
            edit(cfg)
        m = random_model(cfg, seed)
        toks = random_tokens(m.config["vocab_size"], T, seed + 7)
        fast = R.forward(m, toks)
        slow = slow_forward(m, toks)
        self.assertLess(rel_err(fast, slow), 1e-12, name)
        if "global" in m.config["layer_types"]:
            contested = [g for L in R.selections(m, toks) for r in L["gaps"] for g in r if g is not None]
            self.assertTrue(contested, f"{name}: selection never really chooses at T={T}")

    def test_slow_tiny_w1(self):
        self.check_against_slow("tiny_w1", 50)

    def test_slow_g3_share1(self):
        self.check_against_slow("g3_share1_tied", 75)

    def test_slow_g3_share4_small_window(self):
        def edit(c):
            c["global"]["selection_share"] = 4
            c["local"]["window"] = 5
            c["layer_types"] = ["local", "global", "global"]
        self.check_against_slow("g3_share1_tied", 83, edit)

    def test_slow_g1_window_eq(self):
        self.check_against_slow("g1_window_eq", 90)

    def test_slow_l3_window7(self):
        self.check_against_slow("l3_window7_share2", 61)

    def test_slow_sharded_mixed(self):     # one head per latent group (G = H)
        self.check_against_slow("sharded_mixed", 80)

    def test_slow_asa_tiny_shape(self):
        def edit(c):   # 'asa-tiny' shape with a shorter window so the test stays fast
            c["local"]["window"] = 40
        self.check_against_slow("asa_tiny", 200, edit)

    def test_short_sequences(self):
        cfg, seed = fixture_config("tiny_w1")
        m = random_model(cfg, seed)
        for T in (1, 2, 3, 4, 5):
            toks = random_tokens(256, T, T)
            out = R.forward(m, toks)
            self.assertTrue(np.all(np.isfinite(out)))
            self.assertLess(rel_err(out, slow_forward(m, toks)), 1e-12)

    def test_causality(self):
        cfg, seed = fixture_config("l3_window7_share2")
        m = random_model(cfg, seed)
        toks = random_tokens(300, 60, 11)
        base = R.forward(m, toks)
        for k in (0, 17, 44, 59):
            t2 = list(toks)
            t2[k] = (t2[k] + 1) % 300
            other = R.forward(m, t2)
            if k > 0:
                self.assertLess(np.max(np.abs(other[:k] - base[:k])), 1e-12, k)
            self.assertGreater(np.max(np.abs(other[k] - base[k])), 1e-6, k)

    def test_window_boundary(self):
        # One local layer only: row t depends exactly on tokens t-w+1 .. t.
        cfg, seed = fixture_config("l3_window7_share2")
        cfg["num_hidden_layers"] = 1
        cfg["layer_types"] = ["local"]
        m = random_model(cfg, seed)
        w_ = cfg["local"]["window"]
        toks = random_tokens(300, 30, 12)
        base = R.forward(m, toks)
        t = 20
        t2 = list(toks)
        t2[t - w_] = (t2[t - w_] + 1) % 300
        self.assertLess(np.max(np.abs(R.forward(m, t2)[t] - base[t])), 1e-12)
        t2 = list(toks)
        t2[t - w_ + 1] = (t2[t - w_ + 1] + 1) % 300
        self.assertGreater(np.max(np.abs(R.forward(m, t2)[t] - base[t])), 1e-6)
        # window >= T: any larger window gives the same function
        cfg2 = copy.deepcopy(cfg)
        cfg2["local"]["window"] = 30
        cfg3 = copy.deepcopy(cfg)
        cfg3["local"]["window"] = 300
        self.assertLess(rel_err(R.forward(random_model(cfg2, seed), toks),
                                R.forward(random_model(cfg3, seed), toks)), 1e-14)
        # and a window one short of T differs only in the last row
        cfg4 = copy.deepcopy(cfg)
        cfg4["local"]["window"] = 29
        d = np.abs(R.forward(random_model(cfg4, seed), toks) - R.forward(random_model(cfg2, seed), toks))
        self.assertLess(np.max(d[:29]), 1e-12)
        self.assertGreater(np.max(d[29]), 1e-6)

    def test_shared_selection_anchor_identity(self):
        # Layers [local, global]: at anchor positions t = 4k the global layer
        # sees the same inputs and makes the same choice for s=4 and s=1.
        cfg, seed = fixture_config("asa_tiny")
        cfg["local"]["window"] = 40
        m4 = random_model(cfg, seed)
        cfg1 = copy.deepcopy(cfg)
        cfg1["global"]["selection_share"] = 1
        m1 = random_model(cfg1, seed)
        toks = random_tokens(384, 230, 13)
        a, b = R.forward(m4, toks), R.forward(m1, toks)
        anchors = np.arange(0, 230, 4)
        self.assertLess(rel_err(a[anchors], b[anchors]), 1e-13)
        others = np.setdiff1d(np.arange(230), anchors)
        self.assertGreater(np.max(np.abs(a[others] - b[others])), 1e-6)
        # and the s=4 block sets equal the s=1 sets at every anchor
        s4, s1 = R.selections(m4, toks), R.selections(m1, toks)
        for L4, L1 in zip(s4, s1):
            for k, t0 in enumerate(L4["anchors"]):
                self.assertEqual(L4["blocks"][k], L1["blocks"][t0])

    def test_exact_ties_go_to_lower_blocks(self):
        # Zero RoPE rows and one repeated token: every complete block has
        # the same compressed entry, so all candidate scores tie exactly.
        cfg, seed = fixture_config("tiny_w1")
        m = random_model(cfg, seed)
        dh, dR, H = cfg["head_dim"], cfg["rope_dim"], cfg["num_heads"]
        Gd = cfg["global"]["latent_heads"] * cfg["global"]["latent_dim"]
        for i in range(H):
            m.w["layers.0.attn.q_proj.weight"][i * (dh + dR) + dh:(i + 1) * (dh + dR)] = 0
        m.w["layers.0.attn.kv_a_proj.weight"][Gd:] = 0
        toks = [7] * 60
        gc = m.config["global"]
        sel = R.selections(m, toks)[0]
        B, n = gc["block_size"], gc["top_n"]
        for t0, blocks in zip(sel["anchors"], sel["blocks"]):
            cur = t0 // B
            forced = {b for b in range(cur + 1) if b < gc["init_blocks"] or b > cur - gc["local_blocks"]}
            free = [b for b in range(cur + 1) if b not in forced][:max(0, n - len(forced))]
            for g_blocks in blocks:
                self.assertEqual(g_blocks, sorted(forced | set(free)), t0)
        self.assertLess(rel_err(R.forward(m, toks), slow_forward(m, toks)), 1e-12)

    def test_top_n_covering_everything_is_causal_attention(self):
        # With top_n >= number of blocks every block is selected: the
        # selection branch is plain causal attention, independent of s.
        cfg, seed = fixture_config("tiny_w1")
        cfg["global"]["top_n"] = 100
        cfg["global"]["selection_share"] = 4
        toks = random_tokens(256, 60, 14)
        a = R.forward(random_model(cfg, seed), toks)
        cfg["global"]["selection_share"] = 1
        b = R.forward(random_model(cfg, seed), toks)
        self.assertLess(rel_err(a, b), 1e-13)


class TestFixtures(unittest.TestCase):
    def test_committed_fixtures_match_reference(self):
        if not os.path.isdir(FIXTURES_DIR):
            self.skipTest("no fixtures")
        names = [fx["name"] for fx in MF.FIXTURES]
        for name in names:
            d = os.path.join(FIXTURES_DIR, name)
            self.assertTrue(os.path.isdir(d), name)
            m = R.load_model(d)
            with open(os.path.join(d, "case.json")) as f:
                case = json.load(f)
            self.assertEqual(case["name"], name)
            self.assertEqual(len(case["greedy"]), 256)
            gc = m.config["global"]
            self.assertGreaterEqual(len(case["prompt"]),
                                    (gc["top_n"] + gc["local_blocks"] + 2) * gc["block_size"])
            seq = case["prompt"] + case["greedy"][:-1]
            ref = R.forward(m, seq)
            got = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").reshape(len(seq), -1)
            self.assertEqual(got.shape, ref.shape)
            self.assertLess(rel_err(got.astype(np.float64), ref), 1e-6, name)
            P0 = len(case["prompt"])
            self.assertEqual([int(np.argmax(r)) for r in ref[P0 - 1:]], case["greedy"], name)


if __name__ == "__main__":
    unittest.main(verbosity=1)
