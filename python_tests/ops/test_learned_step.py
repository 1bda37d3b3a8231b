"""The fused inference steps of the learned optimizer's networks (ops.learned_update_step / learned_query_step)
against LearnedZO's tensor ops (the path autograd takes), and the choice between the two."""
from __future__ import annotations

import pytest
import torch

from testing import gen
from zol2l_ext import ops
from zol2l_ext.zo import LearnedZO, ZOLSTM
from zol2l_ext.zo.synthetic import SparseQuadraticProblem

Z = torch.ops.zol2l
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-12, atol=1e-13)}


def _model(boost: float, dtype) -> LearnedZO:
    torch.manual_seed(0)
    m = LearnedZO(scaling="rms", step=0.05, boost=boost, boost_decay=4.0)
    with torch.no_grad():  # weights of a trained size, not the near-zero head of a fresh model
        for p in m.parameters():
            p.normal_(0.0, 0.5)
    return m.to(dtype)


def _state(m: LearnedZO, B: int, d: int, dtype, seed: int = 0):
    g = gen(seed)
    st = {**m.init_update_state(B, d, dtype=dtype), **m.init_query_state(B, d, dtype=dtype)}
    for k in ("h_update", "c_update", "h_query", "c_query"):
        st[k] = torch.randn(st[k].shape, generator=g, dtype=dtype)
    # the first row has seen no estimate yet (g_sq = 0): its mean square is taken as is
    st["g_sq"] = torch.rand(B, 1, generator=g, dtype=dtype) * (torch.arange(B, dtype=dtype) > 0).unsqueeze(1)
    if "n_update" in st:
        st["n_update"] = torch.arange(B, dtype=dtype).unsqueeze(1) * 3
    st["g_prev"] = torch.randn(B, d, generator=g, dtype=dtype) * 1e-3
    st["dtheta_prev"] = torch.randn(B, d, generator=g, dtype=dtype) * 1e2
    return st, torch.randn(B, d, generator=g, dtype=dtype) * 7.0


def _reference(m: LearnedZO, g, st):
    """The tensor-op path: gradients enabled and the weights require them, as in meta-training."""
    with torch.enable_grad():
        delta, new_u = m.update_step(g, st)
        s, new_q = m.query_step(st)
    assert delta.requires_grad and s.requires_grad  # it did take the autograd path
    return delta.detach(), {k: v.detach() for k, v in new_u.items()}, s.detach(), {k: v.detach() for k, v in
                                                                                  new_q.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("boost", [1.0, 3.0], ids=["noboost", "boost"])
@pytest.mark.parametrize("B,d", [(1, 784), (3, 50), (2, 1), (4, 2000)])  # 8000 coordinates: the parallel split
def test_fused_steps_equal_the_tensor_ops(B, d, boost, dtype):
    m = _model(boost, dtype)
    st, g = _state(m, B, d, dtype)
    want = _reference(m, g, st)
    with torch.no_grad():
        delta, new_u = m.update_step(g, st)
        s, new_q = m.query_step(st)
    assert not delta.requires_grad
    torch.testing.assert_close(delta, want[0], **TOL[dtype])
    assert new_u.keys() == want[1].keys() and new_q.keys() == want[3].keys()
    for k in new_u:
        torch.testing.assert_close(new_u[k], want[1][k], **TOL[dtype])
    torch.testing.assert_close(s, want[2], **TOL[dtype])
    for k in new_q:
        torch.testing.assert_close(new_q[k], want[3][k], **TOL[dtype])


def test_strided_states_are_read_right():
    m = _model(2.0, torch.float32)
    st, g = _state(m, 3, 20, torch.float32)
    want = _reference(m, g, st)
    for k in ("h_update", "c_update", "h_query", "c_query"):  # the same values, laid out [d, B, H] underneath
        st[k] = st[k].transpose(0, 1).contiguous().transpose(0, 1)
    with torch.no_grad():
        delta, _ = m.update_step(g.t().contiguous().t(), st)
        s, _ = m.query_step(st)
    torch.testing.assert_close(delta, want[0], **TOL[torch.float32])
    torch.testing.assert_close(s, want[2], **TOL[torch.float32])


def test_no_grad_steps_run_the_fused_ops_and_training_steps_the_tensor_ops(monkeypatch):
    calls = []
    for name in ("learned_update_step", "learned_query_step"):
        real = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    m = _model(2.0, torch.float32)
    st, g = _state(m, 2, 5, torch.float32)
    _reference(m, g, st)
    assert calls == []
    with torch.no_grad():
        m.update_step(g, st)
        m.query_step(st)
    assert calls == ["learned_update_step", "learned_query_step"]
    unscaled = LearnedZO()  # the reference code's form ("none") has no fused op
    st0 = {**unscaled.init_update_state(2, 5), **unscaled.init_query_state(2, 5), "g_prev": g, "dtheta_prev": g}
    with torch.no_grad():
        unscaled.update_step(g, st0)
        unscaled.query_step(st0)
    assert calls == ["learned_update_step", "learned_query_step"]


def test_a_zo_lstm_run_takes_the_same_steps_either_way():
    """20 steps of ZO-LSTM (the shipped MNIST weights, boost included) on a quadratic: the test-time (fused) run and
    the differentiable (meta-training) run agree up to the rounding that the steps' dynamics carry along."""
    prob = SparseQuadraticProblem([1, 2, 3], dim=40)
    m = LearnedZO.pretrained("mnist-attack")
    out = []
    for differentiable in (False, True):
        opt = ZOLSTM(m, q=10, mu=0.01, query_prob=1.0, differentiable=differentiable)
        theta = prob.initial_point()
        st = opt.init_state(theta)
        for t in range(20):
            theta, st, _ = opt.step(prob, theta, st, torch.arange(3) + 1000 * t)
            theta = theta.detach()
            st = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in st.items()}
        out.append(theta)
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=1e-5 * float(out[1].abs().max()))


def test_bad_inputs_name_the_op_and_the_argument():
    m = _model(2.0, torch.float32)
    st, g = _state(m, 2, 5, torch.float32)
    u = m.update.lstm
    args = [g, st["g_sq"], st["h_update"], st["c_update"], u.w_ih, u.w_hh, None, u.w_out, None, m.update.log_step, 0.9,
            1e-30, st["n_update"], 2.0, 4.0]
    for i, bad, match in ((1, st["g_sq"][:1], "learned_update_step: g_sq must have shape"),
                          (2, st["h_update"][:, :3], "learned_update_step: h must be"),
                          (0, g.double(), "g has dtype|has dtype"),
                          (12, st["n_update"].t(), "learned_update_step: n must have shape")):
        with pytest.raises(RuntimeError, match=match):
            ops.learned_update_step(*(args[:i] + [bad] + args[i + 1:]))
    q = m.query.lstm
    with pytest.raises(RuntimeError, match="learned_query_step: dtheta_prev must have shape"):
        ops.learned_query_step(g, g[:, :2], st["h_query"], st["c_query"], q.w_ih, q.w_hh, None, q.w_out, None,
                               1e-30)


def test_opcheck():
    m = _model(2.0, torch.float32)
    st, g = _state(m, 2, 5, torch.float32)
    u, q = m.update.lstm, m.query.lstm
    w = lambda t: t.detach()  # noqa: E731  (no autograd: the ops are inference only)
    tests = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    for op, args in ((Z.learned_update_step.default,
                      (g, st["g_sq"], st["h_update"], st["c_update"], w(u.w_ih), w(u.w_hh), None, w(u.w_out), None,
                       w(m.update.log_step), 0.9, 1e-30, st["n_update"], 2.0, 4.0)),
                     (Z.learned_query_step.default,
                      (st["g_prev"], st["dtheta_prev"], st["h_query"], st["c_query"], w(q.w_ih), w(q.w_hh), None,
                       w(q.w_out), None, 1e-30))):
        result = torch.library.opcheck(op, args, test_utils=tests)
        assert result == {t: "SUCCESS" for t in tests}, result
