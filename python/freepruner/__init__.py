"""freepruner: training-free visual token pruning (freePruner, arXiv 2411.15446).

The Python face of the header-only C++ library: the same ``select``, the
same tokens. Attention maps come in as any DLPack or buffer-protocol tensor
(NumPy, PyTorch, ...) and are read in place.

    import freepruner as fp
    sel = fp.select(maps, fp.budget.ratio(0.5), prefix_tokens=1)
    kept = hidden_states[:, sel.indices]

See docs/python.md.
"""
from . import _core
from ._core import Error, Preset, budget, presets

__version__ = _core.__version__
Error.__module__ = __name__  # shown as freepruner.Error in tracebacks
__all__ = ["Error", "Preset", "Selection", "budget", "kept_tokens", "presets", "select", "select_qk", "__version__"]


class Selection:
    """The kept tokens: ``indices`` (ascending positions in 0..N-1) and their
    split into ``pivotal`` and ``complementary``, each a 1-D int32 NumPy array."""

    __slots__ = ("indices", "pivotal", "complementary")

    def __init__(self, indices, pivotal, complementary):
        self.indices = indices
        self.pivotal = pivotal
        self.complementary = complementary

    def __len__(self):
        return len(self.indices)

    def __eq__(self, other):
        if not isinstance(other, Selection):
            return NotImplemented
        return all((getattr(self, k).tolist() == getattr(other, k).tolist()) for k in self.__slots__)

    __hash__ = None

    def __repr__(self):
        return (f"Selection({len(self.indices)} kept: {len(self.pivotal)} pivotal, "
                f"{len(self.complementary)} complementary)")


def _wrap(out):
    return [Selection(*s) for s in out] if isinstance(out, list) else Selection(*out)


def select(maps, budget=budget.adaptive(), *, prefix_tokens=1, suffix_tokens=0, pivots_per_layer=0,
           fence_factor=1.5, complementary_from="row", complementary_layer=-1, pivot_layers=None):
    """Selects the visual tokens to keep (SPEC steps 0-5).

    maps: attention probabilities, ``[layers, heads, N, N]``; a batch
    ``[B, layers, heads, N, N]``; or a list of per-layer ``[heads, N, N]``
    tensors (``[B, heads, N, N]`` for a batch, as ``output_attentions=True``
    returns them). float32, float64, float16 or bfloat16, any strides, read
    in place. Returns a ``Selection``, or a list of them for a batch (each
    item on its own thresholds). Raises ``freepruner.Error`` on bad input.
    """
    return _wrap(_core.select(maps, budget, prefix_tokens, suffix_tokens, pivots_per_layer, fence_factor,
                              complementary_from, complementary_layer, pivot_layers))


def select_qk(q_layers, k_layers, budget=budget.adaptive(), scale=None, layout="heads_major", *, prefix_tokens=1,
              suffix_tokens=0, pivots_per_layer=0, fence_factor=1.5, complementary_from="row",
              complementary_layer=-1, pivot_layers=None, threads=1):
    """Selects from each chosen layer's queries and keys, for encoders that
    never form the maps (flash attention): the maps are
    ``softmax(scale * Q_h K_h^T)``, and no N x N buffer is formed.

    q_layers, k_layers: a list of per-layer tensors, ``[heads, tokens, dim]``
    (layout="heads_major") or ``[tokens, heads, dim]`` (layout="tokens_major"),
    or one tensor with the layers first. scale None means 1/sqrt(dim); pass 1
    for Hugging Face's CLIP q, which is scaled before the product. threads:
    how many threads share each layer's heads (the tokens are the same on any
    number).
    """
    return _wrap(_core.select_qk(q_layers, k_layers, budget, scale, layout, prefix_tokens, suffix_tokens,
                                 pivots_per_layer, fence_factor, complementary_from, complementary_layer,
                                 pivot_layers, threads))


def kept_tokens(budget, tokens=577, prefix_tokens=1, suffix_tokens=0):
    """The exact number of tokens ``select`` keeps for maps of ``tokens``
    tokens, known before the encoder runs; None for ``budget.adaptive()``."""
    return _core.kept_tokens(budget, tokens, prefix_tokens, suffix_tokens)
