"""Synthetic binary classification (paper Sec. 4.2): `BinaryClassificationProblem`."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ..seeding import splitmix64
from .base import BlackBoxProblem

__all__ = ["BinaryClassificationProblem"]


class BinaryClassificationProblem(BlackBoxProblem):
    """B synthetic binary-classification datasets, one problem each (paper Sec. 4.2).

    Dataset b is generated on the CPU in float64 from ``torch.Generator().manual_seed(seeds[b])`` (so it is the
    same on every device): theta* ~ N(0, I_d), x_i ~ N(0, I_d) (i < n), y_i = 1[theta*^T x_i > 0].
    f(theta) = mean over a minibatch of b samples of (y_i - sigmoid(theta^T x_i))^2.

    Minibatches: the problem is ``stochastic``; ``problem(points, seed=keys)`` evaluates all Q points of row r
    on one minibatch of ``minibatch`` distinct samples chosen by ``keys[r]`` (the b smallest of n counter-based
    hashes), so a step's q + 1 queries share the minibatch and the runner's keys make it reproducible. Without
    ``seed`` a minibatch is drawn from the problem's own torch.Generator (not reproducible across ``select``).
    ``minibatch=None`` (or >= n) uses all n samples. ``full_loss(theta)`` is the loss on all n samples.

    Initial point: zeros (``init="zeros"``, f = 0.25) or N(0, init_std^2 I) drawn from the dataset's generator
    (``init="normal"``); the paper does not state it and the authors' code for this task is not public.
    ``seeds``: an int s (datasets s, s + 1, ..., s + B - 1) or a sequence of B ints (e.g. 90 train / 10 test).
    """

    stochastic = True

    def __init__(
        self,
        num_datasets: int = 1,
        dim: int = 100,
        n: int = 2000,
        minibatch: Optional[int] = 64,
        seeds: Union[int, Sequence[int]] = 0,
        init: str = "zeros",
        init_std: float = 1.0,
        device=None,
        dtype: torch.dtype = torch.float32,
    ):
        if isinstance(seeds, int):
            if num_datasets < 1:
                raise ValueError(f"BinaryClassificationProblem: num_datasets must be >= 1, got {num_datasets}")
            seeds = [seeds + i for i in range(num_datasets)]
        else:
            seeds = [int(s) for s in seeds]
            if len(seeds) == 0:
                raise ValueError("BinaryClassificationProblem: empty batch (no dataset seeds)")
        if dim < 1 or n < 1:
            raise ValueError(f"BinaryClassificationProblem: dim and n must be >= 1, got {dim}, {n}")
        if init not in ("zeros", "normal"):
            raise ValueError(f"BinaryClassificationProblem: init must be 'zeros' or 'normal', got {init!r}")
        self.seeds = seeds
        self.batch = len(seeds)
        self.dim = int(dim)
        self.n = int(n)
        self.minibatch = None if (minibatch is None or minibatch >= n) else int(minibatch)
        xs, ys, stars, inits = [], [], [], []
        for s in seeds:  # construction only: one generator per dataset
            g = torch.Generator().manual_seed(s)
            star = torch.randn(self.dim, generator=g, dtype=torch.float64)
            X = torch.randn(self.n, self.dim, generator=g, dtype=torch.float64)
            y = (X @ star > 0).to(torch.float64)
            init0 = torch.randn(self.dim, generator=g, dtype=torch.float64) * init_std
            xs.append(X)
            ys.append(y)
            stars.append(star)
            inits.append(init0 if init == "normal" else torch.zeros(self.dim, dtype=torch.float64))
        self.X = torch.stack(xs).to(device=device, dtype=dtype)  # [B, n, d]
        self.y = torch.stack(ys).to(device=device, dtype=dtype)  # [B, n]
        self.theta_star = torch.stack(stars).to(device=device, dtype=dtype)  # [B, d]
        self._init = torch.stack(inits).to(device=device, dtype=dtype)
        self._gen = None

    def minibatch_indices(self, seed: Tensor) -> Tensor:
        """Indices [B, b] of the minibatch chosen by keys [B]: the b smallest of n hashes (no repetition)."""
        ar = torch.arange(self.n, device=seed.device, dtype=torch.int64)
        keys = splitmix64(seed.to(torch.int64).unsqueeze(1) * self.n + ar)
        return keys.topk(self.minibatch, dim=1, largest=False, sorted=False).indices

    @staticmethod
    def _loss(theta: Tensor, X: Tensor, y: Tensor) -> Tensor:
        """theta [B, Q, d], X [B, m, d], y [B, m] -> [B, Q]."""
        logits = torch.bmm(theta, X.transpose(1, 2).to(theta.dtype))
        return (y.to(theta.dtype).unsqueeze(1) - torch.sigmoid(logits)).square().mean(dim=2)

    def __call__(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        B, Q = self._check_points(points)
        if self.minibatch is None:
            return self._loss(points, self.X, self.y)
        if seed is None:
            if self._gen is None:
                self._gen = torch.Generator(device=self.X.device)
                self._gen.manual_seed(self.seeds[0])
            seed = torch.randint(0, 2**62, (B,), generator=self._gen, device=self.X.device)
        if seed.shape != (B,):
            raise ValueError(f"BinaryClassificationProblem: seed must have shape [{B}], got {tuple(seed.shape)}")
        idx = self.minibatch_indices(seed.to(self.X.device))  # [B, b]
        Xb = self.X.gather(1, idx.unsqueeze(2).expand(B, self.minibatch, self.dim))
        yb = self.y.gather(1, idx)
        return self._loss(points, Xb, yb)

    def differentiable_values(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        """``problem(points, seed)`` with autograd kept (it is plain torch): first-order meta-training."""
        with torch.enable_grad():
            return self(points, seed)

    def full_loss(self, theta: Tensor) -> Tensor:
        """Loss [B] of theta [B, d] on all n samples of each dataset."""
        if theta.shape != (self.batch, self.dim):
            raise ValueError(f"full_loss: theta must have shape [{self.batch}, {self.dim}], got {tuple(theta.shape)}")
        return self._loss(theta.unsqueeze(1), self.X, self.y).squeeze(1)

    def accuracy(self, theta: Tensor) -> Tensor:
        """Training accuracy [B] of the linear classifier sign(theta^T x)."""
        pred = (torch.bmm(self.X, theta.to(self.X.dtype).unsqueeze(2)).squeeze(2) > 0).to(self.y.dtype)
        return (pred == self.y).to(theta.dtype).mean(dim=1)

    def initial_point(self) -> Tensor:
        return self._init.clone()

    def select(self, index) -> "BinaryClassificationProblem":
        sub, idx = self._take_rows(index, "X", "y", "theta_star", "_init")
        sub.seeds = [self.seeds[i] for i in idx.tolist()]
        sub._gen = None
        return sub
