"""Seeding and the estimators: splitmix64, per-(id, step) seeds, unbiasedness, the formula and its cost, guided
directions, central differences, shape checks."""

from __future__ import annotations

import math

import pytest
import torch

from zol2l_ext import ops
from zol2l_ext import zo
from zol2l_ext.zo import estimator, seeding


from zo_testing import Counting, one_thread, quadratic  # noqa: F401 (one_thread: autouse fixture)


def test_splitmix64_matches_python_reference():
    vals = [0, 1, 2, 12345678901234567, -1, -(2**63), 2**63 - 1, 0x9E3779B97F4A7C15 - 2**64]
    x = torch.tensor(vals, dtype=torch.int64)
    got = [int(v) for v in seeding.splitmix64(x)]
    assert got == [seeding.splitmix64_int(v) for v in vals]
    # known first output of SplitMix64 seeded with 0 (state advanced once by the golden gamma)
    assert seeding.splitmix64_int(0) & (2**64 - 1) == 0xE220A8397B1DCDAF


def test_the_splitmix64_kernel_equals_its_tensor_op_reference():
    assert ops.has_splitmix64_kernel("cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-(2**63), 2**63 - 1, (3, 257), generator=g, dtype=torch.int64)
    for v in (x, x.t(), x[:, ::2], x[:0], torch.tensor(5)):  # strided, empty and 0-d inputs too
        got = seeding.splitmix64(v)
        assert got.shape == v.shape and got.dtype == torch.int64
        assert torch.equal(got, seeding.splitmix64_tensor_ops(v))
    with pytest.raises(TypeError, match="int64"):
        seeding.splitmix64(x.to(torch.int32))
    with pytest.raises(RuntimeError, match="int64"):
        ops.splitmix64(x.to(torch.float64))


def test_step_seeds_depend_on_id_and_step_only():
    ids = torch.arange(5)
    a = seeding.step_seeds(7, ids, 3)
    assert a.dtype == torch.int64 and (a >= 0).all()
    assert torch.equal(seeding.step_seeds(7, ids[2:4], 3), a[2:4])
    assert len(set(a.tolist())) == 5
    assert not torch.equal(seeding.step_seeds(7, ids, 4), a)
    assert not torch.equal(seeding.step_seeds(8, ids, 3), a)
    per_row = seeding.step_seeds(7, ids, torch.full((5,), 3))
    assert torch.equal(per_row, a)
    u = seeding.uniform01(seeding.derive(seeding.step_seeds(0, torch.arange(20000), 0), seeding.SALT_BERNOULLI))
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0 and abs(float(u.mean()) - 0.5) < 0.01


# --------------------------------------------------------------------------------------------- estimators
def test_gaussian_estimator_is_unbiased_on_a_quadratic():
    # f(x) = 0.5 x^T A x + b^T x: E[g] = grad f exactly for any mu (the mu u^T A u u term has zero mean).
    d, q, R = 6, 8, 6000
    gen = torch.Generator().manual_seed(3)
    M = torch.randn(d, d, generator=gen, dtype=torch.float64)
    A = M @ M.T / d + torch.eye(d, dtype=torch.float64)
    b = torch.randn(d, generator=gen, dtype=torch.float64)
    x = torch.randn(d, generator=gen, dtype=torch.float64)
    fn = lambda p: 0.5 * torch.einsum("bqi,ij,bqj->bq", p, A, p) + p @ b  # noqa: E731
    prob = zo.CallableProblem(fn, d, R, x0=x, dtype=torch.float64)
    theta = x.expand(R, d).contiguous()
    seeds = seeding.step_seeds(11, torch.arange(R), 0)
    true = A @ x + b
    for mu in (0.01, 0.5):
        est = estimator.gaussian_estimate(prob, theta, q, mu, seeds)
        mean = est.g.mean(dim=0)
        # standard error of each coordinate of the mean: sd(g_j) / sqrt(R), sd(g_j)^2 <= (||grad||^2 + ...) / q
        se = est.g.std(dim=0) / math.sqrt(R)
        assert torch.all((mean - true).abs() < 5 * se + 1e-9), (mean, true, se)
        assert torch.allclose(est.f0, fn(theta.unsqueeze(1)).squeeze(1))
    # with a QueryRNN-like scale: E[g] = diag(s_hat^2) grad f, s_hat = sqrt(d) s / ||s||
    s = torch.linspace(0.5, 2.0, d, dtype=torch.float64).expand(R, d).contiguous()
    est = estimator.gaussian_estimate(prob, theta, q, 0.01, seeds, scale=s)
    s_hat = math.sqrt(d) * s[0] / s[0].norm()
    se = est.g.std(dim=0) / math.sqrt(R)
    assert torch.all((est.g.mean(dim=0) - s_hat.square() * true).abs() < 5 * se)


def test_estimator_matches_formula_and_costs_one_call():
    prob, grad = quadratic(B=4, d=9)
    cp = Counting(prob)
    theta = torch.randn(4, 9, dtype=torch.float64)
    seeds = seeding.step_seeds(0, torch.arange(4), 0)
    est = estimator.gaussian_estimate(cp, theta, 5, 0.1, seeds)
    assert cp.calls[0] == 1 and cp.counts.tolist() == [6] * 4
    u, pts = ops.sample_queries(theta, 5, 0.1, seed=seeds)
    vals = prob(pts)
    ref = ((vals[:, 1:] - vals[:, :1]).unsqueeze(2) * u).sum(1) / (0.1 * 5)
    assert torch.allclose(est.g, ref)
    assert torch.equal(est.u, u)


def test_guided_directions_preserve_norm_and_favour_the_subspace():
    B, d, q = 400, 30, 6
    theta = torch.zeros(B, d, dtype=torch.float64)
    seeds = seeding.step_seeds(1, torch.arange(B), 0)
    g_prev = torch.zeros(B, d, dtype=torch.float64)
    g_prev[:, 0] = 3.0
    dth = torch.zeros(B, d, dtype=torch.float64)
    dth[:, 1] = -1.0
    u, pts = estimator.guided_directions(theta, q, 0.1, seeds, g_prev, dth, alpha=0.5)
    z, _ = ops.sample_queries(theta, q, 0.1, seed=seeds)
    assert torch.allclose(u.norm(dim=2), z.norm(dim=2))
    assert torch.allclose(pts[:, 0], theta) and torch.allclose(pts[:, 1:], theta.unsqueeze(1) + 0.1 * u)
    # Sigma = alpha I + (1 - alpha) U U^T: variance 1 along U, alpha elsewhere; the renormalisation to ||z||
    # multiplies both by ~ d / (alpha d + (1 - alpha) k) = 30 / 16
    var = u.square().mean(dim=(0, 1))
    assert abs(float(var[0]) - 1.875) < 0.25 and abs(float(var[1]) - 1.875) < 0.25
    assert abs(float(var[2:].mean()) - 0.9375) < 0.05
    # degenerate basis (first step): isotropic draw, u = z exactly
    u0, _ = estimator.guided_directions(theta, q, 0.1, seeds, torch.zeros_like(theta), torch.zeros_like(theta))
    assert torch.allclose(u0, z)


def test_central_differences_and_zo_objective():
    prob, grad = quadratic(B=2, d=7)
    theta = torch.randn(2, 7, dtype=torch.float64)
    cp = Counting(prob)
    g = estimator.central_difference_gradient(cp, theta, mu=1e-3, chunk=3)
    assert torch.allclose(g, grad(theta), atol=1e-8)
    assert cp.counts.tolist() == [14, 14] and cp.calls[0] == 3  # 2d queries, chunks of 3 coordinates
    th = theta.clone().requires_grad_(True)
    f = estimator.zo_objective(prob, th, mu=1e-3)
    f.sum().backward()
    assert torch.allclose(th.grad, grad(theta), atol=1e-8)


def test_evaluate_rejects_wrong_shapes():
    bad = zo.CallableProblem(lambda p: p.sum(dim=2, keepdim=True).expand(-1, -1, 2), 3, 2)
    with pytest.raises(ValueError, match="values"):
        estimator.evaluate(bad, torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="points must have shape"):
        estimator.evaluate(zo.CallableProblem(lambda p: p.sum(2), 3, 2), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="empty batch"):
        estimator.gaussian_estimate(bad, torch.zeros(0, 3), 2, 0.1, torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="seeds"):
        estimator.gaussian_estimate(bad, torch.zeros(2, 3), 2, 0.1, torch.zeros(3, dtype=torch.int64))
