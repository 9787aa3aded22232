#!/usr/bin/env python3
"""select's share of a CLIP-L image encode inside llama.cpp, per route.

Makes a random-weight LLaVA-1.5 pair at CLIP ViT-L/14-336 width (1024, 16
heads, 23 blocks stored, a 4096-wide MLP projector), then runs
examples/llama.cpp's llava_prune once per route with --repeat: the plain
encode, the encode with the capture and select alternate in that one run, on
the same threads. With --write, the table replaces the llama.cpp section of
docs/performance.md (bench/report.py keeps that section).

  bench/llama_cpp_share.py [--build build] [--threads 2] [--repeat 5] [--write]
"""
import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = "<!-- llama.cpp: written by bench/llama_cpp_share.py -->"
END = "<!-- end of the llama.cpp section -->"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--llama-src", default=os.path.join(ROOT, "build-llama.cpp", "src"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--budget", default="288")
    ap.add_argument("--write", action="store_true", help="update docs/performance.md")
    a = ap.parse_args()

    exe = os.path.join(a.build, "examples", "llama.cpp", "freepruner_llava_prune")
    if not os.path.exists(exe):
        sys.exit(f"{exe} not found: build the project with llama.cpp (examples/llama.cpp/get_llama_cpp.sh)")
    models = os.path.join(a.build, "bench-llama.cpp", "clip-l")
    if not os.path.exists(os.path.join(models, "mmproj.gguf")):
        subprocess.run([sys.executable, os.path.join(ROOT, "examples", "llama.cpp", "make_tiny_llava.py"), "--gguf-py",
                        os.path.join(a.llama_src, "gguf-py"), "-o", models, "--clip-l", "--text-width", "4096"],
                       check=True)
    image = os.path.join(a.llama_src, "tools", "mtmd", "test-1.jpeg")
    rows = []
    for route in ("qk", "maps"):
        out = os.path.join(a.build, "bench-llama.cpp", f"{route}.json")
        subprocess.run([exe, "-m", os.path.join(models, "text.gguf"), "--mmproj", os.path.join(models, "mmproj.gguf"),
                        "--image", image, "--route", route, "--budget", a.budget, "-t", str(a.threads), "-n", "1",
                        "--repeat", str(a.repeat), "--json", out], check=True)
        with open(out) as f:
            r = json.load(f)
        enc, cap, sel = r["bench_encode_ms"], r["bench_capture_ms"], r["bench_select_ms"]
        name = "Q/K (flash attention on)" if route == "qk" else "maps (flash attention off)"
        rows.append(f"| {name} | {enc:.0f} | {cap:.0f} ({100 * (cap - enc) / enc:+.1f} %) | {sel:.2f} | "
                    f"{100 * sel / enc:.2f} % |")
    table = "\n".join([
        "| route | image encode (ms) | encode with the capture (ms) | select (ms) | select / encode |",
        "|---|---:|---:|---:|---:|", *rows])
    section = f"""{BEGIN}
## Inside llama.cpp

select's cost beside llama.cpp's own image encode (`examples/llama.cpp`,
`bench/llama_cpp_share.py`): a random-weight LLaVA-1.5 mmproj at CLIP
ViT-L/14-336 width (1024, 16 heads, 22 blocks run, float16, MLP projector to
4096), one image, budget {a.budget}, the encoder and select on the same {a.threads}
threads (the Q/K route's heads as `executor::threads` tasks; the maps route on
one thread) in the same process, medians of {a.repeat} encodes per
route, the plain and the captured encode alternating in one run. "With the capture" adds the copies of
the captured tensors and the graph splits the eval callback asks for.

{table}
{END}
"""
    print(section)
    if a.write:
        path = os.path.join(ROOT, "docs", "performance.md")
        with open(path) as f:
            text = f.read()
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END) + "\n?", "", text, flags=re.S).rstrip("\n")
        with open(path, "w") as f:
            f.write(text + "\n\n" + section)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
