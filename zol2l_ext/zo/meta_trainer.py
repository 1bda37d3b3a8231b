"""Meta-training of the learned ZO optimizer (paper Sec. 3; DESIGN.md "Training").

One *update* of the meta-optimizer's schedule = one trajectory of ``horizon`` optimizer steps on a meta-batch
of B problems (B images attacked at once, each with its own coordinatewise LSTM states), cut into windows of
``unroll`` steps (truncated BPTT): after each window the meta-loss is backpropagated, the meta-gradient is
clipped (by its global norm by default, elementwise to [-clip, clip] with ``clip_mode="value"``, the reference
code's) and Adam steps; then the iterate and the LSTM states are detached and the trajectory goes on. Each
update logs the meta-gradient's norm and the fraction clipped per window.

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

Checkpoints (``torch.save``, loaded with ``weights_only=True``) hold the learned weights, the Adam state, the
problem sampler's RNG state, the counters, the log and the best weights so far (by the held-out objective, the
loss curve weighted as ``weighting``, on the held-out problems run as at test time: ZO-LSTM with the Bernoulli p
of the config). A checkpoint is written after every update, so an interrupted run resumes from the last finished
update with the same next step.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Dict, List, Optional, Protocol

import torch
from torch import Tensor

from .. import distributed as DI
from .. import ops
from ..fileio import atomic_torch_save, load_torch_file
from .estimator import evaluate, zo_objective
from .lstm_optimizer import LearnedZO, QueryRNN
from .seeding import SALT_DATA, SALT_META, derive, splitmix64_int, step_seeds

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = ["MetaTrainConfig", "MetaTrainer", "ProblemSet", "meta_step", "window_loss", "clip_meta_gradient",
           "step_weight", "weighted_curve_mean",
           "init_meta_state", "CHECKPOINT_FORMAT", "evaluate_learned", "pick_on_heldout"]

CHECKPOINT_FORMAT = "zol2l-metatrain-v1"
GRAD_MODES = ("first-order", "zeroth-order")
OBJECTIVES = ("eq4", "reference")
WEIGHTINGS = ("linear", "uniform")
CLIP_MODES = ("norm", "value")


class ProblemSet(Protocol):
    """Where meta-batches come from: ``len(ps)`` items, ``ps.make(rows, repeat=1)`` one batched problem."""

    def __len__(self) -> int: ...

    def make(self, rows, repeat: int = 1): ...


@dataclass
class MetaTrainConfig:
    task: str = "custom"
    stage: int = 1
    grad_mode: str = "first-order"
    epochs: int = 10
    updates_per_epoch: int = 10
    batch: int = 10  # problems per meta-batch
    horizon: int = 200
    unroll: int = 20
    q: int = 20
    mu: float = 0.005
    lr_update: float = 1e-3  # Adam, stage 1 (the reference code's value)
    lr_query: float = 5e-3  # Adam, stage 2
    lam: float = 0.005  # eq. 4's lambda
    clip: float = 1.0  # meta-gradient clipped to global norm clip ("norm") or elementwise to [-clip, clip]
    clip_mode: str = "norm"
    normalize: bool = True  # meta-loss divided per problem by sum_t w_t f(theta_0) (see window_loss)
    objective: str = "eq4"
    weighting: str = "uniform"  # w_t = 1 (the area under the loss curve) or t ("linear", eq. 4)
    zo_mu: float = 1e-3  # central-difference radius of the zeroth-order mode
    zo_chunk: Optional[int] = None  # coordinates per black-box call of the central differences (None: all d)
    val_steps: Optional[int] = None  # steps of the held-out evaluation (default: horizon)
    val_trials: int = 1
    query_prob: float = 0.5  # Bernoulli p of the QueryRNN in the held-out evaluation (stage 2)
    seed: int = 0

    def validate(self) -> None:
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.grad_mode not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {self.grad_mode!r}")
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"clip_mode must be one of {CLIP_MODES}, got {self.clip_mode!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        for k in ("epochs", "updates_per_epoch", "batch", "horizon", "unroll", "q", "val_trials"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.horizon % self.unroll:
            raise ValueError(f"horizon ({self.horizon}) must be a multiple of unroll ({self.unroll})")
        for k in ("mu", "lr_update", "lr_query", "clip", "zo_mu"):
            v = float(getattr(self, k))
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{k} must be > 0, got {v}")
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if not 0.0 <= self.query_prob <= 1.0:
            raise ValueError(f"query_prob must lie in [0, 1], got {self.query_prob}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "MetaTrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# ------------------------------------------------------------------------------------------- one meta-step
def init_meta_state(model: LearnedZO, theta: Tensor, use_query: bool) -> Dict[str, Tensor]:
    B, d = theta.shape
    st = model.init_update_state(B, d, theta.device, theta.dtype)
    if use_query:
        st.update(model.init_query_state(B, d, theta.device, theta.dtype))
        st["g_prev"] = torch.zeros_like(theta)
        st["dtheta_prev"] = torch.zeros_like(theta)
    return st


def _values(problem, points: Tensor, seeds: Tensor, differentiable: bool) -> Tensor:
    if not differentiable:
        with torch.no_grad():
            return evaluate(problem, points, seeds)
    key = derive(seeds, SALT_DATA) if getattr(problem, "stochastic", False) else None
    fn = getattr(problem, "differentiable_values", None)
    if fn is None:
        raise TypeError(f"first-order meta-training needs problem.differentiable_values(points, seed); "
                        f"{type(problem).__name__} has none (use grad_mode='zeroth-order')")
    return fn(points, key)


def meta_step(model: LearnedZO, problem, theta: Tensor, st: Dict[str, Tensor], seeds: Tensor, *, q: int,
              mu: float, use_query: bool, grad_mode: str = "first-order", lam: float = 0.005,
              zo_mu: float = 1e-3, zo_chunk: Optional[int] = None):
    """One differentiable step of the learned optimizer on B problems.

    Returns ``(theta_new, state_new, f_new [B] (differentiable), reg [B] or None, f0 [B] (detached))``:
    f_new = f(theta_new) for the meta-loss, reg = lambda ||s - 1||^2, f0 = f(theta) read from the step's query.
    """
    reg, scale = None, None
    new: Dict[str, Tensor] = {}
    if use_query:
        s, q_new = model.query_step(st)
        new.update(q_new)
        reg = QueryRNN.regularizer(s, lam)
        scale = s.abs()
    u, points = ops.sample_queries(theta.detach(), q, mu, scale=scale, seed=seeds)
    differentiable = grad_mode == "first-order" and scale is not None and scale.requires_grad
    values = _values(problem, points, seeds, differentiable)
    f0 = values[:, 0].detach()
    g = ops.fd_gradient(f0, values[:, 1:], u, mu)
    delta, u_new = model.update_step(g, st)
    new.update(u_new)
    theta_new = theta + delta
    # On a stochastic problem the meta-loss reads f(theta_new) on a minibatch independent of the one the step's
    # estimate used: on the same minibatch, a step that fits it looks better than it generalises, and the
    # meta-training learns steps that are too large (seen on binary classification).
    loss_seeds = derive(seeds, SALT_META)
    if grad_mode == "first-order":
        f_new = _values(problem, theta_new.unsqueeze(1), loss_seeds, True).squeeze(1)
    else:
        f_new = zo_objective(problem, theta_new, zo_mu, zo_chunk, loss_seeds)
    if use_query:  # the QueryRNN's next inputs, detached as in the reference code
        new["g_prev"] = g.detach()
        new["dtheta_prev"] = delta.detach()
    return theta_new, new, f_new, reg, f0


def step_weight(t: int, weighting: str) -> float:
    """w_t of the meta-objective: t ("linear", eq. 4) or 1 ("uniform")."""
    return float(t) if weighting == "linear" else 1.0


def weighted_curve_mean(curve: List[float], weighting: str) -> float:
    """sum_t w_t L_t / sum_t w_t over steps t = 1..T of a loss curve [L_0, ..., L_T]: the meta-objective of a
    test-time run, by which held-out evaluations pick the best weights."""
    ws = [step_weight(t, weighting) for t in range(1, len(curve))]
    return sum(w * v for w, v in zip(ws, curve[1:])) / sum(ws) if ws else float("nan")


def window_loss(model: LearnedZO, problem, theta: Tensor, st: Dict[str, Tensor], run_seed: int, t_first: int,
                cfg: "MetaTrainConfig", use_query: bool, f_start: Optional[Tensor] = None,
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
            lam=cfg.lam, zo_mu=cfg.zo_mu, zo_chunk=cfg.zo_chunk)
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


def _detach(st: Dict[str, Tensor]) -> Dict[str, Tensor]:
    return {k: v.detach() for k, v in st.items()}


# -------------------------------------------------------------------------------------------- evaluation
def evaluate_learned(model: LearnedZO, problem, steps: int, q: int, mu: float, use_query: bool,
                     query_prob: Optional[float] = 0.5, seed: int = 0) -> Dict[str, Any]:
    """Run ZO-LSTM (test-time behaviour, no gradients) and return mean final loss, loss curve and success
    (``query_prob=None``: the p saved with the weights, as `ZOLSTM` takes it)."""
    from .optimizers import ZOLSTM
    from .runner import minimize

    opt = ZOLSTM(model, q=q, mu=mu, use_query=use_query, query_prob=query_prob)
    res = minimize(opt, problem, steps, seed=seed, progress=False, nan_policy="fail")
    final = res.final_loss.double()
    out: Dict[str, Any] = {
        "final_loss": float(final.mean()) if torch.isfinite(final).all() else float("inf"),
        "curve": [float(v) for v in torch.nan_to_num(res.loss.double(), nan=float("inf")).mean(1)],
    }
    if res.has_success:
        out["success"] = float(res.success.double().mean())
    return out


def pick_on_heldout(model: LearnedZO, variants: Dict[Any, Callable[[LearnedZO], None]], problem, steps: int, q: int,
                    mu: float, *, use_query: bool, query_prob: Optional[float], seed: int, weighting: str,
                    log: Optional[Callable[[Any, float, Dict[str, Any]], None]] = None):
    """(the best key, {key: held-out objective}): ``variants[key]`` changes a copy of ``model`` (a transfer
    factor, a boost), which runs at test time on ``problem``; the objective is its loss curve weighted as
    ``weighting`` (`weighted_curve_mean`), the lowest wins. ``log(key, score, run)`` after each."""
    scores: Dict[Any, float] = {}
    for key, change in variants.items():
        m = copy.deepcopy(model)
        change(m)
        run = evaluate_learned(m, problem, steps, q, mu, use_query=use_query, query_prob=query_prob, seed=seed)
        scores[key] = weighted_curve_mean(run["curve"], weighting)
        if log is not None:
            log(key, scores[key], run)
    return min(scores, key=scores.get), scores


# ------------------------------------------------------------------------------------------------ trainer
class MetaTrainer:
    """Trains ``model`` (a `LearnedZO`) on ``train`` problems, keeping the best weights on ``val`` problems.

    ``train`` / ``val``: `ProblemSet` s (e.g. `zol2l_ext.tasks.TaskData`). ``out_dir``: where ``checkpoint.pt``
    (everything to resume), ``best.pt`` (the best LearnedZO, loadable with ``LearnedZO.load``), ``log.json``,
    ``log.csv`` and ``curves.png`` go (None: nothing written). ``meta``: extra entries for the saved weights
    (e.g. the command that regenerates them).
    """

    def __init__(self, cfg: MetaTrainConfig, train: ProblemSet, val: Optional[ProblemSet] = None,
                 model: Optional[LearnedZO] = None, out_dir: Optional[str] = None, device="cpu",
                 progress: bool = True, meta: Optional[Dict[str, Any]] = None, shard: Optional[DI.Dist] = None):
        cfg.validate()
        self.cfg = cfg
        # under torchrun: each rank runs its block of every meta-batch, the meta-gradients are summed over ranks
        self.shard = shard or DI.Dist()
        if self.shard.world > min(cfg.batch, len(train)):
            raise ValueError(f"a meta-batch of {min(cfg.batch, len(train))} problems cannot be shared by "
                             f"{self.shard.world} processes: use at most that many")
        self.train_set, self.val_set = train, val
        self.device = torch.device(device)
        self.model = (model if model is not None else LearnedZO()).to(self.device)
        self.out_dir = out_dir
        self.progress = progress
        self.meta = dict(meta or {})
        self.use_query = cfg.stage == 2
        trainable = self.model.query if self.use_query else self.model.update
        frozen = self.model.update if self.use_query else self.model.query
        frozen.requires_grad_(False)
        trainable.requires_grad_(True)
        self.params = [p for p in trainable.parameters()]
        lr = cfg.lr_query if self.use_query else cfg.lr_update
        self.opt = torch.optim.Adam(self.params, lr=lr)
        self.sampler = torch.Generator().manual_seed(splitmix64_int(cfg.seed) & ((1 << 62) - 1))
        self.update_count = 0
        self.history: Dict[str, List[Dict[str, Any]]] = {"updates": [], "epochs": []}
        self.best: Dict[str, Any] = {"val_objective": float("inf"), "val_final_loss": float("inf"), "epoch": -1}
        self.best_state = self.model.to_dict()
        self._val_problem = None

    # -- one update -----------------------------------------------------------------------------------
    def _rows(self) -> List[int]:
        n = len(self.train_set)
        if self.cfg.batch >= n:
            return list(range(n))
        return torch.randperm(n, generator=self.sampler)[: self.cfg.batch].tolist()

    def train_update(self) -> Dict[str, Any]:
        """One trajectory of ``horizon`` steps on a fresh meta-batch, horizon / unroll Adam steps."""
        cfg = self.cfg
        t0 = time.perf_counter()
        rows = self._rows()  # the same on every rank: the sampler's seed is the run's
        mine = DI.shard_rows(len(rows), self.shard.rank, self.shard.world)
        pids = torch.tensor(mine, dtype=torch.int64)
        problem = self.train_set.make([rows[i] for i in mine])
        theta = problem.initial_point().to(self.device)
        run_seed = splitmix64_int(cfg.seed * 1_000_003 + self.update_count) & ((1 << 62) - 1)
        st = init_meta_state(self.model, theta, self.use_query)
        meta_losses, norms, clipped, skipped, f_start, last_f = [], [], [], 0, None, None
        for k in range(cfg.horizon // cfg.unroll):
            loss, theta, st, f_start, last_f = window_loss(self.model, problem, theta, st, run_seed,
                                                           k * cfg.unroll + 1, cfg, self.use_query, f_start,
                                                           pids=pids, total=len(rows))
            self.opt.zero_grad(set_to_none=True)
            if DI.all_true(bool(torch.isfinite(loss)), self.shard):
                loss.backward()
                if self.shard.active:
                    for p in self.params:
                        p.grad = DI.all_sum(p.grad if p.grad is not None else torch.zeros_like(p), self.shard)
                    loss = DI.all_sum(loss, self.shard)
                grads_ok = all(p.grad is None or torch.isfinite(p.grad).all() for p in self.params)
            else:
                grads_ok = False
            if grads_ok:
                stats = clip_meta_gradient(self.params, cfg.clip, cfg.clip_mode)
                norms.append(stats["grad_norm"])
                clipped.append(stats["clipped"])
                self.opt.step()
                meta_losses.append(loss.item())
            else:  # a non-finite meta-loss or gradient: skip this window's Adam step, keep going
                skipped += 1
                norms.append(float("nan"))
                clipped.append(float("nan"))
                self.opt.zero_grad(set_to_none=True)
            theta = theta.detach()
            st = _detach(st)
            if not DI.all_true(bool(torch.isfinite(theta).all()), self.shard):
                break
        if self.shard.active and f_start is not None:  # the whole batch's means, as one process reports them
            f_start, last_f = (DI.all_sum(v.sum(), self.shard).reshape(1) / len(rows) for v in (f_start, last_f))
        first_f = float(f_start.mean()) if f_start is not None else None
        self.update_count += 1
        final = float(last_f.mean()) if last_f is not None else float("nan")
        row = {
            "update": self.update_count,
            "meta_loss": float(sum(meta_losses) / len(meta_losses)) if meta_losses else float("nan"),
            "initial_loss": first_f,
            "final_loss": final,
            "loss_ratio": final / first_f if first_f not in (None, 0.0) else float("nan"),
            "skipped_windows": skipped,
            "grad_norm": _mean(norms),
            "clipped_fraction": _mean(clipped),
            "window_grad_norm": norms,
            "window_clipped": clipped,
            "rows": rows,
            "seconds": round(time.perf_counter() - t0, 4),
        }
        return row

    # -- held-out evaluation ----------------------------------------------------------------------------
    def validate(self) -> Dict[str, Any]:
        if self.val_set is None:
            return {}
        cfg = self.cfg
        if self._val_problem is None:
            self._val_problem = self.val_set.make(None, repeat=cfg.val_trials)
        with torch.no_grad():
            res = evaluate_learned(self.model, self._val_problem, cfg.val_steps or cfg.horizon, cfg.q, cfg.mu,
                                   self.use_query, cfg.query_prob, seed=cfg.seed + 7919)
        return res

    # -- checkpoints ------------------------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "model": self.model.to_dict(self.meta),
            "optimizer": self.opt.state_dict(),
            "rng": {"sampler": self.sampler.get_state(), "torch": torch.get_rng_state()},
            "update_count": self.update_count,
            "history": self.history,
            "best": self.best,
            "best_model": self.best_state,
        }

    def save_checkpoint(self, path: Optional[str] = None) -> Optional[str]:
        path = path or (os.path.join(self.out_dir, "checkpoint.pt") if self.out_dir else None)
        if path is None:
            return None
        return atomic_torch_save(self.state(), path)

    def load_checkpoint(self, path_or_state) -> None:
        """Restore everything from a checkpoint of a run with the same task, stage and mode."""
        ck = path_or_state
        where = "" if isinstance(ck, dict) else f"{path_or_state}: "
        if not isinstance(ck, dict):
            ck = load_torch_file(path_or_state, "meta-training checkpoint", hint="; delete it to start afresh")
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
            fmt = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
            raise ValueError(f"{where}not a meta-training checkpoint (format {fmt!r})")
        old = ck["config"]
        for k in ("task", "stage", "grad_mode", "q", "horizon", "unroll", "objective", "normalize", "clip_mode",
                  "weighting"):
            if old.get(k) != getattr(self.cfg, k):
                raise ValueError(f"{where}checkpoint was trained with {k}={old.get(k)!r}, this run has "
                                 f"{k}={getattr(self.cfg, k)!r}: resume with the same settings")
        loaded = LearnedZO.from_dict(ck["model"])
        self.model.load_state_dict(loaded.to(self.device).state_dict())
        self.opt.load_state_dict(ck["optimizer"])
        self.sampler.set_state(ck["rng"]["sampler"])
        torch.set_rng_state(ck["rng"]["torch"])
        self.update_count = int(ck["update_count"])
        self.history = ck["history"]
        self.best = ck["best"]
        self.best_state = ck["best_model"]

    def best_model(self) -> LearnedZO:
        return LearnedZO.from_dict(self.best_state)

    # -- the loop ---------------------------------------------------------------------------------------
    def fit(self, on_epoch: Optional[Callable[["MetaTrainer"], None]] = None) -> Dict[str, Any]:
        """Train up to ``epochs`` x ``updates_per_epoch`` updates (continuing from a loaded checkpoint)."""
        cfg = self.cfg
        total = cfg.epochs * cfg.updates_per_epoch
        bar = None
        if self.progress and tqdm is not None:
            bar = tqdm(total=total, initial=self.update_count, desc=f"train {cfg.task} stage {cfg.stage}",
                       unit="update", dynamic_ncols=True)
        try:
            if self.update_count == 0 and not self.history["epochs"] and self.val_set is not None:
                self._end_epoch(0)  # the starting weights compete for "best" too (e.g. stage 2's start)
            while self.update_count < total:
                row = self.train_update()
                row["epoch"] = (self.update_count - 1) // cfg.updates_per_epoch + 1
                self.history["updates"].append(row)
                if self.update_count % cfg.updates_per_epoch == 0:
                    self._end_epoch(row["epoch"])
                    if on_epoch is not None:
                        on_epoch(self)
                self.save_checkpoint()
                if bar is not None:
                    bar.update(1)
                    post = {"meta": f"{row['meta_loss']:.3g}", "ratio": f"{row['loss_ratio']:.3f}"}
                    if self.history["epochs"]:
                        post["val"] = f"{self.history['epochs'][-1].get('val_final_loss', float('nan')):.4g}"
                    bar.set_postfix(post)
        finally:
            if bar is not None:
                bar.close()
        return {"best": self.best, "history": self.history}

    def _end_epoch(self, epoch: int) -> None:
        ups = [r for r in self.history["updates"] if r["epoch"] == epoch]  # none for epoch 0 (the start)
        row: Dict[str, Any] = {
            "epoch": epoch,
            "meta_loss": _mean([r["meta_loss"] for r in ups]),
            "train_final_loss": _mean([r["final_loss"] for r in ups]),
            "train_loss_ratio": _mean([r["loss_ratio"] for r in ups]),
            "seconds": round(sum(r["seconds"] for r in ups), 3),
        }
        if not ups:
            row.update(meta_loss=None, train_final_loss=None, train_loss_ratio=None)
        val = self.validate()
        if val:
            row["val_final_loss"] = val["final_loss"]
            row["val_objective"] = weighted_curve_mean(val["curve"], self.cfg.weighting)
            if "success" in val:
                row["val_success"] = val["success"]
            # The best weights are those with the lowest held-out meta-objective (the weighted mean of the curve
            # the training minimises); checkpoints written before it existed compare by the final loss.
            if row["val_objective"] < self.best.get("val_objective", self.best["val_final_loss"]):
                self.best = {"val_objective": row["val_objective"], "val_final_loss": val["final_loss"],
                             "epoch": epoch, "val_curve": val["curve"]}
                self.best_state = self.model.to_dict(dict(self.meta, **self._best_meta(epoch, val)))
        else:  # no held-out set: the last epoch is the best
            self.best = {"val_objective": float("nan"), "val_final_loss": float("nan"), "epoch": epoch}
            self.best_state = self.model.to_dict(dict(self.meta, **self._best_meta(epoch, {})))
        self.history["epochs"].append(row)
        if self.out_dir:
            from .meta_logs import write_logs

            os.makedirs(self.out_dir, exist_ok=True)
            atomic_torch_save(self.best_state, os.path.join(self.out_dir, "best.pt"))
            write_logs(self.out_dir, self.history, self.best, self.cfg.to_dict())

    def _best_meta(self, epoch: int, val: Dict[str, Any]) -> Dict[str, Any]:
        m = {"task": self.cfg.task, "stage": self.cfg.stage, "grad_mode": self.cfg.grad_mode, "epoch": epoch,
             "updates": self.update_count, "q": self.cfg.q, "mu": self.cfg.mu, "horizon": self.cfg.horizon,
             "torch": str(torch.__version__)}
        if self.use_query:
            m["query_prob"] = self.cfg.query_prob
        if val:
            m["val_final_loss"] = val["final_loss"]
            m["val_objective"] = weighted_curve_mean(val["curve"], self.cfg.weighting)
            if "success" in val:
                m["val_success"] = val["success"]
        return m


def _mean(xs) -> float:
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return sum(xs) / len(xs) if xs else float("nan")
