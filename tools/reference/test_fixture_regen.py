#!/usr/bin/python3
"""Regenerates one fixture into a temporary folder and checks that every
file is byte-identical to the committed copy in tests/fixtures/.

  /usr/bin/python3 tools/reference/test_fixture_regen.py [NAME]   (default tiny_w1)

Exit 0: identical; 1: different (the differing files are listed); 77: numpy
is not installed for this python.
"""

import os
import sys
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import numpy as np
except ImportError:
    print("numpy is not installed for this python; skipping")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_fixtures as MF  # noqa: E402


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "tiny_w1"
    committed = os.path.join(HERE, "..", "..", "tests", "fixtures", name)
    fx = [f for f in MF.FIXTURES if f["name"] == name]
    if not fx:
        print(f"unknown fixture {name}")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        MF.make_fixture(fx[0], tmp)
        fresh = os.path.join(tmp, name)
        want, got = sorted(os.listdir(committed)), sorted(os.listdir(fresh))
        if want != got:
            print(f"{name}: committed files {want}, regenerated {got}")
            return 1
        bad = 0
        for fn in want:
            with open(os.path.join(committed, fn), "rb") as f:
                a = f.read()
            with open(os.path.join(fresh, fn), "rb") as f:
                b = f.read()
            if a == b:
                continue
            bad += 1
            msg = f"{name}/{fn}: differs ({len(a)} vs {len(b)} bytes)"
            if fn == "logits.f32" and len(a) == len(b):
                x = np.frombuffer(a, dtype="<f4").astype(np.float64)
                y = np.frombuffer(b, dtype="<f4").astype(np.float64)
                msg += f", {int(np.sum(x != y))} values differ, max |diff| {np.max(np.abs(x - y)):.3g}"
            print(msg)
        if bad:
            print("regenerate with tools/reference/make_fixtures.py if the change is intended")
            return 1
    print(f"{name}: regenerated fixture is byte-identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
