#!/usr/bin/env bash
# Sets up ./.venv on a fresh machine: the pinned requirements, this package installed editable, and its extension
# built in place. Used by the README's commands and by .ci/run.
#
# Incremental: pip runs only when requirements.txt, pyproject.toml or setup.py changed (it costs seconds even with
# everything present); the extension is built by `setup.py build_ext --inplace`, which keeps its objects in
# build/bootstrap/ (ninja recompiles only the sources and headers that changed, setuptools relinks only then) and leaves
# zol2l_ext/_C.so untouched when nothing changed. A change of the build's configuration (the switches below,
# the compiler, torch) rebuilds everything.
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
mkdir -p build

inputs=$(cat requirements.txt pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [[ ! -x .venv/bin/zol2l || "$(cat build/.bootstrap-pip 2>/dev/null)" != "$inputs" ]]; then
  # pip's own progress is noise here; errors still print.
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -r requirements.txt
  # The Python package only (metadata, the zol2l command, editable); the extension is built below. No build
  # isolation: the extension must compile against the torch just installed, not a fresh download.
  # setuptools' notes about editable installs go to build/pip.log (printed in full when the install fails).
  if ! ZOL2L_SKIP_EXTENSION=1 "$PY" -m pip install -q --no-build-isolation --no-deps -e . >build/pip.log 2>&1; then
    cat build/pip.log
    echo "bootstrap: installing the package failed (log: build/pip.log)" >&2
    exit 1
  fi
  echo "$inputs" >build/.bootstrap-pip
fi

torch_dist=$(cd .venv/lib && ls -d python3*/site-packages/torch-*.dist-info 2>/dev/null || true)
config="skip_cuda=${ZOL2L_SKIP_CUDA:-} arch=${TORCH_CUDA_ARCH_LIST:-} cuda_home=${CUDA_HOME:-} cc=${CC:-} cxx=${CXX:-} $torch_dist"
if [[ "$(cat build/.bootstrap-config 2>/dev/null)" != "$config" ]]; then
  # Neither setuptools nor ninja sees a new configuration in the sources' times: start from no objects.
  rm -rf build/bootstrap
fi
# Objects and module in build/bootstrap/, apart from build/temp.* and build/lib.*, where a `pip install .` from
# this folder builds (with other flags) and would otherwise leave its module to be copied over this one.
# The compiler's lines go to build/build.log (printed in full when the build fails).
if ! MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" setup.py -q build_ext --inplace --build-temp build/bootstrap/temp \
  --build-lib build/bootstrap/lib >build/build.log 2>&1; then
  cat build/build.log
  echo "bootstrap: building the extension failed (log: build/build.log)" >&2
  exit 1
fi
grep -E '^(zol2l_ext: |ninja: no work)' build/build.log || true
echo "$config" >build/.bootstrap-config
"$PY" -c 'import torch, zol2l_ext; print("zol2l_ext", zol2l_ext.__version__, "| torch", torch.__version__, "| CUDA kernels:", zol2l_ext.has_cuda_kernels())'
