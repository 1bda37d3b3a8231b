"""The estimator's baseline: "f0" (eq. 1, the default, unchanged) or "mean" (the mean of the q direction values),
the control variate that cancels a part of the values every direction shares."""
import pytest
import torch

from zol2l_ext import zo
from zol2l_ext.zo import estimator
from zol2l_ext.zo.seeding import step_seeds

B, D, Q, MU = 3, 16, 8, 1e-2


def _problem(kink: float):
    """f(x) = a . x + kink * [x != x0]: every queried point but the centre pays the same ``kink`` (like the l1
    term of an attack at a saturated pixel, which every perturbation moves alike)."""
    a = torch.linspace(-1.0, 1.0, D, dtype=torch.float64)

    def fn(points):
        off = (points != 0).any(dim=-1).to(points.dtype)
        return points @ a + kink * off

    return zo.CallableProblem(fn, D, B, x0=torch.zeros(B, D, dtype=torch.float64), dtype=torch.float64)


def _estimate(kink, baseline):
    p = _problem(kink)
    seeds = step_seeds(0, torch.arange(B), 0)
    return estimator.gaussian_estimate(p, p.initial_point(), Q, MU, seeds, baseline=baseline)


def test_mean_baseline_is_the_formula():
    est = _estimate(0.3, "mean")
    fq = est.values[:, 1:]
    want = ((fq - fq.mean(dim=1, keepdim=True)).unsqueeze(2) * est.u).sum(dim=1) / (MU * Q)
    torch.testing.assert_close(est.g, want)
    f0 = _estimate(0.3, "f0")  # eq. 1: the same directions and values, differenced against f(theta)
    want0 = ((fq - f0.values[:, :1]).unsqueeze(2) * f0.u).sum(dim=1) / (MU * Q)
    torch.testing.assert_close(f0.g, want0)
    assert torch.equal(est.f0, f0.f0)  # f(theta) is still queried: the loss curve and the query count unchanged


def test_mean_baseline_cancels_what_every_direction_shares():
    clean_f0, kinked_f0 = _estimate(0.0, "f0").g, _estimate(50.0, "f0").g
    clean, kinked = _estimate(0.0, "mean").g, _estimate(50.0, "mean").g
    torch.testing.assert_close(kinked, clean)  # the shared 50 cancels
    assert (kinked_f0 - clean_f0).norm() > 100 * clean_f0.norm()  # eq. 1 multiplies it into every u_i


@pytest.mark.parametrize("name", zo.optimizer_names())
def test_every_optimizer_takes_the_baseline_and_keeps_it(name):
    kw = {"model": zo.LearnedZO()} if zo.optimizer_traits(name).learned else {}
    opt = zo.make_optimizer(name, q=Q, mu=MU, baseline="mean", **kw)
    assert opt.baseline == "mean"
    p = _problem(0.0)
    theta = p.initial_point()
    state = opt.init_state(theta)
    ids = torch.arange(B)
    for step in range(3):
        theta, state, f0 = opt.step(p, theta, state, step_seeds(0, ids, step))
    assert torch.isfinite(theta).all() and torch.isfinite(f0).all()
    sd = opt.state_dict(state)
    assert sd["config"]["baseline"] == "mean"
    back, _ = zo.optimizer_from_state_dict(sd)
    assert back.baseline == "mean"


def test_a_bad_baseline_is_refused():
    with pytest.raises(ValueError, match="baseline must be one of f0, mean"):
        zo.make_optimizer("zo-sgd", baseline="median")
    p = _problem(0.0)
    with pytest.raises(ValueError, match="baseline"):
        estimator.gaussian_estimate(p, p.initial_point(), Q, MU, step_seeds(0, torch.arange(B), 0), baseline="x")
