"""torch.autograd.gradcheck in float64 (finite differences against the registered backward formulas)."""
import pytest
import torch
from torch.autograd import gradcheck

from testing import LSTM_ARG_ORDER, device_params, gen, lstm_inputs, ops, randn, seeds


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("has_bias,has_b_out", [(True, True), (False, False), (True, False)],
                         ids=["bias-bout", "nobias-nobout", "bias-nobout"])
def test_gradcheck_lstm_step(has_bias, has_b_out, device):
    args = lstm_inputs(5, 3, 2, 2, bias=has_bias, b_out=has_b_out, device=device, seed=1, requires_grad=True)
    names = [k for k in LSTM_ARG_ORDER if args[k] is not None]

    def fn(*tensors):
        kw = dict(zip(names, tensors))
        return ops.lstm_step(**kw)

    assert gradcheck(fn, tuple(args[k] for k in names), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("device", device_params())
def test_gradcheck_lstm_step_single_output(device):
    # Only h_new reaches the output: grad_y and grad_c_new arrive as None.
    args = lstm_inputs(4, 2, 1, 1, device=device, seed=2, requires_grad=True)
    names = list(LSTM_ARG_ORDER)
    assert gradcheck(lambda *t: ops.lstm_step(**dict(zip(names, t)))[1], tuple(args[k] for k in names),
                     eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("mode", ["identity", "scale", "mixed"])
def test_gradcheck_sample_queries(mode, device):
    B, q, d = 3, 2, 5
    g = gen(3)
    theta = randn(B, d, g=g, device=device).requires_grad_(True)
    seed = seeds(B, base=99).to(device)
    inputs = [theta]
    use_scale = None
    if mode != "identity":
        scale = (torch.rand(B, d, generator=g, dtype=torch.float64) + 0.2).to(device).requires_grad_(True)
        inputs.append(scale)
    if mode == "mixed":
        use_scale = torch.tensor([True, False, True], device=device)

    def fn(theta, scale=None):
        return ops.sample_queries(theta, q, 0.3, scale=scale, use_scale=use_scale, seed=seed)

    assert gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("device", device_params())
def test_gradcheck_fd_gradient(device):
    B, q, d = 2, 3, 4
    g = gen(4)
    f0 = randn(B, g=g, device=device).requires_grad_(True)
    fq = randn(B, q, g=g, device=device).requires_grad_(True)
    u = randn(B, q, d, g=g, device=device).requires_grad_(True)
    assert gradcheck(lambda a, b, c: ops.fd_gradient(a, b, c, 0.2), (f0, fq, u), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("device", device_params())
def test_gradgradcheck_fd_gradient(device):
    # The backward of fd_gradient is built from differentiable torch ops: second derivatives work too.
    B, q, d = 2, 2, 3
    g = gen(5)
    f0 = randn(B, g=g, device=device).requires_grad_(True)
    fq = randn(B, q, g=g, device=device).requires_grad_(True)
    u = randn(B, q, d, g=g, device=device).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda a, b, c: ops.fd_gradient(a, b, c, 0.2), (f0, fq, u), eps=1e-6,
                                        atol=1e-7, rtol=1e-5)
