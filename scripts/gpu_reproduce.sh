#!/usr/bin/env bash
# `zol2l reproduce` at the paper's scale (--full) on a GPU machine, in one call of under 9 minutes.
#
#   GPU_REPRO_DATA=gpu_data bash scripts/gpu_reproduce.sh            # every experiment
#   GPU_REPRO_EXPERIMENTS="fig2 fig4abc" GPU_REPRO_TUNE=1 GPU_REPRO_TESTS=1 bash scripts/gpu_reproduce.sh
#
# GPU_REPRO_EXT: a zol2l_ext/_C.so with CUDA kernels from an earlier call, to skip the build.
# GPU_REPRO_DATA: a data root in the layout of shared/data (mnist/, cifar10/cifar10_test.npz, models/).
# Steps: build the extension in place with the CUDA kernels (skipped when zol2l_ext/_C*.so already has them), the
# CUDA tests (GPU_REPRO_TESTS=1), `zol2l tune cifar-attack` whose result becomes zol2l_ext/tuned/cifar-attack.json
# (GPU_REPRO_TUNE=1), then each experiment under one deadline (GPU_REPRO_BUDGET_S, default 480 s). Results land in
# runs/gpu_reproduce/<experiment>-full and, packed, in $OUT (the device tool's output folder) with the log, the
# tuning and the built extension (to carry into a later call).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
RES=runs/gpu_reproduce
OUTDIR=${OUT:-$RES/out}
mkdir -p "$RES" "$OUTDIR"
exec > >(tee "$OUTDIR/gpu_reproduce.log") 2>&1
BUDGET_S=${GPU_REPRO_BUDGET_S:-480}
DATA=${GPU_REPRO_DATA:-gpu_data}
START=$SECONDS
left() { local l=$((BUDGET_S - (SECONDS - START))); ((l > $1)) && l=$1; ((l < 1)) && l=1; echo "$l"; }
stage() { printf '\n=== [%3ds] %s\n' "$((SECONDS - START))" "$*"; }
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

stage "GPU"
nvidia-smi -L
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'

# GPU_REPRO_EXT: an extension built by an earlier call (its $OUT/_C.so), carried to skip the build
if [[ -n "${GPU_REPRO_EXT:-}" && -f "${GPU_REPRO_EXT}" ]]; then cp "$GPU_REPRO_EXT" zol2l_ext/_C.so; fi
if python3 -c 'import sys, zol2l_ext.ops as o; sys.exit(0 if o.has_cuda_kernels() else 1)' 2>/dev/null; then
  stage "extension with CUDA kernels already built (carried)"
else
  stage "build (system g++: the image's default compiler made error paths crash in an earlier session)"
  if [[ -z "${CUDA_HOME:-}" ]]; then
    top=$( (timeout 60 nvcc --dryrun x.cu 2>&1 || true) | sed -n 's/^#\$ TOP=//p' | head -n 1)
    [[ -n "$top" ]] && export CUDA_HOME=$(realpath "$top")
  fi
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  unset ZOL2L_SKIP_CUDA
  CC=/usr/bin/gcc CXX=/usr/bin/g++ MAX_JOBS=16 timeout "$(left 240)" python3 setup.py build_ext --inplace --force \
    >"$OUTDIR/build.log" 2>&1 || { tail -n 30 "$OUTDIR/build.log"; exit 1; }
  tail -n 2 "$OUTDIR/build.log"
fi
cp zol2l_ext/_C*.so "$OUTDIR/"

if [[ "${GPU_REPRO_TESTS:-0}" == 1 ]]; then
  stage "CUDA tests (python_tests/ops/test_cuda.py)"
  timeout "$(left 90)" python3 -m pytest -q -x -p no:cacheprovider python_tests/ops/test_cuda.py 2>&1 | tail -n 15
fi

if [[ "${GPU_REPRO_TUNE:-0}" == 1 ]]; then
  stage "zol2l tune cifar-attack --device cuda"
  timeout "$(left 180)" python3 -m zol2l_ext.cli tune cifar-attack --device cuda --data-root "$DATA" \
    --out "$RES/tune-cifar-attack.json" 2>&1 | grep -v "it/s\]" | tail -n 25 &&
    cp "$RES/tune-cifar-attack.json" zol2l_ext/tuned/cifar-attack.json &&
    cp "$RES/tune-cifar-attack.json" "$OUTDIR/"
fi

for exp in ${GPU_REPRO_EXPERIMENTS:-fig2 fig4abc fig3 fig8 fig10 fig11 fig4d fig4e fig9 table1}; do
  stage "zol2l reproduce $exp --full --device cuda"
  timeout "$(left 400)" python3 -m zol2l_ext.cli reproduce "$exp" --full --device cuda --data-root "$DATA" \
    --out "$RES/$exp-full" --no-progress 2>&1 | tail -n 40
  echo "exit ${PIPESTATUS[0]}"
done

stage "pack"
tar czf "$OUTDIR/reproduce_full.tar.gz" -C "$RES" --exclude=out .
ls -la "$OUTDIR"
