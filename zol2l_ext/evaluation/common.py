"""What every part of the evaluation shares: the result format, the optimizers compared, the steps the paired
criteria check, and the spelling of an optimizer's name."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..zo.optimizers import optimizer_names

__all__ = ["FORMAT", "BASELINES", "DEFAULT_OPTIMIZERS", "ITEM_STEPS", "optimizer_key",
           "mean_curve"]

FORMAT = "zol2l-evaluation/1"
#: the hand-designed optimizers the learned one is compared with: those whose learning rate is tuned (traits)
BASELINES = optimizer_names(tunable=True)
DEFAULT_OPTIMIZERS = BASELINES + ("zo-lstm",)
#: steps at which evaluate_task keeps per-item mean losses (and the final step): the paired criteria's steps
ITEM_STEPS = (25, 50, 100, 200)


def optimizer_key(name: str) -> str:
    """An optimizer's name as the results key it ("ZO_SGD " -> "zo-sgd")."""
    return str(name).strip().lower().replace("_", "-")


def mean_curve(entry: Mapping[str, Any]) -> np.ndarray:
    """An optimizer entry's mean loss per step as floats (None, a non-finite value in the file, -> NaN)."""
    return np.array([np.nan if v is None else float(v) for v in entry["loss_mean"]], dtype=float)
