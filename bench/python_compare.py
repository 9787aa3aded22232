#!/usr/bin/env python3
"""The Python package against the C++ call and against PyTorch, on the same
maps, in one run, and its table in docs/performance.md.

    pip install .                       # the package (docs/python.md)
    python3 bench/python_compare.py [--write]

Each `fp.select` call (on a NumPy array, on a torch tensor) is timed from
Python, and the binding times the C++ select inside it
(`freepruner._core._last_select_seconds`): the overhead is the rest of the
call (conversion, checks, the GIL, the result arrays, and the caches the
select's pass has emptied), as the median over many calls of the
difference, over the median C++ time. That pairs the two times of one call,
so the load of a shared machine cancels. The PyTorch columns are
bench/torch_compare.py's vectorized implementation of the same SPEC with
float32 and with float64 sums, on one thread as freepruner; both sides must
return the same tokens (checked). Times are the best of their repeats.
--write puts the table into docs/performance.md, between its python-binding
markers (bench/report.py keeps that block).
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


def timed_calls(f, calls):
    """(total, C++ select) seconds of each of `calls` calls of f."""
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        f()
        total = time.perf_counter() - t0
        out.append((total, fp._core._last_select_seconds()))
    return np.array(out)


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
        calls = 20 if L > 2 else 300
        on_numpy = timed_calls(lambda: fp.select(maps, budget, prefix_tokens=prefix), calls)
        on_torch = timed_calls(lambda: fp.select(tmaps, budget, prefix_tokens=prefix), calls)
        t_cpp = min(on_numpy[:, 1].min(), on_torch[:, 1].min())
        t_np, t_torch = on_numpy[:, 0].min(), on_torch[:, 0].min()
        over_np, over_torch = (np.median(t[:, 0] - t[:, 1]) / np.median(t[:, 1]) for t in (on_numpy, on_torch))
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
        pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
        rows.append(f"| {name} | {ms(t_cpp)} | {ms(t_np)} | {pct(over_np)} | {ms(t_torch)} | {pct(over_torch)} "
                    f"| {ms(t_ref[torch.float32])} | {t_ref[torch.float32] / t_np:.1f}x "
                    f"| {ms(t_ref[torch.float64])} | {t_ref[torch.float64] / t_np:.1f}x |")
        print(rows[-1], flush=True)
    # The same on maps so small that the select costs almost nothing: the binding's own cost.
    tiny = make_maps(1, 1, 16)
    fixed = timed_calls(lambda: fp.select(tiny, fp.budget.count(4)), 3000)
    note = (f"The overhead is the rest of each `fp.select` call beyond the C++ select inside it (median over "
            f"the calls, over the median C++ time). On maps of 1 layer, 1 head and 16 tokens, where the select "
            f"itself takes {1e6 * np.median(fixed[:, 1]):.1f} us, that rest is "
            f"{1e6 * np.median(fixed[:, 0] - fixed[:, 1]):.1f} us: conversion, checks, the GIL and the result "
            "arrays, with nothing copied. On large maps it is larger, as the Python code around the call "
            "runs after the select's pass has emptied the caches.")
    print(note)
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
