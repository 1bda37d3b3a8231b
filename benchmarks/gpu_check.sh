#!/usr/bin/env bash
# One-shot check on a fresh GPU machine (python3, torch+CUDA, nvcc, ninja and pytest preinstalled; no
# network, so nothing is downloaded): build the extension in place with the CUDA kernels, run the CUDA tests,
# run the CUDA kernel benchmark. Everything lands in $OUT (or benchmarks/results/gpu_check/ when OUT is
# unset): nvidia-smi.txt, build.log, pytest_cuda.log, bench_cuda.log, ops_cuda.json.
#
#   bash benchmarks/gpu_check.sh            # from anywhere; works in the repository root
#   GPU_CHECK_SKIP_BUILD=1 bash benchmarks/gpu_check.sh   # rerun on a warm machine, reusing the built _C.so
#
# Every stage runs under `timeout`, from one deadline, so the whole script ends within 8 minutes. A failed
# build stops the script; failed tests do not stop the benchmark, but make the exit status non-zero.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
RES=${OUT:-$ROOT/benchmarks/results/gpu_check}
mkdir -p "$RES"

BUDGET_S=${GPU_CHECK_BUDGET_S:-450}  # under 8 minutes, with room for the last nvidia-smi
START=$SECONDS
left() {  # seconds left before the deadline, capped at $1
  local l=$((BUDGET_S - (SECONDS - START)))
  ((l > $1)) && l=$1
  ((l < 1)) && l=1
  echo "$l"
}
stage() { printf '\n=== [%3ds] %s\n' "$((SECONDS - START))" "$*"; }

stage "GPU"
timeout 20 nvidia-smi -L 2>&1 | tee "$RES/nvidia-smi.txt" || echo "nvidia-smi -L failed" | tee -a "$RES/nvidia-smi.txt"

# CUDA_HOME: the toolkit root as nvcc itself reports it (`#$ TOP=...` in --dryrun), since the nvcc on PATH may
# be a wrapper outside the toolkit.
if [[ -z "${CUDA_HOME:-}" ]]; then
  top=$( (timeout 60 nvcc --dryrun x.cu 2>&1 || true) | sed -n 's/^#\$ TOP=//p' | head -n 1)
  if [[ -n "$top" ]]; then
    CUDA_HOME=$(realpath "$top")
    export CUDA_HOME
  fi
fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16}
unset ZOL2L_SKIP_CUDA
{
  echo "CUDA_HOME=${CUDA_HOME:-<unset>} TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
  python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  timeout 20 nvcc --version | tail -n 2 || true
} 2>&1 | tee "$RES/build.log"

if [[ "${GPU_CHECK_SKIP_BUILD:-0}" == 1 && -n "$(ls zol2l_ext/_C*.so 2>/dev/null)" ]]; then
  stage "build skipped (GPU_CHECK_SKIP_BUILD=1, reusing zol2l_ext/_C*.so)"
else
  stage "build (python3 setup.py build_ext --inplace --force)"
  # --force: a _C.so left from another torch (or a CPU-only build) must not be reused.
  set +e
  timeout "$(left 300)" python3 setup.py build_ext --inplace --force 2>&1 | tee -a "$RES/build.log"
  rc_build=${PIPESTATUS[0]}
  set -e
  if ((rc_build != 0)); then
    stage "build FAILED (exit $rc_build; 124 = timed out); see $RES/build.log"
    exit "$rc_build"
  fi
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
python3 -c 'import torch, zol2l_ext, sys; print("zol2l_ext from", zol2l_ext.__file__); sys.exit(0 if torch.cuda.is_available() else "torch sees no GPU")'

stage "CUDA tests (python3 -m pytest -q python_tests -k cuda)"
set +e
timeout "$(left 150)" python3 -m pytest -q python_tests -k cuda 2>&1 | tee "$RES/pytest_cuda.log"
rc_tests=${PIPESTATUS[0]}
set -e
case $rc_tests in
  0) ;;
  5) echo "WARNING: pytest selected no test with 'cuda' in its name" ;;
  124) echo "CUDA tests TIMED OUT" ;;
  *) echo "CUDA tests FAILED (pytest exit $rc_tests)" ;;
esac

stage "CUDA benchmark (python3 benchmarks/bench_ops.py --device cuda)"
set +e
timeout "$(left 240)" python3 benchmarks/bench_ops.py --device cuda --out "$RES/ops_cuda.json" 2>&1 | tee "$RES/bench_cuda.log"
rc_bench=${PIPESTATUS[0]}
set -e

stage "done: tests $rc_tests, benchmark $rc_bench; results in $RES"
timeout 20 nvidia-smi -L || true
((rc_tests == 0 && rc_bench == 0))
