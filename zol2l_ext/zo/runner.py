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

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..fileio import atomic_torch_save, load_torch_file
from .estimator import NonFiniteValueError, evaluate
from .problems import has_success
from .seeding import step_seeds

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = ["RunResult", "RunState", "StepInfo", "minimize", "STOP_REASONS"]

#: stop_code values of RunResult / RunState
STOP_REASONS = ("steps", "budget", "success", "failed", "callback")
_RUNNING = -1
_STEPS, _BUDGET, _SUCCESS, _FAILED, _CALLBACK = range(5)
_NAN_POLICIES = ("fail", "raise", "ignore")
_STATE_VERSION = 1


@dataclass
class RunResult:
    """The outcome of `minimize` for B problems (bookkeeping tensors on the CPU, ``theta`` on the run's device).

    loss [steps + 1, B] float64: loss[t, b] = f_b(theta_t) up to the problem's stop step, NaN after it.
    queries [B] int64: queries spent by the optimizer (exact; success reads and the final evaluation excluded).
    success [B] bool: success of the final iterate. first_success_step [B] int64: the first t with theta_t a
    success (-1 if none). first_success_queries [B] int64: the queries spent to reach that iterate (-1 if none).
    theta [B, d]: the final iterates. stop_step [B] int64: the number of steps each problem performed.
    stop_code [B] int64: index in STOP_REASONS. failed [B] bool: stopped for non-finite values.
    """

    loss: Tensor
    queries: Tensor
    success: Tensor
    first_success_step: Tensor
    first_success_queries: Tensor
    theta: Tensor
    stop_step: Tensor
    stop_code: Tensor
    failed: Tensor
    has_success: bool = False

    @property
    def stop_reason(self) -> List[str]:
        return [STOP_REASONS[int(c)] for c in self.stop_code]

    @property
    def final_loss(self) -> Tensor:
        """f(theta_final) [B] (the final evaluation)."""
        return self.loss[self.stop_step, torch.arange(self.loss.shape[1])]

    @property
    def ever_success(self) -> Tensor:
        return self.first_success_step >= 0


@dataclass
class RunState:
    """Everything needed to continue a run (tensors on the CPU in `to_dict`; rows of ``opt_state`` = ``active``)."""

    t: int
    steps: int
    seed: int
    theta: Tensor  # [B, d]: current iterate of active problems, final iterate of stopped ones
    active: Tensor  # int64 [n_active]
    opt_state: Dict[str, Any]
    optimizer: Dict[str, Any]
    loss: Tensor
    queries: Tensor
    success: Tensor
    first_success_step: Tensor
    first_success_queries: Tensor
    stop_step: Tensor
    stop_code: Tensor
    failed: Tensor
    budget: Optional[Tensor]
    problem_ids: Tensor
    stop_at_success: bool
    nan_policy: str
    track_success: bool
    callback_stop: bool = False
    fail_at: Optional[Tensor] = None  # [B] step at which a problem's values became non-finite (-1: none)
    version: int = _STATE_VERSION

    def to_dict(self) -> Dict[str, Any]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                v = v.detach().cpu().clone()
            elif isinstance(v, dict):
                v = _tree_cpu(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunState":
        if d.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported RunState version {d.get('version')!r} (expected {_STATE_VERSION})")
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def save(self, path) -> None:
        atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path) -> "RunState":
        d = load_torch_file(path, "run checkpoint")  # truncated or corrupt: one line, not torch's many
        if not isinstance(d, dict):
            raise ValueError(f"{path}: not a run checkpoint (holds a {type(d).__name__})")
        return cls.from_dict(d)


def _tree_cpu(x):
    if isinstance(x, Tensor):
        return x.detach().cpu().clone()
    if isinstance(x, dict):
        return {k: _tree_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_tree_cpu(v) for v in x)
    return x


def _tree_to(x, device):
    if isinstance(x, Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _tree_to(v, device) for k, v in x.items()}
    return x


@dataclass
class StepInfo:
    """What a callback sees after step ``step``: the active problems' new iterates and f(theta_step)."""

    step: int
    theta: Tensor  # [n_active, d] iterates after the step
    f0: Tensor  # [n_active] f(theta_step), the value queried by the step
    active: Tensor  # int64 [n_active] row numbers in the full batch
    queries: int  # queries spent so far by each active problem
    checkpoint: Callable[[], RunState] = field(repr=False, default=None)


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
    B, d = int(problem.batch), int(problem.dim)
    if B < 1:
        raise ValueError("empty batch: the problem has no rows")

    # ---------------------------------------------------------------------------------------------- setup
    if resume_from is not None:
        rs = resume_from
        if isinstance(rs, (str, Path)):
            rs = RunState.load(rs)
        elif isinstance(rs, dict):
            rs = RunState.from_dict(rs)
        if tuple(rs.theta.shape) != (B, d):
            raise ValueError(f"resume_from: the state has theta of shape {tuple(rs.theta.shape)}, the problem is [{B}, {d}]")
        if steps < rs.t:
            raise ValueError(f"resume_from: the state is at step {rs.t}, beyond steps = {steps}")
        dev = problem.initial_point().device if theta0 is None else theta0.device
        opt_state = optimizer.load_state_dict(rs.optimizer, device=dev)  # hyper-parameters (and weights)
        opt_state = _tree_to(rs.opt_state, dev)
        if hasattr(optimizer, "model"):
            optimizer.model.to(device=dev, dtype=rs.theta.dtype)
        seed, stop_at_success, nan_policy, track_success = rs.seed, rs.stop_at_success, rs.nan_policy, rs.track_success
        t = int(rs.t)
        theta_full = rs.theta.to(dev).clone()
        loss = torch.full((steps + 1, B), float("nan"), dtype=torch.float64, device=dev)
        n_keep = min(steps + 1, rs.loss.shape[0])
        loss[:n_keep] = rs.loss[:n_keep].to(dev)
        queries = rs.queries.numpy().astype(np.int64).copy()
        success = rs.success.to(dev).clone()
        first_step = rs.first_success_step.to(dev).clone()
        first_q = rs.first_success_queries.to(dev).clone()
        stop_step = rs.stop_step.numpy().astype(np.int64).copy()
        stop_code = rs.stop_code.numpy().astype(np.int64).copy()
        failed = rs.failed.numpy().astype(bool).copy()
        budget_arr = None if rs.budget is None else rs.budget.numpy().astype(np.int64).copy()
        pids = rs.problem_ids.to(dev)
        active = rs.active.numpy().astype(np.int64).copy()
        callback_stop = bool(rs.callback_stop)
        fail_at = (torch.full((B,), -1, dtype=torch.int64) if rs.fail_at is None else rs.fail_at).to(dev).clone()
    else:
        if theta0 is None:
            theta0 = problem.initial_point()
        if not isinstance(theta0, Tensor) or tuple(theta0.shape) != (B, d):
            got = tuple(theta0.shape) if isinstance(theta0, Tensor) else type(theta0).__name__
            raise ValueError(f"theta0 must have shape [B={B}, d={d}], got {got}")
        if not theta0.is_floating_point():
            raise ValueError(f"theta0 must be floating point, got {theta0.dtype}")
        dev = theta0.device
        theta_full = theta0.detach().clone()
        opt_state = optimizer.init_state(theta_full)
        t = 0
        loss = torch.full((steps + 1, B), float("nan"), dtype=torch.float64, device=dev)
        queries = np.zeros(B, dtype=np.int64)
        success = torch.zeros(B, dtype=torch.bool, device=dev)
        first_step = torch.full((B,), -1, dtype=torch.int64, device=dev)
        first_q = torch.full((B,), -1, dtype=torch.int64, device=dev)
        stop_step = np.full(B, -1, dtype=np.int64)
        stop_code = np.full(B, _RUNNING, dtype=np.int64)
        failed = np.zeros(B, dtype=bool)
        budget_arr = _as_budget(budget, B)
        if problem_ids is None:
            pids = torch.arange(B, dtype=torch.int64, device=dev)
        else:
            pids = torch.as_tensor(problem_ids, dtype=torch.int64).to(dev)
            if pids.shape != (B,):
                raise ValueError(f"problem_ids must have one entry per problem ({B}), got shape {tuple(pids.shape)}")
        active = np.arange(B, dtype=np.int64)
        callback_stop = False
        fail_at = torch.full((B,), -1, dtype=torch.int64, device=dev)

    use_success = bool(track_success) and has_success(problem)
    # success of theta_t read from step t's own query (row 0 = theta_t) when no stop depends on it
    row0_mode = (use_success and not stop_at_success and getattr(problem, "reports_row0_success", False)
                 and getattr(optimizer, "row0_is_theta", False))

    def _subset(rows: np.ndarray):
        if rows.size == B:
            return problem
        return problem.select(torch.as_tensor(rows, dtype=torch.int64, device=dev))

    active_dev = torch.as_tensor(active, dtype=torch.int64, device=dev)
    prob_active = _subset(active)
    theta_act = theta_full if active.size == B else theta_full.index_select(0, active_dev)
    theta_act = theta_act.clone()
    pids_act = pids.index_select(0, active_dev)

    # per-problem device bookkeeping: the full [B] tensors hold stopped problems, `act` the active rows (compacted
    # with theta_act in finish), so that a step updates them without index operations
    full = {"success": success, "first_step": first_step, "first_q": first_q, "fail_at": fail_at}
    act = {k: v.index_select(0, active_dev) for k, v in full.items()}

    def merged(k: str) -> Tensor:
        out = full[k].clone()
        if active.size:
            out.index_copy_(0, active_dev, act[k])
        return out

    def snapshot() -> RunState:
        theta_now = theta_full.clone()
        if active.size:
            theta_now.index_copy_(0, active_dev, theta_act.detach())
        success, first_step, first_q, fail_at = (merged(k) for k in ("success", "first_step", "first_q", "fail_at"))
        return RunState(
            t=t, steps=steps, seed=int(seed), theta=theta_now, active=torch.as_tensor(active.copy()),
            opt_state=_tree_cpu(opt_state), optimizer=optimizer.state_dict(), loss=loss.clone(),
            queries=torch.as_tensor(queries.copy()), success=success.clone(), first_success_step=first_step.clone(),
            first_success_queries=first_q.clone(), stop_step=torch.as_tensor(stop_step.copy()),
            stop_code=torch.as_tensor(stop_code.copy()), failed=torch.as_tensor(failed.copy()),
            budget=None if budget_arr is None else torch.as_tensor(budget_arr.copy()),
            problem_ids=pids.clone(), stop_at_success=bool(stop_at_success), nan_policy=nan_policy,
            track_success=bool(track_success), callback_stop=callback_stop, fail_at=fail_at.clone(),
        )

    def finish(mask: np.ndarray, codes: np.ndarray, at: np.ndarray) -> None:
        """Stop the active rows where mask with reasons codes[mask] at steps at[mask] (theta_act is final)."""
        nonlocal active, active_dev, prob_active, theta_act, opt_state, pids_act
        rows = active[mask]
        mask_dev = torch.as_tensor(mask, device=dev)
        rows_dev = torch.as_tensor(rows, device=dev)
        theta_full.index_copy_(0, rows_dev, theta_act[mask_dev].detach())
        for k in full:
            full[k].index_copy_(0, rows_dev, act[k][mask_dev])
        stop_step[rows] = at[mask]
        stop_code[rows] = codes[mask]
        failed_rows = codes[mask] == _FAILED
        if failed_rows.any():  # a failed problem may have been queried (frozen) after its failing step
            failed[rows[failed_rows]] = True
            for r in rows[failed_rows]:
                loss[int(stop_step[r]) + 1:, int(r)] = float("nan")
        keep_dev = torch.as_tensor(np.nonzero(~mask)[0], dtype=torch.int64, device=dev)
        active = active[~mask]
        active_dev = torch.as_tensor(active, dtype=torch.int64, device=dev)
        if active.size:
            theta_act = theta_act.index_select(0, keep_dev)
            for k in act:
                act[k] = act[k].index_select(0, keep_dev)
            opt_state = optimizer.select_state(opt_state, keep_dev)
            pids_act = pids_act.index_select(0, keep_dev)
            prob_active = _subset(active)

    def record_success(s: Tensor, q_now: int) -> None:
        """success of theta_t for the active rows (device ops only)."""
        if not isinstance(s, Tensor) or s.shape != (active.size,):
            raise ValueError(f"success must be a bool tensor [{active.size}], got "
                             f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}")
        s = s.to(device=dev, dtype=torch.bool)
        new = s & (act["first_step"] < 0)
        act["success"] = s
        act["first_step"] = act["first_step"].masked_fill(new, t)
        act["first_q"] = act["first_q"].masked_fill(new, q_now)
        return s

    bar = None
    if progress and tqdm is not None:
        bar = tqdm(total=steps, initial=t, desc=desc or getattr(optimizer, "name", "zo"), leave=False)
    committing = False
    try:
        while active.size:
            n = active.size
            stop = np.zeros(n, dtype=bool)
            code = np.full(n, _RUNNING, dtype=np.int64)
            at = np.full(n, t, dtype=np.int64)
            q_now = int(queries[active[0]])  # active problems are in lockstep: same steps, same costs
            # 1. success of theta_t, read before the step (exact stops), unless the step's own query reports it
            if use_success and not row0_mode:
                s = record_success(prob_active.success(theta_act), q_now)
                if stop_at_success:
                    s_host = s.cpu().numpy()
                    code[s_host] = _SUCCESS
                    stop |= s_host
            # 2. stops before step t
            cost = None
            if t >= steps or callback_stop:
                code[~stop] = _STEPS if t >= steps else _CALLBACK
                stop[:] = True
            else:
                cost = int(optimizer.queries_at(t))
                if budget_arr is not None:
                    over = queries[active] + cost > budget_arr[active]
                    code[over & ~stop] = _BUDGET
                    stop |= over
            # 3. problems that failed (non-finite values) since the last host check
            if nan_policy != "ignore" and (stop.any() or stop_at_success or t % sync_every == 0):
                fa = act["fail_at"].cpu().numpy()
                fmask = fa >= 0
                if fmask.any():
                    if nan_policy == "raise":
                        raise NonFiniteValueError(
                            f"non-finite black-box values or iterates for problem(s) {active[fmask].tolist()} at step "
                            f"{int(fa[fmask].min())} (nan_policy='raise'; nan_policy='fail' stops only those problems)")
                    code[fmask] = _FAILED
                    at[fmask] = fa[fmask]
                    stop |= fmask
            if stop.any():
                committing = True
                finish(stop, code, at)
                committing = False
                if not active.size:
                    break
            # 4. step t
            seeds = step_seeds(seed, pids_act, t)
            theta_new, new_state, f0 = optimizer.step(prob_active, theta_act, opt_state, seeds)
            if tuple(theta_new.shape) != tuple(theta_act.shape) or tuple(f0.shape) != (active.size,):
                raise ValueError(f"{optimizer!r}.step returned theta {tuple(theta_new.shape)} and f0 "
                                 f"{tuple(f0.shape)} for {active.size} problems of dimension {d}")
            committing = True
            queries[active] += cost
            loss[t].index_copy_(0, active_dev, f0.detach().to(loss.dtype))
            if use_success and row0_mode:
                record_success(getattr(prob_active, "last_row0_success", None), q_now)
            # 5. non-finite values: freeze the row at its last finite iterate now (device only); the host removes it
            #    at its next check (every sync_every steps, or when other problems stop)
            if nan_policy != "ignore":
                bad = ~torch.isfinite(f0.detach()) | ~torch.isfinite(theta_new.detach()).all(dim=1)
                theta_new = torch.where(bad.unsqueeze(1), theta_act, theta_new)
                act["fail_at"] = act["fail_at"].masked_fill(bad & (act["fail_at"] < 0), t)
            theta_act, opt_state = theta_new, new_state
            t += 1
            committing = False
            if bar is not None:
                bar.update(1)
                bar.set_postfix(active=int(active.size), refresh=False)
            if callback is not None and active.size:
                info = StepInfo(step=t - 1, theta=theta_act, f0=f0, active=active_dev, queries=int(queries[active[0]]),
                                checkpoint=snapshot)
                if callback(info) is True:
                    callback_stop = True
            if checkpoint_every is not None and t % int(checkpoint_every) == 0 and (checkpoint_path or on_checkpoint):
                st = snapshot()
                if checkpoint_path is not None:
                    st.save(checkpoint_path)
                if on_checkpoint is not None:
                    on_checkpoint(st)
    except KeyboardInterrupt:
        if checkpoint_path is not None and not committing:
            snapshot().save(checkpoint_path)
        raise
    finally:
        if bar is not None:
            bar.close()

    # ------------------------------------------------------------------------------------- final evaluation
    stop_step_t = torch.as_tensor(stop_step, dtype=torch.int64, device=dev)
    final_s = None
    if final_eval:
        with torch.no_grad():
            keys = step_seeds(seed, pids, stop_step_t)
            vals = evaluate(problem, theta_full.unsqueeze(1), keys).squeeze(1)
        loss[stop_step_t, torch.arange(B, device=dev)] = vals.detach().to(loss.dtype)
        if use_success and row0_mode:
            final_s = getattr(problem, "last_row0_success", None)
    if use_success and row0_mode:
        if final_s is None:
            final_s = problem.success(theta_full)
        final_s = final_s.to(device=dev, dtype=torch.bool)
        success.copy_(final_s)
        new = final_s & (first_step < 0)
        first_step = torch.where(new, stop_step_t, first_step)
        first_q = torch.where(new, torch.as_tensor(queries, device=dev), first_q)
    return RunResult(
        loss=loss.cpu(),
        queries=torch.as_tensor(queries),
        success=success.cpu(),
        first_success_step=first_step.cpu(),
        first_success_queries=first_q.cpu(),
        theta=theta_full,
        stop_step=torch.as_tensor(stop_step),
        stop_code=torch.as_tensor(stop_code),
        failed=torch.as_tensor(failed),
        has_success=use_success,
    )
