"""freepruner's selection, docs/SPEC.md, in numpy: written from the SPEC
alone (not from the C++), in float64, to check the command-line tool from
outside. select() returns (kept, pivotal, complementary), ascending lists of
absolute token positions."""

import math

import numpy as np


def outliers(x, fence_factor):
    """Indices k with x[k] > Q3 + f * (Q3 - Q1), numpy's 'linear' quartiles."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return np.zeros(0, dtype=np.int64)
    q1, q3 = np.quantile(x, [0.25, 0.75])  # method='linear', numpy's default
    return np.flatnonzero(x > q3 + fence_factor * (q3 - q1))


def top(values, candidates, k):
    """The k candidates with the largest values, ties to the smaller index."""
    return sorted(candidates, key=lambda i: (-values[i], i))[:k]


def select(maps, prefix=0, suffix=0, budget=("adaptive", 0), pivots_per_layer=0,
           fence_factor=1.5, direction="row", complementary_layer=-1, pivot_layers=None):
    """maps: [L, H, N, N]; budget: ("adaptive", 0), ("count", m) or ("ratio", x)."""
    a = np.asarray(maps, dtype=np.float64)
    L, H, N, N2 = a.shape
    assert N == N2 and L >= 1 and H >= 1 and prefix + suffix < N
    C = list(range(prefix, N - suffix))
    M = len(C)
    layers = list(range(L)) if not pivot_layers else [L - 1 if l == -1 else l for l in pivot_layers]
    c = L - 1 if complementary_layer == -1 else complementary_layer

    # Step 0: mean over heads.
    mean = a.sum(axis=1) / H
    # Step 1: r_l[i] = sum_j mean_l[j][i] - mean_l[i][i], over all N rows.
    r = {l: mean[l].sum(axis=0) - np.diagonal(mean[l]) for l in layers}

    # Step 2: pivots per layer, their union; top-1 of each layer if empty.
    P = set()
    for l in layers:
        if pivots_per_layer == 0:
            P |= {C[k] for k in outliers(r[l][C], fence_factor)}
        else:
            P |= set(top(r[l], C, pivots_per_layer))
    if not P:
        P = {top(r[l], C, 1)[0] for l in layers}

    # Step 3: complementary tokens and the affinity w(j) = sum_p v_p[j].
    Q = set()
    w = np.zeros(N)
    for p in sorted(P):
        js = [j for j in C if j != p]
        v = mean[c][p, js] if direction == "row" else mean[c][js, p]
        Q |= {js[k] for k in outliers(v, fence_factor)}
        w[js] += v
    Q -= P

    kind, value = budget
    if kind == "adaptive":  # Step 4
        return sorted(P | Q), sorted(P), sorted(Q)

    # Step 5: P by best rank, then Q, then the rest, both by affinity.
    m = min(int(value), M) if kind == "count" else max(1, math.floor(value * M + 0.5))

    def rank(l, i):
        return sum(1 for j in C if r[l][j] > r[l][i] or (r[l][j] == r[l][i] and j < i))

    order = sorted(P, key=lambda i: (min(rank(l, i) for l in layers), i))
    order += sorted(Q, key=lambda j: (-w[j], j))
    order += sorted(set(C) - P - Q, key=lambda j: (-w[j], j))
    kept = sorted(order[:m])
    return kept, sorted(set(kept) & P), sorted(set(kept) - P)
