"""The meta-objective of the learned optimizer (paper Sec. 3; DESIGN.md "Training"): one differentiable step
(`meta_step`, which is `ZOLSTM.differentiable_step`), the loss of a truncated-BPTT window (`window_loss`) and
the clipping of the meta-gradient.

Meta-loss of a window (`window_loss`): ``sum_t w_t mean_b f_b(theta_t) + sum_t mean_b lambda ||s_t - 1||^2``
(t the step number within the horizon, 1-based; the regulariser only where the QueryRNN runs) with
``weighting="linear"``: w_t = t (eq. 4), or ``"uniform"``: w_t = 1 (the area under the loss curve, which weighs
the early steps, where queries to a first success are decided, as much as the late ones). With ``normalize``
each problem's terms are divided by ``sum_t w_t * f_b(theta_0)``, so that every problem and every window of a
trajectory pushes with the weight the objective gives it, whatever the size of its loss.
``objective="reference"`` uses the reference code's ``w_t (f(theta_t) - f(theta_{t-1}))``, the earlier value
detached (taken from the same step's query of theta). On stochastic problems f(theta_t) of the meta-loss is read
on a minibatch independent of the step's queries (`meta_step`).
Because f(theta_{t-1}) is detached, its meta-gradient is exactly eq. 4's: only the logged value differs, and it
cannot move the trade-off between early and late steps (``weighting`` does).

Stages: stage 1 trains the UpdateRNN with standard Gaussian directions (no QueryRNN); stage 2 freezes the
UpdateRNN and trains the QueryRNN (always used during training: Bernoulli p = 1), the meta-gradient reaching
the scale s through the reparameterised directions u = s_hat * z (``ops.sample_queries``' backward) and through
the values f(theta + mu u) in first-order mode.

Gradient flow and the optimizee's gradient (DESIGN.md's two modes):
* The estimator's inputs are detached from theta (the points are built from ``theta.detach()``, the value
  f(theta) enters the estimate detached), as in Andrychowicz et al.: the meta-gradient flows from
  f(theta_t) back through theta_t = theta_{t-1} + Delta theta_t into the UpdateRNN, not through the
  second-order dependence of the estimate on theta. The reference code does the same: it reads the optimizee's
  parameters through ``.data``, so its finite differences are not differentiated with respect to theta either.
* ``grad_mode="first-order"``: f(theta_t) of the meta-loss is ``problem.differentiable_values`` (autograd
  through the black box: training time only); in stage 2 the query values f(theta + mu u) are differentiable
  too, so the meta-gradient sees how the values move with the directions.
* ``grad_mode="zeroth-order"``: f(theta_t) is `estimator.zo_objective`, whose backward is the coordinatewise
  central differences of eq. 5 (2d queries, in chunks of ``zo_chunk`` coordinates); the query values are
  constants and the meta-gradient reaches s only through the u factor of the estimate.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor

from .estimator import zo_objective
from .lstm_optimizer import LearnedZO, QueryRNN
from .meta_config import MetaTrainConfig
from .optimizers.lstm import ZOLSTM, lstm_state
from .seeding import SALT_DATA, SALT_META, derive, step_seeds

__all__ = ["init_meta_state", "meta_step", "step_weight", "weighted_curve_mean", "window_loss",
           "clip_meta_gradient", "detach_state"]


def init_meta_state(model: LearnedZO, theta: Tensor, use_query: bool) -> Dict[str, Tensor]:
    """The networks' starting states of a trajectory (the UpdateRNN's, and the QueryRNN's in stage 2)."""
    return lstm_state(model, theta, use_update=True, use_query=use_query, guided=False)


def _differentiable_values(problem, points: Tensor, key: Optional[Tensor]) -> Tensor:
    fn = getattr(problem, "differentiable_values", None)
    if fn is None:
        raise TypeError(f"first-order meta-training needs problem.differentiable_values(points, seed); "
                        f"{type(problem).__name__} has none (use grad_mode='zeroth-order')")
    return fn(points, key)


class _MetaBlackBox:
    """The problem as a meta-step's estimate reads it. In first-order mode, where the points carry a graph (the
    QueryRNN's scale, stage 2), the values are ``problem.differentiable_values`` with f(theta) detached (it
    enters the estimate as a constant); otherwise the black box's values, without gradients."""

    def __init__(self, problem, first_order: bool):
        self.problem, self.first_order = problem, first_order
        self.stochastic = getattr(problem, "stochastic", False)

    def __call__(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        if self.first_order and points.requires_grad:
            values = _differentiable_values(self.problem, points, seed)
            return torch.cat([values[:, :1].detach(), values[:, 1:]], dim=1)
        with torch.no_grad():
            return self.problem(points) if seed is None else self.problem(points, seed=seed)


def meta_step(model: LearnedZO, problem, theta: Tensor, st: Dict[str, Tensor], seeds: Tensor, *, q: int,
              mu: float, use_query: bool, grad_mode: str = "first-order", lam: float = 0.005,
              zo_mu: float = 1e-3, zo_chunk: Optional[int] = None, baseline: str = "f0"):
    """One differentiable step of the learned optimizer on B problems: `ZOLSTM.differentiable_step` (Bernoulli
    p = 1) and the value of its new iterate for the meta-loss.

    Returns ``(theta_new, state_new, f_new [B] (differentiable), reg [B] or None, f0 [B] (detached))``:
    f_new = f(theta_new) for the meta-loss, reg = lambda ||s - 1||^2, f0 = f(theta) read from the step's query.
    """
    first_order = grad_mode == "first-order"
    opt = ZOLSTM(model, q=q, mu=mu, use_query=use_query, query_prob=1.0, differentiable=True)
    opt.baseline = baseline
    out = opt.differentiable_step(_MetaBlackBox(problem, first_order), theta, st, seeds)
    reg = None if out.scale is None else QueryRNN.regularizer(out.scale, lam)
    f0 = out.estimate.values[:, 0].detach()
    theta_new = out.theta
    # On a stochastic problem the meta-loss reads f(theta_new) on a minibatch independent of the one the step's
    # estimate used: on the same minibatch, a step that fits it looks better than it generalises, and the
    # meta-training learns steps that are too large (seen on binary classification).
    loss_seeds = derive(seeds, SALT_META)
    if first_order:
        key = derive(loss_seeds, SALT_DATA) if getattr(problem, "stochastic", False) else None
        f_new = _differentiable_values(problem, theta_new.unsqueeze(1), key).squeeze(1)
    else:
        f_new = zo_objective(problem, theta_new, zo_mu, zo_chunk, loss_seeds)
    return theta_new, out.state, f_new, reg, f0


def step_weight(t: int, weighting: str) -> float:
    """w_t of the meta-objective: t ("linear", eq. 4) or 1 ("uniform")."""
    return float(t) if weighting == "linear" else 1.0


def weighted_curve_mean(curve: List[float], weighting: str) -> float:
    """sum_t w_t L_t / sum_t w_t over steps t = 1..T of a loss curve [L_0, ..., L_T]: the meta-objective of a
    test-time run, by which held-out evaluations pick the best weights."""
    ws = [step_weight(t, weighting) for t in range(1, len(curve))]
    return sum(w * v for w, v in zip(ws, curve[1:])) / sum(ws) if ws else float("nan")


def window_loss(model: LearnedZO, problem, theta: Tensor, st: Dict[str, Tensor], run_seed: int, t_first: int,
                cfg: MetaTrainConfig, use_query: bool, f_start: Optional[Tensor] = None,
                pids: Optional[Tensor] = None, total: Optional[int] = None):
    """The meta-loss of one truncated-BPTT window: ``cfg.unroll`` differentiable steps from step ``t_first``
    (1-based step number of the first one within the horizon).

    eq. 4: ``sum_t [w_t f(theta_t) + lambda ||s_t - 1||^2]`` with ``w_t = t`` (``cfg.weighting="linear"``) or
    1 ("uniform"); ``objective="reference"``: ``sum_t w_t (f(theta_t) - f(theta_{t-1}))`` (+ the same
    regulariser). With ``cfg.normalize`` each problem's terms are divided by ``W f_b(theta_0)``,
    ``W = sum_{t=1}^{horizon} w_t`` and ``f_b(theta_0)`` the problem's starting loss (``f_start``; taken from the
    first step's query when None): the objective up to a constant per problem, so that every problem weighs the
    same whatever the size of its loss (MNIST attacks start at 5-20, binary classification at 0.25). The mean
    over the B problems is returned; with ``pids`` (the problems' positions in a meta-batch of ``total``, one rank's
    share of it) their sum divided by ``total``, so that the ranks' losses add up to the whole batch's mean.

    Returns ``(loss, theta, st, f_start, f_new)``: theta and the states at the window's end (still attached to
    the graph: the caller backpropagates, then detaches), f_start [B] and the last f(theta_t) [B] (detached).
    """
    B = theta.shape[0]
    pids = torch.arange(B, dtype=torch.int64) if pids is None else pids
    pids = pids.to(device=theta.device, dtype=torch.int64)
    per_problem = theta.new_zeros(B)
    f_new = None
    for j in range(cfg.unroll):
        t = t_first + j
        seeds = step_seeds(run_seed, pids, t - 1)
        theta, st, f_new, reg, f0 = meta_step(
            model, problem, theta, st, seeds, q=cfg.q, mu=cfg.mu, use_query=use_query, grad_mode=cfg.grad_mode,
            lam=cfg.lam, zo_mu=cfg.zo_mu, zo_chunk=cfg.zo_chunk, baseline=cfg.baseline)
        if f_start is None:
            f_start = f0
        w = step_weight(t, cfg.weighting)
        term = w * f_new if cfg.objective == "eq4" else w * (f_new - f0)
        per_problem = per_problem + (term if reg is None else term + reg)
    if cfg.normalize:
        W = sum(step_weight(t, cfg.weighting) for t in range(1, cfg.horizon + 1))
        per_problem = per_problem / (W * f_start.abs().clamp_min(1e-12))
    loss = per_problem.mean() if total is None else per_problem.sum() / total
    return loss, theta, st, f_start, f_new.detach()


def clip_meta_gradient(params: List[Tensor], clip: float, mode: str) -> Dict[str, float]:
    """Clip the gradients of ``params`` in place; returns the global norm before clipping and the fraction
    clipped (mode "norm": 1.0 when the global norm exceeded ``clip`` and every entry was scaled, else 0.0;
    mode "value": the fraction of entries clamped to [-clip, clip])."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return {"grad_norm": 0.0, "clipped": 0.0}
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    if mode == "norm":
        if norm > clip:
            for g in grads:
                g.mul_(clip / norm)
        return {"grad_norm": norm, "clipped": float(norm > clip)}
    over = sum(int((g.abs() > clip).sum()) for g in grads)
    for g in grads:
        g.clamp_(-clip, clip)
    return {"grad_norm": norm, "clipped": over / sum(g.numel() for g in grads)}


def detach_state(st: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The states cut from the graph (the end of a truncated-BPTT window)."""
    return {k: v.detach() for k, v in st.items()}
