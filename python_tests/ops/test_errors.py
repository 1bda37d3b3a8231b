"""Bad inputs raise a RuntimeError that names the op and the offending argument (docs/OPS.md), never a crash."""
import functools
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import zol2l_ext
from testing import CUDA_SKIP_REASON, device_params, lstm_inputs, ops, seeds

Z = torch.ops.zol2l
F64 = torch.float64

# One bad call of every op, each with a message that formats integers and shapes, run in a child process: a
# crash there (a segfault while raising, say) fails test_bad_inputs_do_not_crash_the_process and every
# in-process error test below with a clear message, instead of killing the whole pytest run.
_PROBE = textwrap.dedent("""
    import sys, torch, zol2l_ext
    from zol2l_ext import ops
    Z = torch.ops.zol2l
    for dev in sys.argv[1:]:
        z = lambda *s, dtype=torch.float64: torch.zeros(*s, dtype=dtype, device=dev)
        seed = torch.arange(3, device=dev)
        calls = {
            "lstm_step x 1-D": lambda: ops.lstm_step(z(5), z(5, 4), z(5, 4), z(16, 2), z(16, 4), z(3, 4)),
            "lstm_step h rows": lambda: ops.lstm_step(z(5, 2), z(6, 4), z(5, 4), z(16, 2), z(16, 4), z(3, 4)),
            "lstm_step_backward grad_y": lambda: Z.lstm_step_backward(z(5, 2), None, None, z(5, 2), z(5, 4),
                                                                      z(5, 4), z(16, 2), z(16, 4), None, z(3, 4), None),
            "sample_queries q": lambda: ops.sample_queries(z(3, 4), 0, 0.1, seed=seed),
            "sample_queries theta 1-D": lambda: ops.sample_queries(z(4), 2, 0.1, seed=seed[:1]),
            "directions_vjp seed": lambda: Z.directions_vjp(seed, z(2, 2, 3)),
            "fd_gradient f0": lambda: ops.fd_gradient(z(4), z(3, 2), z(3, 2, 5), 0.1),
            "central_points start": lambda: ops.central_points(z(3, 4), 0.1, 3, 2),
        }
        for name, fn in calls.items():
            print("calling", dev, name, flush=True)
            try:
                fn()
            except RuntimeError:
                print("raised", dev, name, flush=True)
            else:
                print("no error", dev, name, flush=True)
""")


@functools.lru_cache(maxsize=None)
def _probe():
    devices = ["cpu"] + ([] if CUDA_SKIP_REASON else ["cuda"])
    root = os.path.dirname(os.path.dirname(os.path.abspath(zol2l_ext.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", _PROBE, *devices], capture_output=True, text=True, env=env,
                          timeout=300)


def _probe_failure():
    """None if every probed bad call raised in the child process, else a description of what went wrong."""
    res = _probe()
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0:
        how = (f"killed by {signal.Signals(-res.returncode).name}" if res.returncode < 0
               else f"exit status {res.returncode}")
        last = lines[-1] if lines else "(before the first call)"
        return f"a bad input crashed the process ({how}) at: {last!r}\n{res.stderr[-2000:]}"
    missing = [l for l in lines if l.startswith("no error")]
    return f"bad inputs did not raise: {missing}" if missing else None


def test_bad_inputs_do_not_crash_the_process():
    failure = _probe_failure()
    assert failure is None, failure


def expect_error(fn, op: str, *words: str):
    """fn() must raise a RuntimeError whose message contains the op's name and every word as a whole word."""
    failure = _probe_failure()
    if failure is not None:
        pytest.fail(f"not run in-process, since {failure}")
    with pytest.raises(RuntimeError) as info:
        fn()
    msg = str(info.value)
    assert op in msg, f"message does not name the op {op!r}: {msg}"
    for w in words:
        assert re.search(rf"(?<![A-Za-z0-9_]){re.escape(w)}(?![A-Za-z0-9_])", msg), \
            f"message does not name {w!r}: {msg}"
    return msg


# ------------------------------------------------------------------------------------------------------------
# lstm_step
# ------------------------------------------------------------------------------------------------------------
N, H, I, O = 5, 4, 2, 3


def _lstm(device, **changes):
    args = lstm_inputs(N, H, I, O, device=device, seed=0)
    for k, v in changes.items():
        args[k] = v(args[k]) if callable(v) else v
    return lambda: ops.lstm_step(**args)


def _t(*shape, dtype=F64):
    return lambda old: torch.ones(*shape, dtype=dtype, device=old.device)


LSTM_BAD_SHAPES = [
    # (argument changed, new value, words the message must contain)
    ("x", _t(N), ["x"]),
    ("x", _t(N, I, 1), ["x"]),
    ("x", _t(N, 0), ["x"]),
    ("x", _t(N, 5), ["x"]),
    ("x", _t(N + 1, I), ["x"]),
    ("h", _t(N), ["h"]),
    ("h", _t(N, H, 1), ["h"]),
    ("h", _t(N + 1, H), ["h"]),
    ("h", _t(N, H + 1), ["h"]),  # h's hidden size disagrees with c and with all weights
    ("c", _t(N), ["c"]),
    ("c", _t(N + 1, H), ["c"]),
    ("c", _t(N, H + 1), ["c"]),
    ("w_ih", _t(4 * H * I), ["w_ih"]),
    ("w_ih", _t(4 * H, I + 1), ["w_ih"]),
    ("w_ih", _t(4 * H + 4, I), ["w_ih"]),
    ("w_hh", _t(4 * H * H), ["w_hh"]),
    ("w_hh", _t(4 * H, H + 1), ["w_hh"]),
    ("w_hh", _t(4 * H + 4, H + 1), ["w_hh"]),
    ("w_out", _t(O * H), ["w_out"]),
    ("w_out", _t(O, H + 1), ["w_out"]),
    ("w_out", _t(9, H), ["w_out"]),
    ("w_out", _t(0, H), ["w_out"]),
    ("bias", _t(4 * H + 1), ["bias"]),
    ("bias", _t(4, H), ["bias"]),
    ("b_out", _t(O + 1), ["b_out"]),
    ("b_out", _t(1, O), ["b_out"]),
]


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("arg,value,words", LSTM_BAD_SHAPES,
                         ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(LSTM_BAD_SHAPES)])
def test_lstm_step_bad_shape(arg, value, words, device):
    expect_error(_lstm(device, **{arg: value}), "lstm_step", *words)


@pytest.mark.parametrize("device", device_params())
def test_lstm_step_hidden_size_of_states_disagrees_with_weights(device):
    # States with hidden size 5, weights built for 4.
    msg = expect_error(_lstm(device, h=_t(N, H + 1), c=_t(N, H + 1)), "lstm_step", "w_hh")
    assert "hidden size" in msg
    expect_error(_lstm(device, h=_t(N, 65), c=_t(N, 65)), "lstm_step", "hidden size")


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("arg", ["h", "c", "w_ih", "w_hh", "w_out", "bias", "b_out"])
@pytest.mark.parametrize("bad_dtype", [torch.float32, torch.int64, torch.int32], ids=["f32", "i64", "i32"])
def test_lstm_step_dtype_mismatch(arg, bad_dtype, device):
    expect_error(_lstm(device, **{arg: lambda t: t.to(bad_dtype)}), "lstm_step", arg, "x")


@pytest.mark.parametrize("device", device_params())
def test_lstm_step_integer_and_bool_inputs(device):
    args = lstm_inputs(N, H, I, O, device=device)
    for dtype in (torch.int64, torch.int32, torch.uint8, torch.bool):
        ints = {k: v.to(dtype) for k, v in args.items()}
        expect_error(lambda: ops.lstm_step(**ints), "lstm_step", "x")
    # Only x integer, the rest float: named x.
    expect_error(_lstm(device, x=lambda t: t.to(torch.int64)), "lstm_step", "x")


def test_lstm_step_half_on_cpu_is_refused():
    args = {k: v.half() for k, v in lstm_inputs(N, H, I, O).items()}
    expect_error(lambda: ops.lstm_step(**args), "lstm_step")


@pytest.mark.parametrize("device", device_params())
def test_lstm_step_errors_under_autograd(device):
    # The autograd path validates as well (no partially-built graph, no crash).
    args = lstm_inputs(N, H, I, O, device=device, requires_grad=True)
    bad = dict(args, w_hh=torch.ones(4 * H, H + 1, dtype=F64, device=device, requires_grad=True))
    expect_error(lambda: ops.lstm_step(**bad), "lstm_step", "w_hh")
    bad = dict(args, b_out=args["b_out"].detach().float().requires_grad_(True))
    expect_error(lambda: ops.lstm_step(**bad), "lstm_step", "b_out")


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("arg,shape", [("grad_y", (N, O + 1)), ("grad_y", (N + 1, O)), ("grad_h_new", (N, H + 1)),
                                       ("grad_c_new", (N + 1, H)), ("grad_y", (N * O,))])
def test_lstm_step_backward_bad_grad_shape(arg, shape, device):
    a = lstm_inputs(N, H, I, O, device=device)
    grads = dict(grad_y=torch.ones(N, O, dtype=F64, device=device), grad_h_new=torch.ones(N, H, dtype=F64, device=device),
                 grad_c_new=torch.ones(N, H, dtype=F64, device=device))
    grads[arg] = torch.ones(*shape, dtype=F64, device=device)
    expect_error(lambda: Z.lstm_step_backward(grads["grad_y"], grads["grad_h_new"], grads["grad_c_new"], a["x"], a["h"],
                                              a["c"], a["w_ih"], a["w_hh"], a["bias"], a["w_out"], a["b_out"]),
                 "lstm_step_backward", arg)


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("arg", ["grad_y", "grad_h_new", "grad_c_new"])
def test_lstm_step_backward_bad_grad_dtype(arg, device):
    a = lstm_inputs(N, H, I, O, device=device)
    grads = dict(grad_y=torch.ones(N, O, dtype=F64, device=device), grad_h_new=torch.ones(N, H, dtype=F64, device=device),
                 grad_c_new=torch.ones(N, H, dtype=F64, device=device))
    grads[arg] = grads[arg].float()
    expect_error(lambda: Z.lstm_step_backward(grads["grad_y"], grads["grad_h_new"], grads["grad_c_new"], a["x"], a["h"],
                                              a["c"], a["w_ih"], a["w_hh"], a["bias"], a["w_out"], a["b_out"]),
                 "lstm_step_backward", arg)


# ------------------------------------------------------------------------------------------------------------
# sample_queries / directions_vjp
# ------------------------------------------------------------------------------------------------------------
B, Q, D = 3, 4, 5


def _sq(device, q=Q, mu=0.1, **changes):
    args = dict(seed=seeds(B).to(device), theta=torch.zeros(B, D, dtype=F64, device=device),
                scale=torch.ones(B, D, dtype=F64, device=device),
                use_scale=torch.tensor([True, False, True], device=device))
    for k, v in changes.items():
        args[k] = v(args[k]) if callable(v) else v
    return lambda: Z.sample_queries(args["seed"], args["theta"], args["scale"], args["use_scale"], q, mu)


SQ_BAD = [
    ("theta", _t(D), ["theta"]),
    ("theta", _t(B, D, 1), ["theta"]),
    ("theta", _t(B, D, dtype=torch.int64), ["theta"]),
    ("scale", _t(B, D + 1), ["scale"]),
    ("scale", _t(B + 1, D), ["scale"]),
    ("scale", _t(B * D), ["scale"]),
    ("scale", _t(B, D, dtype=torch.float32), ["scale", "theta"]),
    ("scale", _t(B, D, dtype=torch.int64), ["scale"]),
    ("use_scale", _t(B + 1, dtype=torch.bool), ["use_scale"]),
    ("use_scale", _t(B, 1, dtype=torch.bool), ["use_scale"]),
    ("use_scale", _t(B, dtype=torch.int64), ["use_scale"]),
    ("use_scale", _t(B, dtype=torch.float64), ["use_scale"]),
    ("seed", _t(B + 1, dtype=torch.int64), ["seed"]),
    ("seed", _t(B, 1, dtype=torch.int64), ["seed"]),
    ("seed", _t(B, dtype=torch.int32), ["seed"]),
    ("seed", _t(B, dtype=torch.float64), ["seed"]),
]


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("arg,value,words", SQ_BAD, ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(SQ_BAD)])
def test_sample_queries_bad_input(arg, value, words, device):
    expect_error(_sq(device, **{arg: value}), "sample_queries", *words)


@pytest.mark.parametrize("device", device_params())
def test_sample_queries_bad_scalars(device):
    for q in (0, -1):
        expect_error(_sq(device, q=q), "sample_queries", "q")
        expect_error(lambda: ops.sample_queries(torch.zeros(B, D, device=device), q, 0.1), "sample_queries", "q")
    for mu in (0.0, -0.5, float("nan")):
        expect_error(_sq(device, mu=mu), "sample_queries", "mu")
        expect_error(lambda: ops.sample_queries(torch.zeros(B, D, device=device), Q, mu), "sample_queries", "mu")
    expect_error(_sq(device, scale=None), "sample_queries", "use_scale", "scale")


@pytest.mark.parametrize("device", device_params())
def test_sample_queries_errors_under_autograd(device):
    theta = torch.zeros(B, D, dtype=F64, device=device, requires_grad=True)
    scale = torch.ones(B, D + 1, dtype=F64, device=device, requires_grad=True)
    expect_error(lambda: ops.sample_queries(theta, Q, 0.1, scale=scale, seed=seeds(B).to(device)),
                 "sample_queries", "scale")


def test_sample_queries_half_on_cpu_is_refused():
    expect_error(lambda: ops.sample_queries(torch.zeros(B, D, dtype=torch.float16), Q, 0.1), "sample_queries")


@pytest.mark.parametrize("device", device_params())
def test_directions_vjp_bad_input(device):
    g = torch.ones(B, Q, D, dtype=F64, device=device)
    s = seeds(B).to(device)
    expect_error(lambda: Z.directions_vjp(s, g[:, 0]), "directions_vjp", "grad_u")
    expect_error(lambda: Z.directions_vjp(s, g.long()), "directions_vjp", "grad_u")
    expect_error(lambda: Z.directions_vjp(seeds(B + 1).to(device), g), "directions_vjp", "seed")
    expect_error(lambda: Z.directions_vjp(s.int(), g), "directions_vjp", "seed")
    expect_error(lambda: Z.directions_vjp(s.unsqueeze(1), g), "directions_vjp", "seed")


# ------------------------------------------------------------------------------------------------------------
# fd_gradient / central_points
# ------------------------------------------------------------------------------------------------------------
def _fd(device, mu=0.1, **changes):
    args = dict(f0=torch.zeros(B, dtype=F64, device=device), fq=torch.zeros(B, Q, dtype=F64, device=device),
                u=torch.zeros(B, Q, D, dtype=F64, device=device))
    for k, v in changes.items():
        args[k] = v(args[k]) if callable(v) else v
    return lambda: ops.fd_gradient(args["f0"], args["fq"], args["u"], mu)


FD_BAD = [
    ("f0", _t(B + 1), ["f0"]),
    ("f0", _t(B, 1), ["f0"]),
    ("f0", _t(B, dtype=torch.float32), ["f0"]),
    ("f0", _t(B, dtype=torch.int64), ["f0"]),
    ("fq", _t(B, Q + 1), ["fq"]),
    ("fq", _t(B * Q), ["fq"]),
    ("fq", _t(B, Q, dtype=torch.float32), ["fq"]),
    ("u", _t(B, Q * D), ["u"]),
    ("u", _t(B, Q, D, 1), ["u"]),
    ("u", _t(B, Q, D, dtype=torch.int64), ["u"]),
]


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("arg,value,words", FD_BAD, ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(FD_BAD)])
def test_fd_gradient_bad_input(arg, value, words, device):
    expect_error(_fd(device, **{arg: value}), "fd_gradient", *words)


@pytest.mark.parametrize("device", device_params())
def test_fd_gradient_bad_scalars_and_q(device):
    for mu in (0.0, -1.0, float("nan")):
        expect_error(_fd(device, mu=mu), "fd_gradient", "mu")
    expect_error(_fd(device, fq=_t(B, 0), u=_t(B, 0, D)), "fd_gradient", "q")


def test_fd_gradient_half_on_cpu_is_refused():
    expect_error(_fd("cpu", f0=_t(B, dtype=torch.float16), fq=_t(B, Q, dtype=torch.float16),
                     u=_t(B, Q, D, dtype=torch.float16)), "fd_gradient")


@pytest.mark.parametrize("device", device_params())
def test_central_points_bad_input(device):
    theta = torch.zeros(B, D, dtype=F64, device=device)
    expect_error(lambda: ops.central_points(theta[0], 0.1, 0, 1), "central_points", "theta")
    expect_error(lambda: ops.central_points(theta.unsqueeze(0), 0.1, 0, 1), "central_points", "theta")
    expect_error(lambda: ops.central_points(theta.long(), 0.1, 0, 1), "central_points", "theta")
    for mu in (0.0, -0.1, float("nan")):
        expect_error(lambda: ops.central_points(theta, mu, 0, 1), "central_points", "mu")
    for start, count in ((-1, 1), (0, -1), (D, 1), (3, 3), (0, D + 1)):
        expect_error(lambda: ops.central_points(theta, 0.1, start, count), "central_points", "start", "count")
