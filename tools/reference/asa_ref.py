"""Reference implementation of ASA (the model of ASA-SPEC.md), in float64.

This file is the spec written as code.  It is meant to be read side by side
with ASA-SPEC.md: every step cites the section it implements.  It is plain on
purpose: the whole sequence is recomputed on every call (no cache, no
incremental state), everything is float64, and where a loop is clearer than
a vectorised trick the loop stays.

Public functions
  read_safetensors(path)           -> {name: (dtype, ndarray as stored)}
  write_safetensors(path, tensors) -- tensors: [(name, "F32"|"BF16", ndarray)]
  f32_to_bf16_bits / bf16_bits_to_f32
  parse_config(dict)               -> checked config with defaults (spec 1)
  load_model(dir)                  -> Model (config + float64 weights)
  forward(model, tokens)           -> logits [T, V] float64          (spec 3)
  selections(model, tokens)        -> chosen block sets per (global layer,
                                      anchor, latent group) + top-n gaps
  choose_blocks(...)               -> one block choice             (spec 3.3)

Only numpy is needed (Debian python3-numpy); run with /usr/bin/python3.
"""

import json
import math
import os
import struct

import numpy as np


class AsaError(ValueError):
    """A malformed model directory, config or input (the message names it)."""


# ---------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, JSON header, raw data.
# bf16 is the upper 16 bits of an IEEE f32.
# ---------------------------------------------------------------------------

_DTYPE_SIZE = {"F32": 4, "BF16": 2}


def bf16_bits_to_f32(bits):
    """uint16 bf16 bit patterns -> float32 (exact widening)."""
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16_bits(x):
    """float32 values -> uint16 bf16 bit patterns, round to nearest even,
    NaN stays (quiet) NaN.  Same rule as asa_f32_to_bf16 in common/asa.h."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    is_nan = ((u & np.uint64(0x7F800000)) == np.uint64(0x7F800000)) & \
             ((u & np.uint64(0x007FFFFF)) != np.uint64(0))
    quiet = (u >> np.uint64(16)) | np.uint64(0x40)
    return np.where(is_nan, quiet, rounded).astype(np.uint16)


def read_safetensors(path):
    """Returns {name: (dtype, array)}; array is float32 for F32 and uint16
    bit patterns for BF16, shaped as the header says."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise AsaError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise AsaError(f"{path}: header length {n} runs past the end of the file")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AsaError(f"{path}: bad JSON header: {e}") from None
    if not isinstance(header, dict):
        raise AsaError(f"{path}: header is not a JSON object")
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype")
        shape = info.get("shape")
        offs = info.get("data_offsets")
        if dtype not in _DTYPE_SIZE:
            raise AsaError(f"{path}: tensor {name}: dtype {dtype!r} is not F32 or BF16")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise AsaError(f"{path}: tensor {name}: bad shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and 0 <= offs[0] <= offs[1] <= len(data)):
            raise AsaError(f"{path}: tensor {name}: bad data_offsets {offs!r}")
        count = int(np.prod(shape, dtype=np.int64))
        if offs[1] - offs[0] != count * _DTYPE_SIZE[dtype]:
            raise AsaError(f"{path}: tensor {name}: {offs[1] - offs[0]} bytes for shape {shape}")
        np_dtype = "<f4" if dtype == "F32" else "<u2"
        arr = np.frombuffer(data, dtype=np_dtype, count=count, offset=offs[0]).reshape(shape)
        out[name] = (dtype, arr)
    return out


def write_safetensors(path, tensors):
    """tensors: list of (name, "F32"|"BF16", array).  For F32 the array is
    converted to float32; for BF16 it must already be uint16 bit patterns.
    Tensors are laid out in the given order; the header is padded with
    spaces to a multiple of 8 bytes.  Output is byte-for-byte deterministic."""
    header = {}
    chunks = []
    offset = 0
    for name, dtype, arr in tensors:
        if dtype == "F32":
            raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        elif dtype == "BF16":
            if np.asarray(arr).dtype != np.uint16:
                raise AsaError(f"write_safetensors: {name}: BF16 wants uint16 bit patterns")
            raw = np.ascontiguousarray(arr, dtype="<u2").tobytes()
        else:
            raise AsaError(f"write_safetensors: {name}: dtype {dtype}")
        header[name] = {"dtype": dtype, "shape": [int(s) for s in np.shape(arr)],
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for raw in chunks:
            f.write(raw)


# ---------------------------------------------------------------------------
# Spec 1: config.json, required fields, defaults and load-time checks.
# ---------------------------------------------------------------------------

def _get_int(d, key, where, minimum, default=None, required=True):
    if key not in d:
        if required:
            raise AsaError(f"config: missing required field {where}{key}")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise AsaError(f"config: field {where}{key} must be an integer, got {v!r}")
    if v < minimum:
        raise AsaError(f"config: field {where}{key} = {v} is out of range (minimum {minimum})")
    return v


def _get_float(d, key, default):
    if key not in d:
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise AsaError(f"config: field {key} must be a positive number, got {v!r}")
    return float(v)


def parse_config(raw):
    """Checks a config dict (the parsed config.json) against spec section 1
    and returns a new dict with every default filled in.  Raises AsaError
    naming the field on any defect."""
    if not isinstance(raw, dict):
        raise AsaError("config: not a JSON object")
    if "model_type" not in raw:
        raise AsaError("config: missing required field model_type")
    if raw["model_type"] != "asa":
        raise AsaError(f"config: unknown model_type {raw['model_type']!r} (want \"asa\")")
    c = {"model_type": "asa"}
    c["vocab_size"] = _get_int(raw, "vocab_size", "", 1)
    c["hidden_size"] = _get_int(raw, "hidden_size", "", 1)
    c["intermediate_size"] = _get_int(raw, "intermediate_size", "", 1)
    c["num_hidden_layers"] = _get_int(raw, "num_hidden_layers", "", 1)
    c["num_heads"] = _get_int(raw, "num_heads", "", 1)
    c["head_dim"] = _get_int(raw, "head_dim", "", 1)
    c["v_head_dim"] = _get_int(raw, "v_head_dim", "", 1, default=c["head_dim"], required=False)
    c["rope_dim"] = _get_int(raw, "rope_dim", "", 2)
    c["rope_theta"] = _get_float(raw, "rope_theta", 10000.0)
    c["rms_norm_eps"] = _get_float(raw, "rms_norm_eps", 1e-6)
    c["max_position_embeddings"] = _get_int(raw, "max_position_embeddings", "", 1,
                                            default=8192, required=False)
    tie = raw.get("tie_word_embeddings", False)
    if not isinstance(tie, bool):
        raise AsaError(f"config: field tie_word_embeddings must be true or false, got {tie!r}")
    c["tie_word_embeddings"] = tie
    for key in ("bos_token_id", "eos_token_id"):
        c[key] = _get_int(raw, key, "", 0, default=None, required=False)
    c["torch_dtype"] = raw.get("torch_dtype")  # informational only

    L = c["num_hidden_layers"]
    if "layer_types" in raw:
        lt = raw["layer_types"]
        if not isinstance(lt, list) or len(lt) != L or any(t not in ("local", "global") for t in lt):
            raise AsaError(f"config: field layer_types must be a list of {L} \"local\"/\"global\"")
        c["layer_types"] = list(lt)
    else:
        # Default (choice): alternating, layer 0 local.
        c["layer_types"] = ["local" if i % 2 == 0 else "global" for i in range(L)]

    for sect in ("local", "global"):
        if not isinstance(raw.get(sect), dict):
            raise AsaError(f"config: missing required field {sect}")
    lo, gl = raw["local"], raw["global"]
    c["local"] = {
        "latent_heads": _get_int(lo, "latent_heads", "local.", 1),
        "latent_dim": _get_int(lo, "latent_dim", "local.", 1),
        "window": _get_int(lo, "window", "local.", 1),                   # window >= 1
    }
    c["global"] = {
        "latent_heads": _get_int(gl, "latent_heads", "global.", 1),
        "latent_dim": _get_int(gl, "latent_dim", "global.", 1),
        "block_size": _get_int(gl, "block_size", "global.", 1),
        "top_n": _get_int(gl, "top_n", "global.", 1),
        "init_blocks": _get_int(gl, "init_blocks", "global.", 0),
        "local_blocks": _get_int(gl, "local_blocks", "global.", 1),       # local_blocks >= 1
        "selection_share": _get_int(gl, "selection_share", "global.", 1, default=4, required=False),
        "compression": gl.get("compression", "mean"),
    }
    g = c["global"]
    if g["compression"] != "mean":
        raise AsaError(f"config: field global.compression = {g['compression']!r} (only \"mean\" is defined)")
    # Load-time checks of spec 1.
    if c["rope_dim"] % 2 != 0:
        raise AsaError(f"config: field rope_dim = {c['rope_dim']} must be even")
    for sect in ("local", "global"):
        G = c[sect]["latent_heads"]
        if c["num_heads"] % G != 0:
            raise AsaError(f"config: field {sect}.latent_heads = {G} does not divide num_heads = {c['num_heads']}")
    if g["block_size"] % g["selection_share"] != 0:
        raise AsaError(f"config: field global.block_size = {g['block_size']} is not a multiple of "
                       f"global.selection_share = {g['selection_share']}")
    if g["init_blocks"] + g["local_blocks"] > g["top_n"]:
        raise AsaError(f"config: field global.top_n = {g['top_n']} is smaller than "
                       f"global.init_blocks + global.local_blocks = {g['init_blocks'] + g['local_blocks']}")
    return c


# ---------------------------------------------------------------------------
# Spec 2: tensors.  Model = checked config + float64 copies of the weights.
# ---------------------------------------------------------------------------

class Model:
    def __init__(self, config, weights, dtypes):
        self.config = config      # parse_config() output
        self.w = weights          # {name: float64 ndarray}
        self.dtypes = dtypes      # {name: "F32"|"BF16"} as stored


def expected_shapes(c):
    """{tensor name: shape} required by spec 2 for config c."""
    d, H, dh, dv, dR = c["hidden_size"], c["num_heads"], c["head_dim"], c["v_head_dim"], c["rope_dim"]
    V, F = c["vocab_size"], c["intermediate_size"]
    shapes = {"embed_tokens.weight": [V, d], "norm.weight": [d]}
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = [V, d]
    for i, t in enumerate(c["layer_types"]):
        G, dg = c[t]["latent_heads"], c[t]["latent_dim"]
        p = f"layers.{i}."
        shapes[p + "attn_norm.weight"] = [d]
        shapes[p + "mlp_norm.weight"] = [d]
        shapes[p + "attn.q_proj.weight"] = [H * (dh + dR), d]
        shapes[p + "attn.kv_a_proj.weight"] = [G * dg + dR, d]
        shapes[p + "attn.kv_a_norm.weight"] = [G * dg]
        shapes[p + "attn.kv_b_proj.weight"] = [H * (dh + dv), dg]
        shapes[p + "attn.o_proj.weight"] = [d, H * dv]
        if t == "global":
            shapes[p + "attn.g_proj.weight"] = [2 * H, d]
        shapes[p + "mlp.gate_proj.weight"] = [F, d]
        shapes[p + "mlp.up_proj.weight"] = [F, d]
        shapes[p + "mlp.down_proj.weight"] = [d, F]
    return shapes


def load_model(model_dir):
    """Reads config.json and model.safetensors (or the shards named by
    model.safetensors.index.json) from model_dir.  Checks every tensor's
    presence, shape and dtype and the tie rule; widens to float64."""
    with open(os.path.join(model_dir, "config.json"), "r", encoding="utf-8") as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise AsaError(f"config.json: {e}") from None
    c = parse_config(raw)

    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(single):
        tensors = read_safetensors(single)
    elif os.path.exists(index):
        with open(index, "r", encoding="utf-8") as f:
            wmap = json.load(f).get("weight_map", {})
        for shard in sorted(set(wmap.values())):
            for name, val in read_safetensors(os.path.join(model_dir, shard)).items():
                if name in tensors:
                    raise AsaError(f"{shard}: tensor {name} appears twice")
                tensors[name] = val
    else:
        raise AsaError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")

    shapes = expected_shapes(c)
    if c["tie_word_embeddings"] and "lm_head.weight" in tensors:
        raise AsaError("tie_word_embeddings is true but lm_head.weight is present")
    for name in tensors:
        if name not in shapes:
            raise AsaError(f"unknown tensor {name}")
    weights, dtypes = {}, {}
    for name, shape in shapes.items():
        if name not in tensors:
            raise AsaError(f"missing tensor {name}")
        dtype, arr = tensors[name]
        if list(arr.shape) != shape:
            raise AsaError(f"tensor {name}: shape {list(arr.shape)}, expected {shape}")
        f32 = arr.astype(np.float32) if dtype == "F32" else bf16_bits_to_f32(arr)
        weights[name] = f32.astype(np.float64)
        dtypes[name] = dtype
    if c["tie_word_embeddings"]:
        weights["lm_head.weight"] = weights["embed_tokens.weight"]
    return Model(c, weights, dtypes)


# ---------------------------------------------------------------------------
# Spec 3: building blocks.
# ---------------------------------------------------------------------------

def rms_norm(y, w, eps):
    """RMSNorm(y, w) = y / sqrt(mean(y^2) + eps) * w, over the last axis."""
    return y / np.sqrt(np.mean(y * y, axis=-1, keepdims=True) + eps) * w


def silu(z):
    """silu(z) = z / (1 + e^-z)."""
    with np.errstate(over="ignore"):
        return z / (1.0 + np.exp(-z))


def sigmoid(z):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def rope(x, pos, theta):
    """Spec 3, RoPE, non-interleaved rotate-half.  x: [T, ..., d_R] (d_R
    last), pos: [T] integer positions.  With half = d_R/2 and k < half:
      angle_k   = pos * theta^(-2k/d_R)          (float64, pos exact)
      x'[k]      = x[k] cos(angle_k) - x[k+half] sin(angle_k)
      x'[k+half] = x[k] sin(angle_k) + x[k+half] cos(angle_k)"""
    dR = x.shape[-1]
    half = dR // 2
    k = np.arange(half, dtype=np.float64)
    inv_freq = np.float64(theta) ** (-2.0 * k / dR)                      # [half]
    angle = np.asarray(pos, dtype=np.int64).astype(np.float64)[:, None] * inv_freq[None, :]  # [T, half]
    angle = angle.reshape(angle.shape[:1] + (1,) * (x.ndim - 2) + (half,))
    cos, sin = np.cos(angle), np.sin(angle)
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def masked_softmax(s, mask):
    """Softmax over the last axis restricted to mask (bool, broadcastable).
    A row with no allowed entry gives all zeros (spec 3.3: no NaN)."""
    if s.shape[-1] == 0:
        return np.zeros(s.shape)
    mask = np.broadcast_to(mask, s.shape)
    s = np.where(mask, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(mask, np.exp(s - m), 0.0)
    z = np.sum(e, axis=-1, keepdims=True)
    return np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)


def mlp(w, p, y):
    """MLP(y) = down_proj( silu(gate_proj y) * up_proj y )."""
    g = y @ w[p + "mlp.gate_proj.weight"].T
    u = y @ w[p + "mlp.up_proj.weight"].T
    return (silu(g) * u) @ w[p + "mlp.down_proj.weight"].T


# ---------------------------------------------------------------------------
# Spec 3.1: latent attention, shared by both layer types.
# ---------------------------------------------------------------------------

def latent_inputs(model, i, h, pos):
    """The per-layer quantities of spec 3.1 for layer i and normalised input
    h [T, d] at positions pos [T]:
      qC [T, H, d_h]    nope part of q = q_proj h
      qR [T, H, d_R]    RoPE(rope part of q, pos)
      c  [T, G, d_g]    c^(g) = RMSNorm(a[g*d_g:(g+1)*d_g], kv_a_norm slice g)
      kR [T, d_R]       RoPE(a[G*d_g:], pos), a = kv_a_proj h
      W_UK [H, d_h, d_g], W_UV [H, d_v, d_g]   (kv_b_proj rows, per head)
      group [H]         g(i) = i / (H/G)"""
    c_ = model.config
    w = model.w
    p = f"layers.{i}.attn."
    t = c_["layer_types"][i]
    H, dh, dv, dR = c_["num_heads"], c_["head_dim"], c_["v_head_dim"], c_["rope_dim"]
    G, dg = c_[t]["latent_heads"], c_[t]["latent_dim"]
    T = h.shape[0]

    q = (h @ w[p + "q_proj.weight"].T).reshape(T, H, dh + dR)      # per head: d_h nope, d_R rope
    qC = q[:, :, :dh]
    qR = rope(q[:, :, dh:], pos, c_["rope_theta"])

    a = h @ w[p + "kv_a_proj.weight"].T                              # [T, G*d_g + d_R]
    c = rms_norm(a[:, :G * dg].reshape(T, G, dg),
                 w[p + "kv_a_norm.weight"].reshape(G, dg), c_["rms_norm_eps"])
    kR = rope(a[:, G * dg:], pos, c_["rope_theta"])

    kvb = w[p + "kv_b_proj.weight"].reshape(H, dh + dv, dg)          # per head: W_UK,i then W_UV,i
    W_UK, W_UV = kvb[:, :dh, :], kvb[:, dh:, :]
    group = np.arange(H) // (H // G)
    return qC, qR, c, kR, W_UK, W_UV, group


def attend(qC, qR, c, kR, W_UK, W_UV, group, mask, scale):
    """Spec 3.1 in the expanded form: for head i, key j = [W_UK,i c_j^(g(i)) ;
    kR_j], value j = W_UV,i c_j^(g(i)),
      score_j,i = (qC_i . W_UK,i c_j + qR_i . kR_j) * scale,
    softmax over the allowed keys (mask), output sum_j p_j value_j.
    qC [Tq,H,d_h], qR [Tq,H,d_R]; c [Tk,G,d_g], kR [Tk,d_R] (per-token latents
    or compressed entries alike); mask broadcastable to [H, Tq, Tk].
    Returns o [Tq, H, d_v] and p [H, Tq, Tk]."""
    c_h = c[:, group, :].transpose(1, 0, 2)                          # [H, Tk, d_g]: c_j^(g(i))
    K = c_h @ W_UK.transpose(0, 2, 1)                                # [H, Tk, d_h]: W_UK,i c_j
    Vv = c_h @ W_UV.transpose(0, 2, 1)                               # [H, Tk, d_v]: W_UV,i c_j
    s = (qC.transpose(1, 0, 2) @ K.transpose(0, 2, 1)                # qC_i . W_UK,i c_j
         + qR.transpose(1, 0, 2) @ kR.T) * scale                     # + qR_i . kR_j   [H, Tq, Tk]
    p = masked_softmax(s, mask)                                      # [H, Tq, Tk]
    o = (p @ Vv).transpose(1, 0, 2)                                  # [Tq, H, d_v]
    return o, p


def attend_absorbed(qC, qR, c, kR, W_UK, W_UV, group, mask, scale):
    """Spec 3.1 absorbed form (same function as attend; used by the tests):
    q~_i = W_UK,i^T qC_i; score = (q~_i . c_j + qR_i . kR_j) * scale;
    o_i = W_UV,i (sum_j p_j c_j)."""
    qt = np.einsum("hkd,thk->thd", W_UK, qC)                         # [Tq, H, d_g]
    c_head = c[:, group, :]                                          # [Tk, H, d_g]
    s = (np.einsum("thd,jhd->htj", qt, c_head) + np.einsum("thr,jr->htj", qR, kR)) * scale
    p = masked_softmax(s, mask)
    pooled = np.einsum("htj,jhd->thd", p, c_head)                    # sum_j p_j c_j  [Tq, H, d_g]
    o = np.einsum("hvd,thd->thv", W_UV, pooled)
    return o, p


def attn_scale(c_):
    """scale = 1/sqrt(d_h + d_R)."""
    return 1.0 / math.sqrt(c_["head_dim"] + c_["rope_dim"])


# ---------------------------------------------------------------------------
# Spec 3.2: local layer (sliding-window MLA).
# ---------------------------------------------------------------------------

def local_attention(model, i, h, pos):
    c_ = model.config
    T = h.shape[0]
    H, dv = c_["num_heads"], c_["v_head_dim"]
    w_ = c_["local"]["window"]
    qC, qR, c, kR, W_UK, W_UV, group = latent_inputs(model, i, h, pos)
    # Token t attends to j in [t-w+1, t] (w keys including itself), causal.
    t_idx = pos[:, None]
    j_idx = pos[None, :]
    mask = (j_idx <= t_idx) & (j_idx >= t_idx - w_ + 1)              # [T, T]
    o, _ = attend(qC, qR, c, kR, W_UK, W_UV, group, mask[None], attn_scale(c_))
    return o.reshape(T, H * dv) @ model.w[f"layers.{i}.attn.o_proj.weight"].T


# ---------------------------------------------------------------------------
# Spec 3.3: global layer (compressed + selected GLA).
# ---------------------------------------------------------------------------

def choose_blocks(S_g, t0, B, n, init_blocks, local_blocks):
    """Spec 3.3 "Block choice" for one anchor t0 and one latent group.
    S_g[b]: the selection score of block b from t0's compression
    probabilities (defined at least for every block complete at t0).
    Returns (chosen, gap, rel_gap): chosen is the sorted list of block ids;
    gap is the score of the lowest chosen candidate minus the best unchosen
    candidate's score, rel_gap = gap / (that lowest chosen score); both are
    None when no unchosen candidate exists or every chosen block is forced
    (then the choice has no boundary that rounding could move)."""
    cur = t0 // B
    score = {}
    candidates = []
    for b in range(cur + 1):                          # only blocks b <= cur exist
        forced = b < init_blocks or cur - local_blocks < b <= cur
        complete = (b + 1) * B - 1 <= t0
        if forced:
            score[b] = math.inf
        elif complete:
            score[b] = float(S_g[b])
            candidates.append(b)
        # else: neither forced nor complete -> not a candidate
    # Top n by score, forced ones (+inf) count toward n, ties to the lower
    # block index; with fewer than n take all.
    ranked = sorted(score, key=lambda b: (-score[b], b))
    chosen = ranked[:n]
    unchosen = [b for b in candidates if b not in chosen]
    chosen_cands = [b for b in chosen if b in candidates]
    gap = rel_gap = None
    if unchosen and chosen_cands:
        low = min(score[b] for b in chosen_cands)
        gap = low - max(score[b] for b in unchosen)
        rel_gap = gap / low if low > 0 else math.inf
    return sorted(chosen), gap, rel_gap


def global_attention(model, i, h, pos, trace=None):
    c_ = model.config
    g_ = c_["global"]
    T = h.shape[0]
    H, dv = c_["num_heads"], c_["v_head_dim"]
    G, dg = g_["latent_heads"], g_["latent_dim"]
    B, n, s = g_["block_size"], g_["top_n"], g_["selection_share"]
    scale = attn_scale(c_)
    if not np.array_equal(pos, np.arange(T)):
        raise AsaError("global layer: the reference runs whole sequences from position 0")
    qC, qR, c, kR, W_UK, W_UV, group = latent_inputs(model, i, h, pos)

    # Compressed entries: for each complete block b (tokens bB..bB+B-1):
    # c~_b^(g) = mean_j c_j^(g), kR~_b = mean_j kR_j (rotated keys pooled).
    nc = T // B                                                      # complete blocks
    cc = np.zeros((nc, G, dg))
    kRc = np.zeros((nc, kR.shape[1]))
    for b in range(nc):
        cc[b] = np.mean(c[b * B:(b + 1) * B], axis=0)
        kRc[b] = np.mean(kR[b * B:(b + 1) * B], axis=0)

    # Compression branch: query t sees blocks b with (b+1)B-1 <= t; softmax
    # over them; no visible block -> o_cmp = 0, p = 0.
    blk = np.arange(nc)
    visible = (blk[None, :] + 1) * B - 1 <= pos[:, None]             # [T, nc]
    o_cmp, p_cmp = attend(qC, qR, cc, kRc, W_UK, W_UV, group, visible[None], scale)
    # p_cmp [H, T, nc]

    # Selection scores: S^(g)[b] = sum over heads i of group g of p_i[b].
    S = np.zeros((G, T, nc))
    for hd in range(H):
        S[group[hd]] += p_cmp[hd]

    # Block choice at each anchor t0 = s*floor(t/s), from t0's own scores.
    n_blocks = (T + B - 1) // B                                      # blocks incl. a partial last one
    anchors = list(range(0, T, s))
    chosen = np.zeros((G, len(anchors), n_blocks), dtype=bool)
    rec = {"layer": i, "anchors": anchors, "blocks": [], "gaps": [], "rel_gaps": []}
    for a_idx, t0 in enumerate(anchors):
        row_blocks, row_gaps, row_rel = [], [], []
        for g in range(G):
            blocks, gap, rel = choose_blocks(S[g, t0], t0, B, n, g_["init_blocks"], g_["local_blocks"])
            chosen[g, a_idx, blocks] = True
            row_blocks.append(blocks)
            row_gaps.append(gap)
            row_rel.append(rel)
        rec["blocks"].append(row_blocks)
        rec["gaps"].append(row_gaps)
        rec["rel_gaps"].append(row_rel)
    if trace is not None:
        trace.append(rec)

    # Selection branch: head i attends over tokens j <= t of its group's
    # blocks chosen at anchor(t), with the ordinary per-token keys/values.
    anchor_of = pos // s                                             # index into anchors
    block_of = pos // B
    sel = chosen[:, anchor_of, :][:, :, block_of]                    # [G, T(query), T(key)]
    sel &= (pos[None, :] <= pos[:, None])[None]                      # causal j <= t, per token
    o_slc, _ = attend(qC, qR, c, kR, W_UK, W_UV, group, sel[group], scale)

    # Gate: gt = sigmoid(g_proj h); o_i = gt[i] o_cmp,i + gt[H+i] o_slc,i.
    gt = sigmoid(h @ model.w[f"layers.{i}.attn.g_proj.weight"].T)    # [T, 2H]
    o = gt[:, :H, None] * o_cmp + gt[:, H:, None] * o_slc
    return o.reshape(T, H * dv) @ model.w[f"layers.{i}.attn.o_proj.weight"].T


# ---------------------------------------------------------------------------
# Spec 3: the whole forward pass.
# ---------------------------------------------------------------------------

def forward(model, tokens, trace=None):
    """logits [T, V] (float64) for tokens at positions 0..T-1; row t is the
    next-token distribution after tokens[0..t].  If trace is a list, one
    selection record per global layer is appended (see selections())."""
    c_ = model.config
    w = model.w
    tokens = np.asarray(tokens, dtype=np.int64)
    T = tokens.shape[0]
    if tokens.ndim != 1 or T < 1:
        raise AsaError("forward: tokens must be a non-empty 1-D sequence")
    if tokens.min() < 0 or tokens.max() >= c_["vocab_size"]:
        raise AsaError("forward: token id out of range")
    if T > c_["max_position_embeddings"]:
        raise AsaError(f"forward: {T} tokens exceed max_position_embeddings")
    pos = np.arange(T, dtype=np.int64)
    eps = c_["rms_norm_eps"]

    x = w["embed_tokens.weight"][tokens]                             # x = embed_tokens[token]
    for i, t in enumerate(c_["layer_types"]):
        p = f"layers.{i}."
        h = rms_norm(x, w[p + "attn_norm.weight"], eps)              # h = RMSNorm(x, attn_norm)
        if t == "local":
            x = x + local_attention(model, i, h, pos)
        else:
            x = x + global_attention(model, i, h, pos, trace)
        x = x + mlp(w, p, rms_norm(x, w[p + "mlp_norm.weight"], eps))
    return rms_norm(x, w["norm.weight"], eps) @ w["lm_head.weight"].T


def selections(model, tokens):
    """For debugging: the block sets of every global layer.  Returns a list
    (one entry per global layer, in layer order) of
      {"layer": i, "anchors": [t0, ...],
       "blocks": [[sorted block ids of group g for g in 0..G-1] per anchor],
       "gaps":   [[gap of group g] per anchor],
       "rel_gaps": [[gap / lowest chosen candidate score] per anchor]}
    gap = (lowest score among chosen non-forced blocks) - (highest score
    among unchosen candidates), in units of summed probability (scores lie
    in [0, H/G]); None where nothing could be swapped.  Spec 6: compare block
    sets only where rel_gap > 1e-3."""
    trace = []
    forward(model, tokens, trace)
    return trace


def greedy(model, prompt, steps):
    """Greedy continuation (argmax, ties to the lower id), recomputing the
    whole sequence at every step."""
    seq = list(prompt)
    out = []
    for _ in range(steps):
        logits = forward(model, seq)
        nxt = int(np.argmax(logits[-1]))    # np.argmax returns the first (lowest) maximum
        out.append(nxt)
        seq.append(nxt)
    return out
