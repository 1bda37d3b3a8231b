"""fd_gradient and central_points against the reference (docs/OPS.md section 3)."""
import math

import pytest
import torch

from testing import assert_close, assert_equal, device_dtype_params, gen, ops, randn, reference, to64

# (B, q, d): empty batch, empty dimension, q = 1, d not a multiple of 4 / 16, d across the CPU column chunk (2048).
FD_SHAPES = [(0, 3, 5), (3, 2, 0), (1, 1, 1), (3, 4, 5), (2, 7, 13), (4, 3, 17), (2, 5, 33), (1, 2, 16),
             (2, 3, 2100)]
FD_IDS = [f"B{b}-q{q}-d{d}" for b, q, d in FD_SHAPES]
NEEDS = {
    "all": ("f0", "fq", "u"),
    "f0": ("f0",),
    "fq": ("fq",),
    "u": ("u",),
    "f0+u": ("f0", "u"),
}


def _fd_inputs(B, q, d, dtype, device, seed=0):
    g = gen(seed)
    return dict(
        f0=randn(B, g=g, dtype=dtype, device=device),
        fq=randn(B, q, g=g, dtype=dtype, device=device),
        u=randn(B, q, d, g=g, dtype=dtype, device=device),
    )


@pytest.mark.parametrize("device,dtype", device_dtype_params(half=True))
@pytest.mark.parametrize("mu", [0.01, 1.5])
@pytest.mark.parametrize("B,q,d", FD_SHAPES, ids=FD_IDS)
def test_fd_gradient_forward_matches_reference(B, q, d, mu, device, dtype):
    a = _fd_inputs(B, q, d, dtype, device)
    out = ops.fd_gradient(a["f0"], a["fq"], a["u"], mu)
    assert out.shape == (B, d) and out.dtype == dtype and out.device.type == device
    want = reference.fd_gradient_ref(to64(a["f0"]), to64(a["fq"]), to64(a["u"]), mu)
    # Entries are O(sqrt(q) / (mu q)) in size: scale atol with them.
    assert_close(out, want, dtype, scale=1 / (mu * math.sqrt(q)), msg="g")


@pytest.mark.parametrize("device,dtype", device_dtype_params(half=True))
@pytest.mark.parametrize("needs", list(NEEDS))
@pytest.mark.parametrize("B,q,d", FD_SHAPES, ids=FD_IDS)
def test_fd_gradient_backward_matches_reference(B, q, d, needs, device, dtype):
    mu = 0.1
    a = _fd_inputs(B, q, d, dtype, device, seed=1)
    for k in NEEDS[needs]:
        a[k].requires_grad_(True)
    out = ops.fd_gradient(a["f0"], a["fq"], a["u"], mu)
    grad_g = randn(B, d, g=gen(2), dtype=dtype, device=device)
    wrt = [a[k] for k in NEEDS[needs]]
    got = torch.autograd.grad(out, wrt, grad_g)
    r = {k: to64(v) for k, v in a.items()}
    want = torch.autograd.grad(reference.fd_gradient_ref(r["f0"], r["fq"], r["u"], mu), [r[k] for k in NEEDS[needs]],
                               to64(grad_g), allow_unused=True, materialize_grads=True)
    for k, x, y in zip(NEEDS[needs], got, want):
        assert x.shape == a[k].shape and x.dtype == dtype, k
        terms = {"f0": q * max(d, 1), "fq": max(d, 1), "u": 1}[k]
        assert_close(x, y, dtype, scale=math.sqrt(terms) / (mu * q), msg=f"grad of {k}")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_fd_gradient_recovers_the_gradient_of_a_linear_function(device, dtype):
    # For f(x) = a . x the forward differences are exact, g = (1/q) sum_i u_i u_i^T a; with the q = d directions
    # u_j = sqrt(d) e_j this is a itself (up to rounding).
    B, d = 2, 6
    a = randn(B, d, g=gen(3), dtype=dtype, device=device)
    theta = randn(B, d, g=gen(4), dtype=dtype, device=device)
    mu = 0.5
    u = (math.sqrt(d) * torch.eye(d, dtype=torch.float64)).to(dtype=dtype, device=device).expand(B, d, d)
    f0 = (a * theta).sum(1)
    fq = ((theta.unsqueeze(1) + mu * u) * a.unsqueeze(1)).sum(2)
    g = ops.fd_gradient(f0, fq, u, mu)
    assert_close(g, a, dtype, scale=100, rscale=100, msg="g of a linear function")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
@pytest.mark.parametrize("B,d", [(0, 4), (1, 1), (3, 5), (2, 17), (2, 0)])
def test_central_points_matches_reference(B, d, device, dtype):
    theta = randn(B, d, g=gen(5), dtype=dtype, device=device)
    mu = 0.125
    ranges = {(0, d), (0, 0), (d, 0), (max(d - 1, 0), min(d, 1)), (min(1, d), max(min(3, d - 1), 0))}
    for start, count in sorted(ranges):
        out = ops.central_points(theta, mu, start, count)
        assert out.shape == (B, 2 * count, d) and out.device.type == device, (start, count)
        want = reference.central_points_ref(theta.cpu(), mu, start, count)
        assert_equal(out.cpu(), want, msg=f"central_points start={start} count={count}")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_central_points_chunks_tile_the_full_set(device, dtype):
    # Chunks of coordinates, concatenated, are the points of all coordinates at once.
    B, d, mu = 3, 11, 0.3
    theta = randn(B, d, g=gen(6), dtype=dtype, device=device)
    full = ops.central_points(theta, mu, 0, d)
    chunks = [ops.central_points(theta, mu, s, min(4, d - s)) for s in range(0, d, 4)]
    assert_equal(torch.cat(chunks, dim=1), full, msg="chunked vs full")
    # Each row differs from theta in exactly one coordinate, by +mu then -mu.
    diff = full - theta.unsqueeze(1)
    assert_close(diff[:, 0::2], mu * torch.eye(d, dtype=dtype, device=device).expand(B, d, d), dtype)
    assert_close(diff[:, 1::2], -mu * torch.eye(d, dtype=dtype, device=device).expand(B, d, d), dtype)
