"""ZO-SGD and ZO-signSGD: a step along the Gaussian estimate, or along its sign."""
from __future__ import annotations

import torch

from ..estimator import gaussian_estimate
from .base import Rate, ZOOptimizer
from .registry import OptimizerTraits

__all__ = ["ZOSGD", "ZOSignSGD"]


class ZOSGD(ZOOptimizer):
    """ZO-SGD: theta <- theta - (lr / d) g, g the Gaussian estimate (q + 1 queries per step)."""

    name = "zo-sgd"
    traits = OptimizerTraits(label="ZO-SGD", colour="tab:blue", tunable=True)

    def step(self, problem, theta, state, seeds):
        with torch.no_grad():
            est = gaussian_estimate(problem, theta, self.q, self.mu, seeds, workspace=self.workspace,
                                    baseline=self.baseline)
            theta_new = self.descend(theta, est.g, state)
        return theta_new, {"step": state["step"] + 1, **self.row_entries(state)}, est.f0


class ZOSignSGD(ZOOptimizer):
    """ZO-signSGD (Liu et al. 2019): theta <- theta - (lr / d) sign(g)."""

    name = "zo-signsgd"
    traits = OptimizerTraits(label="ZO-signSGD", colour="tab:orange", tunable=True)

    def __init__(self, q: int = 20, mu: float = 0.005, lr: Rate = 8.0, scale_lr_by_dim: bool = True):
        super().__init__(q, mu, lr, scale_lr_by_dim)

    def step(self, problem, theta, state, seeds):
        with torch.no_grad():
            est = gaussian_estimate(problem, theta, self.q, self.mu, seeds, workspace=self.workspace,
                                    baseline=self.baseline)
            theta_new = self.descend(theta, est.g.sign(), state)
        return theta_new, {"step": state["step"] + 1, **self.row_entries(state)}, est.f0
