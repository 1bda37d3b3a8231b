"""Any user function as a black-box problem: `CallableProblem`."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .base import BlackBoxProblem

__all__ = ["CallableProblem"]


class CallableProblem(BlackBoxProblem):
    """Wraps a user function ``fn(points [B, Q, d]) -> values [B, Q]``.

    ``per_row=False`` (default): every row is the same function, so a sub-problem simply passes fewer rows.
    ``per_row=True``: rows are different problems; ``fn(points, index)`` receives the LongTensor of the original
    row numbers of the rows it is given. ``x0``: the initial point, [B, d] or [d] (broadcast), zeros if None.
    ``success``: optional ``success(theta [B, d]) -> bool [B]`` (with ``per_row=True``: ``success(theta, index)``).
    ``stochastic=True`` passes the runner's per-row keys on: ``fn(points, seed=keys)`` (and ``index`` if per_row).
    """

    def __init__(
        self,
        fn: Callable,
        dim: int,
        batch: int,
        x0: Optional[Tensor] = None,
        per_row: bool = False,
        success: Optional[Callable] = None,
        stochastic: bool = False,
        device=None,
        dtype: torch.dtype = torch.float32,
    ):
        if not callable(fn):
            raise TypeError("CallableProblem: fn must be callable")
        if int(batch) < 1:
            raise ValueError(f"CallableProblem: empty batch (batch must be >= 1, got {batch})")
        if int(dim) < 1:
            raise ValueError(f"CallableProblem: dim must be >= 1, got {dim}")
        self.fn = fn
        self.dim = int(dim)
        self.batch = int(batch)
        self.per_row = bool(per_row)
        self.stochastic = bool(stochastic)
        if x0 is None:
            x0 = torch.zeros(self.batch, self.dim, device=device, dtype=dtype)
        else:
            x0 = torch.as_tensor(x0)
            if x0.dim() == 1:
                x0 = x0.unsqueeze(0).expand(self.batch, -1)
            if x0.shape != (self.batch, self.dim):
                raise ValueError(f"CallableProblem: x0 must have shape [{self.batch}, {self.dim}] or [{self.dim}], "
                                 f"got {tuple(x0.shape)}")
            x0 = x0.to(device=device if device is not None else x0.device)
        self.x0 = x0.contiguous()
        self.index = torch.arange(self.batch, device=self.x0.device)
        if success is not None:
            self._success_fn = success
        else:
            self._success_fn = None
            self.success = None  # instance attribute hides the method: no notion of success

    def __call__(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        self._check_points(points)
        args = (points, self.index) if self.per_row else (points,)
        if self.stochastic and seed is not None:
            return self.fn(*args, seed=seed)
        return self.fn(*args)

    def differentiable_values(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        """``problem(points, seed)`` with autograd on: first-order meta-training of a differentiable ``fn``."""
        with torch.enable_grad():
            return self(points, seed)

    def success(self, theta: Tensor) -> Tensor:  # noqa: F811 - hidden per instance when not given
        if self.per_row:
            return self._success_fn(theta, self.index)
        return self._success_fn(theta)

    def initial_point(self) -> Tensor:
        return self.x0.clone()

    def select(self, index) -> "CallableProblem":
        sub, _ = self._take_rows(index, "x0", "index")
        return sub
