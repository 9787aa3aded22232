#!/usr/bin/env python3
"""Runs the benchmarks once and writes docs/performance.md (this file's text
around the tables it measures) and the plot docs/performance_scaling.png.

    python3 bench/report.py [build/bench/freepruner_bench] [--quick]
    python3 bench/report.py --qk [build/bench/freepruner_bench_qk] [--native=BINARY]

--qk runs the Q/K benchmark alone and rewrites only its section of
docs/performance.md (the other runs keep it as it is).

Needs matplotlib (Debian: python3-matplotlib), except with --qk. Every
figure is a ratio or a time measured in this one run, on this machine.
"""
import json
import os
import re
import platform
import subprocess
import sys


HEADER = """# Performance of the CPU backend

Written by `python3 bench/report.py` (it runs `build/bench/freepruner_bench`
once); rerun it to measure your machine. Single thread, Release build, no
`-march` flag (the AVX2 kernels are chosen at run time).

**What is compared.** Each case times `select` and, in the same run, a read of
the very same bytes: a vectorized integer sum over the buffer, with the same
software prefetch. `select / read` is the ratio of the two minimum times, and
it is the figure to trust: both sides see the same noise, which absolute
times do not. The maps are softmax rows with a few attention sinks (as real
ViTs have), so the adaptive pivots and complements are of realistic size.
The read and `select` are timed in turn in every iteration, because a
shared machine's memory bandwidth drifts from minute to minute and
minimums taken minutes apart are not comparable. Even so the ratios move
between runs, most for 1 and 2 layers: how much of the maps the shared L3
keeps between iterations sets the read's time, and the pass, bound by
computation when the maps are in L3, gains less from it.

**Why it is near the floor.** Step 1 reads each pivot layer once. The kernel
works in four segments of rows, read side by side: rows far apart in
memory, because neighbouring rows read in step stall the hardware
prefetcher (3x slower), and segments of odd length, because at N = 4096 a
power-of-two distance put the four streams in the same DRAM banks and cache
sets (3.3x slower). Each row gets one prefetch per 64-byte line, 512 bytes
ahead. Rows of 1536 tokens or more are read in eight segments, each row
also requested into L2 2 KB ahead: from DRAM, the pass went from 1.3-1.55x
to 1.05-1.2x the read at N = 2048-4096 (eight segments were slower at
N = 729-1024, so shorter rows keep four). The accumulation is in double,
with SSE2, or AVX2+F16C when the CPU has them; the AVX2 path converts
straight from memory, 16 floats per row and step. Every path adds in the
same order, so they agree to the bit. The diagonal is read after its row
is in cache. The NaN/infinity check is made on the sums.

When the maps sit in L3 (one CLIP layer, 21 MB, read again and again by
the benchmark), the pass is bound by the float-to-double conversions, not
by the read: about 1.2-1.3x the read of cached bytes. From DRAM it runs at
the read's speed.

After the pass, what remains is:
- reading the rows of the pivots in the complementary layer (about 10 % of
  its rows with these maps), one pivot at a time, its heads in blocks of
  eight read side by side with the pass's prefetch. Blocks of four whose
  next block was requested whole were 1.6-2x slower (the prefetches
  stalled): the rows alone took 0.13 -> 0.08 ms at N = 577 and
  3.3 -> 1.5 ms at N = 2048;
- one quartile fence per pivot: a quickselect whose partition is
  vectorized with AVX2 (1.5-1.8x faster than the branchless scalar one),
  run right after its pivot's rows are summed, while the next pivot's first
  lines arrive. The pivot's other loops (the division by H with the
  NaN/infinity check, the spread check, the affinity, the copy for the
  quickselect, the outlier marks) are fused and vectorized;
- the budget order, which sorts only the tops of the layers' orders:
  0.66 -> 0.16 ms with 23 layers.

Step 3 as a whole, right after the pass, with the two changes above: 0.33
-> 0.24 ms at N = 577 (60 pivots), 2.5 -> 1.6 ms with 23 layers (343
pivots), 5.0 -> 3.1 ms at N = 2048 (172 pivots).

fp16 maps are bound by their conversions, not by memory. Every fp16 value
is a multiple of 2^-24, so a sum of non-negative ones below 1 is exact in
float: a block of rows is summed in float and widened to double once, the
very double that summing in double gives. Where a value is negative or not
finite, or a block's sum reaches 1 (an attention sink), those 8 columns are
summed in double instead. The pass reads fp16 rows eight at a time, so
eight rows by eight columns take 10 conversions instead of 24. Against
widening every value, run in turn, the fp16 cases went from 1.5-2.0x to
1.05-1.35x the read (23 CLIP layers, batch 8, AnyRes, Qwen2-VL).

bf16 maps have no such trick: a bf16 value's last bit can lie anywhere, so
a float sum of them is not exact, and every value is widened to double. The
pass runs at about 6-7 G values/s (12-14 GB/s), bound by the conversions:
with the maps in L1, the fastest of four widenings tried (shift and mask to
float, then float to double; straight to double with integer shifts; via a
scratch buffer) reached 8 G values/s, against 13.7 for float32 maps, whose
conversion reads memory directly. bf16 cases therefore run at 2-3x the read
of their (half-size) bytes.

"""

FOOTER = """
![time against N](performance_scaling.png)

The scaling cases also run `select` as its public stages, each timed in the
same iteration: the contribution passes (`contribution_degree` per layer),
then steps 2-5 (`pivotal_tokens`, `complementary_tokens`, `fit_budget`),
checked to give `select`'s answer. The selection share is steps / (passes +
steps), from the two minimums: the pivot rows read again and the per-pivot
fences (at N = 577 with the rows in cache, 2.7 us a pivot, of which a
profile gives half to the quickselects of the quartiles, a third to summing
the rows and the rest to the fused loops). The share falls from about 15 %
at N = 577 to 10 % at 4096. The pivots are about 9 % of the tokens with
these maps, so steps 2-5 read a tenth of the complementary layer again, 16
rows a pivot, and compute one fence per pivot over N scores. At N = 2048
they take 2.5 ms with those rows in cache and 2.5-2.7 ms right after the
pass: summing the rows and the quickselects take about as long as each
other, and the rows coming from DRAM add little. At N = 4096 (368 pivots) a
pivot costs 28 us with its rows in DRAM: about half to sum its 16 rows,
a third to the quickselects, the rest to the fused loops. Those rows
are 4.5 % of the two layers' bytes; even if they cost nothing, the
quickselects, the fused loops and the budget order (5.6 ms against a 92 ms
pass) would leave the share at 5.7 %. The complementary layer's own pivots
are known only after its pass, so their rows cannot be summed during it.

The PyTorch comparison (`python3 bench/torch_compare.py
build/bench/libfreepruner_capi.so`) runs a straightforward vectorized PyTorch
implementation of the same SPEC on the same maps, and checks that both return
the same tokens. [The Python package](#the-python-package) below gives
figures from that implementation, beside `fp.select`. With float32
reductions PyTorch's own head mean is already near the memory bound, so
`select`, near the read itself, can only be that much faster; with float64
reductions, the precision freepruner accumulates in, PyTorch is far slower.
"""


QK_BEGIN = "<!-- qk:begin (written by python3 bench/report.py --qk) -->"
QK_END = "<!-- qk:end -->"

QK_TEXT = """## The Q/K path (flash attention)

`select` on Q and K (qk.hpp) rebuilds each head's softmax rows block by
block: per group of 8 query rows, the logits of every key (a register-tiled
kernel over keys packed in panels of 16), then per row the max, the
exponentials and their sum, and the multiply by 1/sum, all while the rows
are in L1; the column sums run in double. The kernels are chosen at run
time (SSE2, AVX2, AVX-512F), whatever flags the engine was built with, and
give the same floats on every level: no fused multiply-add, one exp
polynomial, sums in a fixed 16-lane order.

**The floor** is measured in the same run on the same core, at the level the
pass runs: the layer's 2 H N^2 d FLOPs at the peak of a plain multiply-add
loop in registers (the better of FMA and a multiply then an add), plus its
H N^2 exponentials at the rate of the vectorized exp over a buffer in L1.
`x floor` = pass time / floor time. The SSE2 level's floor is SSE2's
(4 lanes, no FMA); AVX2 and AVX-512 have the same FLOP peak on cores that
run 512-bit operations in two halves. SSE2's multiply overwrites an
operand, so its logit loop takes 8 rows by 4 keys per step: each product
loads its row's broadcast into a fresh register and multiplies it by the
keys in place, with no register copies, where the floor's loop needs no
loads; built with `-march=native`, the same SSE2-level code gets
three-operand encodings.
fp16 and bf16 Q/K add the widening to float; the column direction costs
one more pass.

**Threads.** An engine passes its pool, or `executor::threads(n)`, to Q/K
`select` or the `pruner`: the degree pass then runs its heads as tasks, each into
its own sums, added in head order after, so the tokens are the same to the
bit on any number of threads. The `threads` row times the layer on every
core against one core in turn: `x floor` there is the threads' total time
(time x threads) over the one-core floor.

Release build, no `-march` flag (rows marked `-march=native`: the same
cases built with it), one thread unless the row says; CLIP ViT-L/14-336
shape (N = 577, 16 heads, d = 64; select reads 2 layers).
"""


def qk_section(binary, native=None):
    data = run(binary, "clip336")
    ctx = data["context"]
    names = {1: "SSE2", 2: "AVX2", 3: "AVX-512"}
    if native:  # the layer rows of a build with -march=native, the same code
        extra = run(native, "qk/layer/f32/clip336/(sse2|avx2|avx512)")["benchmarks"]
        for b in extra:
            b["run_name"] = b["run_name"].split("/iterations")[0] + " (-march=native)"
        data["benchmarks"] += extra
    lines = [QK_BEGIN, QK_TEXT,
             f"Machine: {ctx.get('num_cpus')} CPUs at {ctx.get('mhz_per_cpu')} MHz, "
             f"{platform.processor() or platform.machine()}; {ctx.get('date')}.", "",
             "| case | SIMD level | time (ms) | floor (ms) | x floor | GFLOP/s | peak GFLOP/s | exp G/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for b in data["benchmarks"]:
        name = b["run_name"].split("/iterations")[0]
        ms = b.get("layer_ms", b.get("select_ms"))
        if "speedup" in b:
            lines.append(f"| `{name}` | {names.get(int(b['level']), '?')} | {ms:.2f} | {b['floor_ms']:.2f} | "
                         f"{b['x_floor']:.2f} | {b['speedup']:.2f}x faster than one thread "
                         f"({b['one_thread_ms']:.2f} ms) | | |")
            continue
        lines.append(f"| `{name}` | {names.get(int(b['level']), '?')} | {ms:.2f} | {b['floor_ms']:.2f} | "
                     f"{b['x_floor']:.2f} | {b['GFLOP/s']:.1f} | {b['peak_GFLOP/s']:.1f} | {b['exp_G/s']:.2f} |"
                     if "layer_ms" in b else
                     f"| `{name}` | {names.get(int(b['level']), '?')} | {ms:.2f} | {b['floor_ms']:.2f} | "
                     f"{b['x_floor']:.2f} | | | |")
    lines += ["", QK_END, ""]
    return "\n".join(lines)


def write_qk(binary, root, native=None):
    path = os.path.join(root, "docs", "performance.md")
    with open(path) as f:
        old = f.read()
    section = qk_section(binary, native)
    pattern = re.escape(QK_BEGIN) + r".*?" + re.escape(QK_END) + r"\n?"
    if re.search(pattern, old, re.S):
        new = re.sub(pattern, lambda _: section, old, count=1, flags=re.S)
    else:
        new = old.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(new)
    print(section)


def run(binary, pattern):
    out = subprocess.run([binary, f"--benchmark_filter={pattern}", "--benchmark_format=json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if "--qk" in sys.argv:
        native = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--native=")), None)
        write_qk(args[0] if args else os.path.join("build", "bench", "freepruner_bench_qk"), root, native)
        return
    binary = args[0] if args else os.path.join("build", "bench", "freepruner_bench")
    quick = "--quick" in sys.argv
    docs = os.path.join(root, "docs")
    os.makedirs(docs, exist_ok=True)

    cases = run(binary, "^select/" if not quick else "^select/f32/clip336_L2/")
    scaling = run(binary, "^scaling/" if not quick else "^scaling/f32/N(257|577)/")
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
              "| N | MB | select (ms) | contribution pass (ms) | steps 2-5 (ms) | read once (ms) | select / read "
              "| selection share | pivotal |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ns, sel, pas, rd = [], [], [], []
    for b in scaling["benchmarks"]:
        n = int(b["run_name"].split("/")[2][1:])
        mb = 2 * 16 * n * n * 4 / 1e6
        ns.append(n), sel.append(b["select_ms"]), pas.append(b["pass_ms"]), rd.append(b["read_ms"])
        lines.append(f"| {n} | {mb:.0f} | {b['select_ms']:.2f} | {b['pass_ms']:.2f} | {b['steps_ms']:.2f} | {b['read_ms']:.2f} | "
                     f"{b['x_read']:.2f} | {100 * b['share_select']:.1f} % | {int(b['pivotal'])} |")
    table = "\n".join(lines) + "\n"
    # The sections other scripts write are kept as they are: bench/llama_cpp_share.py's,
    # bench/python_compare.py --write's and --qk's.
    path, kept = os.path.join(docs, "performance.md"), ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        for pattern in (r"<!-- llama\.cpp: .*?<!-- end of the llama\.cpp section -->\n?",
                        r"<!-- python-binding:begin -->.*?<!-- python-binding:end -->\n?",
                        re.escape(QK_BEGIN) + r".*?" + re.escape(QK_END) + r"\n?"):
            m = re.search(pattern, old, re.S)
            kept += "\n" + m.group(0) if m else ""
    with open(path, "w") as f:
        f.write(HEADER + table + FOOTER + kept)
    print(table)

    import matplotlib  # only here: --qk runs without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    print("wrote docs/performance.md and docs/performance_scaling.png")


if __name__ == "__main__":
    main()
