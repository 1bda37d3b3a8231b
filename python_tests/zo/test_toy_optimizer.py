"""Adding an optimizer is one file (docs/ADDING_AN_OPTIMIZER.md): a toy ZO-SGD with momentum, defined here, is
in the registry with its traits, runs through the runner with exact query counts, and `tune` tunes it."""
from __future__ import annotations

import io
import math
import os
import sys

import pytest
import torch

from zol2l_ext import tune as TU
from zol2l_ext import zo
from zol2l_ext.zo.estimator import gaussian_estimate
from zol2l_ext.zo.optimizers import OptimizerTraits, ZOOptimizer, unregister_optimizer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the shared helpers, under any import mode
from zo_testing import Counting, quadratic  # noqa: E402

NAME = "zo-sgd-momentum"


@pytest.fixture(scope="module")
def toy():
    """The docs' example, registered by its class definition; unregistered afterwards (other tests see the
    built-in registry)."""

    class ZOSGDMomentum(ZOOptimizer):
        """ZO-SGD with heavy-ball momentum: v <- momentum * v + g, theta <- theta - (lr / d) v."""

        name = NAME
        traits = OptimizerTraits(label="ZO-SGD-momentum", colour="goldenrod", tunable=True)
        _config_keys = ZOOptimizer._config_keys + ("momentum",)
        _zero_state = ("velocity",)

        def __init__(self, q=20, mu=0.005, lr=4.0, momentum=0.9, scale_lr_by_dim=True):
            self.momentum = float(momentum)
            super().__init__(q, mu, lr, scale_lr_by_dim)

        def step(self, problem, theta, state, seeds):
            with torch.no_grad():
                est = gaussian_estimate(problem, theta, self.q, self.mu, seeds, workspace=self.workspace,
                                        baseline=self.baseline)
                velocity = state["velocity"].mul(self.momentum).add_(est.g)
                theta_new = self.descend(theta, velocity, state)
            return theta_new, {"step": state["step"] + 1, "velocity": velocity, **self.row_entries(state)}, est.f0

    yield ZOSGDMomentum
    unregister_optimizer(NAME)
    assert NAME not in zo.optimizer_names()


def test_registered_with_its_traits(toy):
    assert zo.optimizer_names()[-1] == NAME  # registration order: after the built-in ones
    assert zo.optimizer_names(tunable=True) == ("zo-sgd", "zo-signsgd", "zo-adam", NAME)
    assert NAME not in zo.optimizer_names(learned=True)
    t = zo.optimizer_traits("ZO_SGD_MOMENTUM")
    assert (t.label, t.colour, t.learned, t.tunable, t.uses_lr) == ("ZO-SGD-momentum", "goldenrod", False, True, True)
    opt = zo.make_optimizer(NAME, q=4, momentum=0.5)
    assert isinstance(opt, toy) and opt.config() == {"q": 4, "mu": 0.005, "lr": 4.0, "scale_lr_by_dim": True,
                                                     "baseline": "f0", "momentum": 0.5}
    with pytest.raises(ValueError, match="already registered"):
        type("Impostor", (ZOOptimizer,), {"name": "zo-sgd", "traits": toy.traits})
    with pytest.raises(TypeError, match="traits"):
        type("NoTraits", (ZOOptimizer,), {"name": "zo-no-traits"})


def test_descends_through_the_runner_with_exact_query_counts(toy):
    prob, _ = quadratic(B=3, d=12)
    steps, q = 40, 6
    opt = zo.make_optimizer(NAME, q=q, mu=0.01, lr=1.0, momentum=0.5)
    r = zo.minimize(opt, prob, steps, progress=False)
    assert torch.isfinite(r.loss).all()
    assert (r.final_loss < 0.2 * r.loss[0]).all(), (r.loss[0], r.final_loss)
    counted = Counting(prob)
    r = zo.minimize(opt, counted, steps, progress=False, final_eval=False)
    assert r.queries.tolist() == [steps * (q + 1)] * 3 == counted.counts.tolist()
    assert counted.calls[0] == steps  # one black-box call per step


def test_momentum_matters_and_zero_momentum_is_zo_sgd(toy):
    prob, _ = quadratic(B=2, d=8)
    kw = dict(q=4, mu=0.01, lr=1.0)
    sgd = zo.minimize(zo.make_optimizer("zo-sgd", **kw), prob, 15, seed=2, progress=False)
    flat = zo.minimize(zo.make_optimizer(NAME, momentum=0.0, **kw), prob, 15, seed=2, progress=False)
    heavy = zo.minimize(zo.make_optimizer(NAME, momentum=0.9, **kw), prob, 15, seed=2, progress=False)
    assert torch.equal(flat.theta, sgd.theta) and torch.equal(flat.loss, sgd.loss)
    assert not torch.allclose(heavy.theta, sgd.theta)


def test_state_dict_round_trip_continues_identically(toy):
    prob, _ = quadratic(B=2, d=6)
    opt = zo.make_optimizer(NAME, q=3, momentum=0.7)
    ids = torch.arange(2)
    theta, state = prob.initial_point(), opt.init_state(prob.initial_point())
    for t in range(3):
        theta, state, _ = opt.step(prob, theta, state, zo.step_seeds(0, ids, t))
    buf = io.BytesIO()
    torch.save(opt.state_dict(state), buf)
    buf.seek(0)
    opt2, state2 = zo.optimizer_from_state_dict(torch.load(buf, weights_only=True))
    assert type(opt2) is toy and opt2.momentum == 0.7
    th1, th2 = theta.clone(), theta.clone()
    for t in range(3, 6):
        th1, state, _ = opt.step(prob, th1, state, zo.step_seeds(0, ids, t))
        th2, state2, _ = opt2.step(prob, th2, state2, zo.step_seeds(0, ids, t))
    assert torch.equal(th1, th2)


def test_tune_tunes_it(toy):
    kw = dict(optimizers=(NAME,), grid=(0.1, 1.0, 10.0), fine=(2,), steps=3, trials=1, progress=False)
    batched = TU.tune_baselines("binary", **kw)
    alone = TU.tune_baselines("binary", batch=False, **kw)
    entry = batched["optimizers"][NAME]
    cands = entry["candidates"]
    assert [c["stage"] for c in cands] == ["coarse"] * 3 + ["fine"] and "beta1" not in entry
    scores = [math.inf if c["score"] is None else c["score"] for c in cands]
    assert entry["score"] == min(scores) and [c for c in cands if c.get("chosen")] == [cands[scores.index(min(scores))]]
    best_coarse = min(cands[:3], key=lambda c: c["score"])
    assert cands[3]["lr"] == 2 * best_coarse["lr"]
    assert len(set(scores)) == 4  # the lr matters
    for a, b in zip(cands, alone["optimizers"][NAME]["candidates"]):  # one lr per row == one run per lr
        assert a["lr"] == b["lr"] and a["failed_rows"] == b["failed_rows"] == 0
        assert a["score"] == pytest.approx(b["score"], rel=1e-4, abs=1e-6)
    assert TU.tuned_kwargs(batched, NAME) == {"lr": entry["lr"]}
