#!/usr/bin/env bash
# The GPU check (issue 16): the AudioSet-shaped AST-Base 4-1 experiment in bf16, bench with its
# breakdown at the published shapes of AST, HTS-AT and SSAST, and the demo, on one GPU, in about
# 5 minutes; writes OUT/gpu_check.md (one markdown table per part) and OUT/gpu_check.json.
#
#   bash benchmarks/gpu_check.sh [OUT] [--parts ...]   # default OUT: runs/gpu_check
#   bash benchmarks/gpu_check.sh --smoke [OUT]         # the same code on tiny settings on the CPU: a check of
#                                                      # the script before a GPU session (its figures mean nothing)
#
# Needs coarse2fine importable (pip install -e . on the GPU machine, or PYTHONPATH=src with its
# dependencies installed). A GPU machine without PyPI access and without soundfile/soxr: download
# their wheels here first (git-ignored; pass .gpu-wheels in the device tool's carry) and the script
# installs them into .gpu-deps and puts src and .gpu-deps on PYTHONPATH:
#
#   pip download --only-binary=:all: --no-deps --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       -d .gpu-wheels soundfile soxr cffi pycparser
#
# Put the table in docs/RESULTS.md with the card and the date.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if [[ "${1:-}" == "--smoke" ]]; then
    exec python3 benchmarks/gpu_check.py --smoke --device cpu --out "${2:-runs/gpu_check_smoke}" "${@:3}"
fi
OUT="${1:-runs/gpu_check}"
if compgen -G ".gpu-wheels/*.whl" > /dev/null; then
    python3 -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target .gpu-deps .gpu-wheels/*.whl
    export PYTHONPATH="$PWD/src:$PWD/.gpu-deps${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device visible to this torch')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/gpu_check.py --device cuda --out "$OUT" "${@:2}"
