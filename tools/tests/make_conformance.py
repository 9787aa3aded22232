"""Writes the SPEC conformance vectors (cases.txt, raw float32 maps and a
README) from fixed seeds, their expected lists computed by spec_numpy.py.

  python3 make_conformance.py [OUTDIR]    (default: tests/data/conformance)

The output is the same byte for byte on every machine: the maps are drawn
with Python's own Mersenne Twister and made with correctly rounded
operations only (no libm, no reductions whose order numpy may change).
Maps drawn at random must decide every comparison by a clear margin (no
near-ties, where SPEC lets backends differ); the "exact" maps hold
multiples of 1/64, whose sums are exact in float, so their ties are real.
"""

import math
import os
import random
import sys
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spec_numpy  # noqa: E402

HEADER = ("# name file L H N prefix suffix budget_kind budget_value pivots_per_layer direction "
          "complementary_layer | indices | pivotal | complementary\n")

README = """# Conformance vectors for SPEC.md

Written by tools/tests/make_conformance.py (do not edit: run it again),
the expected lists by tools/tests/spec_numpy.py, an independent float64
implementation of SPEC.md. Each line of `cases.txt` (after the `#` header)
is one case:

    name file L H N prefix suffix budget_kind budget_value pivots_per_layer direction complementary_layer | indices | pivotal | complementary

- `file`: raw little-endian float32 attention maps, shape `[L][H][N][N]`,
  row-major (`A[l][h][i][j]` at `((l*H + h)*N + i)*N + j`); several cases
  may read one file. Rows sum to 1 (softmax rows, or multiples of 1/64
  for the cases whose ties must be exact).
- `budget_kind`: `adaptive` (value 0), `count` (value = m), `ratio`
  (value = x). `pivots_per_layer` 0 means adaptive pivots.
  `direction`: `row` or `column`. `complementary_layer` is an index into the
  `L` layers, -1 meaning the last. Pivot layers are all `L` layers;
  `fence_factor` is 1.5.
- The three lists after `|` are the expected absolute token positions,
  ascending: all kept, the pivotal ones, the complementary ones.

Every backend must reproduce every list exactly: the maps drawn at random
have no near-ties (each comparison that decides the result is clear by a
relative margin of 1e-4), and the exact ones have only exact ties.
"""

MARGIN = 1e-4  # far above float accumulation error over a few hundred rows
SQRT3 = math.sqrt(3.0)  # sqrt is correctly rounded


def pseudo_exp(x):
    """exp(x) as (1 + x/4096)^4096: multiplications only, the same bits everywhere."""
    y = 1.0 + x / 4096.0
    for _ in range(12):
        y = y * y
    return y


def normalise(e):
    """Rows of e divided by their exactly rounded sums (math.fsum)."""
    rows = e.reshape(-1, e.shape[-1])
    sums = np.array([math.fsum(row) for row in rows.tolist()]).reshape(e.shape[:-1] + (1,))
    return e / sums


def softmax_maps(rng, L, H, N, flat=False):
    """Softmax rows over noisy logits, a few sink keys per layer-head."""
    out = np.empty((L, H, N, N))
    for l in range(L):
        for h in range(H):
            bonus = [0.0 if flat or rng.random() >= 0.12 else 1.0 + 3.0 * rng.random() for _ in range(N)]
            t = 0.05 if flat else 0.3 + 1.7 * rng.random()
            # Irwin-Hall: the sum of four uniforms, centred and scaled to variance 1.
            z = np.array([rng.random() + rng.random() + rng.random() + rng.random() for _ in range(N * N)])
            x = t * ((z - 2.0) * SQRT3).reshape(N, N) + np.array(bonus)
            out[l, h] = pseudo_exp(x - x.max(axis=1, keepdims=True))
    return normalise(out).astype("<f4")


def dyadic_maps(rng, L, H, N, sinks):
    """Rows of 64 units spread over keys (`sinks` keys draw more): multiples of 1/64."""
    out = np.zeros((L, H, N, N))
    for l in range(L):
        for h in range(H):
            heavy = set(int(rng.random() * N) for _ in range(sinks))
            weights = [4.0 if j in heavy else 1.0 for j in range(N)]
            total = sum(weights)
            for i in range(N):
                for _ in range(64):
                    u, j = rng.random() * total, 0
                    while u >= weights[j] and j < N - 1:
                        u -= weights[j]
                        j += 1
                    out[l, h, i, j] += 1.0
    return (out / 64.0).astype("<f4")


def uniform_maps(L, H, N):
    return np.full((L, H, N, N), 1.0 / N, dtype="<f4")


def fence(x):
    """Q3 + 1.5 (Q3 - Q1), and whether the quartiles differ."""
    q1, q3 = np.quantile(np.asarray(x, dtype=np.float64), [0.25, 0.75])
    return q3 + 1.5 * (q3 - q1), q3 > q1


def analyse(maps, case):
    """SPEC's steps spelled out: the kept set, and every comparison that decides it as
    (relative gap, kind), so that near-ties can be refused and real ties found."""
    a = np.asarray(maps, dtype=np.float64)
    L, H, N, _ = a.shape
    C = list(range(case["prefix"], N - case["suffix"]))
    M, k = len(C), case["pivots"]
    cl = L - 1 if case["comp"] == -1 else case["comp"]
    mean = a.sum(axis=1) / H
    r = [mean[l].sum(axis=0) - np.diagonal(mean[l]) for l in range(L)]
    gaps = []

    def gap(x, y):
        return abs(x - y) / max(abs(x), abs(y), 1e-300)

    def order(values, idx):
        return sorted(idx, key=lambda i: (-values[i], i))

    P = set()
    for l in range(L):
        x = r[l][C]
        if k == 0:
            f, spread = fence(x)
            if M > 1:  # one value is its own fence, in any arithmetic
                gaps += [(gap(v, f), "fence" if spread else "flat fence") for v in x]
            P |= {C[n] for n in np.flatnonzero(x > f)}
        else:
            o = order(r[l], C)
            if k < M:
                gaps.append((gap(r[l][o[k - 1]], r[l][o[k]]), "pivot cut"))
            P |= set(o[:k])
    fallback = not P
    if fallback:
        for l in range(L):
            o = order(r[l], C)
            if M > 1:
                gaps.append((gap(r[l][o[0]], r[l][o[1]]), "top-1"))
            P.add(o[0])
    Q, w = set(), np.zeros(N)
    for p in sorted(P):
        js = [j for j in C if j != p]
        v = mean[cl][p, js] if case["dir"] == "row" else mean[cl][js, p]
        if len(js) > 1:  # one value is its own fence, in any arithmetic
            f, spread = fence(v)
            gaps += [(gap(x, f), "fence" if spread else "flat fence") for x in v]
            Q |= {js[n] for n in np.flatnonzero(v > f)}
        w[js] += v
    Q -= P
    if case["kind"] == "adaptive":
        kept = P | Q
    else:
        m = min(int(case["value"]), M) if case["kind"] == "count" else max(1, math.floor(case["value"] * M + 0.5))
        if m < len(P):
            gaps += [(gap(r[l][p], r[l][j]), "rank") for l in range(L) for p in P for j in C if j != p]
        for group, before in ((Q, len(P)), (set(C) - P - Q, len(P) + len(Q))):
            if before < m < before + len(group):
                o = order(w, group)
                cut = m - before
                gaps.append((gap(w[o[cut - 1]], w[o[cut]]), "affinity cut"))
        rank = lambda l, i: sum(1 for j in C if r[l][j] > r[l][i] or (r[l][j] == r[l][i] and j < i))  # noqa: E731
        seq = sorted(P, key=lambda i: (min(rank(l, i) for l in range(L)), i)) + order(w, Q) + order(w, set(C) - P - Q)
        kept = set(seq[:m])
    return sorted(kept), gaps, fallback


def check_ratio(value, M):
    """x*M + 1/2 is an integer exactly, or clearly not one (double rounding cannot matter)."""
    t = Fraction(value) * M + Fraction(1, 2)
    d = abs(t - round(t))
    assert d == 0 or d > Fraction(1, 10**9), (value, M)


# SETS: (name, maker(rng) -> maps [L,H,N,N] float32, what every case must
# show on the draw or None, cases); the maps go to name.f32.
def c(name, prefix, suffix, kind, value, pivots=0, direction="row", comp=-1):
    return dict(name=name, prefix=prefix, suffix=suffix, kind=kind, value=value, pivots=pivots, dir=direction, comp=comp)


def tie_at_pivot_cut(maps, case):
    a = np.asarray(maps, dtype=np.float64)
    H = a.shape[1]
    C = list(range(case["prefix"], a.shape[2] - case["suffix"]))
    k = case["pivots"]
    for l in range(a.shape[0]):
        mean = a[l].sum(axis=0) / H
        r = mean.sum(axis=0) - np.diagonal(mean)
        s = sorted((r[C]).tolist(), reverse=True)
        if k < len(s) and s[k - 1] == s[k] and (k == 1 or s[k - 2] != s[k - 1]):
            return True
    return False


def on_a_fence(maps, case):
    _, gaps, _ = analyse(maps, case)
    return any(g == 0 and what == "fence" for g, what in gaps)


def tie_at_affinity_cut(maps, case):
    _, gaps, _ = analyse(maps, case)
    return any(g == 0 and what == "affinity cut" for g, what in gaps)


def falls_back(maps, case):
    return analyse(maps, case)[2]


SETS = [
    # Two to five tokens: one candidate, quantiles of two or three values.
    ("n2", lambda g: softmax_maps(g, 1, 1, 2), None, [
        c("n2_adaptive", 0, 0, "adaptive", 0),
        c("n2_count1", 0, 0, "count", 1),
        c("n2_count_over", 0, 0, "count", 7),
        c("n2_ratio_quarter", 0, 0, "ratio", 0.25),  # 0.25 * 2 + 0.5 = 1 exactly
        c("n2_ratio_one", 0, 0, "ratio", 1.0),
        c("n2_top1_column", 0, 0, "count", 2, 1, "column")]),
    ("n3", lambda g: softmax_maps(g, 2, 2, 3), None, [
        c("n3_cls_adaptive", 1, 0, "adaptive", 0),
        c("n3_cls_count1", 1, 0, "count", 1),
        c("n3_cls_top1_column", 1, 0, "adaptive", 0, 1, "column", 0),
        c("n3_one_candidate", 1, 1, "adaptive", 0),
        c("n3_one_candidate_count", 1, 1, "count", 5),
        c("n3_one_candidate_ratio", 1, 1, "ratio", 0.1)]),
    ("n4", lambda g: softmax_maps(g, 1, 3, 4), None, [
        c("n4_cls_last_adaptive", 0, 1, "adaptive", 0),
        c("n4_cls_last_ratio_half", 0, 1, "ratio", 0.5),  # 1.5 + 0.5 = 2 exactly
        c("n4_cls_last_count2_column", 0, 1, "count", 2, 0, "column")]),
    ("n5", lambda g: softmax_maps(g, 3, 2, 5), None, [
        c("n5_first_layer", 1, 1, "adaptive", 0, 0, "row", 0),
        c("n5_middle_layer", 1, 1, "adaptive", 0, 0, "row", 1),
        c("n5_last_layer", 1, 1, "count", 2, 0, "column", 2),
        c("n5_top2_ratio", 0, 0, "ratio", 0.75, 2)]),  # 4.25: 4
    # Grids with a CLS token, every option.
    ("s17", lambda g: softmax_maps(g, 2, 2, 17), None, [
        c("s17_adaptive", 1, 0, "adaptive", 0),
        c("s17_ratio_round_up", 1, 0, "ratio", 0.53125),  # 8.5 + 0.5 = 9 exactly
        c("s17_ratio_round_down", 1, 0, "ratio", 0.53),  # 8.98: 8
        c("s17_count_all", 1, 0, "count", 16),
        c("s17_count_over", 1, 0, "count", 99),
        c("s17_top2_count5", 1, 0, "count", 5, 2),
        c("s17_top3_column", 1, 0, "adaptive", 0, 3, "column"),
        c("s17_first_layer", 1, 0, "ratio", 0.25, 0, "row", 0),
        c("s17_last_layer_explicit", 1, 0, "count", 6, 0, "column", 1)]),
    ("s37", lambda g: softmax_maps(g, 3, 2, 37), None, [
        c("s37_adaptive", 1, 0, "adaptive", 0),
        c("s37_first_layer", 1, 0, "adaptive", 0, 0, "row", 0),
        c("s37_middle_layer_column", 1, 0, "adaptive", 0, 0, "column", 1),
        c("s37_ratio_quarter", 1, 0, "ratio", 0.25),  # 9 + 0.5: 9
        c("s37_top1_count4", 1, 0, "count", 4, 1),
        c("s37_every_pivot", 1, 0, "count", 10, 50),  # k > M: every candidate is pivotal
        c("s37_ratio_tiny", 1, 0, "ratio", 0.001)]),  # 0.536: 1 (and never 0)
    ("s50", lambda g: softmax_maps(g, 1, 4, 50), None, [
        c("s50_adaptive", 0, 0, "adaptive", 0),
        c("s50_count10", 0, 0, "count", 10),
        c("s50_ratio_tenth_column", 0, 0, "ratio", 0.1, 0, "column"),  # 5.5: 5
        c("s50_top2", 0, 0, "adaptive", 0, 2),
        c("s50_suffix_top1", 0, 1, "count", 3, 1, "column", 0)]),
    ("s65", lambda g: softmax_maps(g, 4, 1, 65), None, [
        c("s65_adaptive", 1, 0, "adaptive", 0),
        c("s65_ratio_half", 1, 0, "ratio", 0.5),
        c("s65_count20_column", 1, 0, "count", 20, 0, "column"),
        c("s65_first_layer", 1, 0, "adaptive", 0, 0, "row", 0),
        c("s65_layer2_top2", 1, 0, "ratio", 0.3, 2, "column", 2),
        c("s65_registers", 4, 1, "adaptive", 0)]),
    ("s82", lambda g: softmax_maps(g, 2, 2, 82), None, [
        c("s82_ratio", 1, 0, "ratio", 0.3),  # 24.3 + 0.5: 24
        c("s82_first_layer_column", 1, 0, "adaptive", 0, 0, "column", 0),
        c("s82_top4_count30", 1, 0, "count", 30, 4)]),
    ("s257", lambda g: softmax_maps(g, 1, 1, 257), None, [
        c("s257_adaptive", 1, 0, "adaptive", 0),
        c("s257_ratio_quarter", 1, 0, "ratio", 0.25),  # 64 + 0.5: 64
        c("s257_count64_column", 1, 0, "count", 64, 0, "column"),
        c("s257_top3_ratio", 1, 0, "ratio", 0.1, 3),  # 26.1: 26
        c("s257_count_over", 1, 0, "count", 1000)]),
    # Nearly uniform rows: no layer has an outlier, so each layer's top-1.
    ("flat", lambda g: softmax_maps(g, 2, 2, 26, flat=True), falls_back, [
        c("flat_fallback", 1, 0, "adaptive", 0),
        c("flat_fallback_count5", 1, 0, "count", 5),
        c("flat_fallback_column", 1, 0, "adaptive", 0, 0, "column", 0)]),
    # Exact ties.
    ("uniform", lambda g: uniform_maps(2, 1, 8), None, [
        c("uniform_adaptive", 0, 0, "adaptive", 0),
        c("uniform_count3", 0, 0, "count", 3),
        c("uniform_top2_column", 0, 0, "adaptive", 0, 2, "column"),
        c("uniform_cls_suffix_count_over", 1, 2, "count", 99),
        c("uniform_ratio_half", 1, 0, "ratio", 0.5)]),  # 3.5 + 0.5 = 4 exactly
    ("tie_pivot", lambda g: dyadic_maps(g, 2, 2, 12, 3), tie_at_pivot_cut, [
        c("tie_pivot_top2", 0, 0, "adaptive", 0, 2),
        c("tie_pivot_top2_count4", 0, 0, "count", 4, 2, "column")]),
    ("tie_fence", lambda g: dyadic_maps(g, 1, 2, 10, 2), on_a_fence, [
        c("tie_fence_adaptive", 1, 0, "adaptive", 0)]),
    ("tie_fence_column", lambda g: dyadic_maps(g, 2, 2, 10, 2), on_a_fence, [
        c("tie_fence_column", 1, 0, "adaptive", 0, 0, "column", 0)]),
    ("tie_affinity", lambda g: dyadic_maps(g, 2, 1, 16, 2), tie_at_affinity_cut, [
        c("tie_affinity_count6", 1, 0, "count", 6),
        c("tie_affinity_ratio", 1, 0, "ratio", 0.4, 0, "row", 0)]),  # 6.5: 6
]
EXACT = {"uniform", "tie_pivot", "tie_fence", "tie_fence_column", "tie_affinity"}


def make(outdir):
    os.makedirs(outdir, exist_ok=True)
    for old in os.listdir(outdir):  # maps of sets since renamed or removed
        if old.endswith(".f32"):
            os.remove(os.path.join(outdir, old))
    lines = [HEADER]
    for name, maker, wanted, cases in SETS:
        exact = name in EXACT
        for attempt in range(1000):
            rng = random.Random("%s %d" % (name, attempt))  # a str seed hashes the same in every Python 3
            maps = maker(rng)
            if wanted and not all(wanted(maps, case) for case in cases):
                continue
            results = []
            for case in cases:
                got = spec_numpy.select(maps, case["prefix"], case["suffix"], (case["kind"], case["value"]),
                                        case["pivots"], 1.5, case["dir"], case["comp"])
                kept, gaps, _ = analyse(maps, case)
                assert kept == got[0], (case["name"], kept, got)
                if not exact and any(g < MARGIN for g, _ in gaps):
                    break
                results.append(got)
            else:
                break
        else:
            sys.exit("%s: no draw in 1000 tries has what its cases need, without near-ties" % name)
        L, H, N, _ = maps.shape
        with open(os.path.join(outdir, name + ".f32"), "wb") as f:
            f.write(maps.astype("<f4").tobytes())
        for case, (kept, piv, comp) in zip(cases, results):
            if case["kind"] == "ratio":
                check_ratio(case["value"], N - case["prefix"] - case["suffix"])
            value = repr(case["value"]) if case["kind"] == "ratio" else str(int(case["value"]))
            head = [case["name"], name + ".f32", L, H, N, case["prefix"], case["suffix"], case["kind"], value,
                    case["pivots"], case["dir"], case["comp"]]
            lists = [" ".join(str(t) for t in x) for x in (kept, piv, comp)]
            lines.append((" ".join(str(x) for x in head) + " | " + " | ".join(lists)).rstrip() + "\n")
    with open(os.path.join(outdir, "cases.txt"), "w", newline="\n") as f:
        f.writelines(lines)
    with open(os.path.join(outdir, "README.md"), "w", newline="\n") as f:
        f.write(README)
    return len(lines) - 1


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "tests", "data", "conformance")
    print("%d cases written to %s" % (make(out), os.path.normpath(out)))
