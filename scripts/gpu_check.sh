#!/usr/bin/env bash
# The GPU check: AMP training steps of the paper-size R50 model, DDP with 2 processes on one GPU,
# frames/s of R50 and ConvNeXt-B inference at 480x640 with 1,196 classes, peak GPU memory, and the
# same random-weight outputs on CPU and GPU; all in one JSON (default gpu_check.json).
# Needs what `make setup` installs with a CUDA torch build, no network; about 5 minutes on one GPU
# (stopped at 8). Without a CUDA device it runs the CPU parts and says "no CUDA device".
#   scripts/gpu_check.sh [OUT.json] [extra `clipvis bench gpu` options]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_check.json}
shift || true
export HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true DVC_NO_ANALYTICS=1
python=${PYTHON:-$(test -x .venv/bin/python && echo .venv/bin/python || echo python3)}
timeout --signal=INT --kill-after=20 480 "$python" -m clipvis bench gpu --out "$out" "$@"
echo "gpu check written to $out"
