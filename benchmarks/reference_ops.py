"""The unfused reference path: zol2l_ext.ops' fused ops replaced by their pure-PyTorch references.

The optimizers and the LSTM modules look the ops up as ``ops.<name>`` at call time (zo/estimator.py,
zo/lstm_optimizer.py), so `reference_ops()` swaps the module's attributes for the duration of a block;
`check_reference_patch` verifies that the references were the ones called.
"""
from __future__ import annotations

import contextlib

from zol2l_ext import ops
from zol2l_ext import reference as R

_REF_CALLS = {"lstm_step": 0, "sample_queries": 0, "fd_gradient": 0}


def _lstm_ref(x, h, c, w_ih, w_hh, w_out, bias=None, b_out=None):
    _REF_CALLS["lstm_step"] += 1
    return R.lstm_step_ref(x, h, c, w_ih, w_hh, w_out, bias, b_out)


def _sample_ref(theta, q, mu, scale=None, use_scale=None, seed=None, generator=None, out=None):
    _REF_CALLS["sample_queries"] += 1
    if seed is None:
        seed = ops.draw_seeds(theta.shape[0], generator, device=theta.device)
    u, points = R.sample_queries_ref(seed, theta, q, mu, scale, use_scale)
    if out is None:
        return u, points
    out[0].copy_(u)  # ops.sample_queries(out=...) on a device without an out kernel: computed, then copied in
    out[1].copy_(points)
    return out


def _fd_ref(f0, fq, u, mu):
    _REF_CALLS["fd_gradient"] += 1
    return R.fd_gradient_ref(f0, fq, u, mu)


@contextlib.contextmanager
def reference_ops():
    """Within the block, zol2l_ext.ops.{lstm_step, sample_queries, fd_gradient} are the pure-PyTorch references.

    The optimizers and the LSTM modules look the ops up as ``ops.<name>`` at call time (zo/estimator.py,
    zo/lstm_optimizer.py), so patching the module's attributes swaps them; `check_reference_patch` verifies it.
    """
    saved = {k: getattr(ops, k) for k in _REF_CALLS}
    ops.lstm_step, ops.sample_queries, ops.fd_gradient = _lstm_ref, _sample_ref, _fd_ref
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(ops, k, v)


def check_reference_patch(opt_name, fn):
    """Run fn() under reference_ops() and raise unless the reference ops were the ones called."""
    before = dict(_REF_CALLS)
    with reference_ops():
        out = fn()
    called = {k: _REF_CALLS[k] - before[k] for k in _REF_CALLS}
    want = ("sample_queries", "fd_gradient") + (("lstm_step",) if opt_name == "zo-lstm" else ())
    missing = [k for k in want if called[k] == 0]
    if missing:
        raise RuntimeError(f"reference path: {', '.join(missing)} not called through zol2l_ext.ops (the patch no "
                           "longer reaches the optimizer; the 'ref' rows would time the fused ops)")
    return out
