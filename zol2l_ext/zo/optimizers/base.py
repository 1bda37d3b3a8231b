"""The interface every zeroth-order optimizer implements, over batches of B problems (each row its own problem
and optimizer state).

Common interface (`ZOOptimizer`):

* ``init_state(theta0 [B, d]) -> dict``: per-problem state. Every tensor entry has first dimension B (row b
  belongs to problem b); non-tensor entries (``"step"``, the number of steps done) are shared: the rows of a
  state are in lockstep, which the runner guarantees (a stopped problem is removed, never left behind).
* ``step(problem, theta [B, d], state, seeds int64 [B]) -> (theta_new [B, d], new_state, f0 [B])``: one step of
  the B rows given (the runner passes the active problems only: ``problem.select(active)``). ``seeds`` are the
  step's Philox keys, one per problem (`seeding.step_seeds`); every random draw of the step derives from them.
  ``f0`` is f(theta) (the value at the point the step started from; NaN where a value of that row's call was
  not finite). A step calls the black box exactly once and spends ``queries_at(step)`` queries per problem.
  The input state is not modified (a new dict is returned). The directions and query points of a step live in
  the optimizer's `Workspace` and are overwritten by its next step (so a step does not allocate them again):
  a black box that keeps the points it was given must copy them.
* ``queries_per_step`` (q + 1 for the Gaussian-estimator methods) and ``queries_at(step)`` (what step number
  ``step`` costs: ZO-SZVR-G alternates snapshot and inner steps).
* ``state_dict(state=None)`` / ``load_state_dict(sd)``: the name, the hyper-parameters (and ZO-LSTM's weights),
  and optionally a per-problem state; ``load_state_dict`` restores the hyper-parameters and returns the state.
  Everything is tensors and plain Python values, loadable with ``torch.load(weights_only=True)``.
* ``select_state(state, index)``: the rows ``index`` of a state.

Per-row learning rates: ``lr`` is a float, or one value per row (a tensor [B] or a list), so that K candidate
learning rates run as one batch of K x R rows (`tune`). The per-row coordinate steps then live in the state
(``"lr_row"``, [B, 1]: the runner's row selection keeps them with their rows); `rate` and `descend` read them,
and a step carries them into its new state (`row_entries`).

Step sizes follow the reference code (nn_optimizer/basezoopt.py): the coordinate step is ``lr / d``
(``scale_lr_by_dim=True``; DESIGN.md's "ZO-SGD lr = delta / d"), for ZO-SGD, ZO-signSGD, ZO-ADAM, ZO-SZVR-G,
Guided ES and ZO-LSTM-no-update. Default ``lr`` values are the authors' MNIST-attack settings (ZO-SGD 4,
ZO-signSGD 8, ZO-ADAM 8 with beta = (0.9, 0.996)); tune them per task as DESIGN.md says.

A subclass that sets ``name`` and ``traits`` in its class body is registered by its definition (`registry`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..estimator import Workspace, check_baseline
from .registry import OptimizerTraits, register_optimizer

__all__ = ["ZOOptimizer", "StepOut", "Rate", "per_row_value", "check_rate"]

StepOut = Tuple[Tensor, Dict[str, Any], Tensor]
#: a hyper-parameter given for every row alike (a float) or per row (a 1-D float64 tensor)
Rate = Union[float, Tensor]
#: the state entries that hold per-row hyper-parameters ([B, 1]); a step carries them over unchanged
ROW_KEYS = ("lr_row", "b1", "b2")


def per_row_value(value: Union[float, Sequence[float], Tensor]) -> Rate:
    """A float, or (a tensor or a list of values) the 1-D float64 tensor of per-row values."""
    if isinstance(value, Tensor):
        return float(value) if value.dim() == 0 else value.detach().to(torch.float64).reshape(-1).cpu()
    if isinstance(value, (list, tuple)):
        return torch.tensor([float(v) for v in value], dtype=torch.float64)
    return float(value)


def check_rate(value: Rate, ok) -> bool:
    """``ok(v)`` for a float, or for every entry of a per-row tensor (False for an empty one)."""
    if isinstance(value, Tensor):
        return value.numel() > 0 and all(ok(float(v)) for v in value)
    return ok(value)


def _clone_state(state: Dict[str, Any], device=None) -> Dict[str, Any]:
    out = {}
    for k, v in state.items():
        if isinstance(v, Tensor):
            v = v.detach().clone()
            if device is not None:
                v = v.to(device)
        out[k] = v
    return out


class ZOOptimizer:
    """Base class: hyper-parameters ``q`` (directions per step), ``mu`` (smoothing radius), ``lr``."""

    name = "zo-base"
    traits: Optional[OptimizerTraits] = None
    #: every black-box call of a step has the current iterate at points[:, 0] (the runner may read the success of
    #: theta_t from that query); a subclass that breaks this must set it to False
    row0_is_theta = True
    #: the constructor arguments saved by state_dict (subclasses extend it)
    _config_keys: Tuple[str, ...] = ("q", "mu", "lr", "scale_lr_by_dim", "baseline")
    #: what the estimator differences the direction values against (estimator.FD_BASELINES): "f0", eq. 1, or
    #: "mean", the control variate; set through make_optimizer(..., baseline=...) or the attribute
    baseline: str = "f0"
    #: the per-problem state entries that init_state starts at zero, shaped like theta0
    _zero_state: Tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a class that names itself is an optimizer of the registry
            register_optimizer(cls)

    def __init__(self, q: int = 20, mu: float = 0.005, lr: Rate = 4.0, scale_lr_by_dim: bool = True):
        self.q = int(q)
        self.mu = float(mu)
        self.lr = per_row_value(lr)
        self.scale_lr_by_dim = bool(scale_lr_by_dim)
        self._validate()

    @property
    def workspace(self) -> Workspace:
        """The buffers this optimizer's steps reuse (directions, query points): see `estimator.Workspace`."""
        ws = self.__dict__.get("_workspace")
        if ws is None:
            ws = self.__dict__["_workspace"] = Workspace()
        return ws

    def _validate(self) -> None:
        check_baseline(self.baseline)
        if self.q < 1:
            raise ValueError(f"{self.name}: q must be >= 1, got {self.q}")
        if not (self.mu > 0 and math.isfinite(self.mu)):
            raise ValueError(f"{self.name}: mu must be > 0, got {self.mu}")
        if not check_rate(self.lr, lambda v: v >= 0 and math.isfinite(v)):
            raise ValueError(f"{self.name}: lr must be >= 0, got {self.lr}")

    # -- costs ------------------------------------------------------------------------------------------
    @property
    def queries_per_step(self) -> int:
        """Queries per problem of an ordinary step: q + 1 (f(theta) once, f(theta + mu u_i) q times)."""
        return self.q + 1

    def queries_at(self, step: int) -> int:
        """Queries per problem spent by step number ``step`` (0-based)."""
        return self.queries_per_step

    def query_axis(self, steps: int) -> List[int]:
        """Queries per problem spent before each of steps 0..``steps`` (the x axis of a loss-vs-queries curve):
        [0, queries_at(0), queries_at(0) + queries_at(1), ...], ``steps + 1`` entries."""
        axis = [0]
        for t in range(steps):
            axis.append(axis[-1] + int(self.queries_at(t)))
        return axis

    # -- step sizes -------------------------------------------------------------------------------------
    @property
    def per_row(self) -> bool:
        """Whether some hyper-parameter is given per row (then the state holds it, see the module docstring)."""
        return any(isinstance(getattr(self, k, None), Tensor) for k in self._config_keys)

    def step_size(self, d: int) -> Rate:
        return self.lr / d if self.scale_lr_by_dim else self.lr

    def rate(self, state: Dict[str, Any], d: int) -> Rate:
        """The coordinate step: ``step_size(d)``, or the per-row steps [B, 1] of the state."""
        row = state.get("lr_row")
        return self.step_size(d) if row is None else row

    def descend(self, theta: Tensor, direction: Tensor, state: Dict[str, Any]) -> Tensor:
        """theta - (coordinate step) * direction, per row where the state holds per-row steps."""
        row = state.get("lr_row")
        if row is None:
            return theta.add(direction, alpha=-self.step_size(theta.shape[1]))
        return theta - row * direction

    @staticmethod
    def row_entries(state: Dict[str, Any]) -> Dict[str, Tensor]:
        """The per-row hyper-parameters of a state, which a step carries into its new state unchanged."""
        return {k: state[k] for k in ROW_KEYS if k in state}

    def _rows_of(self, value: Rate, B: int, what: str) -> Tensor:
        """A per-row hyper-parameter as a float64 [B] tensor (a float repeated)."""
        if not isinstance(value, Tensor):
            return torch.full((B,), float(value), dtype=torch.float64)
        if value.numel() != B:
            raise ValueError(f"{self.name}: per-row {what} has {value.numel()} rows, theta0 has {B}")
        return value

    def init_row_state(self, theta0: Tensor) -> Dict[str, Tensor]:
        """``"lr_row"`` [B, 1] in theta's dtype when some hyper-parameter is per row (else nothing)."""
        if not self.per_row:
            return {}
        B, d = theta0.shape
        lr = self._rows_of(self.lr, B, "lr")
        step = lr / d if self.scale_lr_by_dim else lr
        return {"lr_row": step.to(device=theta0.device, dtype=theta0.dtype).unsqueeze(1)}

    # -- state ------------------------------------------------------------------------------------------
    def init_state(self, theta0: Tensor) -> Dict[str, Any]:
        if not isinstance(theta0, Tensor) or theta0.dim() != 2:
            raise ValueError(f"{self.name}: theta0 must be a [B, d] tensor")
        if theta0.shape[0] == 0 or theta0.shape[1] == 0:
            raise ValueError(f"{self.name}: empty batch or dimension: theta0 has shape {tuple(theta0.shape)}")
        state: Dict[str, Any] = {"step": 0}
        for key in self._zero_state:
            state[key] = torch.zeros_like(theta0)
        state.update(self.init_row_state(theta0))
        return state

    @staticmethod
    def select_state(state: Dict[str, Any], index: Tensor) -> Dict[str, Any]:
        """The rows ``index`` of every per-problem tensor of ``state``."""
        return {k: (v.index_select(0, index.to(v.device)) if isinstance(v, Tensor) else v) for k, v in state.items()}

    def config(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self._config_keys}

    def state_dict(self, state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        sd: Dict[str, Any] = {"name": self.name, "config": self.config()}
        if state is not None:
            sd["state"] = _clone_state(state, device="cpu")
        return sd

    def load_state_dict(self, sd: Dict[str, Any], device=None) -> Optional[Dict[str, Any]]:
        """Restore the hyper-parameters; return the per-problem state saved with them (or None)."""
        if sd.get("name") != self.name:
            raise ValueError(f"state_dict is for optimizer {sd.get('name')!r}, not {self.name!r}")
        for k, v in sd["config"].items():
            if k not in self._config_keys:
                raise ValueError(f"{self.name}: unknown hyper-parameter {k!r} in state_dict")
            setattr(self, k, v)
        self._validate()
        state = sd.get("state")
        return None if state is None else _clone_state(state, device=device)

    @classmethod
    def from_state_dict(cls, sd: Dict[str, Any]) -> "ZOOptimizer":
        """An instance to `load_state_dict` ``sd`` into (`registry.optimizer_from_state_dict`)."""
        return cls()

    def to_device(self, device) -> None:
        """Move what the optimizer holds besides its state (ZO-LSTM: the weights) to ``device`` (None: stay)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- the step ---------------------------------------------------------------------------------------
    def step(self, problem, theta: Tensor, state: Dict[str, Any], seeds: Tensor) -> StepOut:  # pragma: no cover
        raise NotImplementedError
