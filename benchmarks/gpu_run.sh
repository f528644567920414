#!/usr/bin/env bash
# The GPU half of the benchmarks in one call (for a lent GPU machine without internet): the loss
# path chunked vs plain at the Qwen2.5-0.5B width, then the bf16 step check. Needs torch,
# transformers and peft on the machine; pydantic and its dependencies are installed from wheels
# carried in .cache/gpu-wheels (see README.md). Outputs go to $OUT (default: benchmarks/logs/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/logs/gpu}"
mkdir -p "$OUT"
if ! python -c "import pydantic" 2>/dev/null; then
  pip install --quiet --no-index --no-deps --target /tmp/unisd-site .cache/gpu-wheels/*.whl
  export PYTHONPATH="/tmp/unisd-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python benchmarks/loss_path.py --device cuda --hidden 896 --vocab 151936 262144 --star-vocab 151936 \
  --chunk-sizes 0 1024 --iterations 10 --repeats 1 2>&1 | tee "$OUT/loss_path.txt"
python benchmarks/gpu_check.py --batches 8 16 2>&1 | tee "$OUT/gpu_check.txt"
