"""Step buffers reused across steps (sample_queries_out, estimator.Workspace) and the library's allocator
setting (malloc_tuning): results identical to the allocating path, buffers not re-allocated, clear errors."""
import contextlib
import copy
import pickle

import pytest
import torch

from testing import device_params, gen, randn, seeds

from zol2l_ext import malloc_tuning, ops
from zol2l_ext.zo import make_optimizer
from zol2l_ext.zo.estimator import Workspace, gaussian_estimate
from zol2l_ext.zo.problems import CallableProblem

Z = torch.ops.zol2l


def _inputs(device, B=3, d=11, mode="mixed"):
    g = gen(5)
    theta = randn(B, d, g=g, dtype=torch.float32, device=device)
    scale = use_scale = None
    if mode != "identity":
        scale = (torch.rand(B, d, generator=g) + 0.5).to(device=device)
    if mode == "mixed":
        use_scale = torch.tensor([True, False, True][:B], device=device)
    return theta, scale, use_scale, seeds(B).to(device)


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("mode", ["identity", "scale", "mixed"])
def test_sample_queries_out_equals_functional(mode, device):
    theta, scale, use_scale, sd = _inputs(device, mode=mode)
    u, points = ops.sample_queries(theta, 4, 0.05, scale=scale, use_scale=use_scale, seed=sd)
    U, P = torch.full_like(u, float("nan")), torch.full_like(points, float("nan"))
    u2, p2 = ops.sample_queries(theta, 4, 0.05, scale=scale, use_scale=use_scale, seed=sd, out=(U, P))
    assert u2 is U and p2 is P
    assert torch.equal(U, u) and torch.equal(P, points)


def test_opcheck_sample_queries_out():
    theta, scale, use_scale, sd = _inputs("cpu")
    U, P = torch.empty(3, 4, 11), torch.empty(3, 5, 11)
    result = torch.library.opcheck(Z.sample_queries_out.default, (sd, theta, scale, use_scale, 4, 0.05, U, P),
                                   test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))
    assert all(v == "SUCCESS" for v in result.values()), result


def test_sample_queries_out_bad_inputs():
    theta, scale, use_scale, sd = _inputs("cpu")
    with pytest.raises(RuntimeError, match="u must have shape"):
        ops.sample_queries(theta, 4, 0.05, seed=sd, out=(torch.empty(3, 5, 11), torch.empty(3, 5, 11)))
    with pytest.raises(RuntimeError, match="contiguous"):
        ops.sample_queries(theta, 4, 0.05, seed=sd,
                           out=(torch.empty(3, 11, 4).transpose(1, 2), torch.empty(3, 5, 11)))
    with pytest.raises(RuntimeError, match="dtype"):
        ops.sample_queries(theta, 4, 0.05, seed=sd, out=(torch.empty(3, 4, 11, dtype=torch.float64),
                                                         torch.empty(3, 5, 11)))
    with pytest.raises(RuntimeError, match="automatic differentiation"):
        ops.sample_queries(theta.requires_grad_(), 4, 0.05, seed=sd, out=(torch.empty(3, 4, 11), torch.empty(3, 5, 11)))
    P = torch.empty(3, 5, 11)
    with pytest.raises(RuntimeError, match="single memory location"):  # theta read while the points are written
        ops.sample_queries(P.view(-1)[:33].view(3, 11), 4, 0.05, seed=sd, out=(torch.empty(3, 4, 11), P))


def test_workspace_reuses_and_grows():
    ws, like = Workspace(), torch.zeros(1)
    a = ws.buffer("u", (4, 3, 5), like)
    b = ws.buffer("u", (2, 3, 5), like)  # fewer rows (finished problems dropped): the same storage
    assert b.data_ptr() == a.data_ptr() and b.shape == (2, 3, 5) and b.is_contiguous()
    c = ws.buffer("u", (6, 3, 5), like)  # more rows: a new buffer, kept from then on
    assert c.shape == (6, 3, 5) and ws.buffer("u", (6, 3, 5), like).data_ptr() == c.data_ptr()
    assert ws.buffer("u", (6, 3, 5), like.double()).dtype == torch.float64
    ws.clear()
    assert ws.buffer("u", (6, 3, 5), like).data_ptr() != 0
    assert copy.deepcopy(ws)._buffers == {} and pickle.loads(pickle.dumps(ws))._buffers == {}


def _quadratic(points):
    return points.square().sum(dim=2)


def test_gaussian_estimate_with_workspace_matches():
    theta, scale, use_scale, sd = _inputs("cpu")
    prob = CallableProblem(_quadratic, dim=11, batch=3)
    ws = Workspace()
    with torch.no_grad():
        ref = gaussian_estimate(prob, theta, 4, 0.05, sd, scale=scale, use_scale=use_scale)
        est = gaussian_estimate(prob, theta, 4, 0.05, sd, scale=scale, use_scale=use_scale, workspace=ws)
    for a, b in zip(ref, est):
        assert torch.equal(a, b)
    assert est.u.data_ptr() == ws.buffer("u", (3, 4, 11), theta).data_ptr()


@pytest.mark.parametrize("name", ["zo-sgd", "zo-adam", "zo-lstm-no-query"])
def test_optimizer_steps_reuse_query_buffers(name):
    ptrs = []

    def f(points):
        ptrs.append(points.data_ptr())
        return _quadratic(points)

    prob = CallableProblem(f, dim=11, batch=3)
    kw = {"model": None} if name.startswith("zo-lstm") else {}
    with pytest.warns(UserWarning) if kw else contextlib.nullcontext():
        opt = make_optimizer(name, q=4, **kw)
    theta = torch.randn(3, 11, generator=gen(1))
    st = opt.init_state(theta)
    for t in range(3):
        theta, st, _ = opt.step(prob, theta, st, seeds(3) + t)
    assert len(set(ptrs)) == 1, "the query points were allocated again"


def test_keep_freed_memory_once_respects_the_user(monkeypatch):
    monkeypatch.setattr(malloc_tuning, "_applied", None)
    monkeypatch.setenv(malloc_tuning.ENV_KEEP_FREED_MEMORY, "0")
    assert malloc_tuning.keep_freed_memory_once() is False
    monkeypatch.setattr(malloc_tuning, "_applied", None)
    monkeypatch.delenv(malloc_tuning.ENV_KEEP_FREED_MEMORY)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    called = []
    monkeypatch.setattr(malloc_tuning, "keep_freed_memory", lambda *a: called.append(a) or True)
    assert malloc_tuning.keep_freed_memory_once() is False and not called
    monkeypatch.setattr(malloc_tuning, "_applied", None)
    for var in malloc_tuning._USER_SETTINGS + ("GLIBC_TUNABLES",):
        monkeypatch.delenv(var, raising=False)
    assert malloc_tuning.keep_freed_memory_once() is True
    assert called == [(malloc_tuning.MMAP_THRESHOLD, malloc_tuning.TRIM_THRESHOLD)]
    assert malloc_tuning.keep_freed_memory_once() is True and len(called) == 1  # once per process


def test_every_black_box_call_applies_the_allocator_setting(monkeypatch):
    from zol2l_ext.zo import estimator

    calls = []
    monkeypatch.setattr(estimator, "keep_freed_memory_once", lambda: calls.append(1) or True)
    prob = CallableProblem(_quadratic, dim=11, batch=3)
    estimator.evaluate(prob, torch.zeros(3, 2, 11))
    assert calls == [1]


def test_workspace_only_where_the_out_kernel_writes_in_place(monkeypatch):
    theta, _, _, sd = _inputs("cpu")
    prob = CallableProblem(_quadratic, dim=11, batch=3)
    ws = Workspace()
    monkeypatch.setattr(ops, "has_sample_out_kernel", lambda device: False)
    with torch.no_grad():
        gaussian_estimate(prob, theta, 4, 0.05, sd, workspace=ws)
    assert ws._buffers == {}
