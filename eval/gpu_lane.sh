#!/usr/bin/env bash
# Issue 6's GPU lane, prepared for a session that is lent a GPU: bench the unquantized, 4-bit and mixed
# 3.25-bit checkpoints of SmolLM2-135M-Instruct with the HF backend on CUDA (and with vLLM when it is
# installed), each against the unquantized one in the same invocation. Not yet run: this task was not lent
# a device while `compress bench` existed.
#
#   1. here (CPU):   COMPRESS_DATA_DIR=../shared/data bash eval/gpu_lane.sh build
#   2. on the GPU:   COMPRESS_DATA_DIR=<data dir> bash eval/gpu_lane.sh bench    (a few minutes)
#
# The GPU machine needs compress's dependencies, gptqmodel among them (for the GPTQ folders), and the three
# folders of step 1 (fp32 is 513 MB, the GPTQ ones ~100 MB each), or the GGUF to build them there.
# Results land in eval/results/gpu-lane/<backend>-<run>/, the device named in bench.md.
set -euo pipefail
RUNS=runs/compare-smollm2
OUT=eval/results/gpu-lane
compress() { python -m compress "$@"; }
case "${1:-}" in
  build)
    [ -d "$RUNS/fp32" ] || compress run --bits 16 --max-windows 8 --out "$RUNS/fp32"
    [ -d "$RUNS/gptq4" ] || compress run --bits 4 --max-windows 8 --out "$RUNS/gptq4"
    [ -d "$RUNS/mixed3.25" ] || compress run --bits mixed --avg-bits 3.25 --bit-choices 2,3,4,8 \
        --scorer sensitivity --max-windows 8 --out "$RUNS/mixed3.25" ;;
  bench)
    backends=(hf)
    python -c "import vllm" 2>/dev/null && backends+=(vllm)
    for backend in "${backends[@]}"; do
      for run in gptq4 mixed3.25; do
        compress bench "$RUNS/$run" --baseline "$RUNS/fp32" --device cuda --backend "$backend" \
            --out "$OUT/$backend-$run"
      done
    done
    echo "wrote $OUT" ;;
  *) echo "usage: bash eval/gpu_lane.sh build|bench" >&2; exit 2 ;;
esac
