#!/usr/bin/env python3
"""Writes the seed corpus of freepruner_fuzz_files (fuzz/corpus_files/):
.npy and .npz files as numpy itself writes them, and small images (PNG,
JPEG, BMP, PGM/PPM) as Pillow writes them. Every seed is under 4096 bytes,
the fuzzing run's input limit.

    python3 fuzz/make_files_corpus.py fuzz/corpus_files
"""
import io
import os
import sys

import numpy as np


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus_files")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1)
    maps = rng.random((2, 2, 5, 5))
    maps /= maps.sum(axis=-1, keepdims=True)
    seeds = {}

    def npy(array, version=None):
        b = io.BytesIO()
        if version is None:
            np.save(b, array)
        else:
            np.lib.format.write_array(b, array, version=version)
        return b.getvalue()

    def npz(compressed, *arrays, **named):
        b = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(b, *arrays, **named)
        return b.getvalue()

    seeds["f4.npy"] = npy(maps.astype("<f4"))
    seeds["f2.npy"] = npy(maps.astype("<f2"))
    seeds["f8_be.npy"] = npy(maps.astype(">f8")[0])
    seeds["v2.npy"] = npy(maps[0, 0].astype("<f4"), (2, 0))
    seeds["v3.npy"] = npy(maps[0, 0].astype("<f4"), (3, 0))
    seeds["batch.npy"] = npy(maps[None, :, :, :3, :3].astype("<f2"))
    seeds["savez.npz"] = npz(False, *maps.astype("<f4"))
    seeds["savez_compressed.npz"] = npz(True, *maps.astype("<f4"))
    seeds["keywords.npz"] = npz(False, first=maps[0, 0].astype("<f2"), second=maps[1, 0].astype("<f2"))
    seeds["compressed_f8.npz"] = npz(True, maps[0].astype("<f8"))

    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        pixels = (rng.random((6, 5, 3)) * 255).astype(np.uint8)
        picture = Image.fromarray(pixels, "RGB")
        for name, fmt, mode, opts in [("rgb.png", "PNG", "RGB", {}), ("grey.png", "PNG", "L", {}),
                                      ("interlaced.png", "PNG", "RGB", {"interlace": 1}),
                                      ("palette.png", "PNG", "P", {}), ("rgba.png", "PNG", "RGBA", {}),
                                      ("baseline.jpg", "JPEG", "RGB", {"quality": 50}),
                                      ("progressive.jpg", "JPEG", "RGB", {"progressive": True}),
                                      ("grey.jpg", "JPEG", "L", {}), ("rgb.bmp", "BMP", "RGB", {}),
                                      ("palette.bmp", "BMP", "P", {}), ("rgb.ppm", "PPM", "RGB", {}),
                                      ("grey.pgm", "PPM", "L", {})]:
            b = io.BytesIO()
            picture.convert(mode).save(b, fmt, **opts)
            seeds[name] = b.getvalue()

    for name, data in seeds.items():
        assert len(data) <= 4096, (name, len(data))
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds in {out}")


if __name__ == "__main__":
    main()
