"""Tests aimed at breakages the rest of the suite let through (issue 13): each fails when its behaviour breaks.

* ZO-LSTM's Bernoulli choice (QueryRNN scale or identity) is drawn per problem, not once for the batch: the batch
  test of test_zo_runner.py uses a QueryRNN whose head is zero (s = 1), where the choice changes nothing.
* ``ZOLSTM.load_state_dict`` restores the saved weights: the resume test there rebuilds the optimizer around the
  same in-memory model, so weights that were ignored would still be the right ones.
* A resumed run keeps the record of a problem that failed (non-finite values), whether the host had already
  removed it or only frozen it on the device (``fail_at``), from a checkpoint at every step.
"""
from __future__ import annotations

import os
import sys

import torch

from zol2l_ext import zo
from zol2l_ext.zo.seeding import SALT_BERNOULLI, derive, step_seeds, uniform01

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the shared helpers, under any import mode
from zo_testing import sgd_like_lstm, tiny_attack  # noqa: E402
from test_zo_runner import _cat, _nan_problems, _same  # noqa: E402


def _query_lstm(lr=0.1, gain=0.5):
    """The SGD-like LearnedZO of zo_testing with a QueryRNN whose head is not zero: s depends on g_{t-1}, so a
    problem that uses s draws other directions than one that uses the identity."""
    model = sgd_like_lstm(lr).double()
    H = model.query.lstm.w_hh.shape[1]
    with torch.no_grad():
        # the cell input saturates: h_k = +-tanh(1) by the sign of g_{t-1,j} and k, so s_j moves far from 1
        model.query.lstm.w_ih[2 * H:3 * H, 0] = torch.linspace(-1e4, 2e4, H, dtype=torch.float64)
        model.query.lstm.w_out[0] = gain
    return model


def test_zo_lstm_bernoulli_choice_is_per_problem():
    B, steps, seed = 6, 6, 2
    # the test's premise: at these keys the per-problem draws differ within the batch at every step, so a choice
    # shared by the batch (e.g. row 0's) would change some rows' directions
    for t in range(steps):
        use = uniform01(derive(step_seeds(seed, torch.arange(B), t), SALT_BERNOULLI)) < 0.5
        assert 0 < int(use.sum()) < B, t
    prob, *_ = tiny_attack(B=B, dtype=torch.float64)
    model = _query_lstm()

    def opt(p):
        return zo.make_optimizer("zo-lstm", q=5, model=model, query_prob=p)

    batch = zo.minimize(opt(0.5), prob, steps, seed=seed, progress=False)
    singles = [zo.minimize(opt(0.5), prob.select(torch.tensor([i])), steps, seed=seed, problem_ids=[i],
                           progress=False) for i in range(B)]
    _same(batch, _cat(singles), exact=False)  # exact but for the rounding of a batched vs a single forward
    # and the choice matters here: always the QueryRNN's scale, or never, gives other iterates
    for p in (0.0, 1.0):
        other = zo.minimize(opt(p), prob, steps, seed=seed, progress=False).theta
        assert (other - batch.theta).abs().max() > 1e-3, p


def test_zo_lstm_resume_restores_the_saved_weights():
    prob, *_ = tiny_attack(B=4, dtype=torch.float64)
    args = dict(steps=10, seed=1, progress=False)
    full = zo.minimize(zo.make_optimizer("zo-lstm", q=5, model=_query_lstm()), prob, **args)
    states = []
    zo.minimize(zo.make_optimizer("zo-lstm", q=5, model=_query_lstm()), prob, checkpoint_every=4,
                on_checkpoint=states.append, **args)
    # resumed by an optimizer built around other weights: only the checkpoint's can give the same run
    other = zo.make_optimizer("zo-lstm", q=5, model=_query_lstm(lr=0.02, gain=-1.0))
    resumed = zo.minimize(other, prob, 10, resume_from=states[0].to_dict(), progress=False)
    _same(full, resumed)
    saved = _query_lstm().state_dict()
    for k, v in other.model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_resume_keeps_the_failed_row_record():
    bad_prob, _ = _nan_problems("nan")
    opt = lambda: zo.make_optimizer("zo-sgd", q=4, lr=1.0)  # noqa: E731
    full = zo.minimize(opt(), bad_prob, 30, progress=False)
    assert full.failed.tolist() == [False, True, False]
    t_fail = int(full.stop_step[1])
    states = []
    zo.minimize(opt(), bad_prob, 30, checkpoint_every=1, on_checkpoint=states.append, progress=False)
    # among the states, some hold the failure only on the device (frozen, fail_at set, not yet removed) and some
    # after the host removed the row: both kinds must resume to the same result
    pending = [s for s in states if int(s.fail_at[1]) >= 0 and not bool(s.failed[1])]
    removed = [s for s in states if bool(s.failed[1])]
    assert pending and removed and all(int(s.fail_at[1]) == t_fail for s in pending)
    for s in states:
        r = zo.minimize(opt(), bad_prob, 30, resume_from=s.to_dict(), progress=False)
        _same(full, r)
        assert r.stop_reason[1] == "failed", s.t
