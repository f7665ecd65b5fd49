"""ASA (ASA-SPEC.md) and a full-attention baseline in PyTorch, for training.

The ASA model computes the function of ASA-SPEC section 3 on whole sequences
starting at position 0 (what training and evaluation need); the reference
(tools/reference/asa_ref.py) is the definition and tests/train/ checks that
both agree in float64.  Differences from the reference are in how, not what:
  - keys/values are expanded per head and attention runs densely with boolean
    masks (sliding window; per-(token, head) selected-block masks), through
    scaled_dot_product_attention where it exists (torch >= 2.0, CUDA);
  - the compression branch and the block choice run in float32 (or float64
    when the model is float64), the rest under bf16 autocast when training;
  - top-n selection is made without gradient (a stable descending sort gives
    ties to the lower block index); gradients flow through the attention over
    the selected blocks and through the compression branch, as in NSA.
Parameter names are those of ASA-SPEC section 2, so export is a rename-free
dump of state_dict() (minus lm_head when tied).

Works with torch 1.13 (CPU, for dry runs and tests) and torch 2.x (CUDA).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


def asa_tiny_config(vocab_size, bos_token_id, eos_token_id, max_pos=2048):
    """The asa-tiny row of ASA-SPEC section 5, tied embeddings."""
    return {
        "model_type": "asa",
        "vocab_size": vocab_size, "hidden_size": 256, "intermediate_size": 704,
        "num_hidden_layers": 8, "num_heads": 4, "head_dim": 64, "v_head_dim": 64,
        "rope_dim": 32, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
        "max_position_embeddings": max_pos, "tie_word_embeddings": True,
        "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
        "torch_dtype": "bfloat16",
        "layer_types": ["local", "global"] * 4,
        "local": {"latent_heads": 1, "latent_dim": 96, "window": 128},
        "global": {"latent_heads": 2, "latent_dim": 48, "block_size": 16, "top_n": 8,
                   "init_blocks": 1, "local_blocks": 2, "selection_share": 4,
                   "compression": "mean"},
    }


def _compute_dtype(t):
    return torch.float32 if t.dtype in (torch.bfloat16, torch.float16) else t.dtype


def rms_norm(x, w, eps):
    """y / sqrt(mean(y^2) + eps) * w over the last axis, in >= float32."""
    xf = x.to(_compute_dtype(x))
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return y * w.to(y.dtype)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def rope_tables(T, dim, theta, device, dtype):
    """cos, sin [T, dim/2]; angle_k = pos * theta^(-2k/dim), computed in
    float64 with exact integer positions, then rounded to dtype."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float64, device=device)
    inv = float(theta) ** (-2.0 * k / dim)
    ang = torch.arange(T, dtype=torch.float64, device=device)[:, None] * inv[None, :]
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def apply_rope(x, cos, sin):
    """Rotate-half RoPE; x [..., T, dim], cos/sin [T, dim/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def attend(q, k, v, mask=None, causal=False):
    """softmax(q k^T / sqrt(D) masked) v; q,k [B,H,T,D], v [B,H,T,Dv];
    mask bool broadcastable to [B,H,T,T], True = may attend.  Every row must
    allow at least one key.  The fused kernel is used on CUDA when T is a
    multiple of 8 (mask alignment); otherwise plain matmul + softmax."""
    dt = v.dtype
    q, k = q.to(dt), k.to(dt)
    if HAS_SDPA and q.is_cuda and q.shape[-2] % 8 == 0:
        if causal:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        T = q.shape[-2]
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    s = s.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


class MLP(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LatentAttention(nn.Module):
    """ASA-SPEC 3.1-3.3: a local (sliding-window MLA) or global (compressed +
    selected GLA) layer."""

    def __init__(self, cfg, kind):
        super().__init__()
        self.kind = kind
        d, H = cfg["hidden_size"], cfg["num_heads"]
        self.H, self.dh, self.dR = H, cfg["head_dim"], cfg["rope_dim"]
        self.dv = cfg.get("v_head_dim", cfg["head_dim"])
        lc = cfg[kind]
        self.G, self.dg = lc["latent_heads"], lc["latent_dim"]
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.lc = lc
        self.q_proj = nn.Linear(d, H * (self.dh + self.dR), bias=False)
        self.kv_a_proj = nn.Linear(d, self.G * self.dg + self.dR, bias=False)
        self.kv_a_norm = RMSNorm(self.G * self.dg, self.eps)
        self.kv_b_proj = nn.Linear(self.dg, H * (self.dh + self.dv), bias=False)
        self.o_proj = nn.Linear(H * self.dv, d, bias=False)
        if kind == "global":
            self.g_proj = nn.Linear(d, 2 * H, bias=False)
        self.register_buffer("head_group", torch.arange(H) // (H // self.G), persistent=False)

    def expand(self, c, dtype=None):
        """c [B,N,G,dg] -> per-head keys' nope part [B,H,N,dh] and values
        [B,H,N,dv]: W_UK,i c^(g(i)) and W_UV,i c^(g(i)).  Heads of group g
        are contiguous, so are their kv_b_proj rows.  dtype: cast the
        weight (used with autocast off)."""
        B, N = c.shape[0], c.shape[1]
        per = (self.H // self.G) * (self.dh + self.dv)
        W = self.kv_b_proj.weight if dtype is None else self.kv_b_proj.weight.to(dtype)
        kv = torch.cat([F.linear(c[:, :, g], W[g * per:(g + 1) * per]) for g in range(self.G)], dim=-1)
        kv = kv.view(B, N, self.H, self.dh + self.dv).transpose(1, 2)
        return kv[..., :self.dh], kv[..., self.dh:]

    def forward(self, h, cos, sin):
        B, T, _ = h.shape
        H, dh, dR, G, dg = self.H, self.dh, self.dR, self.G, self.dg
        q = self.q_proj(h).view(B, T, H, dh + dR).transpose(1, 2)        # [B,H,T,dh+dR]
        qC, qR = q[..., :dh], apply_rope(q[..., dh:], cos, sin)
        a = self.kv_a_proj(h)                                           # [B,T,G*dg+dR]
        c = rms_norm(a[..., :G * dg].reshape(B, T, G, dg),
                     self.kv_a_norm.weight.view(G, dg), self.eps)       # [B,T,G,dg]
        kR = apply_rope(a[..., G * dg:], cos, sin)                      # [B,T,dR]
        kC, v = self.expand(c)
        dt = v.dtype
        Q = torch.cat([qC.to(dt), qR.to(dt)], dim=-1)
        K = torch.cat([kC, kR.to(dt)[:, None].expand(B, H, T, dR)], dim=-1)
        pos = torch.arange(T, device=h.device)
        if self.kind == "local":
            w = self.lc["window"]
            mask = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - w)
            o = attend(Q, K, v, mask)
        else:
            o = self._global(h, Q, c, kR, K, v, pos)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, H * self.dv))

    def _global(self, h, Q, c, kR, K, v, pos):
        B, T = h.shape[0], h.shape[1]
        H, G, dR = self.H, self.G, self.dR
        lc = self.lc
        Bs, n, s = lc["block_size"], lc["top_n"], lc.get("selection_share", 4)
        init_b, local_b = lc["init_blocks"], lc["local_blocks"]
        cdt = _compute_dtype(Q)

        # compressed entries: means over complete blocks of c and rotated kR;
        # the compression branch runs in cdt (autocast off): its
        # probabilities also decide the block choice
        with torch.autocast(device_type=h.device.type, enabled=False):
            nc = T // Bs
            cc = c[:, :nc * Bs].to(cdt).reshape(B, nc, Bs, G, self.dg).mean(2)
            kRc = kR[:, :nc * Bs].to(cdt).reshape(B, nc, Bs, dR).mean(2)
            kCc, vc = self.expand(cc, cdt)
            Kc = torch.cat([kCc, kRc[:, None].expand(B, H, nc, dR)], dim=-1)
            # query t sees blocks b with (b+1)B-1 <= t; none visible -> p = 0
            sc = torch.matmul(Q.to(cdt), Kc.transpose(-1, -2)) / math.sqrt(Q.shape[-1])  # [B,H,T,nc]
            blk = torch.arange(nc, device=h.device)
            vis = (blk[None, :] + 1) * Bs - 1 <= pos[:, None]            # [T,nc]
            sc = sc.masked_fill(~vis, -1e30)
            p = torch.softmax(sc, dim=-1) * vis.any(-1, keepdim=True).to(cdt)
            o_cmp = torch.matmul(p, vc)                                  # [B,H,T,dv]

        # block choice at anchors t0 = 0, s, 2s, ... (no gradient)
        with torch.no_grad():
            anchors = torch.arange(0, T, s, device=h.device)
            nA = anchors.shape[0]
            nb = (T + Bs - 1) // Bs
            S = p[:, :, anchors].reshape(B, G, H // G, nA, nc).sum(2)    # [B,G,nA,nc]
            ball = torch.arange(nb, device=h.device)
            cur = (anchors // Bs)[:, None]                               # [nA,1]
            exists = ball[None, :] <= cur
            forced = exists & ((ball[None, :] < init_b) | (ball[None, :] > cur - local_b))
            complete = (ball[None, :] + 1) * Bs - 1 <= anchors[:, None]  # [nA,nb]
            score = torch.full((B, G, nA, nb), float("-inf"), dtype=cdt, device=h.device)
            if nc > 0:
                score[..., :nc] = S
            score = score.masked_fill(~(complete & ~forced), float("-inf"))
            score = score.masked_fill(forced, float("inf"))
            srt, idx = torch.sort(score, dim=-1, descending=True, stable=True)
            k = min(n, nb)
            take = srt[..., :k] > float("-inf")
            chosen = torch.zeros(B, G, nA, nb, dtype=torch.bool, device=h.device)
            chosen.scatter_(-1, idx[..., :k], take)
            # token mask: query t uses anchor t // s; key j is in block j // B
            tok = chosen[:, :, pos // s][..., pos // Bs]                 # [B,G,T,T]
            tok = tok & (pos[None, :] <= pos[:, None])
            mask = tok[:, self.head_group]                               # [B,H,T,T]
        o_slc = attend(Q, K, v, mask)

        gt = torch.sigmoid(self.g_proj(h).to(cdt)).transpose(1, 2)[..., None]   # [B,2H,T,1]
        return gt[:, :H] * o_cmp + gt[:, H:] * o_slc.to(cdt)


class FullAttention(nn.Module):
    """Baseline: standard causal multi-head attention with RoPE on the whole
    head (rotate half), H heads of head_dim."""

    def __init__(self, cfg):
        super().__init__()
        d, H, dh = cfg["hidden_size"], cfg["num_heads"], cfg["head_dim"]
        self.H, self.dh = H, dh
        self.q_proj = nn.Linear(d, H * dh, bias=False)
        self.k_proj = nn.Linear(d, H * dh, bias=False)
        self.v_proj = nn.Linear(d, H * dh, bias=False)
        self.o_proj = nn.Linear(H * dh, d, bias=False)

    def forward(self, h, cos, sin):
        B, T, _ = h.shape
        q = self.q_proj(h).view(B, T, self.H, self.dh).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.H, self.dh).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.H, self.dh).transpose(1, 2)
        o = attend(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, causal=True)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.H * self.dh))


class Block(nn.Module):
    def __init__(self, cfg, kind, dropout):
        super().__init__()
        d, eps = cfg["hidden_size"], cfg.get("rms_norm_eps", 1e-6)
        self.attn_norm = RMSNorm(d, eps)
        self.attn = FullAttention(cfg) if kind == "full" else LatentAttention(cfg, kind)
        self.mlp_norm = RMSNorm(d, eps)
        self.mlp = MLP(d, cfg["intermediate_size"])
        self.drop = nn.Dropout(dropout)

    def forward(self, x, rope):
        cos, sin = rope
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class LM(nn.Module):
    """arch "asa": the model of ASA-SPEC (layer kinds from cfg["layer_types"]);
    arch "full": the same stack with FullAttention in every layer."""

    def __init__(self, cfg, arch="asa", dropout=0.0):
        super().__init__()
        self.cfg, self.arch = cfg, arch
        d, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
        kinds = cfg.get("layer_types") or [("local", "global")[i % 2] for i in range(L)]
        if arch == "full":
            kinds = ["full"] * L
        self.embed_tokens = nn.Embedding(V, d)
        self.layers = nn.ModuleList([Block(cfg, k, dropout) for k in kinds])
        self.norm = RMSNorm(d, cfg.get("rms_norm_eps", 1e-6))
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = nn.Linear(d, V, bias=False)
        self.drop = nn.Dropout(dropout)
        self.rope_dim = cfg["head_dim"] if arch == "full" else cfg["rope_dim"]
        self.reset_parameters()

    def reset_parameters(self, std=0.02):
        L = self.cfg["num_hidden_layers"]
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                nn.init.normal_(p, std=std / math.sqrt(2 * L))
            else:
                nn.init.normal_(p, std=std)

    def forward(self, tokens):
        """tokens [B,T] (positions 0..T-1) -> logits [B,T,V]."""
        T = tokens.shape[1]
        x = self.drop(self.embed_tokens(tokens))
        rope = rope_tables(T, self.rope_dim, self.cfg.get("rope_theta", 10000.0), tokens.device,
                           torch.float32 if x.dtype != torch.float64 else torch.float64)
        for layer in self.layers:
            x = layer(x, rope)
        x = self.norm(x)
        W = self.embed_tokens.weight if self.tied else self.lm_head.weight
        return F.linear(x, W)

    def export_state(self):
        """{spec name: tensor} per ASA-SPEC section 2 (ASA only)."""
        assert self.arch == "asa"
        return {k: v for k, v in self.state_dict().items() if k != "lm_head.weight" or not self.tied}

    def load_spec_state(self, tensors):
        """Loads {spec name: tensor} (as export_state gives)."""
        own = self.state_dict()
        missing = set(own) - set(tensors)
        extra = set(tensors) - set(own)
        if missing or extra:
            raise ValueError("state mismatch: missing %s extra %s" % (sorted(missing), sorted(extra)))
        self.load_state_dict({k: tensors[k].to(own[k].dtype) for k in own})
