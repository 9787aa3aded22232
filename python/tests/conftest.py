"""Shared helpers: the conformance vectors, random maps and the C++ command-line
tool (`freepruner --json`), which gives the C++ select's answer on .npy maps."""
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def conformance_dir():
    d = os.environ.get("FREEPRUNER_CONFORMANCE_DIR") or str(ROOT / "tests" / "data" / "conformance")
    return pathlib.Path(d)


def conformance_cases():
    """(name, maps [L,H,N,N] float32, kwargs, budget args, expected (indices, pivotal, complementary))."""
    path = conformance_dir() / "cases.txt"
    if not path.exists():
        return []
    cases = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        head, kept, piv, comp = line.split("|")
        name, file, L, H, N, prefix, suffix, kind, value, pivots, direction, clayer = head.split()
        L, H, N = int(L), int(H), int(N)
        maps = np.fromfile(conformance_dir() / file, dtype="<f4").reshape(L, H, N, N)
        kwargs = dict(prefix_tokens=int(prefix), suffix_tokens=int(suffix), pivots_per_layer=int(pivots),
                      complementary_from=direction, complementary_layer=int(clayer))
        budget = (kind, int(value) if kind == "count" else float(value))
        want = tuple([int(t) for t in part.split()] for part in (kept, piv, comp))
        cases.append((name, maps, kwargs, budget, want))
    return cases


def make_budget(kind, value=None):
    import freepruner as fp
    if kind == "adaptive":
        return fp.budget.adaptive()
    return fp.budget.count(value) if kind == "count" else fp.budget.ratio(value)


def random_maps(rng, shape, sinks=0.08):
    """Softmax rows with a few attention sinks, as real ViTs have; float64."""
    *lead, n, _ = shape
    bonus = np.where(rng.random((*lead, 1, n)) < sinks, rng.uniform(1.5, 4.0), 0.0)
    logits = rng.uniform(0.3, 1.2) * rng.standard_normal(shape) + bonus
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def as_lists(sel):
    return sel.indices.tolist(), sel.pivotal.tolist(), sel.complementary.tolist()


@pytest.fixture(scope="session")
def cli():
    """The C++ command-line tool; tests that compare with it skip without it."""
    path = os.environ.get("FREEPRUNER_CLI")
    if not path or not os.path.exists(path):
        pytest.skip("FREEPRUNER_CLI is not set to the built tool (ctest sets it): no C++ comparison")

    def run(npy, budget_kind, budget_value, kwargs):
        args = [path, str(npy), "--json"]
        if budget_kind == "count":
            args += ["--count", str(budget_value)]
        elif budget_kind == "ratio":
            args += ["--ratio", repr(float(budget_value))]
        flags = {"prefix_tokens": "--prefix", "suffix_tokens": "--suffix", "pivots_per_layer": "--pivots-per-layer",
                 "fence_factor": "--fence", "complementary_from": "--from",
                 "complementary_layer": "--complementary-layer"}
        for key, value in kwargs.items():
            if key == "pivot_layers":
                if value is not None:
                    args += ["--pivot-layers", ",".join(str(v) for v in value)]
            else:
                args += [f"{flags[key]}={value}"]
        out = subprocess.run(args, capture_output=True, text=True)
        if out.returncode != 0:
            return out.stderr.strip()
        parsed = json.loads(out.stdout)
        items = parsed if isinstance(parsed, list) else [parsed]
        res = [(d["kept"], d["pivotal"], d["complementary"]) for d in items]
        return res if isinstance(parsed, list) else res[0]

    return run
