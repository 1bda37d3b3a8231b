"""The bookkeeping of one `runner.minimize` call: iterates, active problems and per-problem records.

Budgets, query counts, stop steps and codes and the active rows live on the host (numpy), where the stop
decisions are taken; the iterates, the losses and the success / failure records live on the run's device. The
full [B] device records (``full``) hold the stopped problems and ``act`` the active rows, compacted together with
``theta_act`` in `BatchRun.finish`, so that a step updates them without index operations.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
from torch import Tensor

from .estimator import evaluate
from .problems import has_success
from .run_state import RUNNING, STOP_FAILED, RunResult, RunState, as_run_state, tensors_to, tensors_to_cpu
from .seeding import step_seeds

__all__ = ["BatchRun"]


def _as_budget(budget, B: int) -> Optional[np.ndarray]:
    if budget is None:
        return None
    arr = np.asarray(budget.cpu() if isinstance(budget, Tensor) else budget, dtype=np.int64)
    if arr.ndim == 0:
        arr = np.full(B, int(arr), dtype=np.int64)
    if arr.shape != (B,):
        raise ValueError(f"budget must be an int or have one entry per problem ({B}), got shape {arr.shape}")
    if (arr < 0).any():
        raise ValueError("budget must be >= 0")
    return arr


class BatchRun:
    """The state of a run of ``optimizer`` on the B rows of ``problem`` (see the module docstring).

    Made by `start` (a new run) or `resume` (from a `RunState`); `step` performs step ``t`` on the active rows,
    `finish` stops some of them, `snapshot` is the `RunState` to continue from, `result` the final `RunResult`.
    """

    def __init__(self, optimizer, problem, steps: int):
        self.optimizer = optimizer
        self.problem = problem
        self.steps = steps
        self.B, self.d = int(problem.batch), int(problem.dim)
        if self.B < 1:
            raise ValueError("empty batch: the problem has no rows")
        # True while the records are half updated: a KeyboardInterrupt then writes no checkpoint
        self.committing = False

    # -- setup and resume ----------------------------------------------------------------------------------
    @classmethod
    def start(cls, optimizer, problem, steps: int, theta0: Optional[Tensor], *, seed: int, budget, problem_ids,
              stop_at_success: bool, nan_policy: str, track_success: bool) -> "BatchRun":
        run = cls(optimizer, problem, steps)
        B, d = run.B, run.d
        if theta0 is None:
            theta0 = problem.initial_point()
        if not isinstance(theta0, Tensor) or tuple(theta0.shape) != (B, d):
            got = tuple(theta0.shape) if isinstance(theta0, Tensor) else type(theta0).__name__
            raise ValueError(f"theta0 must have shape [B={B}, d={d}], got {got}")
        if not theta0.is_floating_point():
            raise ValueError(f"theta0 must be floating point, got {theta0.dtype}")
        run.seed, run.stop_at_success = seed, stop_at_success
        run.nan_policy, run.track_success = nan_policy, track_success
        dev = run.dev = theta0.device
        run.theta_full = theta0.detach().clone()
        run.opt_state = optimizer.init_state(run.theta_full)
        run.t = 0
        run.loss = torch.full((steps + 1, B), float("nan"), dtype=torch.float64, device=dev)
        run.queries = np.zeros(B, dtype=np.int64)
        success = torch.zeros(B, dtype=torch.bool, device=dev)
        first_step = torch.full((B,), -1, dtype=torch.int64, device=dev)
        first_q = torch.full((B,), -1, dtype=torch.int64, device=dev)
        run.stop_step = np.full(B, -1, dtype=np.int64)
        run.stop_code = np.full(B, RUNNING, dtype=np.int64)
        run.failed = np.zeros(B, dtype=bool)
        run.budget = _as_budget(budget, B)
        if problem_ids is None:
            run.pids = torch.arange(B, dtype=torch.int64, device=dev)
        else:
            run.pids = torch.as_tensor(problem_ids, dtype=torch.int64).to(dev)
            if run.pids.shape != (B,):
                raise ValueError(f"problem_ids must have one entry per problem ({B}), "
                                 f"got shape {tuple(run.pids.shape)}")
        run.active = np.arange(B, dtype=np.int64)
        run.callback_stop = False
        fail_at = torch.full((B,), -1, dtype=torch.int64, device=dev)
        run._activate(success, first_step, first_q, fail_at)
        return run

    @classmethod
    def resume(cls, optimizer, problem, steps: int, state, theta0: Optional[Tensor]) -> "BatchRun":
        """The run continued from ``state`` (a RunState, its dict or a file); the settings come from the state."""
        run = cls(optimizer, problem, steps)
        B, d = run.B, run.d
        rs = as_run_state(state)
        if tuple(rs.theta.shape) != (B, d):
            raise ValueError(f"resume_from: the state has theta of shape {tuple(rs.theta.shape)}, "
                             f"the problem is [{B}, {d}]")
        if steps < rs.t:
            raise ValueError(f"resume_from: the state is at step {rs.t}, beyond steps = {steps}")
        dev = run.dev = problem.initial_point().device if theta0 is None else theta0.device
        optimizer.load_state_dict(rs.optimizer, device=dev)  # hyper-parameters (and weights)
        run.opt_state = tensors_to(rs.opt_state, dev)
        if hasattr(optimizer, "model"):
            optimizer.model.to(device=dev, dtype=rs.theta.dtype)
        run.seed, run.stop_at_success, run.nan_policy, run.track_success = (
            rs.seed, rs.stop_at_success, rs.nan_policy, rs.track_success)
        run.t = int(rs.t)
        run.theta_full = rs.theta.to(dev).clone()
        run.loss = torch.full((steps + 1, B), float("nan"), dtype=torch.float64, device=dev)
        n_keep = min(steps + 1, rs.loss.shape[0])
        run.loss[:n_keep] = rs.loss[:n_keep].to(dev)
        run.queries = rs.queries.numpy().astype(np.int64).copy()
        success = rs.success.to(dev).clone()
        first_step = rs.first_success_step.to(dev).clone()
        first_q = rs.first_success_queries.to(dev).clone()
        run.stop_step = rs.stop_step.numpy().astype(np.int64).copy()
        run.stop_code = rs.stop_code.numpy().astype(np.int64).copy()
        run.failed = rs.failed.numpy().astype(bool).copy()
        run.budget = None if rs.budget is None else rs.budget.numpy().astype(np.int64).copy()
        run.pids = rs.problem_ids.to(dev)
        run.active = rs.active.numpy().astype(np.int64).copy()
        run.callback_stop = bool(rs.callback_stop)
        fail_at = (torch.full((B,), -1, dtype=torch.int64) if rs.fail_at is None else rs.fail_at).to(dev).clone()
        run._activate(success, first_step, first_q, fail_at)
        return run

    def _activate(self, success: Tensor, first_step: Tensor, first_q: Tensor, fail_at: Tensor) -> None:
        """The active rows' sub-problem, iterates and records, and how success is read."""
        self.use_success = bool(self.track_success) and has_success(self.problem)
        # success of theta_t read from step t's own query (row 0 = theta_t) when no stop depends on it
        self.row0_mode = (self.use_success and not self.stop_at_success
                          and getattr(self.problem, "reports_row0_success", False)
                          and getattr(self.optimizer, "row0_is_theta", False))
        self.active_dev = torch.as_tensor(self.active, dtype=torch.int64, device=self.dev)
        self.prob_active = self._subset(self.active)
        theta_act = self.theta_full if self.active.size == self.B else self.theta_full.index_select(0, self.active_dev)
        self.theta_act = theta_act.clone()
        self.pids_act = self.pids.index_select(0, self.active_dev)
        self.full: Dict[str, Tensor] = {"success": success, "first_step": first_step, "first_q": first_q,
                                        "fail_at": fail_at}
        self.act: Dict[str, Tensor] = {k: v.index_select(0, self.active_dev) for k, v in self.full.items()}

    def _subset(self, rows: np.ndarray):
        if rows.size == self.B:
            return self.problem
        return self.problem.select(torch.as_tensor(rows, dtype=torch.int64, device=self.dev))

    # -- records -------------------------------------------------------------------------------------------
    def merged(self, k: str) -> Tensor:
        """The [B] record ``k`` with the active rows' current values."""
        out = self.full[k].clone()
        if self.active.size:
            out.index_copy_(0, self.active_dev, self.act[k])
        return out

    def snapshot(self) -> RunState:
        theta_now = self.theta_full.clone()
        if self.active.size:
            theta_now.index_copy_(0, self.active_dev, self.theta_act.detach())
        success, first_step, first_q, fail_at = (
            self.merged(k) for k in ("success", "first_step", "first_q", "fail_at"))
        return RunState(
            t=self.t, steps=self.steps, seed=int(self.seed), theta=theta_now,
            active=torch.as_tensor(self.active.copy()),
            opt_state=tensors_to_cpu(self.opt_state), optimizer=self.optimizer.state_dict(),
            loss=self.loss.clone(), queries=torch.as_tensor(self.queries.copy()),
            success=success.clone(), first_success_step=first_step.clone(), first_success_queries=first_q.clone(),
            stop_step=torch.as_tensor(self.stop_step.copy()), stop_code=torch.as_tensor(self.stop_code.copy()),
            failed=torch.as_tensor(self.failed.copy()),
            budget=None if self.budget is None else torch.as_tensor(self.budget.copy()),
            problem_ids=self.pids.clone(), stop_at_success=bool(self.stop_at_success), nan_policy=self.nan_policy,
            track_success=bool(self.track_success), callback_stop=self.callback_stop, fail_at=fail_at.clone(),
        )

    def record_success(self, s: Tensor, q_now: int) -> Tensor:
        """success of theta_t for the active rows (device ops only)."""
        if not isinstance(s, Tensor) or s.shape != (self.active.size,):
            raise ValueError(f"success must be a bool tensor [{self.active.size}], got "
                             f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}")
        s = s.to(device=self.dev, dtype=torch.bool)
        new = s & (self.act["first_step"] < 0)
        self.act["success"] = s
        self.act["first_step"] = self.act["first_step"].masked_fill(new, self.t)
        self.act["first_q"] = self.act["first_q"].masked_fill(new, q_now)
        return s

    # -- stops and steps -----------------------------------------------------------------------------------
    def finish(self, mask: np.ndarray, codes: np.ndarray, at: np.ndarray) -> None:
        """Stop the active rows where mask with reasons codes[mask] at steps at[mask] (theta_act is final)."""
        self.committing = True
        dev = self.dev
        rows = self.active[mask]
        mask_dev = torch.as_tensor(mask, device=dev)
        rows_dev = torch.as_tensor(rows, device=dev)
        self.theta_full.index_copy_(0, rows_dev, self.theta_act[mask_dev].detach())
        for k in self.full:
            self.full[k].index_copy_(0, rows_dev, self.act[k][mask_dev])
        self.stop_step[rows] = at[mask]
        self.stop_code[rows] = codes[mask]
        failed_rows = codes[mask] == STOP_FAILED
        if failed_rows.any():  # a failed problem may have been queried (frozen) after its failing step
            self.failed[rows[failed_rows]] = True
            for r in rows[failed_rows]:
                self.loss[int(self.stop_step[r]) + 1:, int(r)] = float("nan")
        keep_dev = torch.as_tensor(np.nonzero(~mask)[0], dtype=torch.int64, device=dev)
        self.active = self.active[~mask]
        self.active_dev = torch.as_tensor(self.active, dtype=torch.int64, device=dev)
        if self.active.size:
            self.theta_act = self.theta_act.index_select(0, keep_dev)
            for k in self.act:
                self.act[k] = self.act[k].index_select(0, keep_dev)
            self.opt_state = self.optimizer.select_state(self.opt_state, keep_dev)
            self.pids_act = self.pids_act.index_select(0, keep_dev)
            self.prob_active = self._subset(self.active)
        self.committing = False

    def step(self, cost: int, q_now: int) -> Tensor:
        """Step t on the active rows (one black-box call, ``cost`` queries each); returns f(theta_t) [n_active]."""
        t = self.t
        seeds = step_seeds(self.seed, self.pids_act, t)
        theta_new, new_state, f0 = self.optimizer.step(self.prob_active, self.theta_act, self.opt_state, seeds)
        if tuple(theta_new.shape) != tuple(self.theta_act.shape) or tuple(f0.shape) != (self.active.size,):
            raise ValueError(f"{self.optimizer!r}.step returned theta {tuple(theta_new.shape)} and f0 "
                             f"{tuple(f0.shape)} for {self.active.size} problems of dimension {self.d}")
        self.committing = True
        self.queries[self.active] += cost
        self.loss[t].index_copy_(0, self.active_dev, f0.detach().to(self.loss.dtype))
        if self.use_success and self.row0_mode:
            self.record_success(getattr(self.prob_active, "last_row0_success", None), q_now)
        # non-finite values: freeze the row at its last finite iterate now (device only); the host removes it at
        # its next check (every sync_every steps, or when other problems stop)
        if self.nan_policy != "ignore":
            bad = ~torch.isfinite(f0.detach()) | ~torch.isfinite(theta_new.detach()).all(dim=1)
            theta_new = torch.where(bad.unsqueeze(1), self.theta_act, theta_new)
            self.act["fail_at"] = self.act["fail_at"].masked_fill(bad & (self.act["fail_at"] < 0), t)
        self.theta_act, self.opt_state = theta_new, new_state
        self.t += 1
        self.committing = False
        return f0

    # -- the result ----------------------------------------------------------------------------------------
    def result(self, final_eval: bool) -> RunResult:
        """The RunResult once every problem has stopped, after the final evaluation of the final iterates."""
        dev, B = self.dev, self.B
        success, first_step, first_q = self.full["success"], self.full["first_step"], self.full["first_q"]
        stop_step_t = torch.as_tensor(self.stop_step, dtype=torch.int64, device=dev)
        final_s = None
        if final_eval:
            with torch.no_grad():
                keys = step_seeds(self.seed, self.pids, stop_step_t)
                vals = evaluate(self.problem, self.theta_full.unsqueeze(1), keys).squeeze(1)
            self.loss[stop_step_t, torch.arange(B, device=dev)] = vals.detach().to(self.loss.dtype)
            if self.use_success and self.row0_mode:
                final_s = getattr(self.problem, "last_row0_success", None)
        if self.use_success and self.row0_mode:
            if final_s is None:
                final_s = self.problem.success(self.theta_full)
            final_s = final_s.to(device=dev, dtype=torch.bool)
            success.copy_(final_s)
            new = final_s & (first_step < 0)
            first_step = torch.where(new, stop_step_t, first_step)
            first_q = torch.where(new, torch.as_tensor(self.queries, device=dev), first_q)
        return RunResult(
            loss=self.loss.cpu(),
            queries=torch.as_tensor(self.queries),
            success=success.cpu(),
            first_success_step=first_step.cpu(),
            first_success_queries=first_q.cpu(),
            theta=self.theta_full,
            stop_step=torch.as_tensor(self.stop_step),
            stop_code=torch.as_tensor(self.stop_code),
            failed=torch.as_tensor(self.failed),
            has_success=self.use_success,
        )
