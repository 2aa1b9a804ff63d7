#!/usr/bin/env bash
# One command on a GPU machine: ~50 steps of GPT-2 124M at the real batch shape (B=64 x T=1024,
# 524,288 tokens/step, bf16, torch.compile) on random-token shards; prints tokens/s and MFU and
# records them in BENCHMARKS.md (section pretrain-gpu). Extra arguments go to bench/gpu_check.py,
# e.g. `bash bench/gpu_check.sh --batch 32` if 64 does not fit, or `--dry-run` on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
if [ ! -x "$PY" ]; then make setup; fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
exec "$PY" -m bench.gpu_check "$@"
