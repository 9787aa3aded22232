#!/usr/bin/env python3
"""Checks llava_prune inside a real llama.cpp against the command-line tool
and against llama.cpp's own unpruned encode (ctest runs one check a test).

  check_llava.py CHECK --exe llava_prune --tool freepruner --models DIR --image IMG --work DIR

CHECK is one of: qk, maps, budgets, feature-layers, errors. Exit 77 (a ctest
skip) when numpy is missing.
"""
import argparse
import json
import os
import subprocess
import sys

try:
    import numpy as np
except ImportError:
    print("skipped: numpy is not installed (Debian: python3-numpy)")
    sys.exit(77)

BUDGET = 288


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("check", choices=["qk", "maps", "budgets", "feature-layers", "errors"])
    ap.add_argument("--exe", required=True)
    ap.add_argument("--tool", required=True)
    ap.add_argument("--models", required=True, help="folder with tiny/ and tiny-fl12/ from make_tiny_llava.py")
    ap.add_argument("--image", required=True)
    ap.add_argument("--work", required=True)
    return ap.parse_args()


class Runner:
    def __init__(self, a):
        self.a = a
        os.makedirs(a.work, exist_ok=True)

    def llava(self, name, *flags, model="tiny", expect=0):
        """Runs llava_prune; returns (summary, dump folder) or the completed process when expect != 0."""
        out = os.path.join(self.a.work, name)
        os.makedirs(out, exist_ok=True)
        m = os.path.join(self.a.models, model)
        cmd = [self.a.exe, "-m", os.path.join(m, "text.gguf"), "--mmproj", os.path.join(m, "mmproj.gguf"),
               "--image", self.a.image, "-t", "2", "-n", "6", "--dump", out, "--json", os.path.join(out, "run.json"),
               *flags]
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if expect != 0:
            return p
        if p.returncode != 0:
            sys.exit(f"FAIL: {' '.join(cmd)} exited {p.returncode}\n{p.stdout}{p.stderr}")
        sys.stdout.write(p.stdout)
        with open(os.path.join(out, "run.json")) as f:
            return json.load(f), out

    def tool(self, maps_path, run, *budget):
        cmd = [self.a.tool, maps_path, "--prefix", str(run["prefix"]), "--suffix", str(run["suffix"]), *budget, "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if p.returncode != 0:
            sys.exit(f"FAIL: {' '.join(cmd)} exited {p.returncode}\n{p.stderr}")
        return json.loads(p.stdout)


def expect(cond, what):
    if not cond:
        sys.exit("FAIL: " + what)
    print("ok:", what)


def maps_from_qk(out, layers):
    """Softmax(q k^T / sqrt(d)) per head in float64, [L][H][N][N], from the captured Qcur/Kcur ([N][H][d])."""
    result = []
    for il in layers:
        q = np.load(os.path.join(out, f"q-{il}.npy")).astype(np.float64)
        k = np.load(os.path.join(out, f"k-{il}.npy")).astype(np.float64)
        logits = np.einsum("nhd,mhd->hnm", q, k) / np.sqrt(q.shape[2])
        logits -= logits.max(axis=2, keepdims=True)
        e = np.exp(logits)
        result.append(e / e.sum(axis=2, keepdims=True))
    return np.stack(result)


def check_counts(run, budget_count):
    m = run["candidates"]
    # llama.cpp's LLaVA graph: 577 tokens, CLS last; rows are tokens 1..576 (patch 0 never reaches the projector).
    expect(run["tokens"] == 577 and run["prefix"] == 1 and run["suffix"] == 1 and m == 575,
           f"577 tokens, candidates 1..575 (prefix {run['prefix']}, suffix {run['suffix']}, M {m})")
    if budget_count is not None:
        want = min(budget_count, m)
        expect(run["decoded"] == want, f"the LLM receives kept_tokens = min({budget_count}, {m}) = {want} image tokens "
                                       f"(decoded {run['decoded']})")
    expect(run["decoded"] == len(run["kept"]) == run["kv_image"],
           f"the KV cache grew by the kept count over the image ({run['kv_image']} = {len(run['kept'])})")
    expect(len(run["generated"]) >= 1, f"the run generates (tokens {run['generated']})")


def check_rows(r, run, out, baseline_flags):
    """The decoded rows are llama.cpp's own rows for the kept tokens: token t is output row t - 1 (clip.cpp fills
    the graph's `patches` input with i + 1 when there is a CLS embedding)."""
    base, bout = r.llava("unpruned-" + run["route"], "--budget", "off", *baseline_flags)
    expect(base["decoded"] == 576 and base["kv_image"] == 576, "the unpruned encode decodes all 576 rows")
    full = np.load(os.path.join(bout, "embd.npy"))
    kept = np.array(run["kept"])
    got = np.load(os.path.join(out, "embd.npy"))
    expect(got.shape == (len(kept), full.shape[1]), f"gathered rows have shape {got.shape}")
    want = full[kept - 1]
    err = np.abs(got - want).max() / np.abs(full).max()
    expect(err < 1e-6, f"each decoded row equals the unpruned encode's row for its token (max rel. diff {err:.1e})")
    nearest = np.argmin(((got[:, None, :] - full[None, :, :]) ** 2).sum(axis=2), axis=1)
    expect(np.array_equal(nearest, kept - 1), "no decoded row is closer to another row of the unpruned encode")
    expect(np.array_equal(np.array(run["rows"]), kept - 1), "the rows the example reports are token - 1")


def main():
    a = parse()
    r = Runner(a)
    if a.check == "qk":
        run, out = r.llava("qk", "--route", "qk", "--budget", str(BUDGET))
        check_counts(run, BUDGET)
        expect(run["layers"] == [20, 21], f"capture blocks 20, 21: the last two of the 22 the graph runs ({run['layers']})")
        path = os.path.join(a.work, "qk", "maps64.npy")
        np.save(path, maps_from_qk(out, run["layers"]))
        t = r.tool(path, run, "--count", str(BUDGET))
        expect(t["kept"] == run["kept"], "kept tokens equal the tool's on float64 maps recomputed from Qcur/Kcur")
        expect(t["pivotal"] == run["pivotal"], "pivotal tokens equal the tool's")
        check_rows(r, run, out, ["--route", "qk"])
    elif a.check == "maps":
        run, out = r.llava("maps", "--route", "maps", "--budget", str(BUDGET))
        check_counts(run, BUDGET)
        maps = np.stack([np.load(os.path.join(out, f"maps-{il}.npy")) for il in run["layers"]])
        expect(np.abs(maps.sum(axis=3) - 1).max() < 1e-4, "the captured maps are softmax rows (sum to 1)")
        path = os.path.join(a.work, "maps", "maps.npy")
        np.save(path, maps)
        t = r.tool(path, run, "--count", str(BUDGET))
        expect(t["kept"] == run["kept"] and t["pivotal"] == run["pivotal"],
               "kept and pivotal tokens equal the tool's on the captured maps")
        check_rows(r, run, out, ["--route", "maps"])
    elif a.check == "budgets":
        for name, flag, count, tool_budget in (("ratio", "0.25", 144, ["--ratio", "0.25"]),
                                               ("over", "1000", 1000, ["--count", "1000"]),
                                               ("adaptive", "adaptive", None, ["--budget", "adaptive"])):
            run, out = r.llava("budget-" + name, "--route", "qk", "--budget", flag)
            check_counts(run, count)
            path = os.path.join(out, "maps64.npy")
            np.save(path, maps_from_qk(out, run["layers"]))
            t = r.tool(path, run, *tool_budget)
            expect(t["kept"] == run["kept"], f"budget {flag}: kept tokens equal the tool's ({len(run['kept'])})")
    elif a.check == "feature-layers":
        run, out = r.llava("fl12", "--route", "qk", "--budget", str(BUDGET), "--layers", "3", model="tiny-fl12")
        expect(run["layers"] == [9, 10, 11], f"clip.vision.feature_layer = [12]: blocks 9..11 captured ({run['layers']})")
        check_counts(run, BUDGET)
        path = os.path.join(out, "maps64.npy")
        np.save(path, maps_from_qk(out, run["layers"]))
        t = r.tool(path, run, "--count", str(BUDGET))
        expect(t["kept"] == run["kept"], "kept tokens equal the tool's with three layers")
    else:
        for flags, code, words in ((["--budget", "0"], 2, "budget::count(0) (must be >= 1)"),
                                   (["--budget", "1.5"], 2, "budget::ratio(1.5)"),
                                   (["--budget", "half"], 2, "--budget = \"half\""),
                                   (["--route", "sdpa"], 2, "--route = \"sdpa\""),
                                   (["--layers", "40"], 1, "cannot capture the last 40"),
                                   (["-t", "0"], 2, "-t = \"0\"")):
            p = r.llava("error", *flags, expect=1)
            expect(p.returncode == code and words in p.stderr,
                   f"{' '.join(flags)}: exit {p.returncode}, message {p.stderr.strip()!r}")
        text = os.path.join(a.models, "tiny", "text.gguf")
        for mmproj, words in (("missing.gguf", "missing.gguf"), (text, "clip.vision.block_count is missing")):
            p = subprocess.run([a.exe, "-m", text, "--mmproj", mmproj, "--image", a.image], capture_output=True,
                               text=True, errors="replace")
            expect(p.returncode == 1 and words in p.stderr, f"mmproj {os.path.basename(mmproj)}: {p.stderr.strip()!r}")


if __name__ == "__main__":
    main()
