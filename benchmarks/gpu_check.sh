#!/usr/bin/env bash
# GPU readiness: LoRA bf16, QLoRA 4-bit, full fine-tuning with FSDP over all GPUs and a 2-process
# NCCL run, a few steps each, through the platform's engine (see benchmarks/gpu_check.py).
# Run from the repository root on a CUDA machine after `make install`; it prints tokens/s, peak
# memory and MFU per path and exits non-zero when a path fails or there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec env OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" "$PYTHON" benchmarks/gpu_check.py "$@"
