"""Shared devices, dtypes, tolerances and helpers of the fused-op tests (in the spirit of pytorch_scatter's
testing.py).

Every op runs on CPU and CUDA in float32 and float64; CUDA also takes float16 and bfloat16 (accumulating in
float), which get looser tolerances. CUDA cases are always collected and skipped with a reason when no GPU
(or no CUDA kernel in the built extension) is present, so that a CPU run still shows what it did not cover.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Iterable, Optional, Sequence

import pytest
import torch

import zol2l_ext  # noqa: F401  (registers the zol2l ops)
from zol2l_ext import ops, reference  # noqa: F401

# ------------------------------------------------------------------------------------------------------------
# Devices
# ------------------------------------------------------------------------------------------------------------
CUDA_AVAILABLE = torch.cuda.is_available()
HAS_CUDA_KERNELS = torch._C._dispatch_has_kernel_for_dispatch_key("zol2l::lstm_step", "CUDA")

if not CUDA_AVAILABLE:
    CUDA_SKIP_REASON = "CUDA not available: torch.cuda.is_available() is False (CPU-only machine)"
elif not HAS_CUDA_KERNELS:
    CUDA_SKIP_REASON = (
        "zol2l_ext was built without CUDA kernels (ZOL2L_SKIP_CUDA=1 or no nvcc): no zol2l CUDA kernel registered"
    )
else:
    CUDA_SKIP_REASON = ""

# Set ZOL2L_REQUIRE_CUDA=1 on a GPU runner to turn the CUDA skips into failures.
if os.environ.get("ZOL2L_REQUIRE_CUDA") == "1" and CUDA_SKIP_REASON:
    raise RuntimeError(f"ZOL2L_REQUIRE_CUDA=1 but CUDA tests cannot run: {CUDA_SKIP_REASON}")

requires_cuda = pytest.mark.skipif(bool(CUDA_SKIP_REASON), reason=CUDA_SKIP_REASON or "n/a")

DEVICES = ["cpu", "cuda"]
FLOAT_DTYPES = [torch.float32, torch.float64]
HALF_DTYPES = [torch.float16, torch.bfloat16]  # CUDA only

_SHORT = {torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32", torch.float64: "f64"}


def device_param(device: str):
    return pytest.param(device, marks=[requires_cuda] if device == "cuda" else [], id=device)


def device_params() -> list:
    return [device_param(d) for d in DEVICES]


def device_dtype_params(half: bool = False) -> list:
    """pytest.params of (device, dtype): {cpu, cuda} x {float32, float64}, plus CUDA x {float16, bfloat16}."""
    params = []
    for device, dtype in itertools.product(DEVICES, FLOAT_DTYPES):
        marks = [requires_cuda] if device == "cuda" else []
        params.append(pytest.param(device, dtype, marks=marks, id=f"{device}-{_SHORT[dtype]}"))
    if half:
        for dtype in HALF_DTYPES:
            params.append(pytest.param("cuda", dtype, marks=[requires_cuda], id=f"cuda-{_SHORT[dtype]}"))
    return params


# ------------------------------------------------------------------------------------------------------------
# Tolerances
# ------------------------------------------------------------------------------------------------------------
# Outputs of the ops against a float64 reference. float32 allows for the kernels' vectorizable exp (about
# 2 ulp) and for a different summation order; half types are rounded at every stored value.
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=4e-2, atol=4e-2),
}


def tol(dtype: torch.dtype, scale: float = 1.0, rscale: float = 1.0) -> dict:
    """Tolerance for `dtype`, with atol widened by `scale` (for example sqrt(terms) of a long reduction) and rtol
    by `rscale` (ill-conditioned results)."""
    t = TOL[dtype]
    return dict(rtol=t["rtol"] * max(1.0, rscale), atol=t["atol"] * max(1.0, scale))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: Optional[torch.dtype] = None,
                 scale: float = 1.0, rscale: float = 1.0, msg: str = "") -> None:
    """Compares in float64 on the CPU with the tolerance of `dtype` (default: actual's dtype); shapes must match."""
    dtype = dtype or actual.dtype
    assert actual.shape == expected.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(
        actual.detach().cpu().double(), expected.detach().cpu().double(), **tol(dtype, scale, rscale),
        msg=(lambda m: f"{msg}: {m}") if msg else None,
    )


def assert_equal(actual: torch.Tensor, expected: torch.Tensor, msg: str = "") -> None:
    """Bitwise equality, dtype and shape included."""
    assert actual.dtype == expected.dtype, f"{msg}: dtype {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=(lambda m: f"{msg}: {m}") if msg else None)


# ------------------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------------------
def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, g: torch.Generator, dtype=torch.float64, device="cpu", std: float = 1.0) -> torch.Tensor:
    """Draws on the CPU in float64 (the same numbers for every dtype and device), then casts and moves."""
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * std).to(dtype=dtype, device=device)


def lstm_inputs(N: int, H: int, I: int, O: int, *, bias: bool = True, b_out: bool = True, dtype=torch.float64,
                device="cpu", seed: int = 0, requires_grad: bool = False) -> dict:
    """Keyword arguments of ops.lstm_step with well-scaled weights (gates neither saturated nor linear)."""
    g = gen(seed)
    args = dict(
        x=randn(N, I, g=g, dtype=dtype, device=device),
        h=randn(N, H, g=g, dtype=dtype, device=device, std=0.7),
        c=randn(N, H, g=g, dtype=dtype, device=device),
        w_ih=randn(4 * H, I, g=g, dtype=dtype, device=device, std=1 / math.sqrt(I)),
        w_hh=randn(4 * H, H, g=g, dtype=dtype, device=device, std=1 / math.sqrt(H)),
        w_out=randn(O, H, g=g, dtype=dtype, device=device, std=1 / math.sqrt(H)),
        bias=randn(4 * H, g=g, dtype=dtype, device=device, std=0.5) if bias else None,
        b_out=randn(O, g=g, dtype=dtype, device=device) if b_out else None,
    )
    if requires_grad:
        for v in args.values():
            if v is not None:
                v.requires_grad_(True)
    return args


LSTM_ARG_ORDER = ("x", "h", "c", "w_ih", "w_hh", "w_out", "bias", "b_out")  # ops.lstm_step / lstm_step_ref order


def to64(t: Optional[torch.Tensor], requires_grad: Optional[bool] = None) -> Optional[torch.Tensor]:
    """A float64 CPU leaf copy of `t` (keeps requires_grad unless told otherwise); None stays None."""
    if t is None:
        return None
    out = t.detach().cpu()
    out = out.double() if out.is_floating_point() else out.clone()
    rg = t.requires_grad if requires_grad is None else requires_grad
    return out.requires_grad_(rg) if out.is_floating_point() else out


def seeds(B: int, base: int = 1234) -> torch.Tensor:
    """Fixed, well-spread int64 Philox keys."""
    return torch.tensor([(base + i * 0x9E3779B97F4A7C15) % 2**62 for i in range(B)], dtype=torch.int64)


def grad_list(outputs: Sequence[torch.Tensor], inputs: Iterable[Optional[torch.Tensor]],
              grad_outputs: Sequence[torch.Tensor]) -> list:
    """torch.autograd.grad over the non-None inputs; returns a list aligned with `inputs` (None where absent)."""
    inputs = list(inputs)
    present = [t for t in inputs if t is not None]
    grads = iter(torch.autograd.grad(outputs, present, grad_outputs, allow_unused=False))
    return [next(grads) if t is not None else None for t in inputs]
