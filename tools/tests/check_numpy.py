"""The command-line tool on files numpy itself writes (numpy.save, savez,
savez_compressed; float16/32/64; every array form; batches), checked
against spec_numpy.py, an independent numpy implementation of docs/SPEC.md
(itself first checked on the SPEC conformance vectors).

  python3 check_numpy.py TOOL WORKDIR [--conformance DIR] [--seed S] [--cases N] [--no-zlib]

Exit 77 (skipped) without numpy.
"""

import argparse
import json
import os
import subprocess
import sys
import time

try:
    import numpy as np
except ImportError:
    print("numpy is not installed for %s: skipped" % sys.executable)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spec_numpy  # noqa: E402

passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAILED:", what)


def softmax_maps(rng, *shape):
    bonus = (rng.random(shape[:-2] + (1, shape[-1])) < 0.12) * rng.uniform(1, 4, shape[:-2] + (1, shape[-1]))
    x = rng.uniform(0.3, 2.0, shape[:-2] + (1, 1)) * rng.standard_normal(shape) + bonus
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def run_tool(tool, args):
    p = subprocess.run([tool] + [str(a) for a in args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def conformance(folder):
    cases = os.path.join(folder, "cases.txt")
    if not os.path.exists(cases):
        print("conformance vectors not found at %s: that part is skipped" % cases)
        return
    for line in open(cases):
        if line.startswith("#") or not line.strip():
            continue
        head, kept, piv, comp = line.split("|")
        name, f, L, H, N, a, b, kind, value, k, direction, c = head.split()
        L, H, N, a, b, k, c = map(int, (L, H, N, a, b, k, c))
        maps = np.fromfile(os.path.join(folder, f), dtype="<f4").reshape(L, H, N, N)
        got = spec_numpy.select(maps, a, b, (kind, float(value)), k, 1.5, direction, c)
        want = tuple([int(t) for t in x.split()] for x in (kept, piv, comp))
        check(tuple(got) == want, "spec_numpy on conformance case %s: %s != %s" % (name, got, want))


def random_case(tool, work, rng, case, zlib=True):
    dtype = [np.float16, np.float32, np.float64][case % 3]
    form = rng.integers(0, 8)
    # npy: 0 [L,H,N,N] 1 [L,N,N] 2 [B,L,H,N,N] 3 big-endian [L,H,N,N];
    # npz: 4 savez(*[H,N,N]) 5 savez(*[B,H,N,N]) 6 savez(**named) 7 savez_compressed
    L = int(rng.integers(1, 13 if form in (4, 6) else 4))
    H = 1 if form == 1 else int(rng.integers(1, 4))
    N = int(rng.integers(2, 40))
    B = int(rng.integers(1, 4)) if form in (2, 5) else 1
    maps = softmax_maps(rng, B, L, H, N, N).astype(dtype)  # what the tool reads, exactly
    path = os.path.join(work, "case%d" % case)
    if form == 0:
        np.save(path + ".npy", maps[0])
    elif form == 1:
        np.save(path + ".npy", maps[0, :, 0])
    elif form == 2:
        np.save(path + ".npy", maps)
    elif form == 3:
        np.save(path + ".npy", maps[0].astype(maps.dtype.newbyteorder(">")))
    elif form == 4:
        np.savez(path + ".npz", *maps[0])
    elif form == 5:
        np.savez(path + ".npz", *maps.transpose(1, 0, 2, 3, 4))
    elif form == 6:  # keyword names, kept in the order given
        np.savez(path + ".npz", **{"layer_%s" % chr(ord("z") - l): maps[0, l] for l in range(L)})
    else:
        np.savez_compressed(path + ".npz", *maps[0])
    path += ".npy" if form < 4 else ".npz"

    a = int(rng.integers(0, min(2, N - 1) + 1))
    b = int(rng.integers(0, min(1, N - 1 - a) + 1))
    args = [path, "--json", "--prefix", a, "--suffix", b]
    used = list(range(L))
    if rng.integers(0, 3) and L > 1:
        used = [int(u) for u in rng.permutation(L)[: rng.integers(1, L + 1)]]
        args += ["--layers", ",".join(str(u if rng.integers(0, 2) else u - L) for u in used)]
    U = len(used)
    k = int(rng.integers(0, 4)) if rng.integers(0, 2) else 0
    f = [1.5, 0.5, 3.0][rng.integers(0, 3)]
    if f == 0.5 and N - a - b <= 3:  # two values x < y put the fence exactly on y: a near-tie (SPEC, Precision)
        f = 1.5
    direction = ["row", "column"][rng.integers(0, 2)]
    c = int(rng.integers(-U, U))
    pivots = sorted({int(p) for p in rng.integers(0, U, rng.integers(1, U + 1))}) if rng.integers(0, 2) else None
    args += ["--pivots-per-layer", k, "--fence", f, "--from", direction, "--complementary-layer", c]
    if pivots:
        args += ["--pivot-layers", ",".join(str(p - U if rng.integers(0, 2) else p) for p in pivots)]
    budget = [("adaptive", 0), ("count", int(rng.integers(1, N + 3))), ("ratio", int(rng.integers(1, 21)) / 20)][rng.integers(0, 3)]
    if budget[0] == "count":
        args += ["--count", budget[1]]
    elif budget[0] == "ratio":
        args += ["--ratio", repr(budget[1])]

    want = []
    for item in range(B):
        got = spec_numpy.select(maps[item, used].astype(np.float64), a, b, budget, k, f, direction,
                                c % U, pivots)
        want.append({"tokens": N, "candidates": N - a - b, "kept": got[0], "pivotal": got[1], "complementary": got[2]})
    rc, out, err = run_tool(tool, args)
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    expected = want if form in (2, 5) else want[0]
    if form == 7 and not zlib:
        check(rc == 1 and "built without zlib" in err, "%s: exit %d, %s" % (path, rc, err))
        return
    check(rc == 0 and answer == expected,
          "%s\n  exit %d %s\n  got  %s\n  want %s" % (" ".join(map(str, [tool] + args)), rc, err.strip(), answer, expected))


def refusals(tool, work):
    """What numpy can write that the tool must refuse, with exit 1 and a message."""
    base = os.path.join(work, "refuse")
    cases = {
        "fortran.npy": (lambda p: np.save(p, np.asfortranarray(softmax_maps(np.random.default_rng(0), 2, 3, 5, 5)))),
        "int.npy": (lambda p: np.save(p, np.ones((2, 5, 5), dtype=np.int64))),
        "complex.npy": (lambda p: np.save(p, np.ones((2, 5, 5), dtype=np.complex64))),
        "rank1.npy": (lambda p: np.save(p, np.ones(5, dtype=np.float32))),
        "nonsquare.npy": (lambda p: np.save(p, np.ones((2, 5, 4), dtype=np.float32))),
        "mixed.npz": (lambda p: np.savez(p, np.ones((2, 5, 5), np.float32), np.ones((2, 6, 6), np.float32))),
    }
    messages = {
        "fortran.npy": "Fortran (column-major) order",
        "int.npy": "dtype '<i8' is not supported",
        "complex.npy": "dtype '<c8' is not supported",
        "rank1.npy": "has 1 axes",
        "nonsquare.npy": "not square",
        "mixed.npz": "every layer needs the same",
    }
    for name, write in cases.items():
        path = base + "_" + name
        write(path)
        rc, out, err = run_tool(tool, [path])
        check(rc == 1 and out == "" and err.startswith("freepruner: ") and messages[name] in err and err.count("\n") == 1,
              "%s: exit %d, stderr %r" % (name, rc, err))


def presets(tool, work, rng):
    """--preset: LLaVA-1.5 (CLS + 24x24, layers 21 and 22 of a full dump) and
    Qwen2-VL (2x2 patches merged: A'[I][J] = (1/4) sum_{i in I, j in J} A[i][j])."""
    probe = os.path.join(work, "probe.npy")
    np.save(probe, softmax_maps(rng, 1, 1, 16, 16))
    rc, out, err = run_tool(tool, [probe, "--preset", "qwen2-vl:4x4"])
    if rc == 2 and "built without presets" in err:
        print("the tool has no presets: that part is skipped")
        return
    full = softmax_maps(rng, 24, 2, 577, 577).astype(np.float16)
    path = os.path.join(work, "llava.npy")
    np.save(path, full)
    rc, out, err = run_tool(tool, [path, "--preset", "llava-1.5", "--ratio", "0.5", "--json"])
    kept, piv, comp = spec_numpy.select(full[[21, 22]].astype(np.float64), 1, 0, ("ratio", 0.5))
    want = {"tokens": 577, "candidates": 576, "kept": kept, "pivotal": piv, "complementary": comp}
    check(rc == 0 and json.loads(out) == want, "llava-1.5 preset: exit %d %s" % (rc, err))
    for rows, cols in ((4, 4), (6, 8)):
        n = rows * cols
        maps = softmax_maps(rng, 2, 2, 3, n, n).astype(np.float32)  # a batch of 2, 2 layers
        path = os.path.join(work, "qwen.npy")
        np.save(path, maps)
        m = n // 4
        merged = maps.astype(np.float64).reshape(2, 2, 3, m, 4, m, 4).sum(axis=(4, 6)) / 4
        rc, out, err = run_tool(tool, [path, "--preset", "qwen2-vl:%dx%d" % (rows, cols), "--count", "3", "--json"])
        want = []
        for item in merged:
            kept, piv, comp = spec_numpy.select(item, 0, 0, ("count", 3))
            want.append({"tokens": m, "candidates": m, "kept": kept, "pivotal": piv, "complementary": comp})
        check(rc == 0 and json.loads(out) == want, "qwen2-vl:%dx%d preset: exit %d %s" % (rows, cols, rc, err))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tool")
    ap.add_argument("work")
    ap.add_argument("--conformance", default="")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--cases", type=int, default=90)
    ap.add_argument("--no-zlib", action="store_true", help="the tool was built without zlib")
    o = ap.parse_args()
    seed = o.seed if o.seed is not None else int(time.time() * 1000) % (1 << 31)
    print("seed %d (--seed %d replays it); numpy %s" % (seed, seed, np.__version__))
    os.makedirs(o.work, exist_ok=True)
    if o.conformance:
        conformance(o.conformance)
    rng = np.random.default_rng(seed)
    for case in range(o.cases):
        random_case(o.tool, o.work, rng, case, zlib=not o.no_zlib)
    refusals(o.tool, o.work)
    presets(o.tool, o.work, rng)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
