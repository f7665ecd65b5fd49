#!/usr/bin/env python3
"""Model card and summary table from a run's metrics.json.

  python3 card.py metrics.json config.json > README.md
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _f(x, n=4):
    return "-" if x is None else ("%.*f" % (n, x))


def summary_table(m):
    s = m["summary"]
    tr = m["training"]
    v = m["valid"]
    rows = [
        ("steps", "%d (planned %d%s)" % (tr["steps"], tr["planned_steps"],
                                         ", stopped early" if tr["stopped_early"] else "")),
        ("tokens seen", "%d (%.2f epochs)" % (tr["tokens_seen"], tr["epochs"])),
        ("final train loss", "asa %s   full %s" % (_f(m["final_train_loss"]["asa"]),
                                                   _f(m["final_train_loss"]["full"]))),
        ("held-out loss", "asa %s   full %s" % (_f(s["asa_loss"]), _f(s["full_loss"]))),
        ("held-out ppl", "asa %s   full %s" % (_f(s["asa_ppl"], 2), _f(s["full_ppl"], 2))),
        ("best step", "asa %d   full %d" % (v["best_step"]["asa"], v["best_step"]["full"])),
        ("last-step loss", "asa %s   full %s" % (_f(v["final_step"]["asa"]), _f(v["final_step"]["full"]))),
        ("ppl ratio asa/full", "%.4f (target <= 1.05: %s)" % (
            s["ppl_ratio_asa_over_full"], "met" if s["ppl_ratio_asa_over_full"] <= 1.05 else "NOT met")),
        ("time", "%.0f s total, %.0f s training, %.1f ms/step (both)" % (
            m["elapsed_seconds"] or 0, tr["train_seconds"], tr["ms_per_step_both"])),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join("%-*s  %s" % (w, k, val) for k, val in rows)


def render(m, cfg):
    with open(os.path.join(HERE, "MODEL_CARD.md.in"), encoding="utf-8") as f:
        tpl = f.read()
    c, tr, s, v = m["corpus"], m["training"], m["summary"], m["valid"]
    g, loc = cfg["global"], cfg["local"]
    per = c.get("per_source", {})
    src_rows = ["| source | package (pinned) | SHA-256 of the package file | licence | training docs / chars | held-out docs / chars |",
                "|---|---|---|---|---|---|"]
    for src in c.get("sources", []):
        k = src.get("key")
        ptr = per.get("train", {}).get(k, {}) if k else {}
        pva = per.get("valid", {}).get(k, {}) if k else {}
        src_rows.append("| %s | %s | `%s` | %s | %s / %s | %s / %s |" % (
            src["name"], src["package"], src["sha256"][:16] + "...", src["licence"],
            ptr.get("documents", "-"), ptr.get("characters", "-"),
            pva.get("documents", "-"), pva.get("characters", "-")))
    samples = []
    for smp in m.get("samples", []):
        samples.append("- **%s** %s" % (smp["prompt"].replace("\n", " "),
                                         smp["greedy_text"].replace("\n", " ").replace("|", "\\|")))
    long_ctx = ""
    lc = v.get("long_context")
    if lc:
        long_ctx = ("\n\nAt twice the training context ({seq} tokens, positions never seen in "
                    "training) the held-out loss is {a} for ASA and {f} for full attention.").format(
            seq=lc["seq"], a=_f(lc["asa"]), f=_f(lc["full"]))
    vals = {
        "params_asa_m": "%.1f" % (m["parameters"]["asa"] / 1e6),
        "params_asa": "{:,}".format(m["parameters"]["asa"]),
        "params_full": "{:,}".format(m["parameters"]["full"]),
        "train_minutes": "%.0f" % max(1, round(tr["train_seconds"] / 60)),
        "layers": cfg["num_hidden_layers"], "local_latent": loc["latent_dim"], "window": loc["window"],
        "global_latent": "%d x %d" % (g["latent_heads"], g["latent_dim"]), "block": g["block_size"],
        "top_n": g["top_n"], "share": g["selection_share"], "d": cfg["hidden_size"],
        "heads": cfg["num_heads"], "head_dim": cfg["head_dim"], "rope_dim": cfg["rope_dim"],
        "ffn": cfg["intermediate_size"], "vocab": cfg["vocab_size"], "bos": cfg["bos_token_id"],
        "eos": cfg["eos_token_id"], "seq": tr["seq"], "max_pos": cfg["max_position_embeddings"],
        "sources_table": "\n".join(src_rows),
        "valid_docs": c["valid_documents"], "valid_chars": "{:,}".format(c["valid_characters"]),
        "valid_tokens": "{:,}".format(c["valid_tokens"]), "train_docs": c["train_documents"],
        "train_chars": "{:,}".format(c["train_characters"]),
        "train_tokens": "{:,}".format(c["train_tokens"]),
        "train_tokens_m": "%.0f" % (c["train_tokens"] / 1e6),
        "chars_per_token": "%.2f" % c["chars_per_token"],
        "torch": tr["torch"], "device": tr["device"], "wd": tr["weight_decay"], "lr": "%.1e" % tr["lr"],
        "lr_min": "%.1e" % tr["lr_min"], "warmup": tr["warmup"], "dropout": tr["dropout"],
        "batch": tr["batch"], "steps": tr["steps"], "tokens_seen": "{:,}".format(tr["tokens_seen"]),
        "epochs": "%.1f" % tr["epochs"], "n_evals": len(m["curve"]["valid"]),
        "asa_loss": _f(s["asa_loss"]), "asa_ppl": _f(s["asa_ppl"], 2),
        "full_loss": _f(s["full_loss"]), "full_ppl": _f(s["full_ppl"], 2),
        "asa_best_step": v["best_step"]["asa"], "full_best_step": v["best_step"]["full"],
        "asa_final": _f(v["final_step"]["asa"]), "full_final": _f(v["final_step"]["full"]),
        "ratio_pct": "%.1f%%" % (100 * s["ppl_ratio_asa_over_full"]),
        "target": "met" if s["ppl_ratio_asa_over_full"] <= 1.05 else "not met",
        "long_ctx": long_ctx,
        "weights_files": ("bf16 safetensors in %d shards (`model.safetensors.index.json`)" % sum(
            1 for x in m.get("export_files", []) if x.endswith(".safetensors"))
            if "model.safetensors.index.json" in m.get("export_files", []) else
            "bf16 safetensors (`model.safetensors`)"),
        "samples": "\n".join(samples) or "(none)",
    }

    def sub(mo):
        k = mo.group(1)
        if k not in vals:
            raise KeyError("model card template: no value for {{%s}}" % k)
        return str(vals[k])
    return re.sub(r"\{\{([a-z_0-9]+)\}\}", sub, tpl)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        metrics = json.load(f)
    with open(sys.argv[2], encoding="utf-8") as f:
        config = json.load(f)
    sys.stdout.write(render(metrics, config))
