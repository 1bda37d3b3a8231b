"""A black box that misbehaves: it raises, returns NaN, the wrong shape, the wrong number of rows or the wrong
dtype. Each gives a clear error, or the row is marked failed under nan_policy="fail" (issue 13)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from zol2l_ext import zo
from zol2l_ext.remote import EndpointError, RemoteModel
from zol2l_ext.serve import ScoringServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the shared helpers, under any import mode
from zo_testing import tiny_attack  # noqa: E402


def _callable(fn, B=2, d=3):
    return zo.CallableProblem(fn, d, B, x0=torch.ones(B, d, dtype=torch.float64))


def _minimize(problem, **kw):
    return zo.minimize(zo.make_optimizer("zo-sgd", q=2), problem, 4, progress=False, **kw)


def test_a_black_box_that_raises_stops_the_run_with_its_own_error():
    def fn(points):
        raise RuntimeError("the service is on fire")

    with pytest.raises(RuntimeError, match="the service is on fire"):
        _minimize(_callable(fn))


@pytest.mark.parametrize("fn, got", [
    (lambda p: p.sum(-1)[:, :1], r"\(2, 1\)"),          # one value per row instead of Q
    (lambda p: p.sum(-1)[:1], r"\(1, 3\)"),             # the wrong number of rows
    (lambda p: p.sum(-1).reshape(-1), r"\(6,\)"),       # flat
])
def test_values_of_the_wrong_shape_are_a_clear_error(fn, got):
    with pytest.raises(ValueError, match=r"must map points \[B=2, Q=3, d=3\] to values \[B=2, Q=3\], got values "
                                         rf"of shape {got}"):
        _minimize(_callable(fn))


def test_integer_values_are_numbers():
    ref = _minimize(_callable(lambda p: p.square().sum(-1).round()))
    r = _minimize(_callable(lambda p: p.square().sum(-1).round().to(torch.int64)))
    assert torch.equal(r.theta, ref.theta)


@pytest.mark.parametrize("fn, dtype", [
    (lambda p: p.square().sum(-1) > 1.0, "torch.bool"),                  # a yes/no answer, not a loss
    (lambda p: p.square().sum(-1).to(torch.complex128), "torch.complex128"),
])
def test_bool_or_complex_values_are_a_clear_error(fn, dtype):
    with pytest.raises(ValueError, match=rf"must return real values \(floating point or integer\), got {dtype}"):
        _minimize(_callable(fn))


def test_nan_values_mark_only_that_row_failed_or_raise():
    def fn(points):
        v = points.square().sum(-1)
        v[1] = float("nan")
        return v

    r = _minimize(_callable(fn))
    assert r.failed.tolist() == [False, True] and r.stop_reason == ["steps", "failed"]
    with pytest.raises(zo.NonFiniteValueError, match=r"problem\(s\) \[1\] at step 0"):
        _minimize(_callable(fn), nan_policy="raise")


# --------------------------------------------------------------------------------------- an attack's model
def _attack_with(model_fn):
    _, model, images, labels = tiny_attack(B=4)
    return zo.AttackProblem(lambda x: model_fn(model, x), images, labels), model, images, labels


@pytest.mark.parametrize("model_fn, match", [
    (lambda m, x: m(x)[:-1], "the model returned .* rows for .* images"),
    (lambda m, x: m(x)[:, 0], r"must map \[N, C, H, W\] images to \[N, num_classes\] scores"),
    (lambda m, x: m(x)[:, :1], r"must map \[N, C, H, W\] images to \[N, num_classes\] scores"),
    (lambda m, x: m(x).tolist(), "got list"),
])
def test_an_attack_model_with_bad_outputs_is_a_clear_error(model_fn, match):
    prob, *_ = _attack_with(model_fn)
    with pytest.raises(ValueError, match=match):
        _minimize(prob)


def test_an_attack_model_that_returns_nan_for_one_image_fails_that_row():
    def nan_for_image_2(m, x):
        out = m(x)
        bad = (x.flatten(1) - images[2].flatten()).abs().amax(1) < 0.05  # queries near image 2
        return torch.where(bad.unsqueeze(1), torch.full_like(out, float("nan")), out)

    prob, model, images, labels = _attack_with(nan_for_image_2)
    r = _minimize(prob)
    assert r.failed.tolist() == [False, False, True, False]
    clean = _minimize(zo.AttackProblem(model, images, labels))
    keep = torch.tensor([0, 1, 3])
    assert torch.equal(r.theta[keep], clean.theta[keep])


# ----------------------------------------------------------------------------------------------- endpoint
@pytest.mark.parametrize("answer, match", [
    (lambda s: s.astype(np.int64), r"answered int64 \(5, 10\) for 5 images; expected float scores"),
    (lambda s: s[:, 0], r"answered float32 \(5,\) for 5 images"),
])
def test_an_endpoint_with_the_wrong_dtype_or_shape_is_a_clear_error(answer, match):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    srv = ScoringServer(model)
    srv.score = lambda x: answer(model(torch.from_numpy(x)).detach().numpy())  # a service that answers badly
    with srv:
        with pytest.raises(EndpointError, match=match):
            RemoteModel(srv.url, backoff=0.001)(torch.rand(5, 1, 8, 8))
