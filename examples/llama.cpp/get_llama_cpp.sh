#!/usr/bin/env bash
# Builds the llama.cpp that the tests prove (llama + mtmd, CPU, shared
# libraries) from the source distribution of llama-cpp-python on PyPI, pinned
# by version and SHA-256, and lays it out as that package installs it:
#   PREFIX/include  llama.h ggml*.h gguf.h mtmd.h mtmd-helper.h
#   PREFIX/lib      libllama, libmtmd, libggml*
#   PREFIX/src      the llama.cpp source tree (gguf-py, test image)
# The project's CMake finds PREFIX = build-llama.cpp by itself, or takes
# -DFREEPRUNER_LLAMA_CPP_ROOT=PREFIX (any llama-cpp-python install's llama_cpp/
# folder also fits, with FREEPRUNER_LLAMA_CPP_SRC for its sources).
#
#   examples/llama.cpp/get_llama_cpp.sh [PREFIX]      (default: build-llama.cpp)
#
# Needs cmake, a C++ compiler and python3 with pip or venv. Exit 75: PyPI
# could not be reached.
set -euo pipefail

version=0.3.36
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
commit=0c1e57098bba43ac29e6e3b677cdceebdd22334f   # the llama.cpp it vendors
root="$(cd "$(dirname "$0")/../.." && pwd)"
prefix="$(realpath -m "${1:-$root/build-llama.cpp}")"
stamp="$prefix/.llama-cpp-python-$version"
if [ -f "$stamp" ]; then
  echo "llama.cpp from llama-cpp-python $version is already in $prefix"
  exit 0
fi
mkdir -p "$prefix/download"

pip=(python3 -m pip)
if ! python3 -m pip --version >/dev/null 2>&1; then
  python3 -m venv "$prefix/venv"
  pip=("$prefix/venv/bin/python" -m pip)
fi
sdist="$prefix/download/llama_cpp_python-$version.tar.gz"
if [ ! -f "$sdist" ] || ! echo "$sha256  $sdist" | sha256sum -c --quiet - 2>/dev/null; then
  rm -f "$sdist"
  if ! "${pip[@]}" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
      -d "$prefix/download" "llama-cpp-python==$version"; then
    echo "get_llama_cpp.sh: cannot download llama-cpp-python==$version from PyPI" >&2
    exit 75
  fi
fi
echo "$sha256  $sdist" | sha256sum -c --quiet - || {
  echo "get_llama_cpp.sh: $sdist does not have the pinned SHA-256" >&2
  exit 1
}

vendored="$(tar -xzOf "$sdist" "llama_cpp_python-$version/.git/modules/vendor/llama.cpp/HEAD")"
if [ "$vendored" != "$commit" ]; then
  echo "get_llama_cpp.sh: the package vendors llama.cpp $vendored, not $commit" >&2
  exit 1
fi

rm -rf "$prefix/src" "$prefix/build" "$prefix/include" "$prefix/lib"
mkdir -p "$prefix/src"
tar -xzf "$sdist" -C "$prefix/src" --strip-components=3 "llama_cpp_python-$version/vendor/llama.cpp"
src="$prefix/src"
rm -f "$src/.git"   # a submodule pointer into the package's own repository

cmake -S "$src" -B "$prefix/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_CURL=OFF >"$prefix/configure.log"
cmake --build "$prefix/build" -j"$(nproc)" --target llama mtmd >"$prefix/build.log"

mkdir -p "$prefix/include" "$prefix/lib"
cp "$src"/include/llama.h "$src"/ggml/include/ggml*.h "$src"/ggml/include/gguf.h \
   "$src"/tools/mtmd/mtmd.h "$src"/tools/mtmd/mtmd-helper.h "$prefix/include/"
cp -P "$prefix"/build/bin/lib*.so* "$prefix/lib/"
touch "$stamp"
echo "llama.cpp $commit (llama-cpp-python $version): $prefix"
