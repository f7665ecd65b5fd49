#!/usr/bin/python3
"""Compares an engine's greedy generation with the reference (ASA-SPEC 6).

Two ways to call it:

  # run asa-generate on fixtures and compare (exit 0 = all pass)
  check_engine.py --generate build/engine/asa-generate [--backend cpu] [--tol 1e-4] \
                  tests/fixtures/asa_tiny tests/fixtures/tiny_w1 ...

  # compare output that an engine already wrote
  check_engine.py --model DIR --prompt-ids 1,2,3 --ids 4,5,6 --logits FILE [--tol 1e-4]
    (--logits: little-endian f32 [len(ids), V], row k = the row token k came from)

The metric, per spec 6: for every generated step, the relative L2 error
||engine - ref|| / ||ref|| of the logit row, with the reference teacher-forced
on the engine's own tokens (the committed logits.f32 is used while the
engine's tokens equal the fixture's greedy ones; past a divergence the
reference is recomputed), must stay below --tol; and at every step where the
reference's top-1/top-2 margin exceeds 1e-3 of the row's max |logit| the
engine's token must be the reference's argmax.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import numpy as np
except ImportError:
    print("numpy is not installed for this python; skipping")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asa_ref  # noqa: E402


def parse_ids(s):
    return [int(x) for x in s.split(",") if x != ""]


def compare(label, model_dir, prompt, ids, eng_logits, tol, fixture_rows=None, fixture_greedy=None):
    """Returns True when every check passes; prints one summary line."""
    P0 = len(prompt)
    if len(ids) == 0 or eng_logits.shape[0] != len(ids):
        print(f"{label}: FAIL: {len(ids)} ids but {eng_logits.shape[0]} logit rows")
        return False
    if fixture_greedy is not None and fixture_rows is not None and ids == fixture_greedy[:len(ids)]:
        ref = fixture_rows[P0 - 1:P0 - 1 + len(ids)]
        how = "fixture logits"
    else:
        model = asa_ref.load_model(model_dir)
        ref = asa_ref.forward(model, list(prompt) + list(ids[:-1]))[P0 - 1:]
        how = "reference recomputed on the engine's tokens"
    if ref.shape != eng_logits.shape:
        print(f"{label}: FAIL: logits shape {eng_logits.shape}, reference {ref.shape}")
        return False
    err = np.linalg.norm(eng_logits - ref, axis=1) / np.linalg.norm(ref, axis=1)
    mismatches = []
    clear = 0
    for k, row in enumerate(ref):
        top2 = np.sort(row)[-2:]
        if top2[1] - top2[0] > 1e-3 * np.max(np.abs(row)):
            clear += 1
            if ids[k] != int(np.argmax(row)):
                mismatches.append(k)
    ok = bool(np.all(err < tol)) and not mismatches
    worst = int(np.argmax(err))
    print(f"{label}: {'ok' if ok else 'FAIL'}: {len(ids)} steps ({how}), max rel L2 {err.max():.2e} "
          f"at step {worst} (tol {tol:g}), greedy identical at {clear - len(mismatches)}/{clear} "
          f"clear-margin steps" + (f", differs at steps {mismatches[:10]}" if mismatches else ""))
    return ok


def run_fixture(binary, fixture, backend, tol, threads):
    with open(os.path.join(fixture, "case.json"), encoding="utf-8") as f:
        case = json.load(f)
    prompt, greedy = case["prompt"], case["greedy"]
    P0 = len(prompt)
    rows = np.fromfile(os.path.join(fixture, "logits.f32"), dtype="<f4")
    rows = rows.reshape(P0 + len(greedy) - 1, -1).astype(np.float64)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.f32")
        cmd = [binary, "--model", fixture, "--prompt-ids", ",".join(map(str, prompt)),
               "--max-tokens", str(len(greedy)), "--greedy", "--ignore-eos",
               "--backend", backend, "--logits-out", out]
        if threads:
            cmd += ["--threads", str(threads)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{case['name']}: FAIL: {' '.join(cmd[:3])} ... exited {r.returncode}: {r.stderr.strip()[-400:]}")
            return False
        ids = parse_ids(r.stdout.strip())
        eng = np.fromfile(out, dtype="<f4").astype(np.float64)
    V = rows.shape[1]
    if eng.size != len(ids) * V:
        print(f"{case['name']}: FAIL: logits file holds {eng.size} values, want {len(ids)} x {V}")
        return False
    if len(ids) != len(greedy):
        print(f"{case['name']}: FAIL: {len(ids)} tokens generated, want {len(greedy)}")
        return False
    return compare(case["name"], fixture, prompt, ids, eng.reshape(len(ids), V), tol, rows, greedy)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generate", metavar="BIN", help="asa-generate binary to run on the fixtures")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4, help="max relative L2 error per row")
    ap.add_argument("--model")
    ap.add_argument("--prompt-ids")
    ap.add_argument("--ids")
    ap.add_argument("--logits")
    ap.add_argument("fixtures", nargs="*")
    a = ap.parse_args()
    if a.generate:
        if not a.fixtures:
            ap.error("--generate needs fixture folders")
        results = [run_fixture(a.generate, f, a.backend, a.tol, a.threads) for f in a.fixtures]
        return 0 if all(results) else 1
    if not (a.model and a.prompt_ids and a.ids and a.logits):
        ap.error("give --generate BIN FIXTURE..., or --model, --prompt-ids, --ids and --logits")
    ids = parse_ids(a.ids)
    eng = np.fromfile(a.logits, dtype="<f4").astype(np.float64)
    V = asa_ref.load_model(a.model).config["vocab_size"]
    if eng.size != len(ids) * V:
        print(f"FAIL: {a.logits} holds {eng.size} values, want {len(ids)} x {V}")
        return 1
    ok = compare(os.path.basename(os.path.normpath(a.model)), a.model, parse_ids(a.prompt_ids), ids,
                 eng.reshape(len(ids), V), a.tol)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
