"""torch.compile(fullgraph=True) of one ZO step: sample_queries -> quadratic black box -> fd_gradient -> lstm_step.

The backend is "aot_eager" by default: it traces the ops through their fake kernels and autograd formulas
(functionalization, AOT autograd) in about two seconds. "inductor" also works on this CPU but its first
(cold-cache) compile of this step takes about a minute, so it is opt-in: ZOL2L_COMPILE_BACKEND=inductor.
"""
import os

import pytest
import torch

from testing import assert_close, device_params, gen, ops, randn, seeds

BACKEND = os.environ.get("ZOL2L_COMPILE_BACKEND", "aot_eager")
B, D, Q, H, MU = 3, 13, 4, 10, 0.05
WEIGHTS = ("w_ih", "w_hh", "bias", "w_out", "b_out", "scale")


def zo_step(theta, seed, scale, use_scale, h, c, w_ih, w_hh, bias, w_out, b_out):
    u, points = ops.sample_queries(theta, Q, MU, scale=scale, use_scale=use_scale, seed=seed)
    f = (points * points).sum(dim=-1) + 0.5 * points[..., 0]  # black box f(x) = |x|^2 + x_0 / 2
    g = ops.fd_gradient(f[:, 0], f[:, 1:], u, MU)
    x = torch.stack([g.reshape(-1), theta.reshape(-1)], dim=1)  # coordinatewise LSTM input [B d, 2]
    y, h_new, c_new = ops.lstm_step(x, h, c, w_ih, w_hh, w_out, bias, b_out)
    return theta - y[:, 0].reshape(theta.shape), h_new, c_new


def _args(device):
    g = gen(0)
    r = lambda *s, std=1.0: randn(*s, g=g, dtype=torch.float32, device=device, std=std)  # noqa: E731
    return dict(
        theta=r(B, D), seed=seeds(B).to(device), scale=r(B, D).abs() + 0.5,
        use_scale=torch.tensor([True, False, True], device=device),
        h=r(B * D, H, std=0.1), c=r(B * D, H, std=0.1), w_ih=r(4 * H, 2, std=0.3), w_hh=r(4 * H, H, std=0.3),
        bias=r(4 * H, std=0.1), w_out=r(1, H, std=0.3), b_out=r(1, std=0.1),
    )


@pytest.mark.parametrize("device", device_params())
def test_compiled_zo_step_matches_eager(device):
    torch._dynamo.reset()
    compiled = torch.compile(zo_step, fullgraph=True, backend=BACKEND)
    tol = dict(dtype=torch.float32, scale=10) if BACKEND == "inductor" else dict(dtype=torch.float64)

    # Inference (no_grad): the same values as eager.
    args = _args(device)
    with torch.no_grad():
        out_c = compiled(**args)
        out_e = zo_step(**args)
    for name, a, b in zip(("theta_new", "h_new", "c_new"), out_c, out_e):
        assert a.grad_fn is None
        assert_close(a, b, msg=f"no_grad {name}", **tol)

    # Training: gradients of a loss through the whole step (LSTM weights and the sampling scale).
    for k in WEIGHTS:
        args[k].requires_grad_(True)
    out_c = compiled(**args)
    out_e = zo_step(**args)
    loss_c = out_c[0].square().sum() + out_c[1].sum() + out_c[2].square().mean()
    loss_e = out_e[0].square().sum() + out_e[1].sum() + out_e[2].square().mean()
    assert_close(loss_c, loss_e, msg="loss", **tol)
    grads_c = torch.autograd.grad(loss_c, [args[k] for k in WEIGHTS])
    grads_e = torch.autograd.grad(loss_e, [args[k] for k in WEIGHTS])
    for k, a, b in zip(WEIGHTS, grads_c, grads_e):
        assert torch.count_nonzero(b) > 0, k  # the loss really depends on every weight
        assert_close(a, b, msg=f"grad of {k}", **tol)
