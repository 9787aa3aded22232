"""The binding returns the C++ select's tokens: the conformance vectors
through every input form, and fresh random maps against the C++ tool."""
import os
import time

import numpy as np
import pytest

import freepruner as fp
from conftest import as_lists, conformance_cases, make_budget, random_maps

try:
    import torch
except ImportError:  # the torch forms and bfloat16 skip
    torch = None

CASES = conformance_cases()
SEED = int(os.environ.get("FREEPRUNER_SEED", time.time_ns() % 2**31))
print(f"random cases: FREEPRUNER_SEED={SEED} replays them")


def numpy_forms(maps):
    """The same maps [L,H,N,N] in every form and layout select reads, each
    with whether the result is a batch (list) or one selection."""
    L, H, N, _ = maps.shape
    keys_major = np.ascontiguousarray(maps.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    padded = np.zeros((L + 1, H + 2, N + 3, N + 5), maps.dtype)
    padded[1:, 2:, 3:, 5:] = maps
    reversed_keys = np.ascontiguousarray(maps[..., ::-1])[..., ::-1]  # negative key stride
    yield "contiguous", maps, False
    yield "keys-major strides", keys_major, False
    yield "padded strides", padded[1:, 2:, 3:, 5:], False
    yield "negative strides", reversed_keys, False
    yield "list of layers", [maps[l] for l in range(L)], False
    yield "list of layers, mixed key strides", [keys_major[l] if l % 2 else maps[l] for l in range(L)], False
    yield "tuple of layers", tuple(np.ascontiguousarray(maps[l]) for l in range(L)), False
    yield "batch", np.stack([maps, maps]), True
    yield "batch, keys-major", np.stack([keys_major, keys_major]), True
    yield "list of [B,H,N,N]", [np.stack([maps[l], maps[l]]) for l in range(L)], True


def torch_forms(maps):
    t = torch.from_numpy(np.ascontiguousarray(maps))
    yield "torch", t, False
    yield "torch keys-major", t.transpose(2, 3).contiguous().transpose(2, 3), False
    yield "torch list of layers", [t[l] for l in range(t.shape[0])], False
    yield "torch batch", torch.stack([t, t]), True


def check_forms(forms, budget, kwargs, want):
    for form, maps, batched in forms:
        got = fp.select(maps, budget, **kwargs)
        if batched:
            assert len(got) == 2, form
            for item in got:
                assert as_lists(item) == want, form
        else:
            assert as_lists(got) == want, form


@pytest.mark.skipif(not CASES, reason="conformance vectors not found (tests/data/conformance)")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_conformance(case):
    name, maps, kwargs, (kind, value), want = case
    budget = make_budget(kind, value)
    for dtype in (np.float32, np.float64):
        check_forms(numpy_forms(maps.astype(dtype)), budget, kwargs, want)
        if torch is not None:
            check_forms(torch_forms(maps.astype(dtype)), budget, kwargs, want)


def keys_major(t):
    """The same values with the keys as the slowest-varying of the last two dimensions."""
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t.swapaxes(-1, -2)).swapaxes(-1, -2)
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def random_case(rng):
    L, H, N = int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(12, 90))
    kwargs = {"prefix_tokens": int(rng.integers(0, 3)), "suffix_tokens": int(rng.integers(0, 2))}
    if rng.random() < 0.3:
        kwargs["pivots_per_layer"] = int(rng.integers(1, 6))
    if rng.random() < 0.3:
        kwargs["fence_factor"] = float(rng.choice([0.0, 0.5, 3.0]))
    if rng.random() < 0.4:
        kwargs["complementary_from"] = "column"
    if L > 1 and rng.random() < 0.4:
        kwargs["complementary_layer"] = int(rng.integers(0, L))
    if L > 1 and rng.random() < 0.4:
        kwargs["pivot_layers"] = sorted(rng.choice(L, size=int(rng.integers(1, L + 1)), replace=False).tolist())
    kind = str(rng.choice(["adaptive", "count", "ratio"]))
    value = {"adaptive": None, "count": int(rng.integers(1, N)), "ratio": float(rng.choice([0.1, 0.25, 0.5, 1.0]))}[kind]
    return (L, H, N, N), kwargs, kind, value


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_random_against_cpp(cli, tmp_path, dtype):
    """Fresh maps and options; the C++ tool selects on the same values (bfloat16:
    their float32 widening, exact) and the binding must agree exactly, from
    NumPy and torch, contiguous and keys-major, as a batch, an item and a list."""
    if dtype == "bfloat16" and torch is None:
        pytest.skip("bfloat16 tensors need torch")
    rng = np.random.default_rng([SEED, len(dtype), dtype.count("b")])
    for case in range(12):
        shape, kwargs, kind, value = random_case(rng)
        maps = random_maps(rng, (2,) + shape)  # two items: a batch, and each item alone
        if dtype == "bfloat16":
            tensor = torch.from_numpy(maps).to(torch.bfloat16)
            values = tensor.to(torch.float32).numpy()
        else:
            tensor = values = maps.astype(dtype)
        np.save(tmp_path / "maps.npy", values)
        want = cli(tmp_path / "maps.npy", kind, value, kwargs)
        budget = make_budget(kind, value)
        ctx = f"seed {SEED}, case {case}: {dtype} {shape} {kind} {value} {kwargs}"
        if isinstance(want, str):  # the C++ tool rejected it: the binding raises the same message
            with pytest.raises(fp.Error) as e:
                fp.select(tensor, budget, **kwargs)
            assert str(e.value).split(": ", 1)[1] in want, ctx
            continue
        forms = [tensor, keys_major(tensor)]
        if torch is not None and dtype != "bfloat16":
            forms += [torch.from_numpy(tensor), keys_major(torch.from_numpy(tensor))]
        for form in forms:
            got = fp.select(form, budget, **kwargs)
            assert [as_lists(s) for s in got] == want, ctx
        for b in range(2):
            assert as_lists(fp.select(tensor[b], budget, **kwargs)) == want[b], ctx
            layers = [tensor[b][l] for l in range(shape[0])]
            assert as_lists(fp.select(layers, budget, **kwargs)) == want[b], ctx


def test_batch_items_equal_single_calls():
    rng = np.random.default_rng(SEED)
    maps = random_maps(rng, (5, 2, 4, 50, 50)).astype(np.float32)
    for budget in (fp.budget.adaptive(), fp.budget.count(20), fp.budget.ratio(0.3)):
        batch = fp.select(maps, budget, prefix_tokens=1)
        assert len(batch) == 5
        for b in range(5):
            assert batch[b] == fp.select(maps[b], budget, prefix_tokens=1)
    assert fp.select(np.empty((0, 2, 4, 50, 50), np.float32), fp.budget.count(3)) == []


def test_selection_arrays():
    rng = np.random.default_rng(SEED)
    sel = fp.select(random_maps(rng, (2, 3, 40, 40)), fp.budget.ratio(0.5))
    for part in (sel.indices, sel.pivotal, sel.complementary):
        assert isinstance(part, np.ndarray) and part.dtype == np.int32 and part.ndim == 1
        assert np.all(np.diff(part) > 0)
    assert len(sel) == 20 == fp.kept_tokens(fp.budget.ratio(0.5), tokens=40, prefix_tokens=1)
    assert sorted(sel.pivotal.tolist() + sel.complementary.tolist()) == sel.indices.tolist()


def test_zero_copy():
    """select reads a contiguous float32 array, and each layer of a list, in place."""
    maps = np.random.default_rng(0).random((2, 3, 20, 20), dtype=np.float32)
    assert fp._core._data_pointers(maps) == [maps.ctypes.data]
    layers = [maps[0], maps[1]]
    assert fp._core._data_pointers(layers) == [m.ctypes.data for m in layers]
    keys_major = np.ascontiguousarray(maps.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert fp._core._data_pointers(keys_major) == [keys_major.ctypes.data]
    if torch is not None:
        t = torch.from_numpy(maps).to(torch.bfloat16)
        assert fp._core._data_pointers(t) == [t.data_ptr()]
        assert fp._core._data_pointers(list(t)) == [x.data_ptr() for x in t]


def test_gil_released():
    """Another Python thread runs while select works (the Q/K path, long enough to overlap)."""
    import threading
    rng = np.random.default_rng(1)
    q, k = (rng.standard_normal((2, 16, 400, 64)).astype(np.float32) for _ in range(2))
    t0 = time.perf_counter()
    fp.select_qk(q, k)
    alone = time.perf_counter() - t0
    done = threading.Event()

    def work():
        fp.select_qk(q, k)
        done.set()

    thread = threading.Thread(target=work)
    ticks, last, gap = 0, time.perf_counter(), 0.0
    thread.start()
    while not done.is_set():
        now = time.perf_counter()
        gap, last, ticks = max(gap, now - last), now, ticks + 1
    thread.join()
    # With the GIL held, this loop would stall for the whole select.
    assert ticks > 10 and gap < 0.5 * alone, (ticks, gap, alone)


def test_read_only_broadcast_and_grad_tensors():
    """Read-only arrays, zero strides (broadcast heads) and torch tensors that require grad."""
    maps = random_maps(np.random.default_rng(SEED), (2, 1, 30, 30))
    want = fp.select(np.repeat(maps, 4, axis=1), fp.budget.count(9))
    broadcast = np.broadcast_to(maps, (2, 4, 30, 30))  # head stride 0, read-only
    assert fp.select(broadcast, fp.budget.count(9)) == want
    frozen = np.repeat(maps, 4, axis=1)
    frozen.setflags(write=False)
    assert fp.select(frozen, fp.budget.count(9)) == want
    if torch is not None:
        t = torch.from_numpy(np.repeat(maps, 4, axis=1)).requires_grad_()
        assert fp.select(t, fp.budget.count(9)) == want
        assert fp.select(list(t), fp.budget.count(9)) == want
