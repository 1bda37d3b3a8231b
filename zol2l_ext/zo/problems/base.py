"""Black-box problems: B problems of dimension d evaluated together, one call per optimizer step.

The protocol (`BlackBoxProblem`):

* ``dim`` (d) and ``batch`` (B): the variables of all problems form one flat tensor ``theta [B, d]``.
* ``problem(points) -> values``: ``points [B, Q, d] -> values [B, Q]``; row b of ``points`` belongs to problem
  b. Optimizers put the current iterate at ``points[:, 0]`` and call the black box exactly once per step.
  Problems whose value depends on a random sample (a minibatch) set ``stochastic = True`` and accept
  ``problem(points, seed=keys)`` with ``keys`` int64 ``[B]``: all Q points of a row are evaluated on the same
  sample, chosen by that row's key (so the runner's counter-based keys make the sample reproducible).
* ``initial_point() -> [B, d]``.
* ``select(index) -> BlackBoxProblem``: the sub-problem made of rows ``index`` (a LongTensor of row numbers of
  *this* problem), in that order. The runner calls it to query only the active problems; we chose ``select``
  rather than an index argument of ``__call__`` so that a black box never sees rows it is not asked about.
* optional ``success(theta [B, d]) -> bool [B]`` (a method; ``None`` where a problem has no notion of success).
* optional ``reports_row0_success = True`` with ``last_row0_success`` (bool [B]) set by every ``__call__``: the
  success of ``points[:, 0]`` read from the same forward. The runner then takes the success of theta_t from step
  t's own query instead of a separate ``success()`` forward (unless ``stop_at_success``, which must know it
  before the step). `AttackProblem` does this.

Non-finite values are not rejected here: the optimizers mark a row whose values are not all finite (its ``f0``
becomes NaN) and the runner either raises `NonFiniteValueError` or stops that problem as failed (see
``runner.minimize(nan_policy=...)``). Shapes are validated by the optimizers (`estimator.evaluate`).
"""
from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["BlackBoxProblem", "has_success"]


def _as_index(index, batch: int, device) -> Tensor:
    idx = torch.as_tensor(index, dtype=torch.int64)
    if idx.dim() != 1:
        raise ValueError(f"select: index must be 1-D, got shape {tuple(idx.shape)}")
    if idx.numel() == 0:
        raise ValueError("select: empty index (a problem needs at least one row)")
    if idx.device.type == "cpu" and idx.numel() > 0:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= batch:
            raise IndexError(f"select: row indices must lie in [0, {batch}), got [{lo}, {hi}]")
    return idx.to(device)


class BlackBoxProblem:
    """Base class of the black-box problems (see the module docstring for the contract)."""

    dim: int
    batch: int
    #: True when values depend on a random sample chosen by ``seed=`` (e.g. a minibatch).
    stochastic: bool = False
    #: ``success(theta) -> bool [B]`` in subclasses that define it.
    success = None
    #: True when ``__call__`` sets ``last_row0_success`` (bool [B]): the success of ``points[:, 0]``.
    reports_row0_success: bool = False
    last_row0_success: Optional[Tensor] = None

    def __call__(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def initial_point(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self, index) -> "BlackBoxProblem":  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:
        return self.batch

    def _take_rows(self, index, *row_attrs: str) -> Tuple["BlackBoxProblem", Tensor]:
        """(sub, idx): a shallow copy made of rows ``index`` of this problem, and those rows as a LongTensor.

        The tensors named ``row_attrs`` (first dimension B; None stays None) are indexed on the device of the
        first one; every other attribute is shared with this problem (the caller resets what describes its last call).
        """
        idx = _as_index(index, self.batch, getattr(self, row_attrs[0]).device)
        sub = copy.copy(self)
        for name in row_attrs:
            rows = getattr(self, name)
            setattr(sub, name, None if rows is None else rows.index_select(0, idx))
        sub.batch = int(idx.numel())
        return sub, idx

    def _check_points(self, points: Tensor) -> Tuple[int, int]:
        if not isinstance(points, Tensor):
            raise TypeError(f"{type(self).__name__}: points must be a Tensor, got {type(points).__name__}")
        if points.dim() != 3 or points.shape[0] != self.batch or points.shape[2] != self.dim:
            raise ValueError(
                f"{type(self).__name__}: points must have shape [B={self.batch}, Q, d={self.dim}], "
                f"got {tuple(points.shape)}"
            )
        return points.shape[0], points.shape[1]


def has_success(problem) -> bool:
    """Whether the problem defines ``success(theta)``."""
    return callable(getattr(problem, "success", None))
