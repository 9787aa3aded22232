"""The committed conformance vectors are exactly what make_conformance.py
writes (so they cannot drift from the generator), and spec_numpy.py, which
computed them, reproduces the shared set of vectors when it is there.

  python3 check_conformance_data.py DATA_DIR [--shared DIR]

Exit 77 (skipped) without numpy.
"""

import argparse
import os
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("numpy is not installed for %s: skipped" % sys.executable)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_conformance  # noqa: E402
import spec_numpy  # noqa: E402


def same_files(committed, fresh):
    """Problems, one line each: files missing, extra or different."""
    problems = []
    want, have = set(os.listdir(fresh)), set(os.listdir(committed)) if os.path.isdir(committed) else set()
    problems += ["%s is missing" % os.path.join(committed, f) for f in sorted(want - have)]
    problems += ["%s is not written by make_conformance.py" % os.path.join(committed, f) for f in sorted(have - want)]
    for f in sorted(want & have):
        with open(os.path.join(committed, f), "rb") as a, open(os.path.join(fresh, f), "rb") as b:
            if a.read() != b.read():
                problems.append("%s differs from what make_conformance.py writes" % os.path.join(committed, f))
    return problems


def reproduce(folder):
    """Cases of folder/cases.txt on which spec_numpy.select disagrees; the number checked."""
    wrong, checked = [], 0
    with open(os.path.join(folder, "cases.txt")) as lines:
        for line in lines:
            if line.startswith("#") or not line.strip():
                continue
            head, kept, piv, comp = line.split("|")
            name, f, L, H, N, a, b, kind, value, k, direction, c = head.split()
            L, H, N, a, b, k, c = map(int, (L, H, N, a, b, k, c))
            maps = np.fromfile(os.path.join(folder, f), dtype="<f4").reshape(L, H, N, N)
            got = spec_numpy.select(maps, a, b, (kind, float(value)), k, 1.5, direction, c)
            want = tuple([int(t) for t in x.split()] for x in (kept, piv, comp))
            checked += 1
            if tuple(got) != want:
                wrong.append("%s: spec_numpy gives %s, the vector says %s" % (name, tuple(got), want))
    return wrong, checked


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--shared", default="")
    o = ap.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as fresh:
        n = make_conformance.make(fresh)
        problems = same_files(o.data, fresh)
    for p in problems:
        print("FAILED:", p)
    if problems:
        print("(run tools/tests/make_conformance.py, and commit its output)")
        failed = True
    else:
        print("%s: the %d cases make_conformance.py writes, byte for byte" % (o.data, n))
    if o.shared and os.path.isfile(os.path.join(o.shared, "cases.txt")):
        wrong, checked = reproduce(o.shared)
        for w in wrong:
            print("FAILED:", w)
        failed = failed or bool(wrong) or checked == 0
        print("%s: spec_numpy.py reproduces %d of %d cases" % (o.shared, checked - len(wrong), checked))
    elif o.shared:
        print("no shared vectors at %s/cases.txt: that check is skipped" % o.shared)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
