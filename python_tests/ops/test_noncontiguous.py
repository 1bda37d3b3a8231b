"""Non-contiguous inputs (transposed, strided, expanded views) give the results of their contiguous copies.

The ops make their inputs contiguous, so the results must agree bit for bit, gradients included.
"""
import pytest
import torch

from testing import LSTM_ARG_ORDER, assert_close, assert_equal, device_dtype_params, gen, lstm_inputs, ops, randn, seeds

Z = torch.ops.zol2l


def transposed(t):
    """The same values as `t` ([m, n]) held as the transpose of an [n, m] tensor (strides (1, m))."""
    return t.t().contiguous().t()


def strided(t):
    """The same values as `t` in every other element of a twice-as-long last dimension."""
    big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    big[..., ::2] = t
    return big[..., ::2]


def _views(args: dict) -> dict:
    x, h, c = args["x"], args["h"], args["c"]
    out = dict(
        x=transposed(x), h=strided(h), c=transposed(c), w_ih=transposed(args["w_ih"]), w_hh=strided(args["w_hh"]),
        w_out=transposed(args["w_out"]), bias=strided(args["bias"]), b_out=strided(args["b_out"]),
    )
    for k, v in out.items():
        assert torch.equal(v, args[k])
        assert not v.is_contiguous() or min(v.shape) <= 1, k  # a single row or column is always contiguous
    return out


@pytest.mark.parametrize("device,dtype", device_dtype_params())
@pytest.mark.parametrize("N", [1, 33, 300])
def test_lstm_step_noncontiguous(N, device, dtype):
    args = lstm_inputs(N, 9, 2, 3, dtype=dtype, device=device, seed=1)
    views = _views(args)
    for a in (args, views):
        for v in a.values():
            v.requires_grad_(True)
    out_c = ops.lstm_step(**args)
    out_v = ops.lstm_step(**views)
    for name, a, b in zip(("y", "h_new", "c_new"), out_v, out_c):
        assert_equal(a, b, msg=name)
    g = gen(2)
    grads_out = [randn(*o.shape, g=g, dtype=dtype, device=device) for o in out_c]
    # Non-contiguous incoming gradients too (transposed copies).
    grads_out_v = [transposed(t) for t in grads_out]
    gc = torch.autograd.grad(out_c, [args[k] for k in LSTM_ARG_ORDER], grads_out)
    gv = torch.autograd.grad(out_v, [views[k] for k in LSTM_ARG_ORDER], grads_out_v)
    for k, a, b in zip(LSTM_ARG_ORDER, gv, gc):
        assert_equal(a, b, msg=f"grad of {k}")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_lstm_step_expanded_states_and_sum_backward(device, dtype):
    # The first step of an optimizer: h = c = 0 broadcast from one row (stride 0), and loss = sum(), whose
    # incoming gradients are expanded scalars.
    N, H = 40, 6
    args = lstm_inputs(N, H, 2, 1, dtype=dtype, device=device, seed=3)
    h0 = torch.zeros(1, H, dtype=dtype, device=device).expand(N, H)
    c0 = randn(1, H, g=gen(4), dtype=dtype, device=device).expand(N, H)
    args_e = dict(args, h=h0, c=c0)
    args_c = dict(args, h=h0.contiguous(), c=c0.contiguous())
    for a in (args_e, args_c):
        for k in ("x", "w_ih", "w_hh", "w_out", "bias", "b_out"):
            a[k] = a[k].detach().clone().requires_grad_(True)
    oe = ops.lstm_step(**args_e)
    oc = ops.lstm_step(**args_c)
    for a, b in zip(oe, oc):
        assert_equal(a, b)
    keys = ("x", "w_ih", "w_hh", "w_out", "bias", "b_out")
    ge = torch.autograd.grad(sum(o.sum() for o in oe), [args_e[k] for k in keys])
    gc = torch.autograd.grad(oc, [args_c[k] for k in keys], [torch.ones_like(o) for o in oc])
    for k, a, b in zip(keys, ge, gc):
        assert_equal(a, b, msg=f"grad of {k}")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_sample_queries_noncontiguous(device, dtype):
    B, q, d = 4, 3, 11
    g = gen(5)
    theta = randn(B, d, g=g, dtype=dtype, device=device)
    scale = (torch.rand(B, d, generator=g, dtype=torch.float64) + 0.1).to(dtype=dtype, device=device)
    seed = seeds(B).to(device)
    use_scale = torch.tensor([True, False, True, False], device=device)
    seed_v = torch.stack([seed, -seed], dim=1)[:, 0]  # stride 2
    use_v = torch.stack([use_scale, ~use_scale], dim=1)[:, 0]
    theta_v, scale_v = transposed(theta), strided(scale)
    assert not (seed_v.is_contiguous() or use_v.is_contiguous() or theta_v.is_contiguous()
                or scale_v.is_contiguous())
    for t in (theta, scale, theta_v, scale_v):
        t.requires_grad_(True)
    u_c, p_c = ops.sample_queries(theta, q, 0.1, scale=scale, use_scale=use_scale, seed=seed)
    u_v, p_v = ops.sample_queries(theta_v, q, 0.1, scale=scale_v, use_scale=use_v, seed=seed_v)
    assert_equal(u_v, u_c, msg="u")
    assert_equal(p_v, p_c, msg="points")
    w_u = randn(B, q, d, g=g, dtype=dtype, device=device)
    w_p = randn(B, q + 1, d, g=g, dtype=dtype, device=device)
    gc = torch.autograd.grad((u_c, p_c), (theta, scale), (w_u, w_p))
    # Incoming gradients as permuted views.
    gv = torch.autograd.grad((u_v, p_v), (theta_v, scale_v),
                             (w_u.transpose(0, 2).contiguous().transpose(0, 2),
                              w_p.transpose(1, 2).contiguous().transpose(1, 2)))
    # The backward's reductions are torch ops over the (non-contiguous) incoming gradients: cuBLAS and the
    # reduction kernels may sum in another order for another layout, so gradients agree to rounding.
    for k, a, b in zip(("theta", "scale"), gv, gc):
        assert_close(a, b, msg=f"grad of {k}")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_directions_vjp_noncontiguous(device, dtype):
    B, q, d = 3, 5, 9
    grad_u = randn(B, q, d, g=gen(6), dtype=dtype, device=device)
    seed = seeds(B).to(device)
    view = grad_u.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    assert not view.is_contiguous() and torch.equal(view, grad_u)
    assert_equal(Z.directions_vjp(seed, view), Z.directions_vjp(seed, grad_u))


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_fd_gradient_noncontiguous(device, dtype):
    B, q, d = 3, 4, 10
    g = gen(7)
    f0, fq, u = (randn(B, g=g, dtype=dtype, device=device), randn(B, q, g=g, dtype=dtype, device=device),
                 randn(B, q, d, g=g, dtype=dtype, device=device))
    views = (strided(f0), transposed(fq), u.permute(2, 0, 1).contiguous().permute(1, 2, 0))
    assert not any(v.is_contiguous() for v in views)
    for t in (f0, fq, u, *views):
        t.requires_grad_(True)
    out_c = ops.fd_gradient(f0, fq, u, 0.1)
    out_v = ops.fd_gradient(*views, 0.1)
    assert_equal(out_v, out_c)
    grad_g = randn(B, d, g=g, dtype=dtype, device=device)
    gc = torch.autograd.grad(out_c, (f0, fq, u), grad_g)
    gv = torch.autograd.grad(out_v, views, transposed(grad_g))
    for k, a, b in zip(("f0", "fq", "u"), gv, gc):  # to rounding, as in the sample_queries test above
        assert_close(a, b, msg=f"grad of {k}")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_central_points_noncontiguous(device, dtype):
    theta = randn(3, 8, g=gen(8), dtype=dtype, device=device)
    for view in (transposed(theta), strided(theta)):
        assert not view.is_contiguous()
        assert_equal(ops.central_points(view, 0.2, 1, 5), ops.central_points(theta, 0.2, 1, 5))
