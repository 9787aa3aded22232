#!/usr/bin/env python3
"""Writes a random-weight LLaVA-1.5 pair as GGUF: a llama text model and its
mmproj (CLIP vision tower + MLP projector), laid out as llama.cpp's LLaVA
converter (tools/mtmd/legacy-models/convert_image_encoder_to_gguf.py) writes
them: CLS embedding, patch 14, image 336, the last vision block dropped
(block_count = blocks - 1), legacy tensor names, matrices in float16.

No weights are downloaded: everything is drawn from a seeded generator. The
GGUF writer is gguf-py from the same llama.cpp source tree (--gguf-py), so
the keys are the ones that llama.cpp reads.

  make_tiny_llava.py --gguf-py SRC/gguf-py -o DIR            # the test model
  make_tiny_llava.py --gguf-py SRC/gguf-py -o DIR --clip-l   # CLIP-L width
"""
import argparse
import os
import sys

try:
    import numpy as np
except ImportError:
    print("skipped: numpy is not installed (Debian: python3-numpy)")
    sys.exit(77)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf-py", required=True, help="llama.cpp's gguf-py folder")
    ap.add_argument("-o", "--out", required=True, help="output folder (text.gguf, mmproj.gguf)")
    ap.add_argument("--clip-l", action="store_true", help="CLIP ViT-L/14-336 widths: 1024, 16 heads, 4096 ff")
    ap.add_argument("--width", type=int, default=128, help="vision width (default 128)")
    ap.add_argument("--heads", type=int, default=16, help="vision heads (default 16)")
    ap.add_argument("--ff", type=int, default=256, help="vision feed-forward width (default 256)")
    ap.add_argument("--blocks", type=int, default=24, help="vision blocks of the source model (default 24)")
    ap.add_argument("--feature-layer", type=int, default=0,
                    help="write clip.vision.feature_layer = [F] and keep F blocks, as the converter does")
    ap.add_argument("--text-width", type=int, default=64, help="text model width (default 64)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.clip_l:
        args.width, args.heads, args.ff = 1024, 16, 4096
    if args.width % args.heads or args.blocks < 3 or not 0 <= args.feature_layer < args.blocks:
        ap.error(f"--width {args.width} must be a multiple of --heads {args.heads}, --blocks >= 3, "
                 f"0 <= --feature-layer < --blocks")
    return args


IMAGE, PATCH = 336, 14
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def mmproj(gguf, path, a, rng):
    w = gguf.GGUFWriter(path, "clip")
    # The LLaVA converter drops the last block, or keeps up to the feature layer.
    blocks = a.feature_layer or a.blocks - 1
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_llava_projector", True)
    w.add_file_type(1)
    w.add_name("tiny-llava-1.5-vision")
    w.add_description("image encoder for LLaVA (random weights)")
    w.add_string("clip.projector_type", "mlp")
    w.add_uint32("clip.vision.image_size", IMAGE)
    w.add_uint32("clip.vision.patch_size", PATCH)
    w.add_uint32("clip.vision.embedding_length", a.width)
    w.add_uint32("clip.vision.feed_forward_length", a.ff)
    w.add_uint32("clip.vision.projection_dim", a.text_width)
    w.add_uint32("clip.vision.attention.head_count", a.heads)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_uint32("clip.vision.block_count", blocks)
    if a.feature_layer:
        w.add_array("clip.vision.feature_layer", [a.feature_layer])
    w.add_array("clip.vision.image_mean", CLIP_MEAN)
    w.add_array("clip.vision.image_std", CLIP_STD)
    w.add_bool("clip.use_gelu", False)  # quick_gelu, as CLIP

    d, t = a.width, a.text_width
    n_pos = (IMAGE // PATCH) ** 2 + 1
    f16 = lambda *s, std: (rng.standard_normal(s, dtype=np.float32) * std).astype(np.float16)
    f32 = lambda *s, std: rng.standard_normal(s, dtype=np.float32) * np.float32(std)
    ones = lambda n: np.ones(n, dtype=np.float32)
    # Projector first, as the converter writes it.
    w.add_tensor("mm.0.weight", f16(t, d, std=d ** -0.5))
    w.add_tensor("mm.0.bias", f32(t, std=0.02))
    w.add_tensor("mm.2.weight", f16(t, t, std=t ** -0.5))
    w.add_tensor("mm.2.bias", f32(t, std=0.02))
    w.add_tensor("v.class_embd", f32(d, std=1.0))
    w.add_tensor("v.patch_embd.weight", f16(d, 3, PATCH, PATCH, std=(3 * PATCH * PATCH) ** -0.5))
    w.add_tensor("v.position_embd.weight", f32(n_pos, d, std=0.5))
    w.add_tensor("v.pre_ln.weight", ones(d))
    w.add_tensor("v.pre_ln.bias", f32(d, std=0.02))
    # Logits of a few units: attention with outliers, as trained encoders have.
    qk_std = 1.6 * d ** -0.5
    for il in range(blocks):
        p = f"v.blk.{il}."
        for name, std in (("attn_k", qk_std), ("attn_v", d ** -0.5), ("attn_q", qk_std), ("attn_out", d ** -0.5)):
            w.add_tensor(p + name + ".weight", f16(d, d, std=std))
            w.add_tensor(p + name + ".bias", f32(d, std=0.02))
        w.add_tensor(p + "ln1.weight", ones(d))
        w.add_tensor(p + "ln1.bias", f32(d, std=0.02))
        # The converter's names: fc1 is ffn_down, fc2 is ffn_up (llama.cpp swaps them back).
        w.add_tensor(p + "ffn_down.weight", f16(a.ff, d, std=d ** -0.5))
        w.add_tensor(p + "ffn_down.bias", f32(a.ff, std=0.02))
        w.add_tensor(p + "ffn_up.weight", f16(d, a.ff, std=a.ff ** -0.5))
        w.add_tensor(p + "ffn_up.bias", f32(d, std=0.02))
        w.add_tensor(p + "ln2.weight", ones(d))
        w.add_tensor(p + "ln2.bias", f32(d, std=0.02))
    write(w)


def text_model(gguf, path, a, rng):
    """A two-block llama (float16 matrices) with a byte-fallback SentencePiece vocabulary."""
    w = gguf.GGUFWriter(path, "llama")
    n, heads, ff, blocks = a.text_width, 4, min(2 * a.text_width, 512), 2
    words = ["\u2581", "\u2581a", "\u2581the", "\u2581image", "\u2581USER:", "\u2581ASSISTANT:", "\u2581Describe"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + words
    types = [2, 3, 3] + [6] * 256 + [1] * len(words)
    scores = [0.0] * 259 + [-float(i) for i in range(len(words))]
    w.add_name("tiny-llava-1.5-text")
    w.add_context_length(4096)
    w.add_embedding_length(n)
    w.add_block_count(blocks)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_dimension_count(n // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(1)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    f32 = lambda *s, std: rng.standard_normal(s, dtype=np.float32) * np.float32(std)
    f16 = lambda *s, std: f32(*s, std=std).astype(np.float16)
    ones = lambda k: np.ones(k, dtype=np.float32)
    w.add_tensor("token_embd.weight", f32(len(tokens), n, std=1.0))
    for il in range(blocks):
        p = f"blk.{il}."
        w.add_tensor(p + "attn_norm.weight", ones(n))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + name + ".weight", f16(n, n, std=n ** -0.5))
        w.add_tensor(p + "ffn_norm.weight", ones(n))
        w.add_tensor(p + "ffn_gate.weight", f16(ff, n, std=n ** -0.5))
        w.add_tensor(p + "ffn_up.weight", f16(ff, n, std=n ** -0.5))
        w.add_tensor(p + "ffn_down.weight", f16(n, ff, std=ff ** -0.5))
    w.add_tensor("output_norm.weight", ones(n))
    w.add_tensor("output.weight", f32(len(tokens), n, std=n ** -0.5))
    write(w)


def write(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    a = parse_args()
    sys.path.insert(0, a.gguf_py)
    import gguf  # noqa: E402  (from the pinned llama.cpp tree)

    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    mmproj(gguf, os.path.join(a.out, "mmproj.gguf"), a, rng)
    text_model(gguf, os.path.join(a.out, "text.gguf"), a, rng)
    print(f"wrote {a.out}/text.gguf and {a.out}/mmproj.gguf: vision width {a.width}, {a.heads} heads, "
          f"{a.feature_layer or a.blocks - 1} blocks stored, text width {a.text_width}")


if __name__ == "__main__":
    main()
