"""Writes an ASA model directory (ASA-SPEC sections 1-2) from a torch model.

write_safetensors(path, {name: tensor}, dtype)  dtype "BF16" or "F32"
export_model(model, cfg, out_dir, dtype="BF16", max_shard_bytes=...)
    config.json + model.safetensors, or model-0000k-of-0000n.safetensors
    shards + model.safetensors.index.json when the tensors exceed
    max_shard_bytes (a shard never does, unless one tensor alone does).
Returns the list of files written.  Needs only torch (any version >= 1.13)
and the standard library.
"""
import json
import os
import struct

import torch


def _tensor_bytes(t, dtype):
    t = t.detach().to("cpu").contiguous()
    if dtype == "F32":
        return t.to(torch.float32).numpy().tobytes()
    if dtype == "BF16":
        # round to nearest even via torch's own conversion, then the raw bits
        return t.to(torch.float32).to(torch.bfloat16).view(torch.int16).numpy().tobytes()
    raise ValueError("dtype must be F32 or BF16")


def write_safetensors(path, tensors, dtype, metadata=None):
    """tensors: {name: torch tensor}; all stored as dtype; names sorted."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        b = _tensor_bytes(tensors[name], dtype)
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def export_model(model, cfg, out_dir, dtype="BF16", max_shard_bytes=12 << 20):
    os.makedirs(out_dir, exist_ok=True)
    state = model.export_state()
    cfg = dict(cfg)
    cfg["torch_dtype"] = {"BF16": "bfloat16", "F32": "float32"}[dtype]
    files = []
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    files.append("config.json")
    esize = 2 if dtype == "BF16" else 4
    sizes = {k: v.numel() * esize for k, v in state.items()}
    total = sum(sizes.values())
    if total <= max_shard_bytes:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), state, dtype, {"format": "pt"})
        return files + ["model.safetensors"]
    shards, cur, cur_size = [], {}, 0
    for name in sorted(state):
        if cur and cur_size + sizes[name] > max_shard_bytes:
            shards.append(cur)
            cur, cur_size = {}, 0
        cur[name] = state[name]
        cur_size += sizes[name]
    shards.append(cur)
    weight_map = {}
    for k, sh in enumerate(shards):
        fn = "model-%05d-of-%05d.safetensors" % (k + 1, len(shards))
        write_safetensors(os.path.join(out_dir, fn), sh, dtype, {"format": "pt"})
        files.append(fn)
        for name in sh:
            weight_map[name] = fn
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1, sort_keys=True)
        f.write("\n")
    return files + ["model.safetensors.index.json"]


def read_safetensors(path):
    """{name: torch tensor (float32)} from an F32/BF16 safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = bytearray(data[a:b])
        if info["dtype"] == "F32":
            t = torch.frombuffer(raw, dtype=torch.float32) if hasattr(torch, "frombuffer") else \
                torch.tensor(list(struct.unpack("<%df" % ((b - a) // 4), raw)))
        elif info["dtype"] == "BF16":
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16).to(torch.float32)
        else:
            raise ValueError("%s: unsupported dtype %s" % (name, info["dtype"]))
        out[name] = t.reshape(info["shape"]).clone()
    return out


def load_model_dir(model_dir):
    """{name: float32 tensor} from model.safetensors or its shards."""
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    with open(os.path.join(model_dir, "model.safetensors.index.json"), encoding="utf-8") as f:
        wmap = json.load(f)["weight_map"]
    out = {}
    for fn in sorted(set(wmap.values())):
        out.update(read_safetensors(os.path.join(model_dir, fn)))
    return out
