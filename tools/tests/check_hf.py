"""End to end: examples/dump_attentions.py runs a small randomly initialised
Hugging Face CLIPVisionModel (built from a config, no download) with
output_attentions=True and writes the .npz; the command-line tool selects
on it with --prefix 1 (CLS first); spec_numpy.py, an independent numpy
implementation of docs/SPEC.md, must give the same tokens. Variants: float16
and compressed dumps, a batch, other sizes and options, and (with Pillow) a
picture, and a whole CLIPModel saved to a folder and loaded with --model.

  python3 check_hf.py TOOL DUMP_SCRIPT WORKDIR

Exit 77 (skipped) when numpy, torch or transformers is missing.
"""

import json
import os
import subprocess
import sys

missing = []
for module in ("numpy", "torch", "transformers"):
    try:
        __import__(module)
    except ImportError:
        missing.append(module)
if missing:
    print("%s not installed for %s: skipped (see docs/cli.md for the install line)" % (", ".join(missing), sys.executable))
    sys.exit(77)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spec_numpy  # noqa: E402

passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAILED:", what)


def run(cmd):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        print("exit %d: %s\n%s%s" % (p.returncode, " ".join(map(str, cmd)), p.stdout, p.stderr))
    return p


def main():
    tool, dump, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    import torch
    import transformers

    print("torch %s, transformers %s, numpy %s" % (torch.__version__, transformers.__version__, np.__version__))
    have_pil = True
    try:
        from PIL import Image
    except ImportError:
        have_pil = False
    photo = os.path.join(work, "photo.png")
    if have_pil:  # a gradient with a disc, 80x60
        y, x = np.mgrid[0:60, 0:80]
        rgb = np.stack([x * 3, y * 4, ((x - 40) ** 2 + (y - 30) ** 2 < 400) * 255], -1).astype(np.uint8)
        Image.fromarray(rgb).save(photo)

    # (dump options, tool options, budget for spec_numpy, layers used, batched)
    cases = [
        ([], [], ("adaptive", 0), None, False),
        (["--fp16", "--compressed", "--seed", "3"], ["--ratio", "0.5", "--layers=-2"], ("ratio", 0.5), [-2], False),
        (["--batch", "2", "--layers", "4", "--heads", "2"], ["--count", "6", "--from", "column"], ("count", 6), None, True),
        (["--image-size", "112", "--patch-size", "16"], ["--count", "20", "--pivots-per-layer", "2"], ("count", 20), None, False),
    ]
    if have_pil:
        cases.append((["--image", photo], ["--ratio", "0.25", "--png", os.path.join(work, "hf.png"), "--image", photo],
                      ("ratio", 0.25), None, False))
        # --model: a whole CLIPModel (text and vision) saved to a folder, as from the hub.
        folder = os.path.join(work, "clip-model")
        config = transformers.CLIPConfig(
            text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             vocab_size=64, max_position_embeddings=8),
            vision_config=dict(image_size=42, patch_size=14, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2), projection_dim=16)
        torch.manual_seed(0)
        transformers.CLIPModel(config).save_pretrained(folder)
        transformers.CLIPImageProcessor(size={"shortest_edge": 42}, crop_size={"height": 42, "width": 42}).save_pretrained(folder)
        cases.append((["--model", folder, "--image", photo], ["--count", "4"], ("count", 4), None, False))
    for n, (dump_args, tool_args, budget, layers, batched) in enumerate(cases):
        out = os.path.join(work, "hf%d.npz" % n)
        source = [] if "--model" in dump_args else ["--random-config"]
        p = run([sys.executable, dump, "-o", out] + source + dump_args)
        check(p.returncode == 0 and ("run:  freepruner %s --prefix 1" % out) in p.stdout,
              "dump %s: %s%s" % (dump_args, p.stdout, p.stderr))
        if p.returncode != 0:
            continue
        with np.load(out) as z:
            arrays = [z["arr_%d" % l] for l in range(len(z.files))]
        maps = np.stack(arrays, axis=-4)  # [L,H,N,N] or [B,L,H,N,N]
        if not batched:
            maps = maps[None]
        L = maps.shape[1]
        used = list(range(L)) if layers is None else [l % L for l in layers]
        k = 2 if "--pivots-per-layer" in tool_args else 0
        direction = "column" if "column" in tool_args else "row"
        want = []
        for item in maps:
            got = spec_numpy.select(item[used].astype(np.float64), 1, 0, budget, k, 1.5, direction)
            N = item.shape[-1]
            want.append({"tokens": N, "candidates": N - 1, "kept": got[0], "pivotal": got[1], "complementary": got[2]})
        p = run([tool, out, "--prefix", "1", "--json"] + tool_args)
        answer = json.loads(p.stdout) if p.returncode == 0 else None
        expected = want if batched else want[0]
        check(answer == expected, "case %d: %s\n  got  %s\n  want %s" % (n, tool_args, answer, expected))
        print("case %d: %d layers x %d heads x %d tokens (%s), %s: kept %s" % (
            n, L, maps.shape[2], maps.shape[-1], arrays[0].dtype, " ".join(tool_args) or "adaptive",
            [len(w["kept"]) for w in want]))
    if have_pil:
        check(os.path.exists(os.path.join(work, "hf.png")), "the picture was not written")
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
