#!/usr/bin/env bash
# The GPU check (issue 16): the AudioSet-shaped AST-Base 4-1 experiment in bf16, bench with its
# breakdown at the published shapes of AST, HTS-AT and SSAST, and the demo, on one GPU, in about
# 5 minutes; writes OUT/gpu_check.md (one markdown table per part) and OUT/gpu_check.json.
#
#   bash benchmarks/gpu_check.sh [OUT] [--parts ...]   # default OUT: runs/gpu_check in the repository; an OUT
#                                                      # you give is taken from the folder you run it in
#   bash benchmarks/gpu_check.sh --smoke [OUT]         # the same code on tiny settings on the CPU: a check of
#                                                      # the script before a GPU session (its figures mean nothing)
#
# Needs coarse2fine importable by python3, or by $PYTHON when set (pip install -e . on the GPU machine,
# or PYTHONPATH=src with its dependencies installed). A GPU machine without PyPI access and without soundfile/soxr: download
# their wheels here first (git-ignored; pass .gpu-wheels in the device tool's carry) and the script
# installs them into .gpu-deps and puts src and .gpu-deps on PYTHONPATH:
#
#   pip download --only-binary=:all: --no-deps --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       -d .gpu-wheels soundfile soxr cffi pycparser
#
# Put the table in docs/RESULTS.md with the card and the date.
set -euo pipefail
CALLER="$PWD"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-python3}"  # the Python with torch (and coarse2fine) installed: PYTHON=/path/to/venv/bin/python
absolute() { [[ "$1" == /* ]] && echo "$1" || echo "$CALLER/$1"; }  # OUT as given, from where you ran it
if [[ "${1:-}" == "--smoke" ]]; then
    if [[ -n "${2:-}" ]]; then OUT="$(absolute "$2")"; else OUT=runs/gpu_check_smoke; fi
    exec "$PYTHON" benchmarks/gpu_check.py --smoke --device cpu --out "$OUT" "${@:3}"
fi
if [[ -n "${1:-}" ]]; then OUT="$(absolute "$1")"; else OUT=runs/gpu_check; fi
if compgen -G ".gpu-wheels/*.whl" > /dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target .gpu-deps .gpu-wheels/*.whl
    export PYTHONPATH="$PWD/src:$PWD/.gpu-deps${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device visible to this torch')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" benchmarks/gpu_check.py --device cuda --out "$OUT" "${@:2}"
