"""The package's surface: names, version, kept_tokens, presets, budgets, the example."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import freepruner as fp
from conftest import ROOT, random_maps


def test_version_is_the_headers():
    header = (ROOT / "include" / "freepruner" / "version.hpp").read_text()
    assert fp.__version__ == re.search(r'FREEPRUNER_VERSION_STRING "([^"]+)"', header).group(1)


def test_error_is_a_value_error():
    assert issubclass(fp.Error, ValueError)


def test_kept_tokens_is_what_select_keeps():
    rng = np.random.default_rng(3)
    maps = random_maps(rng, (2, 3, 37, 37))
    for budget in (fp.budget.count(10), fp.budget.count(99), fp.budget.ratio(0.3), fp.budget.ratio(1.0)):
        for prefix, suffix in ((0, 0), (1, 0), (0, 1), (2, 3)):
            n = fp.kept_tokens(budget, tokens=37, prefix_tokens=prefix, suffix_tokens=suffix)
            assert n == len(fp.select(maps, budget, prefix_tokens=prefix, suffix_tokens=suffix)), (budget, prefix)
    assert fp.kept_tokens(fp.budget.adaptive()) is None
    assert fp.kept_tokens(fp.budget.count(288)) == 288
    assert fp.kept_tokens(fp.budget.ratio(0.5)) == 288  # 577 tokens, CLS first: the defaults


def test_budget_objects():
    assert (fp.budget.count(5).kind, fp.budget.count(5).value) == ("count", 5)
    assert (fp.budget.ratio(0.25).kind, fp.budget.ratio(0.25).value) == ("ratio", 0.25)
    assert (fp.budget.adaptive().kind, fp.budget.adaptive().value) == ("adaptive", None)
    assert repr(fp.budget.ratio(0.5)) == "budget.ratio(0.5)"


def test_presets():
    assert "llava-1.5" in fp.presets.names()
    p = fp.presets.by_name("llava-1.5")
    assert (p.tokens, p.heads, p.layers, p.feature_layer) == (577, 16, [21, 22], 22)
    assert p.options["prefix_tokens"] == 1 and p.options["complementary_from"] == "row"
    assert p.kept_tokens(fp.budget.ratio(0.5)) == 288
    last = fp.presets.by_name("llava-1.5-cls-last")
    assert (last.options["prefix_tokens"], last.options["suffix_tokens"]) == (0, 1)
    # The options are select's keyword arguments.
    maps = random_maps(np.random.default_rng(4), (2, 2, 17, 17))
    assert fp.select(maps, fp.budget.count(5), **last.options) == fp.select(
        maps, fp.budget.count(5), prefix_tokens=0, suffix_tokens=1)
    assert fp.presets.by_name("qwen2-vl:4x6").tokens == 24


def test_options_are_keywords():
    maps = random_maps(np.random.default_rng(5), (1, 1, 9, 9))
    with pytest.raises(TypeError):
        fp.select(maps, fp.budget.count(3), 1)


def test_transformers_example():
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "python_transformers.py"), "--check"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "check: ok" in out.stdout
