#!/usr/bin/env python3
"""Writes the seed corpus fuzz/corpus/*.bin in the byte format of
fuzz_select.hpp (documented in fuzz/README.md). Run it again after changing
the format; libFuzzer grows its own corpus from these seeds."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

TYPES = {"float": 0, "double": 1, "half": 2, "bfloat16": 3}
ANOMALY = {"no_layers": 1, "no_heads": 2, "no_tokens": 3, "not_square": 4, "negative_layers": 5,
           "tokens_2_31": 6, "tokens_2_40": 7, "null_data": 8}
FENCE = {1.5: 0, 0.0: 8, 0.5: 9, 1.0: 10, 2.0: 11, 3.0: 12, 1e300: 0xE2, "-0.0": 0xE5, -1.0: 0xE8, "nan": 0xEA, "inf": 0xEB}
K_SPECIAL = {-1: 0xF0, "min": 0xF1, "max": 0xF2, 64: 0xF3, 65: 0xF4, 1000: 0xF5}
COUNT_SPECIAL = {0: 0xF0, -1: 0xF1, "max": 0xF2, "min": 0xF3, 2**31: 0xF4}
RATIO_SPECIAL = {0.0: 0xF0, 1.0: 0xF2, "above_1": 0xF3, "denormal": 0xF4, 1e-300: 0xF6, "nan": 0xF8, "inf": 0xF9}
C_SPECIAL = {-2: 24, "L": 25, "min": 26, "max": 27}


def seed(type="float", batch=None, try_first=False, layout=0, L=1, H=1, N=8, anomaly=None, prefix=0, suffix=0,
         budget=("adaptive",), k=0, fence=1.5, column=False, bad_direction=False, c=-1, pivot_layers=(),
         pattern=0, param=0, rng=1, patches=()):
    mode = TYPES[type] | (4 if batch is not None else 0) | (8 if try_first else 0) | (layout << 4)
    bl = (L - 1) & 3
    if anomaly:
        bl |= 0x80 | ((ANOMALY[anomaly] - 1) << 4)
    bh = (H - 1) & 3
    if batch is not None:
        bh |= {0: 4, -1: 59}.get(batch, batch - 1) << 2
    edge = lambda v: v if isinstance(v, int) and 0 <= v < 4 else {-1: 0xF0, "N": 0xF1, "N-1": 0xF2, "max": 0xF3}[v]
    kind = budget[0]
    if kind == "adaptive":
        bb, bv = 0, 0
    elif kind == "count":
        v = budget[1]
        bb, bv = 1, (v - 1 if isinstance(v, int) and 1 <= v <= 70 else COUNT_SPECIAL[v])
    else:
        v = budget[1]
        bb, bv = 2, (RATIO_SPECIAL[v] if v in RATIO_SPECIAL else round(v * 240) - 1)
    bk = 0 if k == 0 else (0xA0 + k - 1 if isinstance(k, int) and 1 <= k <= 8 else K_SPECIAL[k])
    bd = (1 if column else 0) | (6 if bad_direction else 0)
    if bad_direction:
        assert c == -1
        c = 0
    bd |= (0 if c == -1 else (28 + c if bad_direction else 20 + c if isinstance(c, int) and 0 <= c < 4 else C_SPECIAL[c])) << 3
    n = len(pivot_layers)
    bp = 0 if n == 0 else (4 + n if n <= 3 else 0x80 | (4 + n - 2))
    out = bytes([mode, bl, bh, (N - 1) & 63, edge(prefix), edge(suffix), bb, bv, bk, FENCE[fence], bd, bp])
    out += bytes([l + 1 for l in pivot_layers])  # valid layers -1..L-1
    out += bytes([pattern, param]) + struct.pack("<I", rng)
    for pos, code, arg in patches:
        out += struct.pack("<HBB", pos & 0xFFFF, code | ((pos >> 16) << 5), arg)
    return out


SEEDS = {
    # CLIP-like shapes, dyadic maps with sinks: compared exactly with the reference.
    "clip_adaptive": seed(L=2, H=4, N=17, prefix=1, pattern=1, param=8, rng=11),
    "clip_ratio_half": seed(L=2, H=4, N=17, prefix=1, budget=("ratio", 0.5), pattern=1, param=8, rng=12),
    "count_column": seed(L=2, H=2, N=20, budget=("count", 5), column=True, pattern=1, param=6, rng=13),
    "topk_first_layer": seed(L=3, H=2, N=24, budget=("count", 7), k=2, pivot_layers=(0,), c=1, pattern=1, rng=14),
    "cls_last": seed(L=2, H=4, N=33, suffix=1, budget=("count", 9), pattern=1, param=3, rng=15),
    "max_size_softmax_double": seed(type="double", L=4, H=4, N=64, budget=("ratio", 0.25), pattern=4, rng=16),
    "half_dyadic": seed(type="half", L=2, H=2, N=32, pattern=0, param=5, rng=17),
    "bfloat16_ties": seed(type="bfloat16", L=2, H=1, N=24, budget=("count", 6), pattern=10, rng=18),
    "all_equal_n64_one_token": seed(L=1, H=1, N=64, budget=("count", 1), pattern=2, param=3),
    "all_equal_topk": seed(L=2, H=4, N=40, budget=("ratio", 0.5), k=64, pattern=2, param=1),
    "n1": seed(L=1, H=1, N=1),
    "n2_fence_half": seed(L=1, H=1, N=2, fence=0.5, pattern=0, param=3, rng=19),
    "m1_prefix": seed(L=2, H=2, N=3, prefix=1, suffix=1, budget=("count", 2), pattern=0, rng=20),
    "denormal_float": seed(L=2, H=2, N=16, pattern=6, param=12, rng=21),
    "signed_values": seed(L=2, H=4, N=16, budget=("count", 4), pattern=7, param=6, rng=22),
    "diagonal_heavy": seed(L=2, H=2, N=16, column=True, pattern=11, param=4, rng=23),
    "uniform_rows_not_normalized": seed(type="double", L=2, H=3, N=30, budget=("ratio", 0.75), pattern=9, rng=24),
    "fence_zero_and_huge": seed(L=2, H=2, N=12, fence=0.0, pattern=1, rng=25),
    "fence_1e300": seed(L=2, H=2, N=12, fence=1e300, budget=("count", 3), pattern=1, rng=26),
    # Layouts: padded, transposed keys, heads outermost, negative strides, broadcast head, any order.
    "layout_padded": seed(layout=1, L=2, H=2, N=16, pattern=1, rng=27),
    "layout_transposed": seed(layout=2, L=2, H=2, N=16, column=True, pattern=1, rng=28),
    "layout_heads_outer": seed(layout=3, L=2, H=4, N=16, pattern=1, rng=29),
    "layout_negative": seed(layout=4, L=2, H=2, N=16, budget=("count", 6), pattern=1, rng=30),
    "layout_broadcast_head": seed(layout=5, L=2, H=4, N=16, pattern=1, rng=31),
    "layout_any_order": seed(layout=6, L=3, H=2, N=16, pattern=1, rng=0x5A5A5A5A),
    # Batches.
    "batch3_padded_items": seed(batch=3, layout=9, L=2, H=2, N=12, budget=("count", 4), pattern=1, rng=32),
    "batch_empty": seed(batch=0, L=2, H=2, N=12),
    "batch_negative": seed(batch=-1, L=2, H=2, N=12),
    "batch_nan_in_item1": seed(batch=2, L=1, H=1, N=8, pattern=1, rng=33, patches=((64 + 9, 0, 0),)),
    # Non-finite values: read (error) and not read (no error).
    "nan_in_pivot_layer": seed(L=2, H=1, N=8, pattern=1, rng=34, patches=((5, 0, 0),)),
    "inf_in_unread_layer": seed(L=3, H=1, N=8, pivot_layers=(0,), c=1, pattern=1, rng=35, patches=((130, 1, 0),)),
    "nan_in_complementary_layer": seed(L=2, H=1, N=8, pivot_layers=(0,), pattern=1, rng=36,
                                       patches=((64 + 3 * 8 + 4, 0, 0), (64 + 8 * 6 + 1, 2, 0))),
    "column_nan_in_prefix_row": seed(L=2, H=1, N=8, prefix=1, column=True, pivot_layers=(0,), pattern=1, rng=37,
                                     patches=((64 + 2, 0, 0), (64 + 5, 0, 0))),
    "double_overflow": seed(type="double", L=1, H=2, N=8, pattern=8, param=254, rng=38),
    "double_max_patches": seed(type="double", L=1, H=2, N=6, pattern=1, rng=39,
                               patches=((0, 7, 0), (7, 8, 0), (36, 7, 0), (40, 7, 0))),
    "half_overflow_to_inf": seed(type="half", L=1, H=1, N=6, pattern=0, rng=40, patches=((3, 18, 0),)),
    "raw_bits_double": seed(type="double", L=1, H=1, N=6, pattern=5, rng=41),
    # Bad input: every kind of rejection.
    "null_data": seed(anomaly="null_data", L=2, H=2, N=8),
    "no_layers": seed(anomaly="no_layers", N=8),
    "not_square": seed(anomaly="not_square", L=1, H=1, N=8),
    "tokens_2_40": seed(anomaly="tokens_2_40"),
    "prefix_suffix_cover_all": seed(N=4, prefix="N", suffix=0),
    "negative_prefix": seed(N=4, prefix=-1),
    "prefix_max_suffix": seed(N=4, prefix=1, suffix="max"),
    "fence_nan": seed(N=8, fence="nan"),
    "fence_negative": seed(N=8, fence=-1.0),
    "fence_minus_zero_valid": seed(N=8, fence="-0.0", pattern=1, rng=42),
    "bad_direction": seed(N=8, bad_direction=True),
    "negative_k": seed(N=8, k=-1),
    "k_max": seed(L=2, H=2, N=64, k="max", budget=("count", 10), pattern=1, rng=43),
    "complementary_layer_L": seed(L=2, N=8, c="L"),
    "complementary_layer_min": seed(L=2, N=8, c="min"),
    "duplicate_pivot_layers": seed(L=2, N=8, pivot_layers=(-1, 1)),
    "count_zero": seed(N=8, budget=("count", 0)),
    "count_max": seed(L=2, H=2, N=20, budget=("count", "max"), pattern=1, rng=44),
    "ratio_nan": seed(N=8, budget=("ratio", "nan")),
    "ratio_above_one": seed(N=8, budget=("ratio", "above_1")),
    "ratio_denormal": seed(L=2, H=2, N=20, budget=("ratio", "denormal"), pattern=1, rng=45),
    "ratio_one": seed(L=2, H=2, N=20, budget=("ratio", 1.0), pattern=1, rng=46),
}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if old.endswith(".bin"):
            os.remove(os.path.join(OUT, old))
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {OUT}")
