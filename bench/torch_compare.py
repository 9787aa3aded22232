#!/usr/bin/env python3
"""freepruner's CPU select against a straightforward, vectorized PyTorch
implementation of the same SPEC, on the same maps, in one run.

    python3 bench/torch_compare.py [build/bench/libfreepruner_capi.so]

Needs numpy and torch (Debian: python3-numpy python3-torch). Both sides
must return the same tokens (checked); the table prints the speed-up, with
PyTorch on one thread (as freepruner) and on all threads.
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


def torch_select(maps, prefix, suffix, m, fence=1.5):
    """SPEC steps 0-5, vectorized; maps: float32 [L, H, N, N]; m: budget count (None = adaptive)."""
    L, H, N, _ = maps.shape
    first, last = prefix, N - suffix
    mean = maps.to(torch.float64).mean(dim=1)                                # step 0: [L, N, N]
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

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__} ({threads} threads available), numpy {np.__version__}")
    print(f"{'case':<26} {'MB':>6} {'freepruner ms':>14} {'torch 1T ms':>12} {'x (1T)':>8} {'torch {0}T ms'.format(threads):>12} {'x':>7}  same")
    cases = [("CLIP-336, 2 layers, half", 2, 16, 577, 1, 288), ("CLIP-336, 2 layers, adaptive", 2, 16, 577, 1, None),
             ("CLIP-336, 23 layers, half", 23, 16, 577, 1, 288), ("Video-LLaVA frame, 2 layers", 2, 16, 257, 1, 128),
             ("SigLIP 729, 2 layers", 2, 16, 729, 0, 364), ("Qwen2-VL 1024, 2 layers", 2, 16, 1024, 0, 512)]
    for name, L, H, N, prefix, m in cases:
        maps = make_maps(L, H, N)
        tmaps = torch.from_numpy(maps)
        reps = 3 if L > 2 else 7
        t_fp, kept_fp = best_of(lambda: fp_select(maps, prefix, m), reps)
        torch.set_num_threads(1)
        t_t1, kept_t = best_of(lambda: torch_select(tmaps, prefix, 0, m), reps)
        torch.set_num_threads(threads)
        t_tn, _ = best_of(lambda: torch_select(tmaps, prefix, 0, m), reps)
        same = np.array_equal(kept_fp, kept_t.numpy())
        print(f"{name:<26} {maps.nbytes / 1e6:6.1f} {t_fp * 1e3:14.2f} {t_t1 * 1e3:12.2f} {t_t1 / t_fp:8.1f} "
              f"{t_tn * 1e3:12.2f} {t_tn / t_fp:7.1f}  {'yes' if same else 'NO'}")
        if not same:
            print("  freepruner:", kept_fp.tolist())
            print("  torch:     ", kept_t.tolist())
            sys.exit(1)


if __name__ == "__main__":
    main()
