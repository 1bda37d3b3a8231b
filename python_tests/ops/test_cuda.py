"""CUDA-only checks: CPU-vs-CUDA parity of every op, seeded reproducibility on the GPU, device-mismatch errors.

Skipped (with the reason) where torch.cuda.is_available() is False or the extension has no CUDA kernels.
The reference comparisons of every op on CUDA, float16 and bfloat16 included, live in the per-op files.
"""
import math

import pytest
import torch

from testing import (LSTM_ARG_ORDER, assert_close, assert_equal, gen, lstm_inputs, ops, randn, requires_cuda,
                     seeds)

pytestmark = requires_cuda
Z = torch.ops.zol2l
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]


def _to(t, device):
    return None if t is None else t.detach().to(device).requires_grad_(t.requires_grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H,I,O,bias", [(0, 10, 2, 3, True), (1, 1, 1, 1, False), (33, 17, 2, 3, True),
                                          (1000, 64, 4, 8, True), (70001, 16, 2, 1, False), (5000, 40, 1, 2, True)])
def test_lstm_step_cpu_cuda_parity(N, H, I, O, bias, dtype):
    cpu = lstm_inputs(N, H, I, O, bias=bias, b_out=bias, dtype=dtype, seed=N + H, requires_grad=True)
    gpu = {k: _to(v, "cuda") for k, v in cpu.items()}
    out_c = ops.lstm_step(**cpu)
    out_g = ops.lstm_step(**gpu)
    for name, a, b in zip(("y", "h_new", "c_new"), out_g, out_c):
        assert a.is_cuda
        assert_close(a, b, dtype, msg=name)
    g = gen(1)
    grads = [randn(*o.shape, g=g, dtype=dtype) for o in out_c]
    keys = [k for k in LSTM_ARG_ORDER if cpu[k] is not None]
    gc = torch.autograd.grad(out_c, [cpu[k] for k in keys], grads)
    gg = torch.autograd.grad(out_g, [gpu[k] for k in keys], [t.cuda() for t in grads])
    for k, a, b in zip(keys, gg, gc):
        assert a.is_cuda
        assert_close(a, b, dtype, scale=math.sqrt(max(N, 1)), msg=f"grad of {k}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_step_backward_op_cpu_cuda_parity(dtype):
    N, H, I, O = 257, 12, 2, 3
    a = lstm_inputs(N, H, I, O, dtype=dtype, seed=3)
    g = gen(2)
    gy, gh = randn(N, O, g=g, dtype=dtype), randn(N, H, g=g, dtype=dtype)
    args = (gy, gh, None, a["x"], a["h"], a["c"], a["w_ih"], a["w_hh"], a["bias"], a["w_out"], a["b_out"])
    rc = Z.lstm_step_backward(*args)
    rg = Z.lstm_step_backward(*[None if t is None else t.cuda() for t in args])
    for name, x, y in zip(("x", "h", "c", "w_ih", "w_hh", "bias", "w_out", "b_out"), rg, rc):
        assert_close(x, y, dtype, scale=math.sqrt(N), msg=f"grad of {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,q,d", [(1, 1, 1), (3, 5, 13), (4, 3, 1025), (2, 64, 1000), (257, 4, 7), (0, 2, 3),
                                   (3, 2, 0)])
@pytest.mark.parametrize("mode", ["identity", "scale", "mixed"])
def test_sample_queries_cpu_cuda_parity(B, q, d, mode, dtype):
    # z is counter-based: CPU and CUDA draw the same numbers, up to float rounding of Box-Muller.
    g = gen(4)
    theta = randn(B, d, g=g, dtype=dtype).requires_grad_(True)
    scale = use_scale = None
    if mode != "identity":
        scale = (torch.rand(B, d, generator=g, dtype=torch.float64) + 0.1).to(dtype).requires_grad_(True)
    if mode == "mixed":
        use_scale = torch.arange(B) % 3 != 1
    seed = seeds(B, base=11)
    u_c, p_c = ops.sample_queries(theta, q, 0.05, scale=scale, use_scale=use_scale, seed=seed)
    u_g, p_g = ops.sample_queries(_to(theta, "cuda"), q, 0.05, scale=_to(scale, "cuda"),
                                  use_scale=None if use_scale is None else use_scale.cuda(), seed=seed.cuda())
    assert u_g.is_cuda and p_g.is_cuda
    assert_close(u_g, u_c, dtype, msg="u")
    assert_close(p_g, p_c, dtype, msg="points")
    if mode != "identity" and B * d > 0:
        w_u = randn(B, q, d, g=g, dtype=dtype)
        gc = torch.autograd.grad((u_c * w_u).sum() + p_c.sum(), [theta, scale])
        theta_g, scale_g = _to(theta, "cuda"), _to(scale, "cuda")
        u_g, p_g = ops.sample_queries(theta_g, q, 0.05, scale=scale_g,
                                      use_scale=None if use_scale is None else use_scale.cuda(), seed=seed.cuda())
        gg = torch.autograd.grad((u_g * w_u.cuda()).sum() + p_g.sum(), [theta_g, scale_g])
        for name, a, b in zip(("theta", "scale"), gg, gc):
            assert_close(a, b, dtype, scale=math.sqrt(q) * 10, msg=f"grad of {name}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_directions_vjp_cpu_cuda_parity(dtype):
    grad_u = randn(5, 16, 1030, g=gen(5), dtype=dtype)
    seed = seeds(5, base=3)
    assert_close(Z.directions_vjp(seed.cuda(), grad_u.cuda()), Z.directions_vjp(seed, grad_u), dtype, scale=4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,q,d", [(1, 1, 1), (3, 4, 5), (2, 64, 3000), (300, 8, 17), (0, 2, 3), (3, 2, 0)])
def test_fd_gradient_cpu_cuda_parity(B, q, d, dtype):
    g = gen(6)
    f0 = randn(B, g=g, dtype=dtype).requires_grad_(True)
    fq = randn(B, q, g=g, dtype=dtype).requires_grad_(True)
    u = randn(B, q, d, g=g, dtype=dtype).requires_grad_(True)
    out_c = ops.fd_gradient(f0, fq, u, 0.1)
    ins_g = [_to(t, "cuda") for t in (f0, fq, u)]
    out_g = ops.fd_gradient(*ins_g, 0.1)
    # every term carries 1 / (q mu); atol grows with the square root of the terms summed (as test_fd_gradient's
    # CPU tolerances): the gradient of u is elementwise, one term
    assert_close(out_g, out_c, dtype, scale=2 * math.sqrt(q) / (0.1 * q), msg="g")
    grad = randn(B, d, g=g, dtype=dtype)
    gc = torch.autograd.grad(out_c, (f0, fq, u), grad)
    gg = torch.autograd.grad(out_g, ins_g, grad.cuda())
    for name, a, b in zip(("f0", "fq", "u"), gg, gc):
        terms = {"f0": q * max(d, 1), "fq": max(d, 1), "u": 1}[name]
        assert_close(a, b, dtype, scale=2 * math.sqrt(terms) / (0.1 * q), msg=f"grad of {name}")


@pytest.mark.parametrize("dtype", DTYPES + [pytest.param(torch.float16, id="f16"),
                                            pytest.param(torch.bfloat16, id="bf16")])
def test_central_points_cpu_cuda_parity(dtype):
    theta = randn(4, 37, g=gen(7), dtype=torch.float64)
    out_g = ops.central_points(theta.to(dtype).cuda(), 0.25, 3, 20)
    if dtype in (torch.float32, torch.float64):
        assert_equal(out_g.cpu(), ops.central_points(theta.to(dtype), 0.25, 3, 20))
    else:
        from testing import reference
        assert_close(out_g, reference.central_points_ref(theta, 0.25, 3, 20), dtype)


def test_cuda_seeded_reproducibility():
    B, q, d = 64, 8, 333
    theta = randn(B, d, g=gen(8), device="cuda")
    scale = torch.rand(B, d, device="cuda", dtype=torch.float64) + 0.1
    seed = seeds(B, base=42).cuda()
    u1, p1 = ops.sample_queries(theta, q, 0.1, scale=scale, seed=seed)
    u2, p2 = ops.sample_queries(theta, q, 0.1, scale=scale, seed=seed.clone())
    assert_equal(u1, u2, msg="u")
    assert_equal(p1, p2, msg="points")
    u3, _ = ops.sample_queries(theta, q, 0.1, scale=scale, seed=seed + 1)
    assert not torch.allclose(u1, u3)
    # A problem alone draws what it draws inside the batch.
    ub, _ = ops.sample_queries(theta[5:6], q, 0.1, scale=scale[5:6], seed=seed[5:6])
    assert_equal(ub[0], u1[5])
    # Seeds from a CUDA generator reproduce.
    ga, gb = torch.Generator("cuda").manual_seed(3), torch.Generator("cuda").manual_seed(3)
    ua, _ = ops.sample_queries(theta, q, 0.1, generator=ga)
    ub, _ = ops.sample_queries(theta, q, 0.1, generator=gb)
    assert_equal(ua, ub, msg="CUDA generator")
    sa = ops.draw_seeds(B, torch.Generator("cuda").manual_seed(3))
    assert sa.is_cuda and torch.unique(sa).numel() == B
    # directions_vjp and fd_gradient are deterministic run to run.
    gu = randn(B, q, d, g=gen(9), device="cuda")
    assert_equal(Z.directions_vjp(seed, gu), Z.directions_vjp(seed, gu))
    f0, fq = randn(B, g=gen(10), device="cuda"), randn(B, q, g=gen(11), device="cuda")
    assert_equal(ops.fd_gradient(f0, fq, gu, 0.1), ops.fd_gradient(f0, fq, gu, 0.1))


def test_cuda_lstm_forward_is_deterministic():
    args = lstm_inputs(20000, 16, 2, 1, dtype=torch.float32, device="cuda", seed=12)
    a = ops.lstm_step(**args)
    b = ops.lstm_step(**args)
    for x, y in zip(a, b):
        assert_equal(x, y)


def _expect_device_error(fn, op, word):
    with pytest.raises(RuntimeError) as info:
        fn()
    msg = str(info.value)
    assert op in msg and word in msg, msg


def test_device_mismatch_names_the_argument():
    a = lstm_inputs(5, 4, 2, 3, device="cuda")
    for k in ("h", "c", "w_ih", "w_hh", "w_out", "bias", "b_out"):
        bad = dict(a, **{k: a[k].cpu()})
        _expect_device_error(lambda: ops.lstm_step(**bad), "lstm_step", k)
    theta = torch.zeros(3, 5, device="cuda")
    _expect_device_error(lambda: ops.sample_queries(theta, 2, 0.1, seed=seeds(3)), "sample_queries", "seed")
    _expect_device_error(lambda: ops.sample_queries(theta, 2, 0.1, scale=torch.ones(3, 5), seed=seeds(3).cuda()),
                         "sample_queries", "scale")
    _expect_device_error(lambda: ops.sample_queries(theta, 2, 0.1, scale=torch.ones(3, 5, device="cuda"),
                                                    use_scale=torch.ones(3, dtype=torch.bool), seed=seeds(3).cuda()),
                         "sample_queries", "use_scale")
    u = torch.zeros(3, 2, 5, device="cuda")
    _expect_device_error(lambda: ops.fd_gradient(torch.zeros(3), torch.zeros(3, 2, device="cuda"), u, 0.1),
                         "fd_gradient", "f0")
    _expect_device_error(lambda: ops.fd_gradient(torch.zeros(3, device="cuda"), torch.zeros(3, 2), u, 0.1),
                         "fd_gradient", "fq")
    _expect_device_error(lambda: Z.directions_vjp(seeds(3), u), "directions_vjp", "seed")
