"""Guided ES sampling with a ZO-SGD update."""
from __future__ import annotations

import torch

from ..estimator import guided_estimate
from .base import Rate, ZOOptimizer
from .registry import OptimizerTraits

__all__ = ["GuidedES"]


class GuidedES(ZOOptimizer):
    """Guided ES sampling (Maheswaranathan et al. 2019) with a ZO-SGD update.

    Sigma = alpha I + (1 - alpha) U U^T, U an orthonormal basis of the last gradient estimate and the last
    update (alpha = 0.5, k = 2), each direction rescaled to the norm of its isotropic draw (as the reference
    code's ``guided=True`` branch). Degenerate basis vectors are dropped (see `estimator.orthonormal_pair`), so
    the first step samples isotropically. q + 1 queries per step.
    """

    name = "guided-es"
    traits = OptimizerTraits(label="Guided ES", colour="tab:gray")
    _config_keys = ZOOptimizer._config_keys + ("alpha",)
    _zero_state = ("g_prev", "dtheta_prev")

    def __init__(self, q: int = 20, mu: float = 0.005, lr: Rate = 4.0, alpha: float = 0.5,
                 scale_lr_by_dim: bool = True):
        self.alpha = float(alpha)
        super().__init__(q, mu, lr, scale_lr_by_dim)

    def _validate(self):
        super()._validate()
        if not (0.0 < self.alpha <= 1.0):
            raise ValueError(f"guided-es: alpha must lie in (0, 1], got {self.alpha}")

    def step(self, problem, theta, state, seeds):
        with torch.no_grad():
            est = guided_estimate(problem, theta, self.q, self.mu, seeds, state["g_prev"], state["dtheta_prev"],
                                  self.alpha, baseline=self.baseline)
            delta = est.g * (-self.rate(state, theta.shape[1]))
            theta_new = theta + delta
        new = {"step": state["step"] + 1, "g_prev": est.g, "dtheta_prev": delta, **self.row_entries(state)}
        return theta_new, new, est.f0
