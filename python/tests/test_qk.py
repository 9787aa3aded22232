"""select_qk: every layout and dtype gives the same tokens, and they are
select's tokens on the softmax maps."""
import numpy as np
import pytest

import freepruner as fp
from conftest import as_lists

try:
    import torch
except ImportError:
    torch = None


def qk(seed, L=2, H=4, N=50, d=16):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((L, H, N, d))
    k = rng.standard_normal((L, H, N, d))
    k[:, :, rng.random(N) < 0.08] *= 3.0  # a few keys every query attends to
    return q, k


def softmax_maps(q, k, scale):
    logits = scale * np.einsum("lhid,lhjd->lhij", q, k)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("budget", [fp.budget.adaptive(), fp.budget.count(20), fp.budget.ratio(0.4)], ids=repr)
@pytest.mark.parametrize("direction", ["row", "column"])
def test_qk_equals_select_on_the_maps(budget, direction):
    # Fixed seeds: the Q/K path matches the float64 maps except on near-ties
    # (tests/test_qk.cpp bounds them); these inputs have none.
    for seed in (1, 2, 3):
        q, k = qk(seed)
        want = fp.select(softmax_maps(q, k, 0.25), budget, complementary_from=direction)
        got = fp.select_qk(q, k, budget, complementary_from=direction)
        assert as_lists(got) == as_lists(want), seed


def test_layouts_and_dtypes_agree():
    q, k = qk(4)
    budget = fp.budget.count(25)
    want = as_lists(fp.select_qk(q, k, budget))
    forms = {
        "list": ([x for x in q], [x for x in k], {}),
        "tuple": (tuple(q), tuple(k), {}),
        "tokens_major": (np.ascontiguousarray(q.transpose(0, 2, 1, 3)), np.ascontiguousarray(k.transpose(0, 2, 1, 3)),
                         {"layout": "tokens_major"}),
        "tokens_major list": ([np.ascontiguousarray(x.transpose(1, 0, 2)) for x in q],
                              [np.ascontiguousarray(x.transpose(1, 0, 2)) for x in k], {"layout": "tokens_major"}),
        "strided": (np.asfortranarray(q), k[:, :, :, :], {}),
        "scale 1 with a scaled q": (q * 0.25, k, {"scale": 1.0}),
    }
    for name, (qq, kk, kwargs) in forms.items():
        assert as_lists(fp.select_qk(qq, kk, budget, **kwargs)) == want, name
    if torch is not None:
        assert as_lists(fp.select_qk(torch.from_numpy(q), torch.from_numpy(k), budget)) == want
    # float32, float16 and bfloat16 read their values exactly: the same tokens as float32 copies of them.
    q32, k32 = q.astype(np.float32), k.astype(np.float32)
    narrow = [(q32, k32), (q.astype(np.float16), k.astype(np.float16))]
    if torch is not None:
        narrow.append((torch.from_numpy(q).to(torch.bfloat16), torch.from_numpy(k).to(torch.bfloat16)))
    for qq, kk in narrow:
        widened = [np.asarray(x.float() if torch is not None and isinstance(x, torch.Tensor) else x, np.float32)
                   for x in (qq, kk)]
        assert fp.select_qk(qq, kk, budget) == fp.select_qk(*widened, budget)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_give_the_same_tokens(dtype):
    for seed in (4, 5):
        q, k = qk(seed, H=7, N=90)
        q, k = q.astype(dtype), k.astype(dtype)
        want = as_lists(fp.select_qk(q, k, fp.budget.ratio(0.3)))
        for threads in (2, 3, 16):
            assert as_lists(fp.select_qk(q, k, fp.budget.ratio(0.3), threads=threads)) == want, (seed, threads)


def test_threads_below_one_is_an_error():
    q, k = qk(6)
    with pytest.raises(fp.Error, match=r"threads = 0 \(must be >= 1\)"):
        fp.select_qk(q, k, fp.budget.ratio(0.3), threads=0)
