#!/usr/bin/env python3
"""Runs the benchmarks once and writes docs/performance.md's table and the
scaling plot docs/performance_scaling.png.

    python3 bench/report.py [build/bench/freepruner_bench] [--quick]

Needs matplotlib (Debian: python3-matplotlib). Every figure is a ratio or a
time measured in this one run, on this machine.
"""
import json
import os
import platform
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def run(binary, pattern):
    out = subprocess.run([binary, f"--benchmark_filter={pattern}", "--benchmark_format=json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    binary = args[0] if args else os.path.join("build", "bench", "freepruner_bench")
    quick = "--quick" in sys.argv
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    docs = os.path.join(root, "docs")
    os.makedirs(docs, exist_ok=True)

    cases = run(binary, "^select/" if not quick else "^select/f32/clip336_L2/")
    scaling = run(binary, "^scaling/" if not quick else "^scaling/f32/N(257|577)$")
    ctx = cases["context"]

    lines = [f"Machine: {ctx.get('num_cpus')} CPUs at {ctx.get('mhz_per_cpu')} MHz, "
             f"{platform.processor() or platform.machine()}; {ctx.get('date')}.", "",
             "| case | dtype | budget | select (ms) | read once (ms) | select / read | kept |",
             "|---|---|---|---:|---:|---:|---:|"]
    for b in cases["benchmarks"]:
        _, dtype, shape, budget = b["run_name"].split("/")[:4]
        lines.append(f"| {shape} | {dtype} | {budget} | {b['select_ms']:.2f} | {b['read_ms']:.2f} | "
                     f"{b['x_read']:.2f} | {int(b['kept'])} |")
    lines += ["", "Scaling in N (2 layers, 16 heads, float32, ratio 0.5):", "",
              "| N | MB | select (ms) | contribution pass (ms) | read once (ms) | select / read | selection share | pivotal |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ns, sel, pas, rd = [], [], [], []
    for b in scaling["benchmarks"]:
        n = int(b["run_name"].split("/")[2][1:])
        mb = 2 * 16 * n * n * 4 / 1e6
        ns.append(n), sel.append(b["select_ms"]), pas.append(b["pass_ms"]), rd.append(b["read_ms"])
        lines.append(f"| {n} | {mb:.0f} | {b['select_ms']:.2f} | {b['pass_ms']:.2f} | {b['read_ms']:.2f} | "
                     f"{b['x_read']:.2f} | {100 * b['share_select']:.1f} % | {int(b['pivotal'])} |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(docs, "performance_table.md"), "w") as f:
        f.write(table)
    print(table)

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.loglog(ns, sel, "o-", label="select (all steps)")
    ax.loglog(ns, pas, "s--", label="contribution-degree pass")
    ax.loglog(ns, rd, "^-", label="read once (same bytes)")
    ref = [rd[0] * (n / ns[0]) ** 2 for n in ns]
    ax.loglog(ns, ref, ":", color="gray", label="∝ N² (the bytes)")
    ax.set_xlabel("tokens N (2 layers x 16 heads x N x N float32)")
    ax.set_ylabel("time (ms, best of the run)")
    ax.set_title("freepruner CPU select against reading its input once")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(docs, "performance_scaling.png"))
    print("wrote docs/performance_table.md and docs/performance_scaling.png")


if __name__ == "__main__":
    main()
