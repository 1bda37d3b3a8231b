"""Shared helpers of the test_zo_* files (imported by them), and the tests of seeding and the estimators."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zol2l_ext import ops
from zol2l_ext import zo
from zol2l_ext.zo import estimator, seeding
from zol2l_ext.zo.problems import BlackBoxProblem


# --------------------------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """This CI box has 2 cores shared with compilers: torch's 2-thread pool then crawls (~20x); use one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def quadratic(B=3, d=12, dtype=torch.float64, seed=0):
    """B different convex quadratics f_b(x) = 0.5 sum_j a_j (x_j - c_bj)^2 (+ their gradient), x0 = 0."""
    g = torch.Generator().manual_seed(seed)
    a = torch.linspace(0.5, 2.0, d, dtype=dtype)
    centers = torch.randn(B, d, generator=g, dtype=dtype)

    def fn(points, index):
        c = centers.index_select(0, index).unsqueeze(1)
        return 0.5 * (a * (points - c).square()).sum(dim=2)

    def grad(x, index=None):
        c = centers if index is None else centers.index_select(0, index)
        return a * (x - c)

    prob = zo.CallableProblem(fn, d, B, x0=torch.zeros(B, d, dtype=dtype), per_row=True, dtype=dtype)
    return prob, grad


class Counting(BlackBoxProblem):
    """Wraps a problem and counts the points each original row is queried at (shared by sub-problems)."""

    def __init__(self, inner, counts=None, index=None):
        self.inner = inner
        self.dim, self.batch = inner.dim, inner.batch
        self.stochastic = getattr(inner, "stochastic", False)
        self.counts = torch.zeros(inner.batch, dtype=torch.int64) if counts is None else counts
        self.index = torch.arange(inner.batch) if index is None else index
        self.calls = [0]
        if zo.has_success(inner):
            self.success = inner.success

    def __call__(self, points, seed=None):
        self.counts.index_add_(0, self.index, torch.full((self.batch,), points.shape[1], dtype=torch.int64))
        self.calls[0] += 1
        return self.inner(points, seed=seed) if seed is not None else self.inner(points)

    def initial_point(self):
        return self.inner.initial_point()

    def select(self, index):
        sub = Counting(self.inner.select(index), self.counts, self.index.index_select(0, index.cpu()))
        sub.calls = self.calls
        return sub


def tiny_attack(B=6, dtype=torch.float32, c=0.1, **kw):
    """A randomly initialised tiny CNN (margins ~0.1-1.7) on synthetic 8x8 images, labels = its predictions."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3), nn.LogSoftmax(dim=1))
    model = model.to(dtype).eval()
    with torch.no_grad():
        model[3].weight.mul_(10.0)
    g = torch.Generator().manual_seed(1)
    images = (0.2 + 0.6 * torch.rand(B, 1, 8, 8, generator=g)).to(dtype)
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    return zo.AttackProblem(model, images, labels, c=c, **kw), model, images, labels


def sgd_like_lstm(lr, a=0.01, hidden=10):
    """A hand-set LearnedZO whose UpdateRNN computes ~ -lr g (i = o = 1, f = 0, cell = tanh(a g)) and whose
    QueryRNN outputs s = 1 (zero head): a ZO-LSTM that provably descends without training."""
    m = zo.LearnedZO(hidden=hidden, bias=True)
    H = hidden
    with torch.no_grad():
        for lstm in (m.update.lstm, m.query.lstm):
            lstm.w_ih.zero_()
            lstm.w_hh.zero_()
            lstm.w_out.zero_()
            lstm.bias.zero_()
            lstm.bias[0:H] = 20.0
            lstm.bias[H:2 * H] = -20.0
            lstm.bias[3 * H:] = 20.0
        m.update.lstm.w_ih[2 * H, 0] = a
        m.update.lstm.w_out[0, 0] = -lr / a
    return m


# --------------------------------------------------------------------------------------------- seeding
def test_splitmix64_matches_python_reference():
    vals = [0, 1, 2, 12345678901234567, -1, -(2**63), 2**63 - 1, 0x9E3779B97F4A7C15 - 2**64]
    x = torch.tensor(vals, dtype=torch.int64)
    got = [int(v) for v in seeding.splitmix64(x)]
    assert got == [seeding.splitmix64_int(v) for v in vals]
    # known first output of SplitMix64 seeded with 0 (state advanced once by the golden gamma)
    assert seeding.splitmix64_int(0) & (2**64 - 1) == 0xE220A8397B1DCDAF


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
