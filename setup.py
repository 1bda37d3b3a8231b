"""Builds zol2l_ext._C: the CPU kernels always, the CUDA kernels wherever torch has CUDA and nvcc exists.

Package metadata and dependencies are in pyproject.toml.

Environment switches:
  ZOL2L_SKIP_CUDA=1      build the CPU kernels only (fast local iteration)
  ZOL2L_SKIP_EXTENSION=1 install the Python package without the extension; scripts/bootstrap.sh then builds it
                         with `setup.py build_ext --inplace`, whose objects stay in build/ so that a rebuild
                         compiles only what changed (pip builds in a fresh temporary folder every time)
  TORCH_CUDA_ARCH_LIST   CUDA architectures to compile for (for example "9.0"), read by torch's cpp_extension;
                         without it and without a visible GPU, the CUDA kernels are skipped
  CUDA_HOME              the CUDA toolkit root; found from `nvcc --dryrun` when unset
"""
import filecmp
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup


def _toolkit_root_from_nvcc():
    # An nvcc on PATH may be a wrapper script outside the toolkit, from which cpp_extension would guess a
    # wrong CUDA_HOME; nvcc itself reports the real root as TOP.
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--dryrun", "x.cu"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.MULTILINE)
    return os.path.realpath(m.group(1).strip()) if m else None


if "CUDA_HOME" not in os.environ and os.environ.get("ZOL2L_SKIP_CUDA") != "1":
    root = _toolkit_root_from_nvcc()
    if root:
        os.environ["CUDA_HOME"] = root

import torch  # noqa: E402  (after CUDA_HOME is fixed: cpp_extension reads it at import)
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _want_cuda():
    if os.environ.get("ZOL2L_SKIP_CUDA") == "1":
        return False
    if torch.version.cuda is None or CUDA_HOME is None:
        return False
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # With no GPU to detect, cpp_extension would compile for every architecture the toolkit knows
        # (tens of minutes on a small machine): ask for an explicit list instead.
        print("zol2l_ext: no GPU visible and TORCH_CUDA_ARCH_LIST unset: skipping the CUDA kernels "
              '(set TORCH_CUDA_ARCH_LIST, for example "9.0", to compile them)', flush=True)
        return False
    return True


def _extra_cuda_includes():
    # The toolkit may lack the cuBLAS/cuSPARSE headers that ATen's CUDA headers include; torch's nvidia
    # wheels ship them.
    dirs = []
    for entry in sys.path:
        for sub in ("nvidia/cu13/include", "nvidia/cuda_runtime/include", "nvidia/cublas/include",
                    "nvidia/cusparse/include"):
            d = os.path.join(entry, sub)
            if os.path.isdir(d) and d not in dirs:
                dirs.append(d)
    return dirs


def _extension():
    csrc = os.path.join(HERE, "csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
    sources = [os.path.relpath(s, HERE) for s in sources]
    # setuptools relinks only when a source or a listed dependency is newer than the built module, and ninja
    # recompiles only the objects whose source or included header changed: the headers must be listed here or
    # a header-only change would leave the module as it was.
    headers = sorted(os.path.relpath(h, HERE) for h in glob.glob(os.path.join(csrc, "**", "*.h"), recursive=True)
                     + glob.glob(os.path.join(csrc, "**", "*.cuh"), recursive=True))
    # No -std here: cpp_extension passes the standard that the installed torch needs (C++20 for 2.14).
    # -fno-trapping-math lets GCC if-convert the float clamps of exp_approx, so the tile loops vectorize;
    # -fno-math-errno lets sqrtf inline (no errno side effect), so the normal-fill loops vectorize.
    # -fopenmp: ATen's at::parallel_for is an inline `#pragma omp parallel` compiled into this extension;
    # without the flag every CPU kernel silently runs on one thread.
    cxx = ["-O3", "-fno-trapping-math", "-fno-math-errno", "-fvisibility=hidden", "-fopenmp"]
    if _want_cuda():
        cuda_sources = sorted(os.path.relpath(s, HERE) for s in glob.glob(os.path.join(csrc, "cuda", "*.cu")))
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        print(f"zol2l_ext: building CPU + CUDA kernels (CUDA_HOME={CUDA_HOME})", flush=True)
        return CUDAExtension(
            "zol2l_ext._C",
            sources + cuda_sources,
            include_dirs=[csrc] + _extra_cuda_includes(),
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=["-fopenmp"],
            depends=headers,
        )
    print("zol2l_ext: building CPU kernels only", flush=True)
    return CppExtension("zol2l_ext._C", sources, include_dirs=[csrc], extra_compile_args={"cxx": cxx},
                        extra_link_args=["-fopenmp"], depends=headers)


class _BuildExt(BuildExtension.with_options(no_python_abi_suffix=True)):
    def copy_extensions_to_source(self):
        # setuptools copies the module over the in-place one on every --inplace run, rebuilt or not, truncating
        # the file under any process that has it loaded. Replace it only when it differs, and atomically.
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
            if os.path.exists(inplace_file) and filecmp.cmp(regular_file, inplace_file, shallow=False):
                continue
            tmp = f"{inplace_file}.tmp{os.getpid()}"
            shutil.copy2(regular_file, tmp)
            os.replace(tmp, inplace_file)
            print(f"zol2l_ext: updated {os.path.relpath(inplace_file, HERE)}", flush=True)


setup(
    # The data folders are listed as packages of their own: setuptools warns about data in a folder that it could
    # import but is not told to install.
    packages=find_packages(include=["zol2l_ext", "zol2l_ext.*"]) + ["zol2l_ext.pretrained", "zol2l_ext.tuned"],
    package_data={"zol2l_ext.pretrained": ["*.pt"], "zol2l_ext.tuned": ["*.json"]},
    ext_modules=[] if os.environ.get("ZOL2L_SKIP_EXTENSION") == "1" else [_extension()],
    cmdclass={"build_ext": _BuildExt},
)
