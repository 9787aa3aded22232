#!/usr/bin/env python3
"""freepruner from Python with a Hugging Face CLIP vision tower, two ways:

1. output_attentions=True: select on the returned maps, gather the kept rows
   of the feature layer's hidden states (what LLaVA hands its projector).
2. Forward hooks, as a serving engine's model file would add them: the
   encoder runs as in serving, without output_attentions, and hooks on the
   chosen blocks' q_proj and k_proj keep their queries and keys; select_qk
   selects from them without forming the maps (fused / flash attention).

The tower is built from a config with random weights (no download). The
default is a small tower; --clip-336 gives CLIP ViT-L/14-336's shapes (577
tokens, 24 layers, 16 heads; slow on a CPU, mostly building the tower). --check asserts that
both ways keep the same tokens (up to near-ties).

    pip install .            # the freepruner package (docs/python.md)
    python3 examples/python_transformers.py [--clip-336] [--check]
"""
import argparse
import sys

try:
    import torch
    import transformers
except ImportError as e:
    sys.exit(f"python_transformers.py needs torch and transformers ({e})")

import freepruner as fp


def build_tower(clip_336):
    if clip_336:
        config = transformers.CLIPVisionConfig(image_size=336, patch_size=14, num_hidden_layers=24,
                                               num_attention_heads=16, hidden_size=1024, intermediate_size=4096)
    else:
        config = transformers.CLIPVisionConfig(image_size=112, patch_size=14, num_hidden_layers=6,
                                               num_attention_heads=4, hidden_size=64, intermediate_size=256)
    torch.manual_seed(0)
    try:  # the maps need the eager attention (sdpa returns none)
        model = transformers.CLIPVisionModel(config, attn_implementation="eager")
    except TypeError:
        model = transformers.CLIPVisionModel(config)
    return model.eval(), config


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip-336", action="store_true", help="CLIP ViT-L/14-336's shapes instead of a small tower")
    parser.add_argument("--ratio", type=float, default=0.5, help="share of the patches to keep (default 0.5)")
    parser.add_argument("--check", action="store_true", help="assert that both ways keep the same tokens (up to near-ties)")
    args = parser.parse_args()

    model, config = build_tower(args.clip_336)
    # LLaVA-1.5's settings: the projector reads block L-2 (hidden_states[-2]); pivots from
    # blocks L-3 and L-2, complementary tokens from L-2, CLS first.
    preset = fp.presets.by_name("llava-1.5")
    depth = config.num_hidden_layers
    feature_layer = preset.feature_layer - preset.encoder_layers + depth
    layers = [feature_layer - 1, feature_layer]
    budget = fp.budget.ratio(args.ratio)
    tokens = (config.image_size // config.patch_size) ** 2 + 1
    print(f"CLIP tower: {depth} layers, {config.num_attention_heads} heads, {tokens} tokens; "
          f"select on blocks {layers}, keep {fp.kept_tokens(budget, tokens, prefix_tokens=1)} patches")

    pixels = torch.randn(1, 3, config.image_size, config.image_size)

    # 1. output_attentions=True: a tuple of [batch, heads, N, N], one per block.
    with torch.no_grad():
        out = model(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
    maps = [out.attentions[l][0] for l in layers]                 # per-layer [heads, N, N], read in place
    kept = fp.select(maps, budget, **preset.options)
    features = out.hidden_states[feature_layer + 1][0]            # block l's output is hidden_states[l + 1]
    pruned = features[torch.from_numpy(kept.indices).long()]      # [kept, hidden] for the projector
    print(f"output_attentions: kept {len(kept)} of {tokens - 1} patches ({len(kept.pivotal)} pivotal, "
          f"{len(kept.complementary)} complementary); features {tuple(features.shape)} -> {tuple(pruned.shape)}")

    # 2. Forward hooks, as an engine's model file adds them: the forward runs as in serving
    #    (no output_attentions; fused or flash attention never forms the maps), and the hooks
    #    keep the chosen blocks' queries and keys, [batch, N, heads * dim] from q_proj and k_proj.
    captured_q, captured_k, hooks = {}, {}, []

    def keep(store, l):
        def hook(module, inputs, output):
            store[l] = output[0].reshape(output.shape[1], config.num_attention_heads, -1)  # [N, heads, dim]
        return hook

    for l in layers:
        attn = model.vision_model.encoder.layers[l].self_attn
        hooks.append(attn.q_proj.register_forward_hook(keep(captured_q, l)))
        hooks.append(attn.k_proj.register_forward_hook(keep(captured_k, l)))
    with torch.no_grad():
        hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states
    for h in hooks:
        h.remove()
    # CLIP's attention is softmax(q k^T / sqrt(dim)) of the unscaled q_proj output: select_qk's default scale.
    from_qk = fp.select_qk([captured_q[l] for l in layers], [captured_k[l] for l in layers], budget,
                           layout="tokens_major", **preset.options)
    pruned_qk = hidden[feature_layer + 1][0][torch.from_numpy(from_qk.indices).long()]
    shared = len(set(from_qk.indices.tolist()) & set(kept.indices.tolist()))
    print(f"hooks (Q/K, no maps formed): kept {len(from_qk)}, {shared} of them the same as from the maps; "
          f"features -> {tuple(pruned_qk.shape)}")
    if args.check:
        assert len(from_qk) == len(kept) and pruned_qk.shape == pruned.shape
        # Q/K recomputes the softmax in float: the same tokens except where two scores tie to ~1e-6.
        assert shared >= len(kept) - 2, (shared, len(kept))
        print("check: ok")


if __name__ == "__main__":
    main()
