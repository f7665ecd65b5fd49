#!/usr/bin/env python3
"""Baseline (a) of the benchmark: ASA (ASA-SPEC.md) in plain eager PyTorch
with a KV cache.  No custom kernels, no torch.compile: the reference's math
(tools/reference/asa_ref.py) as ordinary torch ops, in the model's dtype
(bf16 on the GPU) with softmax and norms in float32.

Cache (per layer, all sequences of a batch at the same position):
  local layer   a ring of `window` entries [c (G*d_g), kR (d_R)] and the
                absolute position held by each ring slot
  global layer  every token's entry [B, max_len, G*d_g + d_R], one
                compressed entry (block mean, f32 mean rounded once) per
                complete block, and the shared-selection state: the block
                ids chosen at the last anchor, per latent group [B, G, n]
Attention runs in the absorbed form (spec 3.1) for prefill and decode
alike.  Prefill runs in chunks; a decode step is a chunk of one token.

Modes
  --check        compare logits against asa_ref.forward on a tiny config
                 (float64 and float32 on the CPU; prefill in odd-sized chunks,
                 then single-token decode steps; batch of 2).  Runs on torch
                 1.13 CPU: /usr/bin/python3 tools/bench/asa_eager.py --check
  (default)      timing on asa-1.3b with seeded random bf16 weights: decode
                 step time per (batch, context) with a cache of random
                 values, prefill time per prompt length; JSON to --json.
  --tiny         the timing code path on a tiny config (dry run, CPU ok)
"""
import argparse
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

PROG = "asa_eager"

try:
    import torch
    import torch.nn.functional as F
except Exception as e:  # pragma: no cover
    # 77 = skipped, for a test runner calling --check where torch is absent
    print("%s: cannot import torch: %s" % (PROG, e), flush=True)
    sys.exit(77 if "--check" in sys.argv else 2)


def _cdt(dtype):
    """Dtype of softmax, norms and RoPE: float32 for bf16/f16/f32, else f64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------
# Model: spec-named weights, random init
# ---------------------------------------------------------------------------

def make_weights(cfg, seed, device, dtype):
    """Seeded random weights for cfg, names and shapes of ASA-SPEC 2.
    Scales follow tools/reference/make_fixtures.py in spirit: projections
    std 1/sqrt(fan_in) (q_proj 3/sqrt(d) for sharper attention), norm
    weights in [0.8, 1.2], embeddings std 1, lm_head 3/sqrt(d).  Generated
    in float32 on `device` (fast on a GPU), then cast to dtype."""
    d, H, dh, dR = cfg["hidden_size"], cfg["num_heads"], cfg["head_dim"], cfg["rope_dim"]
    dv = cfg.get("v_head_dim", dh)
    V, Fi = cfg["vocab_size"], cfg["intermediate_size"]
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    gdt = torch.float64 if dtype == torch.float64 else torch.float32

    def randn(shape, std):
        t = torch.randn(*shape, generator=gen, device=device, dtype=gdt)
        return (t * std).to(dtype)

    def normw(n):
        t = torch.rand(n, generator=gen, device=device, dtype=gdt)
        return (0.8 + 0.4 * t).to(dtype)

    w = {"embed_tokens.weight": randn((V, d), 1.0), "norm.weight": normw(d)}
    if not cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = randn((V, d), 3.0 / math.sqrt(d))
    for i, t in enumerate(cfg["layer_types"]):
        G, dg = cfg[t]["latent_heads"], cfg[t]["latent_dim"]
        p = "layers.%d." % i
        w[p + "attn_norm.weight"] = normw(d)
        w[p + "mlp_norm.weight"] = normw(d)
        w[p + "attn.q_proj.weight"] = randn((H * (dh + dR), d), 3.0 / math.sqrt(d))
        w[p + "attn.kv_a_proj.weight"] = randn((G * dg + dR, d), 1.0 / math.sqrt(d))
        w[p + "attn.kv_a_norm.weight"] = normw(G * dg)
        w[p + "attn.kv_b_proj.weight"] = randn((H * (dh + dv), dg), 1.0 / math.sqrt(dg))
        w[p + "attn.o_proj.weight"] = randn((d, H * dv), 1.0 / math.sqrt(H * dv))
        if t == "global":
            w[p + "attn.g_proj.weight"] = randn((2 * H, d), 1.0 / math.sqrt(d))
        w[p + "mlp.gate_proj.weight"] = randn((Fi, d), 1.0 / math.sqrt(d))
        w[p + "mlp.up_proj.weight"] = randn((Fi, d), 1.0 / math.sqrt(d))
        w[p + "mlp.down_proj.weight"] = randn((d, Fi), 1.0 / math.sqrt(Fi))
    if cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = w["embed_tokens.weight"]
    return w


class AsaEager:
    """ASA forward with a cache, plain torch ops.  cfg: a config dict as in
    ASA-SPEC 1 (defaults filled); w: {spec name: tensor} on one device."""

    def __init__(self, cfg, w):
        self.cfg = cfg
        self.w = w
        self.dtype = w["embed_tokens.weight"].dtype
        self.device = w["embed_tokens.weight"].device
        self.cdt = _cdt(self.dtype)
        self.H, self.dh, self.dR = cfg["num_heads"], cfg["head_dim"], cfg["rope_dim"]
        self.dv = cfg.get("v_head_dim", self.dh)
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.theta = cfg.get("rope_theta", 10000.0)
        self.scale = 1.0 / math.sqrt(self.dh + self.dR)
        self.layers = []
        for i, t in enumerate(cfg["layer_types"]):
            G, dg = cfg[t]["latent_heads"], cfg[t]["latent_dim"]
            p = "layers.%d." % i
            kvb = w[p + "attn.kv_b_proj.weight"].view(self.H, self.dh + self.dv, dg)
            self.layers.append({
                "type": t, "G": G, "dg": dg, "p": p,
                "W_UK": kvb[:, :self.dh, :],            # [H, dh, dg]
                "W_UV": kvb[:, self.dh:, :],            # [H, dv, dg]
            })
        self._rope_len = 0
        self._cos = self._sin = None

    # -- building blocks ----------------------------------------------------

    def rms_norm(self, x, wt):
        xf = x.to(self.cdt)
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * wt.to(self.cdt)).to(self.dtype)

    def _rope_tables(self, n):
        if n > self._rope_len:
            n = max(n, 2 * self._rope_len, 1024)
            half = self.dR // 2
            k = torch.arange(half, dtype=torch.float64)
            inv = float(self.theta) ** (-2.0 * k / self.dR)
            ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
            self._cos = torch.cos(ang).to(self.cdt).to(self.device)
            self._sin = torch.sin(ang).to(self.cdt).to(self.device)
            self._rope_len = n

    def rope(self, x, pos, p_end):
        """Rotate-half RoPE; x [B, T, ..., dR], pos [T] (absolute positions
        < p_end, a host int: no device sync; angles computed in float64 from
        exact integers)."""
        self._rope_tables(p_end)
        shape = (1, pos.shape[0]) + (1,) * (x.dim() - 3) + (self.dR // 2,)
        cos = self._cos[pos].view(shape)
        sin = self._sin[pos].view(shape)
        half = self.dR // 2
        xf = x.to(self.cdt)
        x1, x2 = xf[..., :half], xf[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(self.dtype)

    def softmax(self, s, mask):
        """Softmax over the last axis in cdt restricted to mask (True =
        allowed); a row without an allowed entry gives zeros (spec 3.3)."""
        s = s.to(self.cdt).masked_fill(~mask, torch.finfo(self.cdt).min)
        p = torch.softmax(s, dim=-1)
        return p * mask.any(-1, keepdim=True).to(self.cdt)

    def latent_inputs(self, L, h, pos, p_end):
        """Spec 3.1 for normalised input h [B, T, d]: qt [B,T,H,dg] (absorbed
        q~ = W_UK^T qC), qR [B,T,H,dR], entry [B,T,G*dg+dR] (normalised
        latents then the rotated rope key, the cache layout)."""
        Bt, T = h.shape[0], h.shape[1]
        H, dh, dR = self.H, self.dh, self.dR
        G, dg, p = L["G"], L["dg"], L["p"]
        q = F.linear(h, self.w[p + "attn.q_proj.weight"]).view(Bt, T, H, dh + dR)
        qC = q[..., :dh]
        qR = self.rope(q[..., dh:], pos, p_end)
        qt = torch.einsum("bthk,hkd->bthd", qC, L["W_UK"])
        a = F.linear(h, self.w[p + "attn.kv_a_proj.weight"])
        c = self.rms_norm(a[..., :G * dg].reshape(Bt, T, G, dg),
                          self.w[p + "attn.kv_a_norm.weight"].view(G, dg))
        kR = self.rope(a[..., G * dg:], pos, p_end)
        entry = torch.cat([c.reshape(Bt, T, G * dg), kR], dim=-1)
        return qt, qR, entry

    def attend(self, L, qt, qR, keys, mask):
        """Absorbed latent attention of grouped queries over latent entries.
        qt [B, G, R, dg], qR [B, G, R, dR] (R query rows of each group);
        keys [B, Gk, K, G*dg+dR] with Gk = G (per-group key lists) or 1
        (shared); mask [B or 1, G or 1, R, K].  Returns pooled latents
        [B, G, R, dg] (sum_j p_j c_j) and p [B, G, R, K]."""
        G, dg = L["G"], L["dg"]
        Bt, K = keys.shape[0], keys.shape[2]
        if keys.shape[1] == G:
            c = torch.stack([keys[:, g, :, g * dg:(g + 1) * dg] for g in range(G)], dim=1)
            kR = keys[..., G * dg:]
        else:
            c = keys[:, 0, :, :G * dg].reshape(Bt, K, G, dg).permute(0, 2, 1, 3)
            kR = keys[:, :, :, G * dg:]
        s = (torch.matmul(qt, c.transpose(-1, -2)) + torch.matmul(qR, kR.transpose(-1, -2))) * self.scale
        p = self.softmax(s, mask)
        return torch.matmul(p.to(self.dtype), c), p

    def heads_out(self, L, pooled, Bt, T):
        """pooled [B, G, T*Hg, dg] (rows t-major) -> o [B, T, H, dv] = W_UV pooled."""
        G, dg = L["G"], L["dg"]
        Hg = self.H // G
        pooled = pooled.view(Bt, G, T, Hg, dg).permute(0, 2, 1, 3, 4).reshape(Bt, T, self.H, dg)
        return torch.einsum("bthd,hvd->bthv", pooled, L["W_UV"])

    def group_rows(self, L, x, Bt, T):
        """[B, T, H, k] -> [B, G, T*Hg, k] (heads of group g, t-major)."""
        G = L["G"]
        Hg = self.H // G
        return x.view(Bt, T, G, Hg, x.shape[-1]).permute(0, 2, 1, 3, 4).reshape(Bt, G, T * Hg, x.shape[-1])

    # -- layers ----------------------------------------------------------------

    def local_attn(self, li, L, h, pos, p0, cache):
        """Spec 3.2: token t attends to j in [t-w+1, t]."""
        Bt, T = h.shape[0], h.shape[1]
        w_ = self.cfg["local"]["window"]
        Hg = self.H // L["G"]
        qt, qR, entry = self.latent_inputs(L, h, pos, p0 + T)
        ring, rpos = cache.ring[li], cache.ring_pos[li]
        keys = torch.cat([ring, entry.to(ring.dtype)], dim=1)[:, None]        # [B,1,w+T,D]
        kpos = torch.cat([rpos, pos])
        m = (kpos[None, :] <= pos[:, None]) & (kpos[None, :] > pos[:, None] - w_) & (kpos[None, :] >= 0)
        m = m.repeat_interleave(Hg, dim=0)[None, None]                          # [1,1,T*Hg,w+T]
        pooled, _ = self.attend(L, self.group_rows(L, qt, Bt, T), self.group_rows(L, qR, Bt, T), keys, m)
        o = self.heads_out(L, pooled, Bt, T)
        # the last min(T, w) tokens go into the ring
        k = min(T, w_)
        slots = pos[T - k:] % w_
        ring[:, slots] = entry[:, T - k:].to(ring.dtype)
        rpos[slots] = pos[T - k:]
        return F.linear(o.reshape(Bt, T, self.H * self.dv), self.w[L["p"] + "attn.o_proj.weight"])

    def choose(self, S, anchors, nb):
        """Spec 3.3 block choice for anchors [nA] with selection scores
        S [B, G, nA, nc] (nc complete blocks known).  Returns block ids
        [B, G, nA, n], -1 where fewer than n were chosen."""
        g = self.cfg["global"]
        Bs, n = g["block_size"], g["top_n"]
        init_b, local_b = g["init_blocks"], g["local_blocks"]
        Bt, G, nA, nc = S.shape
        ball = torch.arange(nb, device=S.device)
        cur = (anchors // Bs)[:, None]
        exists = ball[None, :] <= cur
        forced = exists & ((ball[None, :] < init_b) | (ball[None, :] > cur - local_b))
        complete = (ball[None, :] + 1) * Bs - 1 <= anchors[:, None]
        score = torch.full((Bt, G, nA, nb), float("-inf"), dtype=S.dtype, device=S.device)
        if nc > 0:
            score[..., :nc] = S
        score = score.masked_fill(~(complete & exists & ~forced), float("-inf"))
        score = score.masked_fill(forced, float("inf"))
        srt, idx = torch.sort(score, dim=-1, descending=True, stable=True)
        k = min(n, nb)
        sel = torch.where(srt[..., :k] > float("-inf"), idx[..., :k], torch.full_like(idx[..., :k], -1))
        if k < n:
            sel = torch.cat([sel, torch.full((Bt, G, nA, n - k), -1, dtype=sel.dtype, device=sel.device)], -1)
        return sel

    def global_attn(self, li, L, h, pos, p0, cache):
        """Spec 3.3: compression branch, block choice at anchors, shared
        selection, selection branch, gate."""
        Bt, T = h.shape[0], h.shape[1]
        g = self.cfg["global"]
        Bs, s = g["block_size"], g["selection_share"]
        G, dg = L["G"], L["dg"]
        Hg = self.H // G
        dev = h.device
        qt, qR, entry = self.latent_inputs(L, h, pos, p0 + T)
        lat, comp = cache.lat[li], cache.comp[li]
        lat[:, p0:p0 + T] = entry.to(lat.dtype)
        # compressed entries of the blocks that complete in this chunk:
        # f32 mean of the cached values, rounded once
        nc0, nc = p0 // Bs, (p0 + T) // Bs
        if nc > nc0:
            blk = lat[:, nc0 * Bs:nc * Bs].view(Bt, nc - nc0, Bs, -1)
            comp[:, nc0:nc] = blk.to(self.cdt).mean(2).to(comp.dtype)
        qtg, qRg = self.group_rows(L, qt, Bt, T), self.group_rows(L, qR, Bt, T)
        # compression branch: token t sees blocks b with (b+1)B-1 <= t
        if nc > 0:
            vis = torch.arange(nc, device=dev)[None, :] < ((pos + 1) // Bs)[:, None]   # [T, nc]
            vm = vis.repeat_interleave(Hg, dim=0)[None, None]
            pooled, p_cmp = self.attend(L, qtg, qRg, comp[:, None, :nc], vm)
            o_cmp = self.heads_out(L, pooled, Bt, T)
        else:
            o_cmp = torch.zeros(Bt, T, self.H, self.dv, dtype=self.dtype, device=dev)
            p_cmp = None
        # block choice at the anchors in this chunk
        a_first = -(-p0 // s) * s
        if a_first < p0 + T:
            anchors = torch.arange(a_first, p0 + T, s, device=dev)
        else:
            anchors = torch.zeros(0, dtype=torch.long, device=dev)
        nA = anchors.shape[0]
        nb = (p0 + T - 1) // Bs + 1
        if nA > 0:
            if p_cmp is not None:
                rows = p_cmp.view(Bt, G, T, Hg, nc)[:, :, anchors - p0]             # [B,G,nA,Hg,nc]
                S = rows.sum(3)
            else:
                S = torch.zeros(Bt, G, nA, 0, dtype=self.cdt, device=dev)
            sel_new = self.choose(S, anchors, nb)
        if p0 % s != 0:
            stored = cache.sel[li][:, :, None]
            sel = stored if nA == 0 else torch.cat([stored, sel_new], dim=2)
        else:
            sel = sel_new
        nAg = (p0 + T - 1) // s - p0 // s + 1
        assert sel.shape[2] == nAg, (sel.shape, nAg)
        cache.sel[li] = sel[:, :, -1].clone()
        # selection branch: queries grouped by anchor group (padded to whole
        # groups; pad rows are computed and dropped)
        tok = (sel.clamp(min=0)[..., None] * Bs + torch.arange(Bs, device=dev)).flatten(-2)  # [B,G,nAg,nB]
        valid = (sel >= 0)[..., None].expand(sel.shape + (Bs,)).flatten(-2)
        bidx = torch.arange(Bt, device=dev).view(Bt, 1, 1, 1)
        keys = lat[bidx, tok]                                                       # [B,G,nAg,nB,D]
        front = p0 % s
        back = nAg * s - T - front
        def pad_rows(x):  # [B,T,H,k] -> [B,G,nAg,s*Hg,k]
            x = F.pad(x, (0, 0, 0, 0, front, back))
            k = x.shape[-1]
            return x.view(Bt, nAg, s, G, Hg, k).permute(0, 3, 1, 2, 4, 5).reshape(Bt, G, nAg, s * Hg, k)
        qp = (p0 // s) * s + torch.arange(nAg * s, device=dev).view(nAg, s)
        qp = qp.repeat_interleave(Hg, dim=1)                                         # [nAg, s*Hg]
        m = valid[:, :, :, None, :] & (tok[:, :, :, None, :] <= qp[None, None, :, :, None])
        c_sel = torch.stack([keys[:, gg, ..., gg * dg:(gg + 1) * dg] for gg in range(G)], dim=1)
        kR_sel = keys[..., G * dg:]
        sc = (torch.matmul(pad_rows(qt), c_sel.transpose(-1, -2))
              + torch.matmul(pad_rows(qR), kR_sel.transpose(-1, -2))) * self.scale
        p_slc = self.softmax(sc, m)
        pooled = torch.matmul(p_slc.to(self.dtype), c_sel)                          # [B,G,nAg,s*Hg,dg]
        pooled = pooled.view(Bt, G, nAg * s, Hg, dg).permute(0, 2, 1, 3, 4)[:, front:front + T]
        o_slc = torch.einsum("bthd,hvd->bthv", pooled.reshape(Bt, T, self.H, dg), L["W_UV"])
        # gate
        gt = torch.sigmoid(F.linear(h, self.w[L["p"] + "attn.g_proj.weight"]).to(self.cdt))
        o = gt[..., :self.H, None] * o_cmp.to(self.cdt) + gt[..., self.H:, None] * o_slc.to(self.cdt)
        return F.linear(o.to(self.dtype).reshape(Bt, T, self.H * self.dv), self.w[L["p"] + "attn.o_proj.weight"])

    def mlp(self, p, y):
        w = self.w
        return F.linear(F.silu(F.linear(y, w[p + "mlp.gate_proj.weight"])) * F.linear(y, w[p + "mlp.up_proj.weight"]),
                        w[p + "mlp.down_proj.weight"])

    def forward(self, tokens, cache, all_logits=False):
        """tokens [B, T] at positions cache.len .. cache.len+T-1 (the same
        for every sequence).  Appends to the cache; returns logits [B, T, V]
        (all_logits) or [B, V] for the last token."""
        Bt, T = tokens.shape
        p0 = cache.len
        if p0 + T > cache.max_len:
            raise ValueError("cache of %d positions is full (%d + %d)" % (cache.max_len, p0, T))
        pos = torch.arange(p0, p0 + T, device=self.device)
        w = self.w
        x = F.embedding(tokens, w["embed_tokens.weight"])
        for li, L in enumerate(self.layers):
            p = L["p"]
            h = self.rms_norm(x, w[p + "attn_norm.weight"])
            if L["type"] == "local":
                x = x + self.local_attn(li, L, h, pos, p0, cache)
            else:
                x = x + self.global_attn(li, L, h, pos, p0, cache)
            x = x + self.mlp(p, self.rms_norm(x, w[p + "mlp_norm.weight"]))
        cache.len = p0 + T
        if not all_logits:
            x = x[:, -1]
        return F.linear(self.rms_norm(x, w["norm.weight"]), w["lm_head.weight"])

    def prefill(self, tokens, cache, chunk=2048, all_logits=False):
        """Chunked prefill of tokens [B, T]; returns the last logits [B, V]
        (or every row [B, T, V] with all_logits)."""
        outs = []
        T = tokens.shape[1]
        for a in range(0, T, chunk):
            outs.append(self.forward(tokens[:, a:a + chunk], cache, all_logits))
        return torch.cat(outs, dim=1) if all_logits else outs[-1]


class Cache:
    """KV cache for a batch of sequences that share their length."""

    def __init__(self, model, batch, max_len, dtype=None):
        cfg = model.cfg
        dtype = dtype or model.dtype
        dev = model.device
        self.batch, self.max_len, self.len = batch, max_len, 0
        g = cfg["global"]
        w_ = cfg["local"]["window"]
        self.ring, self.ring_pos, self.lat, self.comp, self.sel = {}, {}, {}, {}, {}
        for li, L in enumerate(model.layers):
            D = L["G"] * L["dg"] + cfg["rope_dim"]
            if L["type"] == "local":
                self.ring[li] = torch.zeros(batch, w_, D, dtype=dtype, device=dev)
                self.ring_pos[li] = torch.full((w_,), -1, dtype=torch.long, device=dev)
            else:
                # whole blocks: the selection branch gathers every token of
                # a chosen block, the current partial one included
                nblk = -(-max_len // g["block_size"])
                self.lat[li] = torch.zeros(batch, nblk * g["block_size"], D, dtype=dtype, device=dev)
                self.comp[li] = torch.zeros(batch, max_len // g["block_size"] + 1, D, dtype=dtype, device=dev)
                self.sel[li] = torch.full((batch, L["G"], g["top_n"]), -1, dtype=torch.long, device=dev)

    def nbytes(self):
        tot = 0
        for d in (self.ring, self.ring_pos, self.lat, self.comp, self.sel):
            for t in d.values():
                tot += t.numel() * t.element_size()
        return tot

    def fill_random(self, model, ctx, seed=1):
        """Pretend ctx tokens were processed: random latents (unit RMS, as
        after kv_a_norm) and rope keys in every entry, compressed entries as
        their block means, ring slots holding positions ctx-w .. ctx-1, and
        a valid selection state.  The next position is ctx."""
        cfg = model.cfg
        g = cfg["global"]
        Bs, n = g["block_size"], g["top_n"]
        w_ = cfg["local"]["window"]
        gen = torch.Generator(device=model.device)
        gen.manual_seed(seed)
        for li, t in self.ring.items():
            t.copy_(torch.randn(t.shape, generator=gen, device=t.device, dtype=torch.float32))
            k = min(ctx, w_)
            pos = torch.arange(ctx - k, ctx, device=t.device)
            self.ring_pos[li].fill_(-1)
            self.ring_pos[li][pos % w_] = pos
        for li, t in self.lat.items():
            # fill in slices to bound the float32 temporary
            step = max(1, (1 << 28) // max(1, t.shape[0] * t.shape[2]))
            for a in range(0, ctx, step):
                b = min(ctx, a + step)
                t[:, a:b].copy_(torch.randn((t.shape[0], b - a, t.shape[2]), generator=gen,
                                            device=t.device, dtype=torch.float32))
            nc = ctx // Bs
            if nc:
                self.comp[li][:, :nc] = t[:, :nc * Bs].view(t.shape[0], nc, Bs, -1).float().mean(2).to(t.dtype)
            cur = max(ctx - 1, 0) // Bs
            ids = torch.arange(max(0, cur - n + 1), cur + 1, device=t.device)
            sel = torch.full(self.sel[li].shape, -1, dtype=torch.long, device=t.device)
            sel[..., :ids.numel()] = ids
            self.sel[li] = sel
        self.len = ctx


# ---------------------------------------------------------------------------
# --check: against the float64 reference on a tiny config
# ---------------------------------------------------------------------------

CHECK_CFG = {
    "model_type": "asa", "vocab_size": 97, "hidden_size": 128, "intermediate_size": 192,
    "num_hidden_layers": 4, "num_heads": 4, "head_dim": 16, "v_head_dim": 12,
    "rope_dim": 8, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
    "max_position_embeddings": 4096, "tie_word_embeddings": False,
    "layer_types": ["local", "global", "global", "local"],
    "local": {"latent_heads": 1, "latent_dim": 24, "window": 40},
    "global": {"latent_heads": 2, "latent_dim": 20, "block_size": 8, "top_n": 5,
               "init_blocks": 1, "local_blocks": 2, "selection_share": 4,
               "compression": "mean"},
}


def run_check(args):
    sys.path.insert(0, os.path.join(HERE, "..", "reference"))
    try:
        import numpy as np
        import asa_ref
    except Exception as e:
        common.log(PROG, "check: cannot import numpy / tools/reference/asa_ref.py: %s" % e)
        return 77
    torch.manual_seed(0)
    cfg = asa_ref.parse_config(dict(CHECK_CFG))
    g = cfg["global"]
    T_prompt = 70
    n_decode = 30
    T = T_prompt + n_decode
    assert T >= (g["top_n"] + g["local_blocks"] + 2) * g["block_size"]
    w64 = make_weights(cfg, 1234, torch.device("cpu"), torch.float64)
    ref = asa_ref.Model(cfg, {k: v.numpy() for k, v in w64.items()}, {k: "F32" for k in w64})
    rng = np.random.default_rng(7)
    seqs = rng.integers(0, cfg["vocab_size"], size=(2, T))
    refs = [asa_ref.forward(ref, seqs[b]) for b in range(2)]
    # how far from a tie the reference's choices are (a float32 run may flip
    # a choice whose gap is within rounding; float64 must not)
    gaps = [r for b in range(2) for rec in asa_ref.selections(ref, seqs[b])
            for row in rec["rel_gaps"] for r in row if r is not None]
    common.log(PROG, "check: tiny config (%d layers, d %d, T %d, window %d, B %d, n %d); reference "
               "float64; %d top-n choices, smallest relative gap %.2g"
               % (cfg["num_hidden_layers"], cfg["hidden_size"], T, cfg["local"]["window"],
                  g["block_size"], g["top_n"], len(gaps), min(gaps) if gaps else float("nan")))
    # bf16 run (info only): against the reference on the same bf16-rounded
    # weights; activations and cache in bf16 put it near 1e-2 (spec 6)
    wbf = {k: v.to(torch.bfloat16) for k, v in w64.items()}
    ref_bf = asa_ref.Model(cfg, {k: v.double().numpy() for k, v in wbf.items()}, {k: "BF16" for k in wbf})
    refs_bf = [asa_ref.forward(ref_bf, seqs[b]) for b in range(2)]
    ok = True
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4), (torch.bfloat16, None)):
        w = {k: v.to(dtype) for k, v in w64.items()}
        rr = refs if tol is not None else refs_bf
        m = AsaEager(cfg, w)
        for chunk in (13, 64):
            try:
                cache = Cache(m, 2, T + 3)  # not a whole number of blocks
                toks = torch.tensor(seqs, dtype=torch.long)
                rows = [m.prefill(toks[:, :T_prompt], cache, chunk=chunk, all_logits=True)]
                for t in range(T_prompt, T):
                    rows.append(m.forward(toks[:, t:t + 1], cache, all_logits=True))
                got = torch.cat(rows, dim=1).double().numpy()
            except Exception as e:
                if tol is None:
                    common.log(PROG, "check: %s: not run on this torch (%s)" % (dtype, e))
                    break
                raise
            errs = [float(np.linalg.norm(got[b, t] - rr[b][t]) / np.linalg.norm(rr[b][t]))
                    for b in range(2) for t in range(T)]
            worst = max(errs)
            if tol is None:
                verdict = "info: median %.3g (bf16 activations and cache; reference on the same bf16 weights)" % float(np.median(errs))
            elif worst < tol:
                verdict = "ok (< %g)" % tol
            else:
                verdict = "FAIL (>= %g)" % tol
                ok = False
            common.log(PROG, "check: %-14s prefill chunk %2d + %d decode steps, batch 2: max relative "
                       "L2 error of a logit row %.3g  %s" % (str(dtype).replace("torch.", ""), chunk,
                                                          n_decode, worst, verdict))
    common.log(PROG, "check: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

TINY_CFG = dict(CHECK_CFG, vocab_size=512, max_position_embeddings=1 << 20)


def decode_bytes_estimate(cfg, batch, max_len, elt=2):
    D_g = asa_entry = cfg["global"]["latent_heads"] * cfg["global"]["latent_dim"] + cfg["rope_dim"]
    ng = sum(1 for t in cfg["layer_types"] if t == "global")
    cache = ng * batch * max_len * D_g * elt * (1 + 1.0 / cfg["global"]["block_size"])
    del asa_entry
    # transient: float32 randn slices while filling, attention temporaries
    return cache + (1 << 30) + batch * 64 * (1 << 20)


def time_decode(m, batch, ctx, repeats, start, stop, seed=3):
    """Median time of one decode step at (batch, ctx): the cache is filled
    with random values up to ctx (an anchor position when ctx % s == 0),
    then groups of s consecutive steps (one anchor, s-1 reusing its
    selection) are timed with events; returns ms per step (median over
    groups) and the list of group times."""
    s = m.cfg["global"]["selection_share"]
    warm = s
    max_len = ctx + s * (repeats + 1) + s
    cache = Cache(m, batch, max_len)
    cache.fill_random(m, ctx, seed)
    gen = torch.Generator(device=m.device)
    gen.manual_seed(seed)
    tok = torch.randint(0, m.cfg["vocab_size"], (batch, 1), generator=gen, device=m.device)
    with torch.no_grad():
        for _ in range(warm):
            tok = m.forward(tok, cache).argmax(-1, keepdim=True)
        ts = []
        for _ in range(repeats):
            ev = start()
            for _ in range(s):
                tok = m.forward(tok, cache).argmax(-1, keepdim=True)
            ts.append(stop(ev) / s)
    kvb = cache.nbytes()
    del cache
    return common.median(ts), ts, kvb


def time_prefill(m, T, repeats, start, stop, chunk, seed=5):
    gen = torch.Generator(device=m.device)
    gen.manual_seed(seed)
    toks = torch.randint(0, m.cfg["vocab_size"], (1, T), generator=gen, device=m.device)
    ts = []
    with torch.no_grad():
        for _ in range(repeats):
            cache = Cache(m, 1, T + 8)
            ev = start()
            m.prefill(toks, cache, chunk=chunk)
            ts.append(stop(ev))
            del cache
    return common.median(ts), ts


def parse_list(s):
    return [int(x) for x in s.split(",") if x.strip()]


def run_timing(args):
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        common.log(PROG, "no CUDA device visible to torch %s: nothing timed" % torch.__version__)
        return 77
    budget = common.Budget(args.budget)
    cfg = dict(TINY_CFG) if args.tiny else dict(common.ASA_1P3B)
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[args.dtype]
    res = common.Results(args.json, baseline="asa_eager", model="tiny" if args.tiny else "asa-1.3b",
                         dtype=args.dtype, **common.device_info(torch, dev))
    start, stop = common.timer(torch, dev)
    budget.arm()
    if not args.no_ceilings and budget.allows(20):
        t0 = time.time()
        ceil = common.measure_ceilings(torch, dev, copy_bytes=(2 << 30) if dev.type == "cuda" else (64 << 20),
                                       gemm_n=8192 if dev.type == "cuda" else 512)
        res.set("ceilings", ceil)
        common.log(PROG, "ceilings: copy %.0f GB/s (read+write), bf16 GEMM %d^3 %.1f TFLOP/s (%.1f s)"
                   % (ceil["bandwidth_GBps"], ceil["gemm_n"], ceil["gemm_TFLOPs"], time.time() - t0))
    t0 = time.time()
    with torch.no_grad():
        w = make_weights(cfg, args.seed, dev, dtype)
    m = AsaEager(cfg, w)
    nparams = sum(t.numel() for k, t in w.items() if k != "lm_head.weight" or not cfg.get("tie_word_embeddings"))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    common.log(PROG, "model %s, %.3g parameters, %s, random init %.1f s; budget %.0f s"
               % (res.doc["model"], nparams, args.dtype, time.time() - t0, args.budget))
    res.set("params", nparams)
    res.set("kv_bytes_per_token", common.asa_kv_bytes_per_token(cfg, 2 if dtype == torch.bfloat16 else 4))
    # measured from this cache's allocations: bytes per extra token of context
    c1, c2 = Cache(m, 1, 16384), Cache(m, 1, 32768)
    res.set("kv_bytes_per_token_measured", (c2.nbytes() - c1.nbytes()) / 16384.0)
    res.set("kv_bytes_fixed_per_seq", c1.nbytes() - 16384 * res.doc["kv_bytes_per_token_measured"])
    common.log(PROG, "KV cache: %.0f bytes per token (measured from the allocations), %.2f MB fixed per sequence "
               "(local rings, selection state)" % (res.doc["kv_bytes_per_token_measured"],
                                                  res.doc["kv_bytes_fixed_per_seq"] / 1e6))
    del c1, c2

    # order: the targets first (batch 1 at 1k, batch 64 at 4k, batch 1
    # at 128k, prefill 8k), then the rest by size; whatever does not fit the
    # budget is skipped with a note
    pre = parse_list(args.prefill)
    dec = [(b, c) for c in parse_list(args.contexts) for b in parse_list(args.batches)]
    first = [(1, 1024), (8, 1024), (64, 4096), (1, 131072), (1, 8192), (1, 32768)]
    plan = [("prefill", 1, T) for T in pre if T <= 8192]
    plan += [("decode", b, c) for b, c in first if (b, c) in dec]
    plan += [("prefill", 1, T) for T in pre if T > 8192]
    plan += [("decode", b, c) for b, c in sorted(dec, key=lambda bc: (bc[0] * bc[1], bc[1])) if (b, c) not in first]
    # warm-up (kernels, cuBLAS handles, allocator) on a short prompt
    try:
        with torch.no_grad():
            c0 = Cache(m, 1, 256)
            m.prefill(torch.zeros(1, 64, dtype=torch.long, device=dev) + 3, c0)
            for _ in range(8):
                m.forward(torch.zeros(1, 1, dtype=torch.long, device=dev) + 5, c0)
            del c0
    except Exception as e:
        res.add("errors", {"phase": "warm-up", "error": repr(e)})
        common.log(PROG, "warm-up failed: %r" % e)
        return 1
    est_step = {}  # rough seconds per step by batch, refined as we go
    for kind, b, n in plan:
        name = "%s batch %d %s %s" % (kind, b, "prompt" if kind == "prefill" else "ctx", common.fmt_ctx(n))
        if kind == "decode":
            need = decode_bytes_estimate(cfg, b, n + 64)
            if need > 0.85 * common.free_bytes(torch, dev):
                res.add("skipped", {"kind": kind, "batch": b, "ctx": n, "why": "memory (%.1f GB needed)" % (need / 1e9)})
                common.log(PROG, "%-32s skipped: memory (needs ~%.1f GB)" % (name, need / 1e9))
                continue
            est = 4 * (args.repeats + 2) * est_step.get(b, 0.05) * (1 + n / 65536) + n * b * 2e-6 + 1.0
        else:
            runs = args.prefill_repeats + 1 if n <= 8192 else 2
            est = runs * n * 1.5e-4 * (1 + n / 65536) + 1.0
        if not budget.allows(est):
            res.add("skipped", {"kind": kind, "batch": b, "ctx": n, "why": "time budget (est %.0f s, %.0f s left)" % (est, budget.left())})
            common.log(PROG, "%-32s skipped: time budget (est %.0f s, %.0f s left)" % (name, est, budget.left()))
            continue
        t0 = time.time()
        try:
            if kind == "decode":
                ms, ts, kvb = time_decode(m, b, n, args.repeats, start, stop)
                est_step[b] = max(est_step.get(b, 0), ms * 1e-3)
                row = {"batch": b, "ctx": n, "ms": ms, "ms_all": ts, "tokens_per_s": b / (ms * 1e-3),
                       "cache_bytes": kvb}
                res.add("decode", row)
                common.log(PROG, "%-32s %9.3f ms/step  (%.0f tokens/s; groups of 4 steps, %d repeats; %.1f s)"
                           % (name, ms, b / (ms * 1e-3), len(ts), time.time() - t0))
            else:
                # a warm-up prefill of the same length first (allocator, cuBLAS plans)
                ms, ts = time_prefill(m, n, runs, start, stop, args.chunk)
                ms = common.median(ts[1:]) if len(ts) > 1 else ts[0]
                row = {"batch": 1, "T": n, "ms": ms, "ms_all": ts, "chunk": args.chunk,
                       "tokens_per_s": n / (ms * 1e-3)}
                res.add("prefill", row)
                common.log(PROG, "%-32s %9.3f ms  (%.0f tokens/s, chunk %d; %.1f s)"
                           % (name, ms, n / (ms * 1e-3), args.chunk, time.time() - t0))
        except Exception as e:  # out of memory or anything else: note, go on
            res.add("errors", {"kind": kind, "batch": b, "n": n, "error": repr(e)[:500]})
            common.log(PROG, "%-32s FAILED: %r" % (name, e))
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    budget.disarm()
    res.set("wall_s", budget.elapsed())
    common.log(PROG, "done in %.1f s" % budget.elapsed())
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare against asa_ref.py on a tiny config (CPU)")
    ap.add_argument("--tiny", action="store_true", help="time a tiny config (dry run of the timing path)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--batches", default="1,8,32,64,128,256")
    ap.add_argument("--contexts", default="1024,4096,8192,32768,131072")
    ap.add_argument("--prefill", default="1024,8192,32768")
    ap.add_argument("--chunk", type=int, default=2048, help="prefill chunk (tokens)")
    ap.add_argument("--repeats", type=int, default=5, help="timed groups of 4 decode steps")
    ap.add_argument("--prefill-repeats", type=int, default=2)
    ap.add_argument("--budget", type=float, default=150.0, help="seconds for the whole timing run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="write results here (rewritten after every row)")
    ap.add_argument("--no-ceilings", action="store_true")
    args = ap.parse_args()
    if args.check:
        return run_check(args)
    try:
        return run_timing(args)
    except Exception as e:
        import traceback
        traceback.print_exc()
        common.log(PROG, "error: %r" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
