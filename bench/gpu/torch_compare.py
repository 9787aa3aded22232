#!/usr/bin/env python3
"""freepruner's CUDA backend against a straightforward PyTorch implementation
of the same SPEC, on the same GPU and the very same maps, in one process:
freepruner reads PyTorch's tensors in place through ctypes, on PyTorch's
current stream.

    python3 bench/gpu/torch_compare.py build-gpu/libfreepruner_gpu_capi.so \
        [--table build-gpu/gpu_table.csv] [--reps N] [--quick]

The maps are bench/gpu's own (support.cu, seed 7), as freepruner_gpu_table
times them. Both sides must keep the same tokens: PyTorch with float64 sums
is the check (float32 sums, what most code writes and what is timed, may
decide near-ties differently; the table says when). Timings: CUDA events,
L2 overwritten before each call, median of the calls. With --table, the
final table joins freepruner_gpu_table's bandwidth figures.
"""
import argparse
import csv
import ctypes
import os
import sys

import torch

F16, F32 = 1, 0  # freepruner::cuda::dtype


def torch_select(maps, prefix, m, acc, fence=1.5):
    """SPEC steps 0-5 in plain PyTorch. maps: [B, L, H, N, N] on the GPU;
    m: the budget's token count, None for adaptive; acc: dtype of the sums.
    Steps 0-2 run batched; steps 3-5 per item, whose sizes differ."""
    B, L, H, N, _ = maps.shape
    first, M = prefix, N - prefix
    qs = torch.tensor([0.25, 0.75], device=maps.device, dtype=acc)
    mean = maps.mean(dim=2, dtype=acc)                                    # step 0: [B, L, N, N]
    r = mean.sum(dim=2) - torch.diagonal(mean, dim1=2, dim2=3)           # step 1: [B, L, N]
    rc = r[..., first:]                                                   # [B, L, M]
    q = torch.quantile(rc, qs, dim=-1)                                    # numpy's linear rule
    pivotal = (rc > (q[1] + fence * (q[1] - q[0]))[..., None]).any(dim=1)  # step 2: [B, M]
    out = []
    for b in range(B):
        piv = pivotal[b].clone()
        if not piv.any():
            piv[rc[b].argmax(dim=1)] = True                               # top-1 of each layer
        P = torch.nonzero(piv).flatten()                                  # candidate positions
        rows = mean[b, -1, P + first, first:].clone()                     # step 3, row scores: [|P|, M]
        rows[torch.arange(len(P), device=maps.device), P] = float("nan")  # j != p
        o = torch.nanquantile(rows, qs, dim=1)
        outlier = (rows > (o[1] + fence * (o[1] - o[0]))[:, None]).any(dim=0)
        outlier[P] = False
        Q = torch.nonzero(outlier).flatten()
        if m is None:
            kept = torch.cat([P, Q])
        else:                                                             # step 5
            affinity = torch.nansum(rows, dim=0)
            order_r = torch.argsort(-rc[b], dim=1, stable=True)           # ties: smaller index first
            rank = torch.empty_like(order_r)
            rank.scatter_(1, order_r, torch.arange(M, device=maps.device).expand_as(order_r))
            best = rank.min(dim=0).values
            rest = torch.ones(M, dtype=torch.bool, device=maps.device)
            rest[P] = False
            rest[Q] = False

            def by_affinity(t):
                return t[torch.argsort(-affinity[t], stable=True)]

            order = torch.cat([P[torch.argsort(best[P], stable=True)], by_affinity(Q),
                               by_affinity(torch.nonzero(rest).flatten())])
            kept = order[:m]
        out.append(torch.sort(kept).values + first)
    return out


class Freepruner:
    """The low-level CUDA select through ctypes, its workspace and outputs in PyTorch tensors."""

    def __init__(self, path):
        lib = ctypes.CDLL(os.path.abspath(path))
        ll, vp = ctypes.c_longlong, ctypes.c_void_p
        lib.freepruner_cuda_workspace.restype = ll
        lib.freepruner_cuda_workspace.argtypes = [ctypes.c_int, ll, ll, ll, ll, ll, ll, ctypes.c_int, ctypes.c_double,
                                                  ctypes.POINTER(ll)]
        lib.freepruner_cuda_select.restype = ctypes.c_int
        lib.freepruner_cuda_select.argtypes = [vp, ctypes.c_int, ll, ll, ll, ll, ll, ll, ctypes.c_int, ctypes.c_double,
                                               vp, ctypes.c_ulonglong, vp, vp, vp, vp, ctypes.c_char_p, ctypes.c_int]
        lib.freepruner_gpu_fill.restype = ctypes.c_int
        lib.freepruner_gpu_fill.argtypes = [vp, ctypes.c_int, ll, ctypes.c_int, ctypes.c_ulonglong, vp]
        self.lib = lib

    def fill(self, maps, dtype):
        B, L, H, N, _ = maps.shape
        stream = torch.cuda.current_stream().cuda_stream
        if self.lib.freepruner_gpu_fill(maps.data_ptr(), dtype, B * L * H * N, N, 7, stream):
            raise RuntimeError("freepruner_gpu_fill failed")

    def prepare(self, maps, dtype, prefix, m):
        B, L, H, N, _ = maps.shape
        kind, value = (1, float(m)) if m else (0, 0.0)
        capacity = ctypes.c_longlong(0)
        size = self.lib.freepruner_cuda_workspace(dtype, B, L, H, N, prefix, 0, kind, value, ctypes.byref(capacity))
        if size < 0:
            raise RuntimeError("freepruner_cuda_workspace failed")
        dev = maps.device
        self.args = (maps, dtype, B, L, H, N, prefix, kind, value)
        self.capacity = capacity.value
        self.workspace = torch.empty(size, dtype=torch.uint8, device=dev)
        self.kept = torch.empty(B * capacity.value, dtype=torch.int32, device=dev)
        self.counts = torch.empty(B, dtype=torch.int64, device=dev)
        self.error = ctypes.create_string_buffer(512)

    def __call__(self):
        maps, dtype, B, L, H, N, prefix, kind, value = self.args
        rc = self.lib.freepruner_cuda_select(maps.data_ptr(), dtype, B, L, H, N, prefix, 0, kind, value,
                                             self.workspace.data_ptr(), self.workspace.numel(), self.kept.data_ptr(),
                                             self.counts.data_ptr(), None, torch.cuda.current_stream().cuda_stream,
                                             self.error, len(self.error))
        if rc:
            raise RuntimeError(self.error.value.decode())

    def tokens(self):
        kept, counts = self.kept.cpu(), self.counts.cpu()
        return [kept[b * self.capacity:b * self.capacity + int(counts[b])] for b in range(len(counts))]


def median_ms(f, reps, flush):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        flush.zero_()                                                    # evict the maps from L2
        start.record()
        f()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capi", nargs="?", default=os.path.join("build-gpu", "libfreepruner_gpu_capi.so"))
    ap.add_argument("--table", help="freepruner_gpu_table's CSV, joined into the final table")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="batch 1 and 8 only")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_compare: PyTorch sees no CUDA device; skipped")
        return 0
    fp = Freepruner(args.capi)
    dev = torch.device("cuda")
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    table = {}
    if args.table and os.path.exists(args.table):
        with open(args.table) as f:
            table = {row["case"]: row for row in csv.DictReader(f)}
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; CLIP-336 maps (577 tokens, 16 heads), "
          f"CLS prefix, budget count 288 of 576; median of {args.reps} calls, L2 cold")
    header = (f"{'case':<22} {'MB':>8} {'freepruner':>11} {'µs/image':>9} {'read GB/s':>10} {'vs copy':>8} "
              f"{'torch f32':>10} {'speed-up':>9} {'torch f64':>10}  same tokens")
    print(header)
    ok = True
    for L in (2, 23):
        for dname, dtype, tdtype in (("f16", F16, torch.float16), ("f32", F32, torch.float32)):
            for B in ((1, 8) if args.quick else (1, 8, 64)):
                name = f"clip336/L{L}/{dname}/B{B}"
                try:
                    maps = torch.empty((B, L, 16, 577, 577), dtype=tdtype, device=dev)
                except RuntimeError:
                    print(f"{name:<22} does not fit in device memory: skipped")
                    continue
                fp.fill(maps, dtype)
                fp.prepare(maps, dtype, 1, 288)
                fp()
                t_fp = median_ms(fp, args.reps, flush)
                got = fp.tokens()
                torch_reps = max(3, args.reps // 3)
                t32 = median_ms(lambda: torch_select(maps, 1, 288, torch.float32), torch_reps, flush)
                want = torch_select(maps, 1, 288, torch.float64)
                t64 = median_ms(lambda: torch_select(maps, 1, 288, torch.float64), torch_reps, flush)
                same = all(torch.equal(a.to(torch.int64), b.cpu()) for a, b in zip(got, want))
                same32 = all(torch.equal(a.to(torch.int64), b.cpu()) for a, b in
                             zip(got, torch_select(maps, 1, 288, torch.float32)))
                ok &= same
                row = table.get(name, {})
                bw = f"{float(row['read_gbps']):10.0f} {float(row['ratio']):8.2f}" if row else f"{'':>10} {'':>8}"
                speedup = t32 / t_fp
                print(f"{name:<22} {maps.numel() * maps.element_size() / 1e6:8.1f} {t_fp:9.3f}ms {t_fp * 1e3 / B:9.1f} "
                      f"{bw} {t32:8.2f}ms {speedup:8.1f}x {t64:8.2f}ms  "
                      f"{'yes' if same else 'NO'}{'' if same32 else ' (f32 sums: near-ties differ)'}"
                      f"{'' if speedup >= 20 else '  < 20x'}")
                if not same:
                    for b, (a, w) in enumerate(zip(got, want)):
                        if not torch.equal(a.to(torch.int64), w.cpu()):
                            print(f"  item {b}: freepruner {a.tolist()}\n          torch      {w.cpu().tolist()}")
                            break
                del maps
                torch.cuda.empty_cache()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
