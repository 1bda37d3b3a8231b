"""torch.library.opcheck on every zol2l op: schema, autograd registration, fake kernels, AOT dispatch."""
import pytest
import torch

from testing import device_params, gen, lstm_inputs, randn, seeds

Z = torch.ops.zol2l
# One dtype (the production float32): the dtype handling itself is covered by the reference tests, and every
# opcheck call traces through dynamo/AOT, which is what costs time here.
dtype = torch.float32
OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def _check(op, args):
    result = torch.library.opcheck(op, args, test_utils=OPCHECK_TESTS)
    assert result == {t: "SUCCESS" for t in OPCHECK_TESTS}, result


def _lstm_args(dtype, device, bias, requires_grad, N=7):
    a = lstm_inputs(N, 4, 2, 3, bias=bias, b_out=bias, dtype=dtype, device=device, seed=1,
                    requires_grad=requires_grad)
    return (a["x"], a["h"], a["c"], a["w_ih"], a["w_hh"], a["bias"], a["w_out"], a["b_out"])


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_opcheck_lstm_step(bias, requires_grad, device):
    _check(Z.lstm_step.default, _lstm_args(dtype, device, bias, requires_grad))


@pytest.mark.parametrize("device", device_params())
def test_opcheck_lstm_step_empty(device):
    _check(Z.lstm_step.default, _lstm_args(dtype, device, True, True, N=0))


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("grads", ["all", "y-only"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_opcheck_lstm_step_backward(bias, grads, device):
    x, h, c, w_ih, w_hh, b, w_out, b_out = _lstm_args(dtype, device, bias, False)
    g = gen(2)
    gy = randn(7, 3, g=g, dtype=dtype, device=device)
    gh = randn(7, 4, g=g, dtype=dtype, device=device) if grads == "all" else None
    gc = randn(7, 4, g=g, dtype=dtype, device=device) if grads == "all" else None
    _check(Z.lstm_step_backward.default, (gy, gh, gc, x, h, c, w_ih, w_hh, b, w_out, b_out))


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("mode", ["identity", "scale", "mixed"])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
def test_opcheck_sample_queries(mode, requires_grad, device):
    B, q, d = 3, 4, 7
    g = gen(3)
    theta = randn(B, d, g=g, dtype=dtype, device=device).requires_grad_(requires_grad)
    scale = use_scale = None
    if mode != "identity":
        scale = (torch.rand(B, d, generator=g) + 0.5).to(dtype=dtype, device=device).requires_grad_(requires_grad)
    if mode == "mixed":
        use_scale = torch.tensor([True, False, True], device=device)
    _check(Z.sample_queries.default, (seeds(B).to(device), theta, scale, use_scale, q, 0.1))


@pytest.mark.parametrize("device", device_params())
def test_opcheck_directions_vjp(device):
    _check(Z.directions_vjp.default, (seeds(3).to(device), randn(3, 4, 7, g=gen(4), dtype=dtype, device=device)))


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
def test_opcheck_fd_gradient(requires_grad, device):
    g = gen(5)
    f0 = randn(3, g=g, dtype=dtype, device=device).requires_grad_(requires_grad)
    fq = randn(3, 4, g=g, dtype=dtype, device=device).requires_grad_(requires_grad)
    u = randn(3, 4, 7, g=g, dtype=dtype, device=device).requires_grad_(requires_grad)
    _check(Z.fd_gradient.default, (f0, fq, u, 0.1))


@pytest.mark.parametrize("device", device_params())
def test_opcheck_central_points(device):
    _check(Z.central_points.default, (randn(3, 9, g=gen(6), dtype=dtype, device=device), 0.1, 2, 5))


def test_opcheck_splitmix64():  # CPU only: other devices hash with tensor ops (zo/seeding.py)
    _check(Z.splitmix64.default, (torch.arange(-5, 12, dtype=torch.int64).view(1, 17),))
