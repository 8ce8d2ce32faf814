#!/usr/bin/env bash
# The CUDA path of training, on a machine with an NVIDIA GPU and torch already installed (CI
# has none): a small set of phone-like photos, cpu-small's recipe on the GPU (AMP, the decode
# cache, channels_last), export to ONNX and evaluation. Prints what it ran on and how fast.
#   bash scripts/gpu-check.sh [OUT_DIR] [ITEMS]
set -euo pipefail
out=${1:-/tmp/touchstone-gpu-check}
items=${2:-240}
export NO_ALBUMENTATIONS_UPDATE=1 MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1
touchstone() { python3 -c 'import sys; from cli import app; sys.argv[0] = "touchstone"; app()' "$@"; }
rm -rf "$out"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
time touchstone data synth --config configs/synthetic-phone.yaml --items "$items" --frame 2016x1512 --out "$out/data"
time touchstone train --config configs/cpu-small.yaml --data "$out/data/manifest.csv" --out "$out/run" \
  --set tracking.enabled=false --set data.workers=8 --set data.batch_size=64
time touchstone export --run "$out/run" --data "$out/data/manifest.csv" --out "$out/model"
time touchstone evaluate --model "$out/model" --data "$out/data/manifest.csv" --split test --out "$out/evaluation"
