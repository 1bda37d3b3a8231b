"""Held-out runs of a learned optimizer at test time: its loss curve (`evaluate_learned`), by which the
meta-trainer keeps the best weights, and the pick among variants of it (`pick_on_heldout`: a transfer factor,
a boost)."""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional

import torch

from .lstm_optimizer import LearnedZO
from .meta_step import weighted_curve_mean
from .optimizers.lstm import ZOLSTM
from .runner import minimize

__all__ = ["evaluate_learned", "pick_on_heldout"]


def evaluate_learned(model: LearnedZO, problem, steps: int, q: int, mu: float, use_query: bool,
                     query_prob: Optional[float] = 0.5, seed: int = 0) -> Dict[str, Any]:
    """Run ZO-LSTM (test-time behaviour, no gradients) and return mean final loss, loss curve and success
    (``query_prob=None``: the p saved with the weights, as `ZOLSTM` takes it)."""
    opt = ZOLSTM(model, q=q, mu=mu, use_query=use_query, query_prob=query_prob)
    res = minimize(opt, problem, steps, seed=seed, progress=False, nan_policy="fail")
    final = res.final_loss.double()
    out: Dict[str, Any] = {
        "final_loss": float(final.mean()) if torch.isfinite(final).all() else float("inf"),
        "curve": [float(v) for v in torch.nan_to_num(res.loss.double(), nan=float("inf")).mean(1)],
    }
    if res.has_success:
        out["success"] = float(res.success.double().mean())
    return out


def pick_on_heldout(model: LearnedZO, variants: Dict[Any, Callable[[LearnedZO], None]], problem, steps: int, q: int,
                    mu: float, *, use_query: bool, query_prob: Optional[float], seed: int, weighting: str,
                    log: Optional[Callable[[Any, float, Dict[str, Any]], None]] = None):
    """(the best key, {key: held-out objective}): ``variants[key]`` changes a copy of ``model`` (a transfer
    factor, a boost), which runs at test time on ``problem``; the objective is its loss curve weighted as
    ``weighting`` (`weighted_curve_mean`), the lowest wins. ``log(key, score, run)`` after each."""
    scores: Dict[Any, float] = {}
    for key, change in variants.items():
        m = copy.deepcopy(model)
        change(m)
        run = evaluate_learned(m, problem, steps, q, mu, use_query=use_query, query_prob=query_prob, seed=seed)
        scores[key] = weighted_curve_mean(run["curve"], weighting)
        if log is not None:
            log(key, scores[key], run)
    return min(scores, key=scores.get), scores
