#!/usr/bin/env python3
"""freepruner's CPU select against a straightforward, vectorized PyTorch
implementation of the same SPEC, on the same maps, in one run.

    python3 bench/torch_compare.py [build/bench/libfreepruner_capi.so]

Needs numpy and torch (Debian: python3-numpy python3-torch). Both sides
must return the same tokens (checked). The table prints the speed-up over
PyTorch with float32 reductions (what most code writes) and with float64
ones (freepruner's precision), on one thread as freepruner, and on all.
"""
import ctypes
import os
import sys
import time

import numpy as np
import torch


def linear_quantiles(x, dim=-1):
    """Q1, Q3 with numpy's 'linear' rule (torch.quantile uses the same lerp)."""
    q = torch.tensor([0.25, 0.75], dtype=x.dtype)
    qs = torch.nanquantile(x, q, dim=dim)
    return qs[0], qs[1]


def torch_select(maps, prefix, suffix, m, dtype, fence=1.5):
    """SPEC steps 0-5, vectorized; maps: float32 [L, H, N, N]; m: budget count (None = adaptive);
    dtype: the precision of the reductions (float32 as most code would; float64 as freepruner)."""
    L, H, N, _ = maps.shape
    first, last = prefix, N - suffix
    mean = maps.to(dtype).mean(dim=1)                                        # step 0: [L, N, N]
    r = mean.sum(dim=1) - torch.diagonal(mean, dim1=1, dim2=2)               # step 1: [L, N]
    rc = r[:, first:last]
    q1, q3 = linear_quantiles(rc)
    pivotal = (rc > (q3 + fence * (q3 - q1))[:, None]).any(dim=0)           # step 2
    if not pivotal.any():
        pivotal[torch.argmax(rc, dim=1)] = True                              # top-1 (first max) per layer
    P = torch.nonzero(pivotal).flatten() + first
    rows = mean[-1][P][:, first:last].clone()                                # step 3 (row): [|P|, M]
    rows[torch.arange(len(P)), P - first] = float("nan")                     # j != p
    o1, o3 = linear_quantiles(rows, dim=1)
    outlier = (rows > (o3 + fence * (o3 - o1))[:, None]).any(dim=0)
    outlier[P - first] = False
    Q = torch.nonzero(outlier).flatten() + first
    if m is None:
        return torch.sort(torch.cat([P, Q])).values
    affinity = torch.nansum(rows, dim=0)                                     # step 5
    idx = torch.arange(first, last)
    order_r = torch.argsort(-rc, dim=1, stable=True)                         # ties: smaller index first
    rank = torch.empty_like(order_r)
    rank.scatter_(1, order_r, torch.arange(rc.shape[1]).expand_as(order_r))
    best = rank.min(dim=0).values
    p_order = P[torch.argsort(best[P - first], stable=True)]
    rest = torch.ones(last - first, dtype=torch.bool)
    rest[P - first] = False
    rest[Q - first] = False
    def by_affinity(t):
        return t[torch.argsort(-affinity[t - first], stable=True)]
    order = torch.cat([p_order, by_affinity(Q), by_affinity(idx[rest])])
    return torch.sort(order[:m]).values


def make_maps(layers, heads, tokens, seed=7):
    rng = np.random.default_rng(seed)
    bonus = np.where(rng.random((layers, heads, 1, tokens)) < 0.05, 3.0, 0.0)
    logits = 0.7 * rng.standard_normal((layers, heads, tokens, tokens)) + bonus
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return np.ascontiguousarray((e / e.sum(axis=-1, keepdims=True)).astype(np.float32))


def best_of(f, reps):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    lib_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join("build", "bench", "libfreepruner_capi.so")
    lib = ctypes.CDLL(os.path.abspath(lib_path))
    lib.freepruner_select_f32.restype = ctypes.c_int
    i64 = ctypes.c_int64
    lib.freepruner_select_f32.argtypes = [ctypes.c_void_p, i64, i64, i64, i64, i64, ctypes.c_int, ctypes.c_double,
                                          ctypes.c_void_p, ctypes.POINTER(i64), ctypes.c_char_p]

    def fp_select(maps, prefix, m):
        L, H, N, _ = maps.shape
        kept = np.empty(N, dtype=np.int32)
        count = i64(0)
        err = ctypes.create_string_buffer(256)
        rc = lib.freepruner_select_f32(maps.ctypes.data, L, H, N, prefix, 0, 1 if m else 0, float(m or 0),
                                       kept.ctypes.data, ctypes.byref(count), err)
        if rc:
            raise RuntimeError(err.value.decode())
        return kept[:count.value]

    threads = os.cpu_count() or 1
    print(f"torch {torch.__version__}, numpy {np.__version__}; freepruner on 1 thread; "
          f"torch with float32 or float64 reductions, on 1 thread and on {threads}")
    print(f"{'case':<30} {'MB':>6} {'freepruner':>10} {'f32 1T':>8} {'x':>5} {'f64 1T':>8} {'x':>5} "
          f"{'f32 ' + str(threads) + 'T':>8} {'x':>5}  same tokens")
    # (name, batch, layers, heads, tokens, prefix, budget count or None for adaptive)
    cases = [("CLIP-336, 2 layers, count 288", 1, 2, 16, 577, 1, 288),
             ("CLIP-336, 2 layers, adaptive", 1, 2, 16, 577, 1, None),
             ("CLIP-336, 23 layers, count 288", 1, 23, 16, 577, 1, 288),
             ("Video-LLaVA, 8 frames of 257", 8, 2, 16, 257, 1, 128),
             ("SigLIP 729, 2 layers", 1, 2, 16, 729, 0, 364),
             ("Qwen2-VL 1024, 2 layers", 1, 2, 16, 1024, 0, 512)]
    ok = True
    for name, B, L, H, N, prefix, m in cases:
        items = [make_maps(L, H, N, seed=7 + b) for b in range(B)]
        titems = [torch.from_numpy(x) for x in items]
        reps = 3 if L > 2 else 7
        t_fp, kept_fp = best_of(lambda: [fp_select(x, prefix, m) for x in items], reps)
        times, same = {}, True
        for dtype, nthreads in ((torch.float32, 1), (torch.float64, 1), (torch.float32, threads)):
            torch.set_num_threads(nthreads)
            times[(dtype, nthreads)], kept_t = best_of(
                lambda: [torch_select(x, prefix, 0, m, dtype) for x in titems], reps)
            for a, b in zip(kept_fp, kept_t):
                if not np.array_equal(a, b.numpy()):
                    same = False
                    print(f"  {name}, torch {dtype}: tokens differ\n  freepruner: {a.tolist()}\n  torch:      {b.tolist()}")
        ok &= same
        mb = sum(x.nbytes for x in items) / 1e6
        row = f"{name:<30} {mb:6.1f} {t_fp * 1e3:8.2f}ms"
        for key in ((torch.float32, 1), (torch.float64, 1), (torch.float32, threads)):
            row += f" {times[key] * 1e3:6.1f}ms {times[key] / t_fp:5.1f}"
        print(row + f"  {'yes' if same else 'NO'}")
    sys.exit(0 if ok else 1)

if __name__ == "__main__":
    main()
