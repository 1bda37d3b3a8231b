"""Shared helpers of the zo-level tests (problems, a counting black box, a tiny attack, an SGD-like LSTM) and
the one-thread fixture they import: kept beside testing.py so that tests in every folder import them."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from zol2l_ext import zo
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
