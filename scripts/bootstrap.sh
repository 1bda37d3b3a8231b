#!/usr/bin/env bash
# Sets up ./.venv on a fresh machine: the pinned requirements, then this package built in place (editable).
# Idempotent: a second run only rebuilds what changed. Used by the README's commands and by .ci/run.
#
#   ZOL2L_SKIP_CUDA=1        build the CPU kernels only
#   TORCH_CUDA_ARCH_LIST     CUDA architectures to compile (needed to build CUDA kernels on a GPU-less machine)
#   ZOL2L_PYTHON             the interpreter that creates the venv (default: python3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ! -x .venv/bin/python ]]; then
  "${ZOL2L_PYTHON:-python3}" -m venv .venv
fi
PY=.venv/bin/python
# pip's own progress is noise here; errors still print.
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q -r requirements.txt
# No build isolation: the extension must compile against the torch just installed, not a fresh download.
MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip install -q --no-build-isolation --no-deps -e .
"$PY" -c 'import torch, zol2l_ext; print("zol2l_ext", zol2l_ext.__version__, "| torch", torch.__version__, "| CUDA kernels:", zol2l_ext.has_cuda_kernels())'
