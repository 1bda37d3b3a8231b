"""Meta-training of the learned ZO optimizer (paper Sec. 3; DESIGN.md "Training"): the trainer loop.

One *update* of the meta-optimizer's schedule = one trajectory of ``horizon`` optimizer steps on a meta-batch
of B problems (B images attacked at once, each with its own coordinatewise LSTM states), cut into windows of
``unroll`` steps (truncated BPTT): after each window the meta-loss is backpropagated, the meta-gradient is
clipped (by its global norm by default, elementwise to [-clip, clip] with ``clip_mode="value"``, the reference
code's) and Adam steps; then the iterate and the LSTM states are detached and the trajectory goes on. Each
update logs the meta-gradient's norm and the fraction clipped per window. The objective, the stages and the
gradient flow are described in `meta_step`; the settings in `meta_config`; held-out runs in `meta_heldout`.

Checkpoints (``torch.save``, loaded with ``weights_only=True``) hold the learned weights, the Adam state, the
problem sampler's RNG state, the counters, the log and the best weights so far (by the held-out objective, the
loss curve weighted as ``weighting``, on the held-out problems run as at test time: ZO-LSTM with the Bernoulli p
of the config). A checkpoint is written after every update, so an interrupted run resumes from the last finished
update with the same next step.

This module is also where the meta-training names are imported from (`MetaTrainConfig`, `meta_step`,
`window_loss`, `evaluate_learned`, ...).
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import torch

from .. import distributed as DI
from ..fileio import atomic_torch_save, load_torch_file
from .lstm_optimizer import LearnedZO
from .meta_config import CHECKPOINT_FORMAT, MetaTrainConfig, ProblemSet
from .meta_heldout import evaluate_learned, pick_on_heldout  # noqa: F401  (pick_on_heldout: re-exported)
from .meta_logs import write_logs
from .meta_step import (clip_meta_gradient, detach_state, init_meta_state, meta_step,  # noqa: F401
                        step_weight, weighted_curve_mean, window_loss)
from .seeding import splitmix64_int

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = ["MetaTrainConfig", "MetaTrainer", "ProblemSet", "meta_step", "window_loss", "clip_meta_gradient",
           "step_weight", "weighted_curve_mean", "init_meta_state", "CHECKPOINT_FORMAT", "evaluate_learned",
           "pick_on_heldout"]


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
            diverged = not bool(torch.isfinite(theta).all())
            if self.shard.active:  # every rank decides on the same summed numbers: one all-reduce per window
                loss.backward()
                *grads, loss, n_diverged = DI.all_sum_many(
                    [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
                    + [loss.detach().reshape(1), loss.new_tensor([float(diverged)])], self.shard)
                for p, g in zip(self.params, grads):
                    p.grad = g
                loss, diverged = loss.reshape(()), bool(n_diverged.item() > 0)
                grads_ok = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
            elif bool(torch.isfinite(loss)):
                loss.backward()
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
            st = detach_state(st)
            if diverged:  # on any rank: every rank stops the trajectory
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
                                   self.use_query, cfg.query_prob, seed=cfg.seed + 7919, baseline=cfg.baseline)
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
            os.makedirs(self.out_dir, exist_ok=True)
            atomic_torch_save(self.best_state, os.path.join(self.out_dir, "best.pt"))
            write_logs(self.out_dir, self.history, self.best, self.cfg.to_dict())

    def _best_meta(self, epoch: int, val: Dict[str, Any]) -> Dict[str, Any]:
        m = {"task": self.cfg.task, "stage": self.cfg.stage, "grad_mode": self.cfg.grad_mode, "epoch": epoch,
             "updates": self.update_count, "q": self.cfg.q, "mu": self.cfg.mu, "horizon": self.cfg.horizon,
             "torch": str(torch.__version__)}
        if self.use_query:
            m["query_prob"] = self.cfg.query_prob
        if self.cfg.baseline != "f0":  # the estimator the weights were trained with; ZOLSTM takes it by default
            m["baseline"] = self.cfg.baseline
        if val:
            m["val_final_loss"] = val["final_loss"]
            m["val_objective"] = weighted_curve_mean(val["curve"], self.cfg.weighting)
            if "success" in val:
                m["val_success"] = val["success"]
        return m


def _mean(xs) -> float:
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return sum(xs) / len(xs) if xs else float("nan")
