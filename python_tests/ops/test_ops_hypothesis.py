"""Property-based tests (hypothesis) of the three fused ops against their pure-PyTorch references, on the CPU:
random shapes (zero sizes included), dtypes, memory layouts (contiguous, transposed, strided), q, mu and seeds.

The parametrized tests beside this file pin the known edge cases; these draw the combinations nobody listed.
``derandomize=True``: CI runs the same examples every time, so a failure reproduces.
"""
from __future__ import annotations

import math

import pytest
import torch

from testing import assert_close, lstm_inputs, ops, reference

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, print_blob=True)
DTYPES = st.sampled_from([torch.float32, torch.float64])
LAYOUTS = st.sampled_from(["contiguous", "transposed", "strided"])
SEEDS = st.integers(min_value=0, max_value=2**62 - 1)


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` (2-D or 3-D) in another memory layout: the ops must not care."""
    if t is None or layout == "contiguous":
        return t
    if layout == "transposed":  # last two dimensions swapped in memory, then viewed back
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1] + 1, dtype=t.dtype)
    view = wide[..., 1::2]  # every other column: a stride of 2 in the last dimension
    view.copy_(t)
    return view


@SETTINGS
@given(N=st.integers(0, 40), H=st.integers(1, 12), I=st.sampled_from([1, 2]), O=st.sampled_from([1, 2]),
       bias=st.booleans(), b_out=st.booleans(), dtype=DTYPES, layout=LAYOUTS, seed=st.integers(0, 10**6))
def test_lstm_step_matches_reference(N, H, I, O, bias, b_out, dtype, layout, seed):
    args = lstm_inputs(N, H, I, O, bias=bias, b_out=b_out, dtype=dtype, seed=seed)
    for k in ("x", "h", "c", "w_hh"):
        args[k] = _layout(args[k], layout)
    y, h, c = ops.lstm_step(**args)
    ry, rh, rc = reference.lstm_step_ref(**{k: None if v is None else v.double() for k, v in args.items()})
    assert y.dtype == h.dtype == c.dtype == dtype
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


@SETTINGS
@given(B=st.integers(0, 5), q=st.integers(1, 6), d=st.integers(0, 40), mu=st.floats(1e-4, 1.0),
       mode=st.sampled_from(["identity", "scale", "mixed"]), dtype=DTYPES, layout=LAYOUTS, seed=SEEDS)
def test_sample_queries_matches_reference(B, q, d, mu, mode, dtype, layout, seed):
    g = torch.Generator().manual_seed(seed % 2**31)
    theta = torch.randn(B, d, generator=g, dtype=torch.float64).to(dtype)
    scale = use = None
    if mode != "identity":
        scale = (torch.rand(B, d, generator=g, dtype=torch.float64) * 2 + 0.1).to(dtype)
    if mode == "mixed":
        use = torch.rand(B, generator=g) < 0.5
    keys = torch.tensor([(seed + 0x9E3779B97F4A7C15 * i) % 2**62 for i in range(B)], dtype=torch.int64)
    u, points = ops.sample_queries(_layout(theta, layout), q, mu, scale=_layout(scale, layout), use_scale=use,
                                   seed=keys)
    ru, rp = reference.sample_queries_ref(keys, theta, q, mu, scale=scale, use_scale=use)
    assert u.shape == (B, q, d) and points.shape == (B, q + 1, d) and u.dtype == points.dtype == dtype
    assert_close(u, ru, dtype, scale=4.0)
    assert_close(points, rp, dtype, scale=4.0)


@SETTINGS
@given(B=st.integers(0, 5), q=st.integers(1, 6), d=st.integers(0, 40), mu=st.floats(1e-4, 1.0), dtype=DTYPES,
       layout=LAYOUTS, seed=st.integers(0, 10**6))
def test_fd_gradient_matches_reference(B, q, d, mu, dtype, layout, seed):
    g = torch.Generator().manual_seed(seed)
    f0 = torch.randn(B, generator=g, dtype=torch.float64).to(dtype)
    fq = torch.randn(B, q, generator=g, dtype=torch.float64).to(dtype)
    u = torch.randn(B, q, d, generator=g, dtype=torch.float64).to(dtype)
    grad = ops.fd_gradient(f0, _layout(fq, layout), _layout(u, layout), mu)
    ref = reference.fd_gradient_ref(f0.double(), fq.double(), u.double(), mu)
    assert grad.shape == (B, d) and grad.dtype == dtype
    # g = sum_i (fq_i - f0) u_i / (mu q): errors scale with the terms over mu
    assert_close(grad, ref, dtype, scale=math.sqrt(q) / mu, rscale=q)
