"""ZO-SZVR-G: stochastic zeroth-order variance reduction with Gaussian directions."""
from __future__ import annotations

import torch

from ... import ops
from ..estimator import _check_theta, evaluate, fd_base, gaussian_estimate, mark_nonfinite
from .base import Rate, ZOOptimizer
from .registry import OptimizerTraits

__all__ = ["ZOSZVRG"]


class ZOSZVRG(ZOOptimizer):
    """ZO-SZVR-G (Liu, Cheng, Hsieh and Tao 2018): stochastic ZO variance reduction with Gaussian directions.

    Epochs of ``epoch_length`` (10) steps. The first step of an epoch is a snapshot: theta~ = theta and
    g~ = the Gaussian estimate at theta~ with ``q_snapshot`` (100) directions (q' + 1 queries); since the inner
    correction vanishes at theta = theta~, that step moves along g~. Inner steps use the same q directions u_i at
    theta and at theta~ (and, for a stochastic problem, the same minibatch: one call evaluates both):

        v = g(theta; u) - g(theta~; u) + g~,   theta <- theta - (lr / d) v

    costing 2 (q + 1) queries (f(theta), f(theta + mu u_i), f(theta~), f(theta~ + mu u_i); f(theta~) is queried
    again because on a minibatch it differs from the snapshot's value). ``queries_per_step`` is the inner cost,
    ``snapshot_queries`` = q' + 1 the snapshot step's cost, ``queries_at(t)`` the cost of step t.
    The authors' repository does not contain their ZO-SZVR-G code; this follows the SZVR-G algorithm.
    """

    name = "zo-szvr-g"
    traits = OptimizerTraits(label="ZO-SZVR-G", colour="tab:cyan")
    _config_keys = ZOOptimizer._config_keys + ("q_snapshot", "epoch_length")

    def __init__(self, q: int = 20, mu: float = 0.005, lr: Rate = 4.0, q_snapshot: int = 100,
                 epoch_length: int = 10, scale_lr_by_dim: bool = True):
        self.q_snapshot = int(q_snapshot)
        self.epoch_length = int(epoch_length)
        super().__init__(q, mu, lr, scale_lr_by_dim)

    def _validate(self):
        super()._validate()
        if self.q_snapshot < 1 or self.epoch_length < 1:
            raise ValueError(f"zo-szvr-g: q_snapshot and epoch_length must be >= 1, got "
                             f"{(self.q_snapshot, self.epoch_length)}")

    @property
    def queries_per_step(self) -> int:
        return 2 * (self.q + 1)

    @property
    def snapshot_queries(self) -> int:
        return self.q_snapshot + 1

    def queries_at(self, step: int) -> int:
        return self.snapshot_queries if step % self.epoch_length == 0 else self.queries_per_step

    def init_state(self, theta0):
        st = super().init_state(theta0)
        st["snapshot"] = theta0.detach().clone()
        st["g_snapshot"] = torch.zeros_like(theta0)
        return st

    def step(self, problem, theta, state, seeds):
        t = state["step"]
        with torch.no_grad():
            if t % self.epoch_length == 0:
                est = gaussian_estimate(problem, theta, self.q_snapshot, self.mu, seeds, baseline=self.baseline)
                v, f0 = est.g, est.f0
                snapshot, g_snap = theta, est.g
            else:
                _check_theta(theta, seeds)
                snapshot, g_snap = state["snapshot"], state["g_snapshot"]
                u, pts = ops.sample_queries(theta, self.q, self.mu, seed=seeds)
                snap = snapshot.unsqueeze(1)
                pts = torch.cat([pts, snap, snap + self.mu * u], dim=1)  # [B, 2(q + 1), d]
                values = evaluate(problem, pts, seeds)
                q1 = self.q + 1
                # g(theta; u) - g(theta~; u) in one op: fd_gradient is linear in (f0, fq).
                base = fd_base(values[:, :q1], self.baseline) - fd_base(values[:, q1:], self.baseline)
                diff = ops.fd_gradient(base, values[:, 1:q1] - values[:, q1 + 1:], u, self.mu)
                v = diff + g_snap
                f0 = mark_nonfinite(values)
            theta_new = self.descend(theta, v, state)
        new = {"step": t + 1, "snapshot": snapshot, "g_snapshot": g_snap, **self.row_entries(state)}
        return theta_new, new, f0
