#!/usr/bin/python3
"""Checks an exported ASA model directory against the reference.

  /usr/bin/python3 tools/train/check_model.py MODEL_DIR [--prompts N] [--steps K]

1. The reference (tools/reference/asa_ref.py) loads the directory.
2. For the first N samples of training/metrics.json (prompt ids and the
   greedy continuation the training run produced in torch float32), the
   reference's greedy continuation of K tokens equals the stored one token
   for token wherever ASA-SPEC 6's margin rule applies (top-1/top-2 margin
   > 1e-3 of the row's max |logit|); after the first step where it does not
   apply, the rest is not compared.
   With --engine PATH (asa-generate), the CPU engine's greedy continuation
   is compared the same way.
   With --tokenize PATH (asa-tokenize), the C tokenizer's ids for the texts
   of training/tokenizer_check.json (held-out text and awkward strings)
   equal those Hugging Face tokenizers gave in the training run.
3. With torch importable: the training model's float64 forward on the
   prompt + continuation equals the reference's (relative L2 < 1e-9).
Exit 0 on success, 1 on a mismatch, 77 when the directory or numpy is
missing.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--engine", help="asa-generate binary: compare its greedy continuation too")
    ap.add_argument("--tokenize", help="asa-tokenize binary: compare its ids with tokenizer_check.json")
    a = ap.parse_args()
    try:
        import numpy as np
        import asa_ref
    except ImportError as e:
        print("skipped: %s" % e)
        return 77
    mpath = os.path.join(a.model_dir, "training", "metrics.json")
    if not os.path.exists(os.path.join(a.model_dir, "config.json")) or not os.path.exists(mpath):
        print("skipped: no model with training/metrics.json in %s" % a.model_dir)
        return 77
    with open(mpath, encoding="utf-8") as f:
        samples = json.load(f)["samples"][:a.prompts]
    model = asa_ref.load_model(a.model_dir)
    fails = 0
    for smp in samples:
        seq = list(smp["prompt_ids"])
        want = smp["greedy_ids"][:a.steps]
        eng = None
        if a.engine:
            import subprocess
            r = subprocess.run([a.engine, "--model", a.model_dir, "--prompt-ids",
                                ",".join(map(str, seq)), "--max-tokens", str(len(want)), "--greedy",
                                "--ignore-eos"], capture_output=True, text=True, check=True)
            eng = [int(x) for x in r.stdout.strip().split("\n")[-1].split(",")]
        compared = 0
        for k, w in enumerate(want):
            logits = asa_ref.forward(model, seq)[-1]
            order = np.argsort(-logits, kind="stable")
            margin = logits[order[0]] - logits[order[1]]
            if margin <= 1e-3 * np.max(np.abs(logits)):
                break
            if int(order[0]) != w or (eng is not None and eng[k] != w):
                print("MISMATCH %r step %d: reference %d, torch %d, engine %s" % (
                    smp["prompt"], k, order[0], w, eng[k] if eng else "-"))
                fails += 1
                break
            compared += 1
            seq.append(w)
        print("%r: %d of %d greedy tokens equal (reference, torch%s; margin rule)" % (
            smp["prompt"], compared, len(want), ", engine" if eng is not None else ""))
    if a.tokenize:
        import subprocess
        with open(os.path.join(a.model_dir, "training", "tokenizer_check.json"), encoding="utf-8") as f:
            cases = json.load(f)
        same = 0
        for c in cases:
            r = subprocess.run([a.tokenize, "--tokenizer", os.path.join(a.model_dir, "tokenizer.json")],
                               input=c["text"].encode("utf-8"), capture_output=True, check=True)
            ids = json.loads(r.stdout)
            if ids == c["ids"]:
                same += 1
            else:
                k = next((i for i, (x, y) in enumerate(zip(ids, c["ids"])) if x != y), min(len(ids), len(c["ids"])))
                print("TOKENIZER MISMATCH on %r...: first difference at id %d (%s vs %s)" % (
                    c["text"][:30], k, ids[k:k + 3], c["ids"][k:k + 3]))
                fails += 1
        print("tokenizer: %d of %d texts give the same ids (%d ids in all)" % (
            same, len(cases), sum(len(c["ids"]) for c in cases)))
    try:
        import torch
    except ImportError:
        print("torch not importable: forward comparison skipped")
        torch = None
    if torch is not None:
        sys.path.insert(0, HERE)
        import asa_torch
        import export
        with open(os.path.join(a.model_dir, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        lm = asa_torch.LM(cfg, "asa")
        lm.load_spec_state(export.load_model_dir(a.model_dir))
        lm = lm.double().eval()
        for smp in samples:
            toks = smp["prompt_ids"] + smp["greedy_ids"]
            with torch.no_grad():
                got = lm(torch.tensor([toks]))[0].numpy()
            ref = asa_ref.forward(model, toks)
            err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
            print("%r: torch float64 vs reference rel err %.2e over %d tokens" % (smp["prompt"], err, len(toks)))
            if not err < 1e-9:
                fails += 1
    print("%d passed, %d failed" % (1 if not fails else 0, 1 if fails else 0))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
