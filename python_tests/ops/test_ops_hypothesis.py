"""Property-based tests (hypothesis) of the three fused ops against their pure-PyTorch references: random shapes
(zero sizes included), dtypes, memory layouts (contiguous, transposed, strided), q, mu and seeds. On the CPU in
float32 and float64; the ``*_cuda`` twins draw the same on the GPU, float16 and bfloat16 included (skipped, with
the reason, where no GPU or no CUDA kernel is present; ``pytest -k cuda`` on a GPU machine runs them).

The parametrized tests beside this file pin the known edge cases; these draw the combinations nobody listed.
``derandomize=True``: CI runs the same examples every time, so a failure reproduces.
"""
from __future__ import annotations

import math

import pytest
import torch

from testing import HALF_DTYPES, assert_close, lstm_inputs, ops, reference, requires_cuda

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, print_blob=True)
DTYPES = st.sampled_from([torch.float32, torch.float64])
CUDA_DTYPES = st.sampled_from([torch.float32, torch.float64, *HALF_DTYPES])
LAYOUTS = st.sampled_from(["contiguous", "transposed", "strided"])
SEEDS = st.integers(min_value=0, max_value=2**62 - 1)


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` (2-D or 3-D) in another memory layout: the ops must not care."""
    if t is None or layout == "contiguous":
        return t
    if layout == "transposed":  # last two dimensions swapped in memory, then viewed back
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1] + 1, dtype=t.dtype, device=t.device)
    view = wide[..., 1::2]  # every other column: a stride of 2 in the last dimension
    view.copy_(t)
    return view


LSTM_FORWARD = dict(N=st.integers(0, 40), H=st.integers(1, 12), I=st.sampled_from([1, 2]), O=st.sampled_from([1, 2]),
                    bias=st.booleans(), b_out=st.booleans(), layout=LAYOUTS, seed=st.integers(0, 10**6))


@SETTINGS
@given(dtype=DTYPES, **LSTM_FORWARD)
def test_lstm_step_matches_reference(N, H, I, O, bias, b_out, dtype, layout, seed):
    _lstm_forward(N, H, I, O, bias, b_out, dtype, layout, seed, "cpu")


@requires_cuda
@SETTINGS
@given(dtype=CUDA_DTYPES, **LSTM_FORWARD)
def test_lstm_step_matches_reference_cuda(N, H, I, O, bias, b_out, dtype, layout, seed):
    _lstm_forward(N, H, I, O, bias, b_out, dtype, layout, seed, "cuda")


def _lstm_forward(N, H, I, O, bias, b_out, dtype, layout, seed, device):
    args = lstm_inputs(N, H, I, O, bias=bias, b_out=b_out, dtype=dtype, device=device, seed=seed)
    for k in ("x", "h", "c", "w_hh"):
        args[k] = _layout(args[k], layout)
    y, h, c = ops.lstm_step(**args)
    ry, rh, rc = reference.lstm_step_ref(**{k: None if v is None else v.double() for k, v in args.items()})
    assert y.dtype == h.dtype == c.dtype == dtype and y.device.type == h.device.type == c.device.type == device
    assert_close(y, ry, dtype, scale=math.sqrt(H))
    assert_close(h, rh, dtype)
    assert_close(c, rc, dtype)


@SETTINGS
@given(N=st.integers(0, 12), H=st.integers(1, 6), I=st.sampled_from([1, 2]), layout=LAYOUTS,
       seed=st.integers(0, 10**6))
def test_lstm_step_backward_matches_reference(N, H, I, layout, seed):
    args = lstm_inputs(N, H, I, 1, dtype=torch.float64, seed=seed, requires_grad=True)
    names = [k for k, v in args.items() if v is not None]
    ref_args = {k: v.detach().clone().requires_grad_(True) for k, v in args.items()}
    run = {k: _layout(v, layout) if k in ("x", "h", "c") else v for k, v in args.items()}
    outs = ops.lstm_step(**run)
    routs = reference.lstm_step_ref(**ref_args)
    g = torch.Generator().manual_seed(seed + 1)
    cot = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]
    grads = torch.autograd.grad(outs, [args[k] for k in names], cot, allow_unused=True)
    rgrads = torch.autograd.grad(routs, [ref_args[k] for k in names], cot, allow_unused=True)
    for k, a, b in zip(names, grads, rgrads):
        if b is None:
            assert a is None or not a.abs().any(), k
        else:
            assert_close(a, b, torch.float64, scale=math.sqrt(max(N, 1)), msg=k)


SAMPLE = dict(B=st.integers(0, 5), q=st.integers(1, 6), d=st.integers(0, 40), mu=st.floats(1e-4, 1.0),
              mode=st.sampled_from(["identity", "scale", "mixed"]), layout=LAYOUTS, seed=SEEDS)


@SETTINGS
@given(dtype=DTYPES, **SAMPLE)
def test_sample_queries_matches_reference(B, q, d, mu, mode, dtype, layout, seed):
    _sample_queries(B, q, d, mu, mode, dtype, layout, seed, "cpu")


@requires_cuda
@SETTINGS
@given(dtype=CUDA_DTYPES, **SAMPLE)
def test_sample_queries_matches_reference_cuda(B, q, d, mu, mode, dtype, layout, seed):
    _sample_queries(B, q, d, mu, mode, dtype, layout, seed, "cuda")


def _sample_queries(B, q, d, mu, mode, dtype, layout, seed, device):
    g = torch.Generator().manual_seed(seed % 2**31)
    theta = torch.randn(B, d, generator=g, dtype=torch.float64).to(dtype)
    scale = use = None
    if mode != "identity":
        scale = (torch.rand(B, d, generator=g, dtype=torch.float64) * 2 + 0.1).to(dtype)
    if mode == "mixed":
        use = torch.rand(B, generator=g) < 0.5
    keys = torch.tensor([(seed + 0x9E3779B97F4A7C15 * i) % 2**62 for i in range(B)], dtype=torch.int64)
    on = (lambda t: None if t is None else t.to(device))  # noqa: E731
    u, points = ops.sample_queries(_layout(on(theta), layout), q, mu, scale=_layout(on(scale), layout),
                                   use_scale=on(use), seed=on(keys))
    ru, rp = reference.sample_queries_ref(keys, theta, q, mu, scale=scale, use_scale=use)
    assert u.shape == (B, q, d) and points.shape == (B, q + 1, d) and u.dtype == points.dtype == dtype
    assert u.device.type == points.device.type == device
    assert_close(u, ru, dtype, scale=4.0)
    assert_close(points, rp, dtype, scale=4.0)


FD = dict(B=st.integers(0, 5), q=st.integers(1, 6), d=st.integers(0, 40), mu=st.floats(1e-4, 1.0), layout=LAYOUTS,
          seed=st.integers(0, 10**6))


@SETTINGS
@given(dtype=DTYPES, **FD)
def test_fd_gradient_matches_reference(B, q, d, mu, dtype, layout, seed):
    _fd_gradient(B, q, d, mu, dtype, layout, seed, "cpu")


@requires_cuda
@SETTINGS
@given(dtype=CUDA_DTYPES, **FD)
def test_fd_gradient_matches_reference_cuda(B, q, d, mu, dtype, layout, seed):
    _fd_gradient(B, q, d, mu, dtype, layout, seed, "cuda")


def _fd_gradient(B, q, d, mu, dtype, layout, seed, device):
    g = torch.Generator().manual_seed(seed)
    f0 = torch.randn(B, generator=g, dtype=torch.float64).to(dtype)
    fq = torch.randn(B, q, generator=g, dtype=torch.float64).to(dtype)
    u = torch.randn(B, q, d, generator=g, dtype=torch.float64).to(dtype)
    grad = ops.fd_gradient(f0.to(device), _layout(fq.to(device), layout), _layout(u.to(device), layout), mu)
    ref = reference.fd_gradient_ref(f0.double(), fq.double(), u.double(), mu)
    assert grad.shape == (B, d) and grad.dtype == dtype and grad.device.type == device
    # g = sum_i (fq_i - f0) u_i / (mu q): errors scale with the terms over mu
    assert_close(grad, ref, dtype, scale=math.sqrt(q) / mu, rscale=q)
