"""lstm_step / lstm_step_backward against the pure-PyTorch reference (docs/OPS.md section 1)."""
import math

import pytest
import torch

from testing import (LSTM_ARG_ORDER, assert_close, assert_equal, device_dtype_params, device_params, gen,
                     grad_list, lstm_inputs, ops, randn, reference, to64)

Z = torch.ops.zol2l

# (I, O, bias present, b_out present): every I, every O, and each optional tensor present and absent.
LSTM_CONFIGS = [
    pytest.param(1, 1, True, True, id="I1-O1-bias-bout"),
    pytest.param(2, 3, False, False, id="I2-O3-nobias-nobout"),
    pytest.param(2, 1, True, False, id="I2-O1-bias-nobout"),
    pytest.param(1, 3, False, True, id="I1-O3-nobias-bout"),
]


def _ordered(args: dict) -> list:
    return [args[k] for k in LSTM_ARG_ORDER]


def _ref64(args: dict, requires_grad: bool = True) -> dict:
    return {k: to64(v, requires_grad=requires_grad if v is not None else None) for k, v in args.items()}


def _grad_scale(name: str, N: int) -> float:
    """atol widening for the gradient of argument `name`: the weight gradients are sums over the N coordinates
    (their size, and their rounding error, grow like sqrt(N)); those of x, h and c are per coordinate, each a sum
    of 4H terms of size ~1/sqrt(H) (kernels accumulate in float32 whatever the dtype), so of size ~1 at any H."""
    return 1.0 if name in ("x", "h", "c") else math.sqrt(max(N, 1))


@pytest.mark.parametrize("device,dtype", device_dtype_params(half=True))
@pytest.mark.parametrize("I,O,has_bias,has_b_out", LSTM_CONFIGS)
@pytest.mark.parametrize("H", [1, 10, 17])
@pytest.mark.parametrize("N", [0, 1, 7, 16, 33, 1000])
def test_lstm_step_forward_backward_match_reference(N, H, I, O, has_bias, has_b_out, device, dtype):
    args = lstm_inputs(N, H, I, O, bias=has_bias, b_out=has_b_out, dtype=dtype, device=device, seed=N * 131 + H,
                       requires_grad=True)
    y, h_new, c_new = ops.lstm_step(**args)
    for t, shape in ((y, (N, O)), (h_new, (N, H)), (c_new, (N, H))):
        assert t.shape == shape and t.dtype == dtype and t.device.type == device

    ref_args = _ref64(args)
    y_r, h_r, c_r = reference.lstm_step_ref(**ref_args)
    assert_close(y, y_r, dtype, msg="y")
    assert_close(h_new, h_r, dtype, msg="h_new")
    assert_close(c_new, c_r, dtype, msg="c_new")

    g = gen(7)
    grads_out = [randn(*t.shape, g=g, dtype=dtype, device=device) for t in (y, h_new, c_new)]
    got = grad_list((y, h_new, c_new), _ordered(args), grads_out)
    want = grad_list((y_r, h_r, c_r), _ordered(ref_args), [to64(t) for t in grads_out])
    for name, a, b in zip(LSTM_ARG_ORDER, got, want):
        if b is None:
            assert a is None
            continue
        assert a.shape == args[name].shape and a.dtype == dtype, name
        assert_close(a, b, dtype, scale=_grad_scale(name, N), msg=f"grad of {name}")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
@pytest.mark.parametrize("used", ["y", "h_new", "c_new", "y+c_new", "h_new+c_new"])
def test_lstm_step_backward_with_unused_outputs(used, device, dtype):
    # Outputs that do not reach the loss give None incoming gradients (grad_y None goes through zeros).
    N, H, I, O = 37, 5, 2, 3
    args = lstm_inputs(N, H, I, O, dtype=dtype, device=device, seed=3, requires_grad=True)
    ref_args = _ref64(args)
    outs = dict(zip(("y", "h_new", "c_new"), ops.lstm_step(**args)))
    outs_r = dict(zip(("y", "h_new", "c_new"), reference.lstm_step_ref(**ref_args)))
    names = used.split("+")
    g = gen(11)
    weights = {n: randn(*outs[n].shape, g=g, dtype=dtype, device=device) for n in names}
    loss = sum((outs[n] * weights[n]).sum() for n in names)
    loss_r = sum((outs_r[n] * to64(weights[n])).sum() for n in names)
    got = torch.autograd.grad(loss, _ordered(args))
    want = torch.autograd.grad(loss_r, _ordered(ref_args), allow_unused=True, materialize_grads=True)
    for name, a, b in zip(LSTM_ARG_ORDER, got, want):
        assert_close(a, b, dtype, scale=math.sqrt(N), msg=f"grad of {name} (loss on {used})")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_lstm_step_grad_only_weights(device, dtype):
    # The meta-training case: states and inputs are data, only the shared weights learn.
    N, H, I, O = 50, 10, 2, 1
    args = lstm_inputs(N, H, I, O, dtype=dtype, device=device, seed=5)
    trainable = ("w_ih", "w_hh", "w_out", "bias", "b_out")
    for k in trainable:
        args[k].requires_grad_(True)
    y, h_new, c_new = ops.lstm_step(**args)
    assert y.requires_grad and y.grad_fn is not None
    loss = y.square().sum() + h_new.sum()
    got = torch.autograd.grad(loss, [args[k] for k in trainable])
    ref_args = {k: to64(v, requires_grad=k in trainable) for k, v in args.items()}
    y_r, h_r, _ = reference.lstm_step_ref(**ref_args)
    want = torch.autograd.grad(y_r.square().sum() + h_r.sum(), [ref_args[k] for k in trainable])
    for k, a, b in zip(trainable, got, want):
        assert_close(a, b, dtype, scale=math.sqrt(N), msg=f"grad of {k}")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
@pytest.mark.parametrize("grad_h,grad_c", [(True, True), (False, False), (True, False), (False, True)],
                         ids=["gh-gc", "none-none", "gh-none", "none-gc"])
@pytest.mark.parametrize("has_bias,has_b_out", [(True, True), (False, False)], ids=["bias", "nobias"])
def test_lstm_step_backward_op_matches_reference(grad_h, grad_c, has_bias, has_b_out, device, dtype):
    """The raw zol2l::lstm_step_backward: a missing grad_h_new / grad_c_new counts as zero, and grad_bias [4H] and
    grad_b_out [O] are returned (as the gradient a bias would get) even when bias / b_out are None."""
    N, H, I, O = 21, 6, 2, 3
    args = lstm_inputs(N, H, I, O, bias=has_bias, b_out=has_b_out, dtype=dtype, device=device, seed=9)
    g = gen(13)
    gy = randn(N, O, g=g, dtype=dtype, device=device)
    gh = randn(N, H, g=g, dtype=dtype, device=device) if grad_h else None
    gc = randn(N, H, g=g, dtype=dtype, device=device) if grad_c else None
    res = Z.lstm_step_backward(gy, gh, gc, args["x"], args["h"], args["c"], args["w_ih"], args["w_hh"],
                               args["bias"], args["w_out"], args["b_out"])
    assert len(res) == 8
    # Reference: always give bias and b_out (zeros where absent) so that their gradients exist.
    ref = {k: to64(v, requires_grad=True) for k, v in args.items() if v is not None}
    ref.setdefault("bias", torch.zeros(4 * H, dtype=torch.float64, requires_grad=True))
    ref.setdefault("b_out", torch.zeros(O, dtype=torch.float64, requires_grad=True))
    y_r, h_r, c_r = reference.lstm_step_ref(**ref)
    loss = (y_r * to64(gy)).sum()
    if gh is not None:
        loss = loss + (h_r * to64(gh)).sum()
    if gc is not None:
        loss = loss + (c_r * to64(gc)).sum()
    names = ("x", "h", "c", "w_ih", "w_hh", "bias", "w_out", "b_out")
    want = torch.autograd.grad(loss, [ref[k] for k in names])
    for k, a, b in zip(names, res, want):
        assert a.shape == b.shape, f"grad of {k}: shape {tuple(a.shape)}, expected {tuple(b.shape)}"
        assert a.dtype == dtype and a.device.type == device
        assert_close(a, b, dtype, scale=math.sqrt(N), msg=f"grad of {k}")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
@pytest.mark.parametrize("amplitude", [30.0, 1e4])
def test_lstm_step_saturated_gates_stay_finite(amplitude, device, dtype):
    # Pre-activations far in the saturated range: sigmoid -> 0/1, tanh -> -1/1, no inf or NaN, gradients -> 0.
    N, H, I, O = 40, 8, 2, 2
    args = lstm_inputs(N, H, I, O, dtype=dtype, device=device, seed=21)
    args["x"] = args["x"] * amplitude
    args["bias"] = args["bias"] * amplitude
    for v in args.values():
        v.requires_grad_(True)
    outs = ops.lstm_step(**args)
    ref = _ref64(args)
    outs_r = reference.lstm_step_ref(**ref)
    for name, a, b in zip(("y", "h_new", "c_new"), outs, outs_r):
        assert torch.isfinite(a).all(), name
        assert_close(a, b, dtype, msg=name)
    got = torch.autograd.grad(sum(o.sum() for o in outs), _ordered(args))
    want = torch.autograd.grad(sum(o.sum() for o in outs_r), _ordered(ref))
    for k, a, b in zip(LSTM_ARG_ORDER, got, want):
        assert torch.isfinite(a).all(), k
        # Pre-activations of size ~amplitude carry a rounding error of amplitude * eps: the few unsaturated
        # entries then have derivatives accurate only to that relative level.
        assert_close(a, b, dtype, scale=math.sqrt(N), rscale=amplitude / 100, msg=f"grad of {k}")


@pytest.mark.parametrize("c0", [0.0, 0.7])
def test_lstm_step_cpu_float_activations_absolute_error(c0):
    # The CPU kernel's float32 sigmoid and tanh are rational approximations (csrc/common/activations.h); every gate
    # pre-activation equal to x sweeps them densely over [-30, 30], saturation included: c_new = s(x) c0 +
    # s(x) tanh(x) and h_new = s(x) tanh(c_new) stay within a few float32 ulps of 1 of the float64 truth. The
    # general test's tolerance (atol 1e-5) would let an approximation 50x worse pass.
    N = 200001
    x = torch.linspace(-30.0, 30.0, N).reshape(N, 1)
    h, c = torch.zeros(N, 1), torch.full((N, 1), c0)
    w_ih, w_hh, w_out = torch.ones(4, 1), torch.zeros(4, 1), torch.ones(1, 1)
    y, h_new, c_new = ops.lstm_step(x, h, c, w_ih, w_hh, w_out)
    s, t = torch.sigmoid(x.double()), torch.tanh(x.double())
    c_ref = s * c0 + s * t
    h_ref = s * torch.tanh(c_ref)
    assert (c_new.double() - c_ref).abs().max().item() < 1e-6
    assert (h_new.double() - h_ref).abs().max().item() < 1e-6
    assert_equal(y, h_new, msg="y = 1 * h_new")


@pytest.mark.parametrize("device", device_params())
def test_lstm_step_backward_is_deterministic(device):
    # The weight gradients are reduced in a fixed order: two identical backward passes agree bitwise.
    args = lstm_inputs(3000, 16, 2, 1, dtype=torch.float32, device=device, seed=4, requires_grad=True)
    results = []
    for _ in range(2):
        y, h_new, c_new = ops.lstm_step(**args)
        results.append(torch.autograd.grad((y.sum() + h_new.square().sum() + c_new.sum()), _ordered(args)))
    for k, a, b in zip(LSTM_ARG_ORDER, *results):
        assert_equal(a, b, msg=f"grad of {k}")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_lstm_step_zero_state_matches_torch_lstmcell(device, dtype):
    # Independent of reference.py: torch.nn.LSTMCell (same gate order) plus a linear head.
    N, H, I, O = 25, 7, 2, 3
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(I, H).to(device=device, dtype=dtype)
    head = torch.nn.Linear(H, O).to(device=device, dtype=dtype)
    g = gen(2)
    x = randn(N, I, g=g, dtype=dtype, device=device)
    h = randn(N, H, g=g, dtype=dtype, device=device)
    c = randn(N, H, g=g, dtype=dtype, device=device)
    with torch.no_grad():
        h_ref, c_ref = cell(x, (h, c))
        y_ref = head(h_ref)
        y, h_new, c_new = ops.lstm_step(x, h, c, cell.weight_ih, cell.weight_hh, head.weight,
                                        cell.bias_ih + cell.bias_hh, head.bias)
    assert_close(y, y_ref, dtype, scale=10, msg="y")
    assert_close(h_new, h_ref, dtype, scale=10, msg="h_new")
    assert_close(c_new, c_ref, dtype, scale=10, msg="c_new")


@pytest.mark.parametrize("device,dtype", device_dtype_params(half=True))
@pytest.mark.parametrize("N,H,I,O", [(40, 64, 4, 8), (17, 33, 3, 5), (65, 16, 4, 2), (300, 64, 1, 1)])
def test_lstm_step_limit_sizes_match_reference(N, H, I, O, device, dtype):
    # The largest sizes the op accepts (H = 64, I = 4, O = 8) and sizes across the kernels' tile widths.
    args = lstm_inputs(N, H, I, O, dtype=dtype, device=device, seed=H, requires_grad=True)
    outs = ops.lstm_step(**args)
    ref_args = _ref64(args)
    outs_r = reference.lstm_step_ref(**ref_args)
    for name, a, b in zip(("y", "h_new", "c_new"), outs, outs_r):
        assert_close(a, b, dtype, scale=math.sqrt(H), msg=name)
    g = gen(17)
    grads_out = [randn(*t.shape, g=g, dtype=dtype, device=device) for t in outs]
    got = torch.autograd.grad(outs, _ordered(args), grads_out)
    want = torch.autograd.grad(outs_r, _ordered(ref_args), [to64(t) for t in grads_out])
    for name, a, b in zip(LSTM_ARG_ORDER, got, want):
        assert_close(a, b, dtype, scale=_grad_scale(name, N), msg=f"grad of {name}")
