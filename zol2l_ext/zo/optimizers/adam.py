"""ZO-ADAM (Chen et al. 2019), with per-row betas for tuning."""
from __future__ import annotations

from typing import Any, Dict

import torch

from ..estimator import gaussian_estimate
from .base import Rate, ZOOptimizer, check_rate, per_row_value
from .registry import OptimizerTraits

__all__ = ["ZOAdam"]


class ZOAdam(ZOOptimizer):
    """ZO-ADAM as the reference code: bias-corrected moments, step (lr / d) m_hat / (sqrt(v_hat) + eps).

    ``lr``, ``beta1`` and ``beta2`` may each be given per row (`base.per_row_value`); then all three live in
    the state as [B, 1] columns (``"lr_row"`` in theta's dtype, ``"b1"``, ``"b2"`` in float64) and the step
    computes with tensor coefficients, rounded as `zol2l tune` has always rounded them (equal to a run with the
    row's scalars up to float rounding of the coefficients)."""

    name = "zo-adam"
    traits = OptimizerTraits(label="ZO-ADAM", colour="tab:green", tunable=True)
    _config_keys = ZOOptimizer._config_keys + ("beta1", "beta2", "eps")
    _zero_state = ("m", "v")

    def __init__(self, q: int = 20, mu: float = 0.005, lr: Rate = 8.0, beta1: Rate = 0.9, beta2: Rate = 0.996,
                 eps: float = 1e-8, scale_lr_by_dim: bool = True):
        self.beta1, self.beta2, self.eps = per_row_value(beta1), per_row_value(beta2), float(eps)
        super().__init__(q, mu, lr, scale_lr_by_dim)

    def _validate(self):
        super()._validate()
        if not all(check_rate(b, lambda v: 0.0 <= v < 1.0) for b in (self.beta1, self.beta2)):
            raise ValueError(f"zo-adam: betas must lie in [0, 1), got {(self.beta1, self.beta2)}")

    def init_row_state(self, theta0):
        st = super().init_row_state(theta0)
        if st:
            B = theta0.shape[0]
            st["b1"] = self._rows_of(self.beta1, B, "beta1").to(theta0.device).unsqueeze(1)
            st["b2"] = self._rows_of(self.beta2, B, "beta2").to(theta0.device).unsqueeze(1)
        return st

    def step(self, problem, theta, state, seeds):
        with torch.no_grad():
            est = gaussian_estimate(problem, theta, self.q, self.mu, seeds, workspace=self.workspace,
                                    baseline=self.baseline)
            t = state["step"] + 1
            if "b1" in state:
                theta_new, m, v = self._row_update(theta, est.g, state, t)
            else:
                g = est.g
                m = state["m"].mul(self.beta1).add_(g, alpha=1.0 - self.beta1)
                v = state["v"].mul(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
                bc1 = 1.0 - self.beta1 ** t
                bc2 = 1.0 - self.beta2 ** t
                denom = v.div(bc2).sqrt_().add_(self.eps)
                theta_new = theta.addcdiv(m, denom, value=-self.step_size(theta.shape[1]) / bc1)
        return theta_new, {"step": t, "m": m, "v": v, **self.row_entries(state)}, est.f0

    def _row_update(self, theta, g, state: Dict[str, Any], t: int):
        """The update with per-row lr and betas ([B, 1] columns of the state)."""
        b1, b2, lr, dt = state["b1"], state["b2"], state["lr_row"], theta.dtype
        m = state["m"] * b1.to(dt) + g * (1.0 - b1).to(dt)
        v = state["v"] * b2.to(dt) + g * g * (1.0 - b2).to(dt)
        bc1 = (1.0 - b1 ** t).to(dt)
        bc2 = (1.0 - b2 ** t).to(dt)
        denom = (v / bc2).sqrt() + self.eps
        return theta - (lr / bc1) * (m / denom), m, v


