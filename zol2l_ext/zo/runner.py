"""Run an optimizer on B problems at once: exact query counting, budgets, early stops, resumable runs.

`minimize(optimizer, problem, steps, ...)` performs at most ``steps`` steps on every problem. At the start of
iteration t (t = 0 .. steps) the runner stops problems (at their first success with ``stop_at_success``, when
the budget cannot pay step t, after the last step, after a callback asked to stop, or after non-finite
values), then performs step t on the remaining (active) problems through ``problem.select(active)``: one
black-box call, ``optimizer.queries_at(t)`` queries per problem.

Success (problems with ``success``; ``track_success``): the label read that comes with f(theta) from a
score-based black box, never counted as a query. With ``stop_at_success`` the runner reads ``success(theta_t)``
before step t (a separate forward of the active problems and one host synchronisation per step), so a problem
stops before spending anything more. Otherwise, for problems that report it (``reports_row0_success``, e.g.
`AttackProblem`) the success of theta_t is read from step t's own query of theta_t (row 0), at no cost; for the
others from a separate ``success()`` forward. Both give the same result.

Seeds: the keys of step t of problem b are ``seeding.step_seeds(seed, problem_ids[b], t)`` (a counter-based
SplitMix64 hash), so a batch of problems and the same problems one at a time (pass ``problem_ids=[i]``) draw the
same directions (and minibatches), and a resumed run draws what the uninterrupted run draws.

Budget (int, or one int per problem): a problem stops before a step whose cost exceeds its remaining budget,
so ``queries <= budget`` always; when the remaining budget is smaller than one step (e.g. 15 left, 21 per
step) those queries are left unused: a smaller step would change the estimator. ZO-SZVR-G's steps cost
differently (snapshot / inner), and a problem stops before the first step it cannot pay.

Losses: ``loss[t, b] = f_b(theta_t)``: for t < stop_step[b] the value f(theta_t) queried by step t itself; at
t = stop_step[b] (the final iterate) a final evaluation of all problems in one call of one point each
(``final_eval``; not counted as queries; for a stochastic problem it uses the keys of step stop_step, i.e. the
minibatch that step would have used; NaN without ``final_eval``); NaN after the stop (not carried over).

Non-finite values (``nan_policy``): "fail" (default): a problem whose call returned a NaN/inf or whose iterate
became non-finite is frozen on the device at once at its last finite iterate (no synchronisation), and is
removed at the runner's next host check (every ``sync_every`` steps, and whenever other problems stop) as
``failed``, with ``stop_step`` = the failing step and NaN losses after it; the queries spent on it until that
check are counted (they were made); the other problems go on exactly as without it. "raise": the host check
raises `NonFiniteValueError` naming the problems and the step. "ignore": no check (NaNs propagate).

Host synchronisations: none inside a step; in the loop, one every ``sync_every`` steps (the non-finite check),
and one per step with ``stop_at_success``. Budgets, query counts and stop decisions live on the host.

Resume: every ``checkpoint_every`` steps the runner snapshots a `RunState` (``torch.save``-able with
``state.save(path)``; loadable with ``weights_only=True``) and writes it to ``checkpoint_path`` and/or passes
it to ``on_checkpoint``; a KeyboardInterrupt also writes it to ``checkpoint_path``. ``minimize(...,
resume_from=state_or_path)`` continues from it with the same problem (and an optimizer of the same kind: its
hyper-parameters and weights are restored from the state) and gives the result of the uninterrupted run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from torch import Tensor

from .estimator import NonFiniteValueError
from .run_batch import BatchRun
from .run_state import (
    RUNNING,
    STOP_BUDGET,
    STOP_CALLBACK,
    STOP_FAILED,
    STOP_REASONS,
    STOP_STEPS,
    STOP_SUCCESS,
    RunResult,
    RunState,
    StepInfo,
)

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = ["RunResult", "RunState", "StepInfo", "minimize", "STOP_REASONS"]

_NAN_POLICIES = ("fail", "raise", "ignore")


def minimize(
    optimizer,
    problem,
    steps: int,
    theta0: Optional[Tensor] = None,
    seed: int = 0,
    budget: Union[None, int, Sequence[int], Tensor] = None,
    stop_at_success: bool = False,
    progress: bool = True,
    callback: Optional[Callable[[StepInfo], Optional[bool]]] = None,
    *,
    problem_ids: Union[None, Sequence[int], Tensor] = None,
    nan_policy: str = "fail",
    sync_every: int = 10,
    track_success: bool = True,
    final_eval: bool = True,
    resume_from: Union[None, RunState, Dict[str, Any], str, Path] = None,
    checkpoint_every: Optional[int] = None,
    checkpoint_path: Union[None, str, Path] = None,
    on_checkpoint: Optional[Callable[[RunState], None]] = None,
    desc: Optional[str] = None,
) -> RunResult:
    """Minimize B black-box problems with ``optimizer`` (see the module docstring for the semantics).

    ``callback(info: StepInfo)`` runs after every step; returning True stops all problems (reason "callback").
    On resume, ``seed``, ``budget``, ``stop_at_success``, ``problem_ids``, ``nan_policy``, ``track_success``
    and ``theta0`` come from the state (the arguments are ignored); ``steps`` may differ (>= the state's step).
    """
    steps, sync_every = _check_arguments(steps, nan_policy, sync_every, checkpoint_every)
    if resume_from is not None:
        run = BatchRun.resume(optimizer, problem, steps, resume_from, theta0)
    else:
        run = BatchRun.start(optimizer, problem, steps, theta0, seed=seed, budget=budget, problem_ids=problem_ids,
                             stop_at_success=stop_at_success, nan_policy=nan_policy, track_success=track_success)
    checkpoints = _Checkpoints(checkpoint_every, checkpoint_path, on_checkpoint)
    bar = None
    if progress and tqdm is not None:
        bar = tqdm(total=steps, initial=run.t, desc=desc or getattr(optimizer, "name", "zo"), leave=False)
    try:
        _step_loop(run, sync_every, callback, checkpoints, bar)
    except KeyboardInterrupt:
        if checkpoint_path is not None and not run.committing:
            run.snapshot().save(checkpoint_path)
        raise
    finally:
        if bar is not None:
            bar.close()
    return run.result(final_eval)


def _check_arguments(steps, nan_policy: str, sync_every, checkpoint_every) -> Tuple[int, int]:
    """(steps, sync_every) as ints, after checking the run's settings."""
    if nan_policy not in _NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {_NAN_POLICIES}, got {nan_policy!r}")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    sync_every = int(sync_every)
    if sync_every < 1:
        raise ValueError(f"sync_every must be >= 1, got {sync_every}")
    if checkpoint_every is not None and int(checkpoint_every) < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    return steps, sync_every


@dataclass(frozen=True)
class _Checkpoints:
    """Where and how often a run writes its RunState (``checkpoint_every`` steps; a file and/or a function)."""

    every: Optional[int]
    path: Union[None, str, Path]
    on_checkpoint: Optional[Callable[[RunState], None]]

    def after_step(self, run: BatchRun) -> None:
        if self.every is not None and run.t % int(self.every) == 0 and (self.path or self.on_checkpoint):
            st = run.snapshot()
            if self.path is not None:
                st.save(self.path)
            if self.on_checkpoint is not None:
                self.on_checkpoint(st)


def _step_loop(run: BatchRun, sync_every: int, callback, checkpoints: _Checkpoints, bar) -> None:
    """Iterations t = run.t .. steps: stop what must stop before step t, then step t on the rest."""
    while run.active.size:
        q_now = int(run.queries[run.active[0]])  # active problems are in lockstep: same steps, same costs
        stop, code, at, cost = _stops_before_step(run, q_now, sync_every)
        if stop.any():
            run.finish(stop, code, at)
            if not run.active.size:
                break
        f0 = run.step(cost, q_now)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(active=int(run.active.size), refresh=False)
        if callback is not None and run.active.size:
            info = StepInfo(step=run.t - 1, theta=run.theta_act, f0=f0, active=run.active_dev,
                            queries=int(run.queries[run.active[0]]), checkpoint=run.snapshot)
            if callback(info) is True:
                run.callback_stop = True
        checkpoints.after_step(run)


def _stops_before_step(run: BatchRun, q_now: int, sync_every: int):
    """(stop, code, at, cost): which active rows stop before step t, why (STOP_*), at which step, and the
    queries step t costs (None when every row stops for the step limit or a callback)."""
    n = run.active.size
    stop = np.zeros(n, dtype=bool)
    code = np.full(n, RUNNING, dtype=np.int64)
    at = np.full(n, run.t, dtype=np.int64)
    _success_stops(run, q_now, stop, code)
    cost = _schedule_stops(run, stop, code)
    if run.nan_policy != "ignore" and (stop.any() or run.stop_at_success or run.t % sync_every == 0):
        _failure_stops(run, stop, code, at)
    return stop, code, at, cost


def _success_stops(run: BatchRun, q_now: int, stop: np.ndarray, code: np.ndarray) -> None:
    """Success of theta_t, read before the step (exact stops), unless the step's own query reports it."""
    if run.use_success and not run.row0_mode:
        s = run.record_success(run.prob_active.success(run.theta_act), q_now)
        if run.stop_at_success:
            s_host = s.cpu().numpy()
            code[s_host] = STOP_SUCCESS
            stop |= s_host


def _schedule_stops(run: BatchRun, stop: np.ndarray, code: np.ndarray) -> Optional[int]:
    """Stops for the step limit, a callback's request or the budget; the cost of step t (None if all stop)."""
    if run.t >= run.steps or run.callback_stop:
        code[~stop] = STOP_STEPS if run.t >= run.steps else STOP_CALLBACK
        stop[:] = True
        return None
    cost = int(run.optimizer.queries_at(run.t))
    if run.budget is not None:
        over = run.queries[run.active] + cost > run.budget[run.active]
        code[over & ~stop] = STOP_BUDGET
        stop |= over
    return cost


def _failure_stops(run: BatchRun, stop: np.ndarray, code: np.ndarray, at: np.ndarray) -> None:
    """Problems whose values became non-finite since the last host check: stopped as failed, or raised."""
    fa = run.act["fail_at"].cpu().numpy()
    fmask = fa >= 0
    if fmask.any():
        if run.nan_policy == "raise":
            raise NonFiniteValueError(
                f"non-finite black-box values or iterates for problem(s) {run.active[fmask].tolist()} at step "
                f"{int(fa[fmask].min())} (nan_policy='raise'; nan_policy='fail' stops only those problems)")
        code[fmask] = STOP_FAILED
        at[fmask] = fa[fmask]
        stop |= fmask
