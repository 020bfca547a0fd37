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
# fp32: every case, compiled VGG-8 and MLP-8 included.
timeout 200 python3 -m bench --device cuda --reps 10 --compile vgg8 mlp8 --no-scaling --json "$out/cuda_fp32.json"
# bf16 autocast: the same cases without compile, plus the logits' difference to fp32.
timeout 90 python3 -m bench --device cuda --reps 10 --amp bf16 --compile --no-scaling --no-lif --json "$out/cuda_bf16.json"
echo "results in $out/"
