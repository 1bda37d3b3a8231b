"""Optimizers: descent on a convex quadratic and a small attack, exact query counts, state round trips, LSTMs."""
from __future__ import annotations

import os
import sys

import io

import pytest
import torch

from zol2l_ext import reference
from zol2l_ext import zo
from zol2l_ext.zo import seeding

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the shared helpers, under any import mode
from zo_testing import Counting, one_thread, quadratic, sgd_like_lstm, tiny_attack  # noqa: F401

NAMES = [
    "zo-sgd", "zo-signsgd", "zo-adam", "zo-szvr-g", "guided-es",
    "zo-lstm", "zo-lstm-no-query", "zo-lstm-no-update", "zo-lstm-guided-es",
]


def make(name, lstm_lr=0.3, model=None, **kw):
    """An optimizer; the ZO-LSTM variants get the hand-set SGD-like LearnedZO (an untrained one need not descend)."""
    if name.startswith("zo-lstm"):
        kw["model"] = model if model is not None else sgd_like_lstm(lstm_lr).double()
    return zo.make_optimizer(name, **kw)


def test_registry():
    assert zo.OPTIMIZER_NAMES == tuple(NAMES)
    for name in NAMES:
        opt = make(name, q=3)
        assert opt.name == name and opt.queries_per_step >= 4
    assert isinstance(zo.make_optimizer("ZO_SGD"), zo.ZOSGD)
    with pytest.raises(ValueError, match="unknown optimizer"):
        zo.make_optimizer("zo-newton")
    with pytest.raises(ValueError, match="q must be"):
        zo.make_optimizer("zo-sgd", q=0)
    with pytest.raises(ValueError, match="mu must be"):
        zo.make_optimizer("zo-adam", mu=0.0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        zo.make_optimizer("zo-lstm")


# quadratic: B = 3 problems, d = 12, curvature in [0.5, 2]; coordinate step lr / d for the baselines
QUAD_KW = {
    "zo-sgd": dict(lr=4.0), "zo-signsgd": dict(lr=0.5), "zo-adam": dict(lr=1.0), "zo-szvr-g": dict(lr=3.0),
    "guided-es": dict(lr=4.0), "zo-lstm-no-update": dict(lr=4.0),
}


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_descends_on_a_quadratic(name):
    prob, _ = quadratic(B=3, d=12)
    opt = make(name, q=10, mu=0.01, **QUAD_KW.get(name, {}))
    r = zo.minimize(opt, prob, 60, progress=False)
    start, end = r.loss[0], r.final_loss
    assert torch.isfinite(end).all()
    assert (end < 0.3 * start).all(), (name, start, end)


ATTACK_KW = {
    "zo-sgd": dict(lr=4.0), "zo-signsgd": dict(lr=1.0), "zo-adam": dict(lr=1.0), "zo-szvr-g": dict(lr=2.0),
    "guided-es": dict(lr=4.0), "zo-lstm-no-update": dict(lr=4.0),
}


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_lowers_a_small_attack(name):
    prob, *_ = tiny_attack(B=6, dtype=torch.float64)
    opt = make(name, q=10, lstm_lr=0.1, **ATTACK_KW.get(name, {}))
    r = zo.minimize(opt, prob, 30, progress=False)
    assert r.has_success
    assert r.final_loss.mean() < 0.6 * r.loss[0].mean(), (name, r.loss[0], r.final_loss)
    assert r.ever_success.sum() >= 3
    l1, _ = prob.distortion(r.theta)
    assert (l1 > 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_query_counts_are_exact(name):
    prob, _ = quadratic(B=3, d=8)
    cp = Counting(prob)
    opt = make(name, q=4, q_snapshot=7) if name == "zo-szvr-g" else make(name, q=4)
    r = zo.minimize(opt, cp, 13, progress=False, final_eval=False)
    expected = sum(opt.queries_at(t) for t in range(13))
    assert r.queries.tolist() == [expected] * 3 == cp.counts.tolist()
    assert cp.calls[0] == 13  # one black-box call per step for all problems
    if name == "zo-szvr-g":
        assert opt.queries_per_step == 10 and opt.snapshot_queries == 8
        assert expected == 2 * 8 + 11 * 10  # snapshots at steps 0 and 10
    else:
        assert expected == 13 * 5
    # the loss-vs-queries axis: the queries spent before each step, ending at the run's count
    axis = opt.query_axis(13)
    assert len(axis) == 14 and axis[0] == 0 and axis[-1] == expected
    assert all(axis[t + 1] - axis[t] == opt.queries_at(t) for t in range(13))
    # the final evaluation is one more (uncounted) point per problem
    cp2 = Counting(prob)
    r2 = zo.minimize(opt, cp2, 13, progress=False)
    assert (cp2.counts - r2.queries).tolist() == [1, 1, 1]


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_identically(name):
    prob, _ = quadratic(B=2, d=6)
    opt = make(name, q=3, lstm_lr=0.2)
    theta = prob.initial_point()
    state = opt.init_state(theta)
    ids = torch.arange(2)
    for t in range(4):
        theta, state, _ = opt.step(prob, theta, state, seeding.step_seeds(0, ids, t))
    buf = io.BytesIO()
    torch.save(opt.state_dict(state), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    opt2, state2 = zo.optimizer_from_state_dict(sd)
    assert type(opt2) is type(opt) and opt2.config() == opt.config()
    th1, th2 = theta.clone(), theta.clone()
    for t in range(4, 8):
        keys = seeding.step_seeds(0, ids, t)
        th1, state, f1 = opt.step(prob, th1, state, keys)
        th2, state2, f2 = opt2.step(prob, th2, state2, keys)
    assert torch.equal(th1, th2) and torch.equal(f1, f2)
    with pytest.raises(ValueError, match="is for optimizer"):
        zo.make_optimizer("zo-sgd" if name != "zo-sgd" else "zo-adam").load_state_dict(sd)


def test_step_leaves_its_input_state_unchanged():
    prob, _ = quadratic(B=2, d=5)
    for name in NAMES:
        opt = make(name, q=3)
        st = opt.init_state(prob.initial_point())
        before = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in st.items()}
        opt.step(prob, prob.initial_point(), st, seeding.step_seeds(0, torch.arange(2), 0))
        for k, v in before.items():
            assert (torch.equal(v, st[k]) if isinstance(v, torch.Tensor) else v == st[k]), (name, k)


def test_untrained_zo_lstm_shapes_and_states():
    torch.manual_seed(0)
    model = zo.LearnedZO().double()
    prob, _ = quadratic(B=3, d=7)
    for name in ("zo-lstm", "zo-lstm-no-query", "zo-lstm-no-update", "zo-lstm-guided-es"):
        opt = zo.make_optimizer(name, model=model, q=5)
        st = opt.init_state(prob.initial_point())
        if opt.use_update:
            assert st["h_update"].shape == (3, 7, 10) and st["c_update"].shape == (3, 7, 10)
        if opt.use_query:
            assert st["h_query"].shape == (3, 7, 10)
        r = zo.minimize(opt, prob, 5, progress=False)
        assert r.theta.shape == (3, 7) and torch.isfinite(r.loss).all() and r.queries.tolist() == [30] * 3


def test_zo_lstm_query_probability():
    prob, _ = quadratic(B=4, d=6)
    base = sgd_like_lstm(0.2).double()
    with torch.no_grad():
        base.query.lstm.w_out[0, 0] = 0.5  # a non-trivial scale s != 1
        base.query.lstm.w_ih[2 * 10, 0] = 1.0  # cell candidate driven by g_{t-1}
    runs = {}
    for p in (0.0, 0.5, 1.0):
        opt = zo.ZOLSTM(model=base, q=4, query_prob=p)
        runs[p] = zo.minimize(opt, prob, 6, progress=False).theta
    no_query = zo.minimize(zo.ZOLSTMNoQuery(model=base, q=4), prob, 6, progress=False).theta
    assert torch.equal(runs[0.0], no_query)  # p = 0: identity scale every step
    assert not torch.allclose(runs[1.0], no_query)
    assert not torch.allclose(runs[0.5], runs[1.0])


def test_zo_lstm_differentiable_mode_reaches_the_weights():
    prob, _ = quadratic(B=2, d=5)
    model = sgd_like_lstm(0.2).double()
    with torch.no_grad():
        model.query.lstm.w_ih[2 * 10, 0] = 1.0  # QueryRNN hidden state driven by g_{t-1}
    opt = zo.ZOLSTM(model=model, q=4, query_prob=1.0, differentiable=True)
    theta = prob.initial_point()
    st = opt.init_state(theta)
    total = 0
    for t in range(3):
        theta, st, _ = opt.step(prob, theta, st, seeding.step_seeds(0, torch.arange(2), t))
        total = total + prob(theta.unsqueeze(1)).sum()
    total.backward()
    for p in (model.update.lstm.w_out, model.update.lstm.w_ih, model.query.lstm.w_out):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_coordinate_lstm_matches_the_reference_forward_and_backward():
    torch.manual_seed(0)
    lstm = zo.CoordinateLSTM(2, 10, 1).double()
    assert lstm.bias is None and lstm.w_ih.shape == (40, 2) and lstm.w_out.shape == (1, 10)
    assert lstm.w_out.abs().max() <= 0.1 / 10 ** 0.5 + 1e-12  # torch's Linear init x 0.1
    x = torch.randn(50, 2, dtype=torch.float64, requires_grad=True)
    h, c = torch.randn(50, 10, dtype=torch.float64), torch.randn(50, 10, dtype=torch.float64)
    y, (h1, c1) = lstm(x, (h, c))
    yr, h1r, c1r = reference.lstm_step_ref(x, h, c, lstm.w_ih, lstm.w_hh, lstm.w_out)
    assert torch.allclose(y, yr) and torch.allclose(h1, h1r) and torch.allclose(c1, c1r)
    g1 = torch.autograd.grad((y.square().sum() + h1.sum()), [x, lstm.w_ih, lstm.w_hh, lstm.w_out])
    g2 = torch.autograd.grad((yr.square().sum() + h1r.sum()), [x, lstm.w_ih, lstm.w_hh, lstm.w_out])
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b)


def test_learned_zo_save_load_pretrained_and_reference_import(tmp_path):
    torch.manual_seed(1)
    m = zo.LearnedZO()
    path = tmp_path / "sub" / "opt.pt"
    m.save(path, meta={"task": "mnist-attack", "steps": 200})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "zol2l-learnedzo-v1" and raw["config"]["hidden"] == 10
    m2 = zo.LearnedZO.load(path)
    assert m2.meta["task"] == "mnist-attack"
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match="no pretrained ZO-LSTM named 'does-not-exist'"):
        zo.LearnedZO.pretrained("does-not-exist")
    with pytest.raises(FileNotFoundError):
        zo.ZOLSTM(pretrained="does-not-exist")
    # the authors' checkpoint layout (nn.LSTM / nn.Linear names)
    up, out = torch.nn.LSTM(1, 10, bias=False), torch.nn.Linear(10, 1, bias=False)
    qu, qout = torch.nn.LSTM(2, 10, bias=False), torch.nn.Linear(10, 1, bias=False)
    sd = {"update_rnn.weight_ih_l0": up.weight_ih_l0, "update_rnn.weight_hh_l0": up.weight_hh_l0,
          "outputer.weight": out.weight, "query_u_rnn.weight_ih_l0": qu.weight_ih_l0,
          "query_u_rnn.weight_hh_l0": qu.weight_hh_l0, "query_u_outputer.weight": qout.weight}
    m3 = zo.LearnedZO.from_reference_state_dict({k: v.detach() for k, v in sd.items()})
    x = torch.randn(1, 6, 1)
    with torch.no_grad():
        ref, _ = up(x)
        ours, _ = m3.update(x.view(1, 6), m3.update.init_state(1, 6))
        assert torch.allclose(ours.view(-1), out(ref).view(-1), atol=1e-6)
