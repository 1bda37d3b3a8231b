"""What `runner.minimize` reports and checkpoints: `RunResult`, `RunState` (resumable), `StepInfo` (callbacks).

Stop codes: ``stop_code`` holds an index in `STOP_REASONS`; ``RUNNING`` marks a problem not stopped yet.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from torch import Tensor

from ..fileio import atomic_torch_save, load_torch_file

__all__ = ["STOP_REASONS", "RunResult", "RunState", "StepInfo", "as_run_state", "tensors_to", "tensors_to_cpu"]

#: stop_code values of RunResult / RunState
STOP_REASONS = ("steps", "budget", "success", "failed", "callback")
RUNNING = -1
STOP_STEPS, STOP_BUDGET, STOP_SUCCESS, STOP_FAILED, STOP_CALLBACK = range(5)
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
                v = tensors_to_cpu(v)
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


def as_run_state(source: Union[RunState, Dict[str, Any], str, Path]) -> RunState:
    """The state that ``minimize(resume_from=source)`` continues: a RunState, its `to_dict`, or a saved file."""
    if isinstance(source, (str, Path)):
        return RunState.load(source)
    if isinstance(source, dict):
        return RunState.from_dict(source)
    return source


def tensors_to_cpu(x):
    """Detached CPU copies of the tensors in nested dicts, lists and tuples (checkpoints own their tensors)."""
    if isinstance(x, Tensor):
        return x.detach().cpu().clone()
    if isinstance(x, dict):
        return {k: tensors_to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(tensors_to_cpu(v) for v in x)
    return x


def tensors_to(x, device):
    """The tensors in nested dicts moved to ``device`` (an optimizer state restored from a checkpoint)."""
    if isinstance(x, Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: tensors_to(v, device) for k, v in x.items()}
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
