#!/usr/bin/env python3
"""The Python package against the C++ call and against PyTorch, on the same
maps, in one run, and its table in docs/performance.md.

    pip install .                       # the package (docs/python.md)
    python3 bench/python_compare.py [--write]

Columns: the C++ select alone, timed in C++ on the view the binding builds
(`freepruner._core._time_select`); `fp.select` called from Python on a NumPy
array and on a torch tensor (the binding's overhead is their excess over the
C++ call); and bench/torch_compare.py's vectorized PyTorch implementation of
the same SPEC with float32 and with float64 sums, on one thread as
freepruner. Every time is the best of its repeats; the C++ and Python
calls alternate, one of each in turn, so all see the same load. Both sides must return the same
tokens (checked). --write puts the table into docs/performance.md, between
its python-binding markers (bench/report.py keeps that block).
"""
import os
import re
import sys
import time

import numpy as np
import torch

import freepruner as fp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_compare import best_of, make_maps, torch_select  # noqa: E402

BEGIN, END = "<!-- python-binding:begin -->", "<!-- python-binding:end -->"


def best_python(f, reps):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def rotated(calls, turn):
    """Runs the calls starting from number turn % len(calls); returns their times in the given order."""
    times = [0.0] * len(calls)
    for k in range(len(calls)):
        j = (turn + k) % len(calls)
        times[j] = calls[j]()
    return times


def binding_cost(batch):
    """Median seconds fp.select adds to the C++ call, from NumPy and from torch, for tiny maps."""
    tiny = make_maps(1, 1, 16) if batch == 1 else np.stack([make_maps(1, 1, 16, seed=b) for b in range(batch)])
    ttiny = torch.from_numpy(tiny)
    budget = fp.budget.count(4)
    calls = [lambda: fp._core._time_select(tiny, budget, 1, 1), lambda: best_python(lambda: fp.select(tiny, budget), 1),
             lambda: best_python(lambda: fp.select(ttiny, budget), 1)]
    turns = [rotated(calls, i) for i in range(3000)]
    return tuple(float(np.median([t[k] - t[0] for t in turns])) for k in (1, 2))


def main():
    write = "--write" in sys.argv
    torch.set_num_threads(1)
    # (name, batch, layers, heads, tokens, prefix, budget count or None for adaptive)
    cases = [("CLIP-336, 2 layers, count 288", 1, 2, 16, 577, 1, 288),
             ("CLIP-336, 2 layers, adaptive", 1, 2, 16, 577, 1, None),
             ("CLIP-336, 23 layers, count 288", 1, 23, 16, 577, 1, 288),
             ("Video-LLaVA, batch of 8 frames of 257", 8, 2, 16, 257, 1, 128)]
    rows = ["| maps | C++ select | fp.select, NumPy | overhead | fp.select, torch | overhead "
            "| PyTorch, float32 sums | speed-up | PyTorch, float64 sums | speed-up |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ok = True
    for name, B, L, H, N, prefix, m in cases:
        maps = np.stack([make_maps(L, H, N, seed=7 + b) for b in range(B)]) if B > 1 else make_maps(L, H, N)
        tmaps = torch.from_numpy(maps)
        budget = fp.budget.count(m) if m else fp.budget.adaptive()
        # One call of each in turn, many times, the order rotating: the best time of each.
        calls = [lambda: fp._core._time_select(maps, budget, prefix, 1),
                 lambda: best_python(lambda: fp.select(maps, budget, prefix_tokens=prefix), 1),
                 lambda: best_python(lambda: fp.select(tmaps, budget, prefix_tokens=prefix), 1)]
        turns = [rotated(calls, i) for i in range(15 if L > 2 else 200)]
        t_cpp, t_np, t_torch = (min(t[k] for t in turns) for k in range(3))
        cost_np, cost_torch = binding_cost(B)
        over_np, over_torch = cost_np / t_cpp, cost_torch / t_cpp
        kept = fp.select(maps, budget, prefix_tokens=prefix)
        kept = kept if B > 1 else [kept]
        items = [tmaps[b] for b in range(B)] if B > 1 else [tmaps]
        t_ref = {}
        for dtype in (torch.float32, torch.float64):
            t_ref[dtype], ref = best_of(lambda: [torch_select(x, prefix, 0, m, dtype) for x in items],
                                        3 if L > 2 or dtype == torch.float64 else 7)
            for a, r in zip(kept, ref):
                if not np.array_equal(a.indices, r.numpy()):
                    ok = False
                    print(f"{name}, torch {dtype}: tokens differ", file=sys.stderr)
        ms = lambda t: f"{t * 1e3:.2f} ms"  # noqa: E731
        pct = lambda x: f"{100 * x:.2f} %"  # noqa: E731
        rows.append(f"| {name} | {ms(t_cpp)} | {ms(t_np)} | {pct(over_np)} | {ms(t_torch)} | {pct(over_torch)} "
                    f"| {ms(t_ref[torch.float32])} | {t_ref[torch.float32] / t_np:.1f}x "
                    f"| {ms(t_ref[torch.float64])} | {t_ref[torch.float64] / t_np:.1f}x |")
        print(rows[-1], flush=True)
    note = ("The overhead is the binding's own cost per call over the C++ call: conversion, checks, the GIL "
            "and the result arrays, measured on maps of the same batch but 1 layer, 1 head and 16 tokens "
            "(the median difference to the C++ call there), since nothing depends on the maps' size: nothing "
            "is copied. Timing the large maps directly gives the same answer within the noise of this shared "
            "machine (a few %).")
    table = "\n".join(rows) + "\n\n" + note
    if write:
        block = (f"{BEGIN}\n## The Python package\n\nWritten by `python3 bench/python_compare.py --write` "
                 f"(freepruner {fp.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
                 f"{os.cpu_count()} CPUs, one thread). `fp.select` against the C++ call on the very same maps, "
                 "and against bench/torch_compare.py's vectorized PyTorch implementation of the same SPEC "
                 "(speed-ups are over `fp.select` on NumPy). Both return the same tokens.\n\n"
                 f"{table}\n{END}")
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "performance.md")
        text = open(path).read()
        if BEGIN in text:
            text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {path}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
