#!/usr/bin/env python3
"""Dumps the attention maps of a Hugging Face vision tower into the .npz that
the freepruner command-line tool reads (docs/cli.md): one array per encoder
layer, in order (arr_0, arr_1, ...), each [heads, N, N] for one image or
[batch, heads, N, N] for several, float32 (or float16 with --fp16).

  # a real model (its weights must be downloaded or cached) and a photo:
  python3 examples/dump_attentions.py --model openai/clip-vit-large-patch14-336 --image photo.jpg -o maps.npz
  # a small CLIP vision tower with random weights, built from a config (no download):
  python3 examples/dump_attentions.py --random-config -o maps.npz

It prints the freepruner command to run on the file. Needs torch, numpy and
transformers (and Pillow for --image).
"""

import argparse
import sys

try:
    import numpy as np
    import torch
    import transformers
except ImportError as e:
    sys.exit("dump_attentions.py needs numpy, torch and transformers (%s); see docs/cli.md" % e)


def load_tower(args):
    """The vision tower and its (image size, patch size)."""
    if args.random_config:
        config = transformers.CLIPVisionConfig(
            image_size=args.image_size, patch_size=args.patch_size, num_hidden_layers=args.layers,
            num_attention_heads=args.heads, hidden_size=args.hidden, intermediate_size=4 * args.hidden)
        torch.manual_seed(args.seed)
        model = transformers.CLIPVisionModel(config)
    else:
        try:  # maps need the eager attention: sdpa and flash return none
            model = transformers.AutoModel.from_pretrained(args.model, attn_implementation="eager")
        except TypeError:  # transformers before 4.36
            model = transformers.AutoModel.from_pretrained(args.model)
    # CLIPModel / SiglipModel / LLaVA hold the tower; a vision model is one.
    for name in ("vision_tower", "vision_model"):
        tower = getattr(model, name, None)
        if isinstance(tower, torch.nn.Module) and not isinstance(model, transformers.CLIPVisionModel):
            model = tower
            break
    config = getattr(model, "config", None)
    config = getattr(config, "vision_config", config)
    return model.eval(), int(config.image_size), int(config.patch_size)


def pixels(args, image_size):
    """[batch, 3, S, S]: the images as the model's processor prepares them, or seeded noise."""
    if not args.image:
        generator = torch.Generator().manual_seed(args.seed)
        return torch.randn(args.batch, 3, image_size, image_size, generator=generator)
    from PIL import Image

    images = [Image.open(path).convert("RGB") for path in args.image]
    if args.random_config:  # CLIP's preprocessing: shortest side to S, center crop, normalize
        processor = transformers.CLIPImageProcessor(size={"shortest_edge": image_size},
                                                    crop_size={"height": image_size, "width": image_size})
    else:
        processor = transformers.AutoImageProcessor.from_pretrained(args.model)
    return processor(images=images, return_tensors="pt")["pixel_values"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Hugging Face model id or folder (CLIP, SigLIP, ... or a model holding one)")
    source.add_argument("--random-config", action="store_true",
                        help="a CLIPVisionModel with random weights from the sizes below (no download)")
    ap.add_argument("--image", nargs="+", help="picture(s); default: seeded random pixels")
    ap.add_argument("--batch", type=int, default=1, help="random images to make when no --image is given [1]")
    ap.add_argument("--image-size", type=int, default=56, help="--random-config: image side in pixels [56]")
    ap.add_argument("--patch-size", type=int, default=14, help="--random-config: patch side [14]")
    ap.add_argument("--layers", type=int, default=3, help="--random-config: encoder layers [3]")
    ap.add_argument("--heads", type=int, default=4, help="--random-config: attention heads [4]")
    ap.add_argument("--hidden", type=int, default=32, help="--random-config: hidden size [32]")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights and pixels [0]")
    ap.add_argument("--fp16", action="store_true", help="save float16 maps (half the size)")
    ap.add_argument("--compressed", action="store_true", help="numpy.savez_compressed instead of numpy.savez")
    ap.add_argument("-o", "--output", required=True, help="the .npz to write")
    args = ap.parse_args()

    tower, image_size, patch_size = load_tower(args)
    x = pixels(args, image_size)
    with torch.no_grad():
        out = tower(pixel_values=x, output_attentions=True)
    attentions = out.attentions
    if not attentions or attentions[0] is None:
        sys.exit("dump_attentions.py: the model returned no attention maps (it needs eager attention)")
    dtype = np.float16 if args.fp16 else np.float32
    layers = [a.detach().float().cpu().numpy().astype(dtype) for a in attentions]  # each [B, H, N, N]
    if layers[0].shape[0] == 1:
        layers = [a[0] for a in layers]  # one image: [H, N, N] per layer
    (np.savez_compressed if args.compressed else np.savez)(args.output, *layers)

    tokens = layers[0].shape[-1]
    grid = image_size // patch_size
    extra = tokens - grid * grid  # CLS (and register) tokens: first in Hugging Face models
    print("wrote %s: %d layers of %s %s (%d tokens: %d extra + %dx%d patches)"
          % (args.output, len(layers), list(layers[0].shape), np.dtype(dtype).name, tokens, extra, grid, grid))
    command = "freepruner %s --prefix %d --ratio 0.5" % (args.output, extra)
    picture = "--png %s" % (args.output.rsplit(".", 1)[0] + ".png")
    if args.image and len(args.image) == 1:
        picture += " --image %s" % args.image[0]
    print("run:  %s %s     (the tool is build/tools/freepruner after a build)" % (command, picture))
    print("      add --layers=-2 to use only the penultimate layer, as LLaVA does")


if __name__ == "__main__":
    main()
