"""A synthetic problem where a learned query distribution provably helps: the gradient lives on a few coordinates.

`SparseQuadraticProblem`: f_b(theta) = sum_{j in S_b} a_bj (theta_j - theta*_bj)^2 with |S_b| = k of d
coordinates, S_b, a_b and theta*_b drawn per problem from its seed (so the active set differs from problem to
problem and must be found from the queries, not memorised). Coordinates outside S_b do not change f at all, so
an isotropic Gaussian estimate spends (d - k) / d of its variance on them: a sampler that concentrates its
directions on S_b has about d / k times less estimator variance for the same queries. Used to check that the
QueryRNN learns where it should (docs/TRAINING.md) before trusting what it learns on the real tasks.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from .optimizers import ZOLSTM
from .problems import BlackBoxProblem
from .seeding import step_seeds

__all__ = ["SparseQuadraticProblem", "query_share_on_active"]


class SparseQuadraticProblem(BlackBoxProblem):
    """B sparse quadratics (see the module docstring); deterministic, smooth, with a first-order form.

    Per problem, from ``torch.Generator().manual_seed(seed)`` on the CPU in float64: S = k coordinates drawn
    without replacement, curvatures log-uniform on S between 1 / condition and 1, theta*_j ~ N(0, 1) on S (the
    other coordinates of theta* are 0). Start: theta = 0, so f(theta_0) = sum_S a_j theta*_j^2. The spread of
    curvatures keeps the problem from being solved in a few steps by any step size, so that the estimator's
    variance, which the QueryRNN can reduce, decides the rate.
    """

    def __init__(self, seeds: Sequence[int], dim: int = 100, active: int = 5, condition: float = 100.0,
                 device=None, dtype: torch.dtype = torch.float32):
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("SparseQuadraticProblem: empty batch (no seeds)")
        if not condition >= 1.0:
            raise ValueError(f"SparseQuadraticProblem: condition must be >= 1, got {condition}")
        if not 1 <= active <= dim:
            raise ValueError(f"SparseQuadraticProblem: need 1 <= active <= dim, got active={active}, dim={dim}")
        self.seeds, self.batch, self.dim, self.active = seeds, len(seeds), int(dim), int(active)
        curv, star = torch.zeros(self.batch, self.dim, dtype=torch.float64), torch.zeros(self.batch, self.dim,
                                                                                          dtype=torch.float64)
        for b, s in enumerate(seeds):
            g = torch.Generator().manual_seed(s)
            idx = torch.randperm(self.dim, generator=g)[: self.active]
            u = torch.rand(self.active, generator=g, dtype=torch.float64)
            curv[b, idx] = torch.exp((u - 1.0) * math.log(condition))
            star[b, idx] = torch.randn(self.active, generator=g, dtype=torch.float64)
        self.curvature = curv.to(device=device, dtype=dtype)  # [B, d], 0 off the active set
        self.theta_star = star.to(device=device, dtype=dtype)

    def mask(self) -> Tensor:
        """bool [B, d]: the active coordinates S_b."""
        return self.curvature > 0

    def __call__(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        self._check_points(points)
        diff = points - self.theta_star.to(points.dtype).unsqueeze(1)
        return (self.curvature.to(points.dtype).unsqueeze(1) * diff.square()).sum(dim=2)

    def differentiable_values(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        """``problem(points)`` with autograd kept (plain torch): first-order meta-training."""
        with torch.enable_grad():
            return self(points, seed)

    def initial_point(self) -> Tensor:
        return torch.zeros_like(self.theta_star)

    def select(self, index) -> "SparseQuadraticProblem":
        sub, idx = self._take_rows(index, "curvature", "theta_star")
        sub.seeds = [self.seeds[i] for i in idx.tolist()]
        return sub


def query_share_on_active(model, problem: SparseQuadraticProblem, steps: int, q: int, mu: float,
                          seed: int = 0) -> list:
    """Along a test-time run of ZO-LSTM with the QueryRNN always on (p = 1), the mean over problems of the share
    of the normalised query scale's energy on the active coordinates, sum_{j in S} s_hat_j^2 / d, per step
    (isotropic sampling gives k / d): how much the QueryRNN concentrates its directions where f depends."""
    opt = ZOLSTM(model, q=q, mu=mu, use_query=True, query_prob=1.0)
    theta = problem.initial_point()
    state = opt.init_state(theta)
    pids = torch.arange(problem.batch)
    mask = problem.mask().to(theta.dtype)
    shares = []
    with torch.no_grad():
        for t in range(steps):
            s, _ = model.query_step(state)
            e = s.abs().square()
            shares.append(float(((e * mask).sum(1) / e.sum(1)).mean()))
            theta, state, _ = opt.step(problem, theta, state, step_seeds(seed, pids, t))
    return shares
