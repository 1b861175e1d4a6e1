#!/usr/bin/env bash
# Builds llama.cpp — the optional interop and speed peer — from the PyPI sdist of
# llama-cpp-python (which vendors it) into .cache/llama.cpp/ (ignored by git; never committed):
# the shared libraries, llama-bench, llama-completion, llama-tokenize and llama-perplexity in build/bin/, and the
# sdist's pure-Python binding (llama_cpp/, loaded with LLAMA_CPP_LIB_PATH=build/bin). Prints the
# folder. Does nothing when it is already built.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.3.36
root=.cache/llama.cpp
if [ ! -x "$root/build/bin/llama-bench" ] || [ ! -x "$root/build/bin/llama-perplexity" ]; then
  mkdir -p "$root"
  if [ ! -d "$root/src" ]; then
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" "llama-cpp-python==$version" >&2
    tar xzf "$tmp/llama_cpp_python-$version.tar.gz" -C "$tmp"
    rm -rf "$root/src"
    mv "$tmp/llama_cpp_python-$version" "$root/src"
    rm -rf "$tmp"
  fi
  # GGML_NATIVE: its kernels for this CPU (AVX2 or AVX-512), as a user would build it.
  cmake -S "$root/src/vendor/llama.cpp" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON >&2
  ninja -C "$root/build" -j "${SMELT_BUILD_JOBS:-2}" llama llama-bench llama-completion llama-tokenize llama-perplexity >&2
fi
python3 -c "import diskcache, jinja2" 2>/dev/null || python3 -m pip install --quiet diskcache jinja2 >&2
echo "$root"
