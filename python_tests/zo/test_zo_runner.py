"""The runner: budgets, early stops, batch = one-at-a-time, non-finite values, resume, errors."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from zol2l_ext import zo
from zol2l_ext.zo import NonFiniteValueError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the shared helpers, under any import mode
from zo_testing import Counting, one_thread, quadratic, sgd_like_lstm, tiny_attack  # noqa: F401
from test_zo_optimizers import NAMES, QUAD_KW, make  # noqa: E402


def _same(a: zo.RunResult, b: zo.RunResult, exact=True):
    for f in ("queries", "success", "first_success_step", "first_success_queries", "stop_step", "stop_code", "failed"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    cmp = torch.equal if exact else (lambda x, y: torch.allclose(x, y, rtol=1e-9, atol=1e-12, equal_nan=True))
    assert cmp(a.theta, b.theta)
    assert torch.equal(a.loss.isnan(), b.loss.isnan())
    if exact:
        assert torch.equal(torch.nan_to_num(a.loss), torch.nan_to_num(b.loss))
    else:
        assert torch.allclose(a.loss, b.loss, rtol=1e-9, atol=1e-12, equal_nan=True)


def _cat(results):
    return zo.RunResult(
        loss=torch.cat([r.loss for r in results], 1),
        **{f: torch.cat([getattr(r, f) for r in results]) for f in (
            "queries", "success", "first_success_step", "first_success_queries", "theta", "stop_step",
            "stop_code", "failed")},
        has_success=results[0].has_success,
    )


def test_budget_stops_each_problem_exactly():
    prob, _ = quadratic(B=4, d=6)
    cp = Counting(prob)
    opt = zo.make_optimizer("zo-sgd", q=4)  # 5 queries per step
    r = zo.minimize(opt, cp, 50, budget=[0, 20, 28, 1000], progress=False, final_eval=False)
    assert r.queries.tolist() == [0, 20, 25, 250] == cp.counts.tolist()
    assert r.stop_step.tolist() == [0, 4, 5, 50]
    assert r.stop_reason == ["budget", "budget", "budget", "steps"]
    assert torch.equal(r.theta[0], prob.initial_point()[0])
    assert r.loss[:4, 1].isfinite().all() and r.loss[4:, 1].isnan().all()  # final eval off: NaN at the stop
    # ZO-SZVR-G: snapshot steps (q' + 1 = 8) and inner steps (2 (q + 1) = 10)
    cp = Counting(prob)
    szvrg = zo.make_optimizer("zo-szvr-g", q=4, q_snapshot=7, epoch_length=3)
    r = zo.minimize(szvrg, cp, 50, budget=8 + 10 + 10 + 7, progress=False, final_eval=False)
    assert r.queries.tolist() == [28] * 4 == cp.counts.tolist() and r.stop_step.tolist() == [3] * 4


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_one_at_a_time(name):
    prob, _ = quadratic(B=3, d=8)
    kw = dict(q=5, mu=0.01, **QUAD_KW.get(name, {}))
    budget = [60, 1000, 140]
    batch = zo.minimize(make(name, **kw), prob, 25, seed=3, budget=budget, progress=False)
    singles = [
        zo.minimize(make(name, **kw), prob.select(torch.tensor([i])), 25, seed=3, budget=budget[i],
                    problem_ids=[i], progress=False)
        for i in range(3)
    ]
    _same(batch, _cat(singles))
    assert batch.stop_reason == ["budget", "steps", "budget"]
    other_seed = zo.minimize(make(name, **kw), prob, 25, seed=4, budget=budget, progress=False)
    assert not torch.equal(other_seed.theta, batch.theta)


def test_attack_batch_equals_one_at_a_time_with_stop_at_success():
    prob, *_ = tiny_attack(B=5, dtype=torch.float64)
    opt = zo.make_optimizer("zo-signsgd", q=6, lr=2.0)
    batch = zo.minimize(opt, prob, 25, stop_at_success=True, progress=False)
    singles = [zo.minimize(opt, prob.select(torch.tensor([i])), 25, stop_at_success=True, problem_ids=[i],
                           progress=False) for i in range(5)]
    _same(batch, _cat(singles), exact=False)
    won = batch.first_success_step >= 0
    assert won.sum() >= 3
    assert batch.success[won].all()
    assert torch.equal(batch.stop_step[won], batch.first_success_step[won])
    assert torch.equal(batch.queries[won], batch.first_success_queries[won])
    assert torch.equal(batch.queries[won], batch.stop_step[won] * 7)
    assert all(batch.stop_reason[i] == "success" for i in range(5) if won[i])
    assert torch.equal(prob.success(batch.theta), batch.success)


@pytest.mark.parametrize("final_eval", [True, False])
def test_success_read_from_the_steps_own_query(final_eval):
    """Without stop_at_success the success of theta_t comes from step t's row-0 query (no extra forward); the
    result is the same as with a separate success() forward before each step."""
    prob, model, images, labels = tiny_attack(B=5, dtype=torch.float64)
    calls = []
    counted = zo.AttackProblem(lambda x: (calls.append(x.shape[0]), model(x))[1], images, labels)
    separate = zo.AttackProblem(model, images, labels)
    separate.reports_row0_success = False
    opt = zo.make_optimizer("zo-signsgd", q=6, lr=2.0)
    kw = dict(budget=[1000, 1000, 35, 1000, 1000], progress=False, final_eval=final_eval)
    a = zo.minimize(opt, counted, 25, **kw)
    b = zo.minimize(opt, separate, 25, **kw)
    _same(a, b) if final_eval else _same(a, b, exact=False)
    assert a.ever_success.sum() >= 3
    assert all(n % 7 == 0 for n in calls[:-1])  # only the steps' own calls (B x 7 points) and one final read
    singles = [zo.minimize(opt, counted.select(torch.tensor([i])), 25, problem_ids=[i],
                           **dict(kw, budget=kw["budget"][i])) for i in range(5)]
    _same(a, _cat(singles), exact=False)


def test_stochastic_problem_batch_equals_one_at_a_time():
    prob = zo.BinaryClassificationProblem(num_datasets=3, dim=20, n=300, minibatch=32, seeds=11, dtype=torch.float64)
    opt = zo.make_optimizer("zo-adam", q=10, lr=2.0)
    batch = zo.minimize(opt, prob, 40, progress=False)
    singles = [zo.minimize(opt, prob.select(torch.tensor([i])), 40, problem_ids=[i], progress=False)
               for i in range(3)]
    _same(batch, _cat(singles))
    assert (prob.full_loss(batch.theta) < prob.full_loss(prob.initial_point()) - 0.02).all()


def test_loss_records_f_at_each_iterate():
    prob, _ = quadratic(B=2, d=5)
    seen = []
    r = zo.minimize(zo.make_optimizer("zo-adam", q=3), prob, 6, budget=[1000, 12],
                    callback=lambda info: seen.append((info.step, info.active.clone(), info.theta.clone())),
                    progress=False)
    thetas = {0: prob.initial_point()}
    for step, active, th in seen:
        full = thetas.get(step + 1, thetas[step].clone())
        full[active] = th
        thetas[step + 1] = full
    for t in range(7):
        for b in range(2):
            if t <= r.stop_step[b]:
                ref = prob(thetas[t].unsqueeze(1)).squeeze(1)[b]
                assert torch.allclose(r.loss[t, b], ref.double()), (t, b)
            else:
                assert r.loss[t, b].isnan()
    assert r.stop_step.tolist() == [6, 3] and torch.allclose(r.final_loss, prob(r.theta.unsqueeze(1)).squeeze(1))


def _nan_problems(kind):
    """Three quadratics centred at 0, 1, -1; problem 1 returns NaN/inf once a query has x_0 > 0.5."""
    centers = torch.tensor([[0.0] * 4, [1.0] * 4, [-1.0] * 4], dtype=torch.float64)
    bad = float("nan") if kind == "nan" else float("inf")

    def good(points, index):
        return 0.5 * (points - centers.index_select(0, index).unsqueeze(1)).square().sum(dim=2)

    def fn(points, index):
        v = good(points, index)
        hit = (index == 1).unsqueeze(1) & (points[:, :, 0] > 0.5)
        return torch.where(hit, torch.full_like(v, bad), v)

    make_p = lambda f: zo.CallableProblem(f, 4, 3, x0=torch.zeros(4, dtype=torch.float64), per_row=True)  # noqa
    return make_p(fn), make_p(good)


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_nonfinite_values_fail_only_that_problem(kind):
    bad_prob, good_prob = _nan_problems(kind)
    opt = zo.make_optimizer("zo-sgd", q=4, lr=1.0)
    r = zo.minimize(opt, bad_prob, 30, progress=False)
    ref = zo.minimize(opt, good_prob, 30, progress=False)
    assert r.failed.tolist() == [False, True, False] and r.stop_reason[1] == "failed"
    t = int(r.stop_step[1])
    assert 0 < t < 30
    assert torch.isfinite(r.theta[1]).all() and r.loss[t + 1:, 1].isnan().all()
    keep = torch.tensor([0, 2])
    assert torch.equal(r.theta[keep], ref.theta[keep]) and torch.equal(r.queries[keep], ref.queries[keep])
    # the row is frozen on the device at once and leaves the batch at the next host check (every 10 steps by
    # default): the queries spent on it until then are counted; with sync_every=1 it leaves at once
    assert r.queries[1] == 10 * 5 * ((t + 10) // 10)
    r1 = zo.minimize(opt, bad_prob, 30, sync_every=1, progress=False)
    assert r1.queries[1] == (t + 1) * 5  # the failing step's queries were spent
    for f in ("stop_step", "stop_code", "failed", "theta"):
        assert torch.equal(getattr(r, f), getattr(r1, f)), f
    assert torch.equal(r.loss.isnan(), r1.loss.isnan())
    with pytest.raises(NonFiniteValueError, match=rf"problem\(s\) \[1\] at step {t} "):
        zo.minimize(opt, bad_prob, 30, nan_policy="raise", progress=False)


def test_nonfinite_from_the_start_and_ignore_policy():
    def fn(points, index):
        v = points.square().sum(dim=2)
        return torch.where((index == 0).unsqueeze(1), torch.full_like(v, float("nan")), v)

    p = zo.CallableProblem(fn, 3, 2, x0=torch.ones(3), per_row=True)
    r = zo.minimize(zo.make_optimizer("zo-sgd", q=2), p, 5, progress=False)
    assert r.failed.tolist() == [True, False]
    assert r.failed[0] and r.stop_step[0] == 0 and torch.equal(r.theta[0], torch.ones(3))
    r = zo.minimize(zo.make_optimizer("zo-sgd", q=2), p, 5, nan_policy="ignore", progress=False)
    assert not r.failed.any() and r.theta[0].isnan().all() and torch.isfinite(r.theta[1]).all()


@pytest.mark.parametrize("name", ["zo-sgd", "zo-adam", "zo-szvr-g", "guided-es", "zo-lstm"])
def test_interrupted_run_resumes_identically(name, tmp_path):
    prob, *_ = tiny_attack(B=4, dtype=torch.float64)
    kw = dict(q=5, **({"lr": 2.0} if name != "zo-lstm" else {}))
    if name == "zo-lstm":
        model = sgd_like_lstm(0.1).double()
        with torch.no_grad():
            model.query.lstm.w_ih[20, 0] = 1.0
            model.query.lstm.w_out[0, 0] = 0.5
        kw["model"] = model
    args = dict(steps=14, seed=5, budget=[1000, 1000, 50, 1000], stop_at_success=True, progress=False)
    full = zo.minimize(make(name, **kw), prob, **args)

    class Boom(Exception):
        pass

    def crash(info):
        if info.step == 7:
            raise Boom

    path = tmp_path / "run.pt"
    with pytest.raises(Boom):
        zo.minimize(make(name, **kw), prob, checkpoint_every=5, checkpoint_path=path, callback=crash, **args)
    state = zo.RunState.load(path)
    assert state.t == 5
    opt2 = make(name, **kw)
    resumed = zo.minimize(opt2, prob, steps=14, resume_from=path, progress=False)
    _same(full, resumed)
    # a KeyboardInterrupt writes the checkpoint of the last finished step
    def interrupt(info):
        if info.step == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zo.minimize(make(name, **kw), prob, checkpoint_path=path, callback=interrupt, **args)
    assert zo.RunState.load(path).t == 9
    _same(full, zo.minimize(make(name, **kw), prob, steps=14, resume_from=str(path), progress=False))
    # on_checkpoint gets in-memory states; resuming one of them (as a dict) works too
    states = []
    zo.minimize(make(name, **kw), prob, checkpoint_every=4, on_checkpoint=states.append, **args)
    assert [s.t for s in states] == [4, 8, 12][: len(states)] and states
    _same(full, zo.minimize(make(name, **kw), prob, steps=14, resume_from=states[0].to_dict(), progress=False))


def test_resume_can_extend_a_run():
    prob, _ = quadratic(B=2, d=5)
    full = zo.minimize(zo.make_optimizer("zo-adam", q=3), prob, 12, progress=False)
    states = []
    zo.minimize(zo.make_optimizer("zo-adam", q=3), prob, 6, checkpoint_every=6, on_checkpoint=states.append,
                progress=False)
    longer = zo.minimize(zo.make_optimizer("zo-adam", q=3), prob, 12, resume_from=states[-1], progress=False)
    _same(full, longer)
    with pytest.raises(ValueError, match="beyond steps"):
        zo.minimize(zo.make_optimizer("zo-adam", q=3), prob, 4, resume_from=states[-1], progress=False)


def test_callback_can_stop_and_progress_bar_runs():
    prob, _ = quadratic(B=2, d=5)
    r = zo.minimize(zo.make_optimizer("zo-sgd", q=3), prob, 20, callback=lambda info: info.step == 3,
                    progress=True)
    assert r.stop_step.tolist() == [4, 4] and r.stop_reason == ["callback", "callback"]
    assert r.queries.tolist() == [16, 16]


def test_runner_errors():
    prob, _ = quadratic(B=2, d=5)
    opt = zo.make_optimizer("zo-sgd", q=3)
    with pytest.raises(ValueError, match="theta0 must have shape"):
        zo.minimize(opt, prob, 3, theta0=torch.zeros(2, 4, dtype=torch.float64), progress=False)
    with pytest.raises(ValueError, match="problem_ids"):
        zo.minimize(opt, prob, 3, problem_ids=[0], progress=False)
    with pytest.raises(ValueError, match="budget"):
        zo.minimize(opt, prob, 3, budget=[1, 2, 3], progress=False)
    with pytest.raises(ValueError, match="nan_policy"):
        zo.minimize(opt, prob, 3, nan_policy="skip", progress=False)
    with pytest.raises(ValueError, match="steps must be"):
        zo.minimize(opt, prob, -1, progress=False)

    class Empty(zo.BlackBoxProblem):
        dim, batch = 3, 0

    with pytest.raises(ValueError, match="empty batch"):
        zo.minimize(opt, Empty(), 3, progress=False)
    wrong = zo.CallableProblem(lambda p: p.sum(dim=2)[:, :1], 5, 2)
    with pytest.raises(ValueError, match="values"):
        zo.minimize(opt, wrong, 3, progress=False)
    r = zo.minimize(opt, prob, 0, progress=False)
    assert r.loss.shape == (1, 2) and r.queries.tolist() == [0, 0] and r.stop_step.tolist() == [0, 0]
