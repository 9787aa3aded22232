"""Every bad input raises freepruner.Error (a ValueError) with a message that
names the argument and its value: the C++ library's own message for what it
checks, and a clear one for what only Python can get wrong."""
import numpy as np
import pytest

import freepruner as fp
from conftest import random_maps

try:
    import torch
except ImportError:
    torch = None

RNG = np.random.default_rng(0)
M = random_maps(RNG, (2, 3, 10, 10)).astype(np.float32)
Q = RNG.standard_normal((2, 3, 10, 8)).astype(np.float32)
b = fp.budget


def with_value(index, value, maps=M):
    x = maps.copy()
    x[index] = value
    return x


NAN_BATCH = with_value((1, 1, 2, 3, 4), np.nan, np.stack([M, M]))
NAN_K = with_value((0, 1, 2, 3), np.nan, Q)


class FakeCuda:
    """A GPU tensor as the DLPack protocol shows it."""

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):
        raise RuntimeError("not exported")


# (call, the C++ library's message)
CPP = [
    (lambda: fp.select(M, b.count(0)), "budget::count(0) (must be >= 1)"),
    (lambda: fp.select(M, b.count(-3)), "budget::count(-3) (must be >= 1)"),
    (lambda: fp.select(M, b.ratio(0)), "budget::ratio(0) (must be finite, > 0 and <= 1)"),
    (lambda: fp.select(M, b.ratio(1.5)), "budget::ratio(1.5) (must be finite, > 0 and <= 1)"),
    (lambda: fp.select(M, b.ratio(float("nan"))), "budget::ratio(nan) (must be finite, > 0 and <= 1)"),
    (lambda: fp.select(M, prefix_tokens=10),
     "options.prefix_tokens + options.suffix_tokens = 10 + 0 leaves no candidate among tokens = 10"),
    (lambda: fp.select(M, prefix_tokens=4, suffix_tokens=6),
     "options.prefix_tokens + options.suffix_tokens = 4 + 6 leaves no candidate among tokens = 10"),
    (lambda: fp.select(M, prefix_tokens=-1), "options.prefix_tokens = -1 (must be >= 0)"),
    (lambda: fp.select(M, complementary_layer=5),
     "options.complementary_layer = 5 is outside the given layers 0..1 (-1 means the last)"),
    (lambda: fp.select(M, pivot_layers=[0, 0]), "options.pivot_layers names layer 0 twice"),
    (lambda: fp.select(M, pivot_layers=[7]),
     "options.pivot_layers entry = 7 is outside the given layers 0..1 (-1 means the last)"),
    (lambda: fp.select(M, fence_factor=-1), "options.fence_factor = -1 (must be finite and >= 0)"),
    (lambda: fp.select(M, fence_factor=float("nan")), "options.fence_factor = nan (must be finite and >= 0)"),
    (lambda: fp.select(M, pivots_per_layer=-1), "options.pivots_per_layer = -1 (0 for adaptive, or k >= 1)"),
    (lambda: fp.select(with_value((1, 2, 3, 4), np.nan)),
     "attention maps[layer 1][head 2][query 3][key 4] = nan (every value read must be finite)"),
    (lambda: fp.select(with_value((0, 1, 5, 6), np.inf)),
     "attention maps[layer 0][head 1][query 5][key 6] = inf (every value read must be finite)"),
    (lambda: fp.select(M[:, :, :, :9]), "attention maps are not square: queries = 10, keys = 9"),
    (lambda: fp.select(np.zeros((2, 0, 5, 5), np.float32)), "attention maps: heads = 0 (must be >= 1)"),
    (lambda: fp.select(NAN_BATCH),
     "batch item 1: attention maps[layer 1][head 2][query 3][key 4] = nan (every value read must be finite)"),
    (lambda: fp.select([NAN_BATCH[:, 0], NAN_BATCH[:, 1]]),
     "batch item 1: attention maps[layer 1][head 2][query 3][key 4] = nan (every value read must be finite)"),
    (lambda: fp.kept_tokens(b.count(3), tokens=0), "tokens = 0 (must be >= 1)"),
    (lambda: fp.kept_tokens(b.count(3), tokens=5, prefix_tokens=5),
     "options.prefix_tokens + options.suffix_tokens = 5 + 0 leaves no candidate among tokens = 5"),
    (lambda: fp.kept_tokens(b.ratio(2)), "budget::ratio(2) (must be finite, > 0 and <= 1)"),
    (lambda: fp.select_qk(Q, Q[:, :, :9]), "layers[0]: q is [3, 10, 8] but k is [3, 9, 8] (heads, tokens, dim must match)"),
    (lambda: fp.select_qk(Q, NAN_K), "layers[0].k[head 1][token 2][dim 3] = nan (every value read must be finite)"),
    (lambda: fp.select_qk(Q, Q, scale=-1.0),
     "layers[0].scale = -1 (must be finite and > 0; make_qk_layer turns 0 into 1/sqrt(dim))"),
    (lambda: fp.select_qk(Q, Q, prefix_tokens=10),
     "options.prefix_tokens + options.suffix_tokens = 10 + 0 leaves no candidate among tokens = 10"),
    (lambda: fp.presets.by_name("nope"),
     'preset name = "nope" is not known (known: llava-1.5, llava-1.5-cls-last, llava-next-crop, '
     "llava-next-crop-cls-last, video-llava, video-llava-cls-last, siglip-so400m, qwen2-vl:<rows>x<cols>)"),
]

ACCEPTS = "(freepruner reads float32, float64, float16 and bfloat16)"
RANKS = "(need [layers, heads, N, N], a batch [B, layers, heads, N, N], or a list of per-layer [heads, N, N])"
CUDA = "(this build of freepruner reads CPU memory; its CUDA backend is not compiled in: pass .cpu())"
NOT_A_TENSOR = "is not a tensor freepruner can read (it reads DLPack and buffer-protocol tensors: NumPy, PyTorch, ...)"

# What only Python can get wrong: dtype, rank, device, lists, strings.
PYTHON = [
    (lambda: fp.select(M.astype(np.int64)), "maps: dtype int64 " + ACCEPTS),
    (lambda: fp.select(M.astype(np.complex64)), "maps: dtype complex64 " + ACCEPTS),
    (lambda: fp.select(M > 0), "maps: dtype bool " + ACCEPTS),
    (lambda: fp.select(M[0]), "maps: shape [3, 10, 10] has rank 3 " + RANKS),
    (lambda: fp.select(M[None, None]), "maps: shape [1, 1, 2, 3, 10, 10] has rank 6 " + RANKS),
    (lambda: fp.select([M[0], M[1].astype(np.float64)]),
     "maps[1]: dtype float64 but maps[0] is float32 (every layer has the same dtype)"),
    (lambda: fp.select([M[0], M[1, :2]]), "maps[1]: shape [2, 10, 10] but maps[0] is [3, 10, 10] (every layer has the same shape)"),
    (lambda: fp.select([M[0, 0]]),
     "maps[0]: shape [10, 10] has rank 2 (a list holds per-layer [heads, N, N], or [B, heads, N, N] for a batch)"),
    (lambda: fp.select([]), "maps: an empty list (need one [heads, N, N] tensor per layer)"),
    (lambda: fp.select("abc"), "maps: a str " + NOT_A_TENSOR),
    (lambda: fp.select(None), "maps: a NoneType " + NOT_A_TENSOR),
    (lambda: fp.select([M[0], "x"]), "maps[1]: a str " + NOT_A_TENSOR),
    (lambda: fp.select(FakeCuda()), "maps: a tensor on cuda:0 " + CUDA),
    (lambda: fp.select([FakeCuda()]), "maps[0]: a tensor on cuda:0 " + CUDA),
    (lambda: fp.select_qk([FakeCuda()], [FakeCuda()]), "q_layers[0]: a tensor on cuda:0 " + CUDA),
    (lambda: fp.select(M, complementary_from="diag"), 'complementary_from = "diag" (must be "row" or "column")'),
    (lambda: fp.select_qk(Q, Q, layout="x"), 'layout = "x" (must be "heads_major" or "tokens_major")'),
    (lambda: fp.select_qk(Q, Q[:1]), "k_layers: 1 layers but q_layers has 2"),
    (lambda: fp.select_qk(Q, Q.astype(np.float64)), "k_layers: dtype float64 but q_layers is float32 (q and k have the same dtype)"),
    (lambda: fp.select_qk([Q[0], Q[1].astype(np.float16)], [Q[0], Q[1]]),
     "q_layers[1]: dtype float16 but q_layers[0] is float32 (every layer has the same dtype)"),
    (lambda: fp.select_qk(Q[0], Q[0]),
     'q_layers: shape [3, 10, 8] has rank 3 (need [layers, heads, tokens, dim] or a list of per-layer '
     '[heads, tokens, dim]; [layers, tokens, heads, dim] with layout="tokens_major")'),
    (lambda: fp.select_qk([Q[0]], [Q[0, 0]]),
     'k_layers[0]: shape [10, 8] has rank 2 (need per-layer [heads, tokens, dim], or [tokens, heads, dim] '
     'with layout="tokens_major")'),
]
if torch is not None:
    PYTHON.append((lambda: fp.select(torch.zeros(2, 2, 4, 4, dtype=torch.int8)), "maps: dtype int8 " + ACCEPTS))


@pytest.mark.parametrize("call,message", CPP + PYTHON, ids=[m[:40] for _, m in CPP + PYTHON])
def test_error_message(call, message):
    with pytest.raises(fp.Error) as e:
        call()
    assert str(e.value) == "freepruner: " + message
    assert isinstance(e.value, ValueError)


# The tool words the library's option names as its flags (tools/freepruner.cpp, in_flags).
TOOL_FLAGS = [("--pivots-per-layer", "options.pivots_per_layer"), ("--complementary-layer", "options.complementary_layer"),
              ("--pivot-layers", "options.pivot_layers"), ("--prefix", "options.prefix_tokens"),
              ("--suffix", "options.suffix_tokens"), ("--fence", "options.fence_factor"),
              ("--from", "options.complementary_from")]


def in_options(text):
    for flag, option in TOOL_FLAGS:
        text = text.replace(flag, option)
    return text


def test_messages_are_the_cpp_tools(cli, tmp_path):
    """The C++ tool, given the same maps and options, prints the same message (its flags read as option names)."""
    cases = [(with_value((1, 2, 3, 4), np.nan), "count", 4, {}),
             (M, "count", 4, {"prefix_tokens": 10}),
             (M, "adaptive", None, {"prefix_tokens": 4, "suffix_tokens": 6}),
             (NAN_BATCH, "ratio", 0.5, {})]
    for maps, kind, value, kwargs in cases:
        np.save(tmp_path / "maps.npy", maps)
        want = cli(tmp_path / "maps.npy", kind, value, kwargs)
        assert isinstance(want, str), want
        budget = fp.budget.count(value) if kind == "count" else fp.budget.ratio(value) if kind == "ratio" else fp.budget.adaptive()
        with pytest.raises(fp.Error) as e:
            fp.select(maps, budget, **kwargs)
        assert str(e.value) == in_options(want)


def test_wrong_python_types_are_type_errors():
    with pytest.raises(TypeError):
        fp.select(M, "count")
    with pytest.raises(TypeError):
        fp.select(M, prefix_tokens=2**70)


def test_no_partial_state_after_an_error():
    good = fp.select(M, b.count(4))
    with pytest.raises(fp.Error):
        fp.select(with_value((1, 2, 3, 4), np.nan), b.count(4))
    assert fp.select(M, b.count(4)) == good


def test_a_device_tensor_is_refused_after_import():
    """A DLPack capsule of CUDA memory (what a CUDA torch tensor exports) is refused, never read."""
    import ctypes

    class DLTensor(ctypes.Structure):
        _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32),
                    ("ndim", ctypes.c_int32), ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                    ("lanes", ctypes.c_uint16), ("shape", ctypes.POINTER(ctypes.c_int64)),
                    ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]

    class DLManagedTensor(ctypes.Structure):
        _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]

    shape = (ctypes.c_int64 * 4)(2, 3, 10, 10)
    managed = DLManagedTensor(DLTensor(0x1000, 2, 1, 4, 2, 32, 1, shape, None, 0), None, None)
    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype, new_capsule.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

    class CudaTensor:
        def __dlpack_device__(self):
            return (2, 1)

        def __dlpack__(self, stream=None, **kwargs):
            return new_capsule(ctypes.addressof(managed), b"dltensor", None)

    with pytest.raises(fp.Error) as e:
        fp.select(CudaTensor())
    assert str(e.value) == "freepruner: maps: a tensor on cuda:1 " + CUDA
