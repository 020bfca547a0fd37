#!/usr/bin/env bash
# Run the issue-5 benchmark on a CUDA device and print its tables (about 5 minutes on one GPU).
# Usage, from the repository root of a checkout:  bash bench/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-gpu}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__)
PY
# fp32: every case, peak memory, the eager-before column, LIF variants, compiled VGG-8 (~3.5 min).
timeout 210 python3 -m bench --device cuda --reps 10 --before --compile vgg8 --no-scaling --json "$out/cuda_fp32.json"
# bf16 autocast: VGG-8 and MLP-8 without compile, plus the logits' difference to fp32 (~1 min).
timeout 80 python3 -m bench --device cuda --reps 10 --amp bf16 --cases vgg8 mlp8 --compile --no-memory \
    --no-scaling --no-lif --json "$out/cuda_bf16.json"
echo "results in $out/"
