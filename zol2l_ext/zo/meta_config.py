"""The settings of a meta-training run (`MetaTrainConfig`) and where its meta-batches come from (`ProblemSet`)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional, Protocol

from .estimator import check_baseline

__all__ = ["MetaTrainConfig", "ProblemSet", "CHECKPOINT_FORMAT", "GRAD_MODES", "OBJECTIVES", "WEIGHTINGS",
           "CLIP_MODES"]

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
    baseline: str = "f0"  # the estimator's baseline (zo.estimator.FD_BASELINES), saved with the weights
    seed: int = 0

    def validate(self) -> None:
        check_baseline(self.baseline)
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
