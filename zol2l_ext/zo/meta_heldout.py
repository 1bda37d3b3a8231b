"""Held-out runs of a learned optimizer at test time: its loss curve (`evaluate_learned`), by which the
meta-trainer keeps the best weights, and the pick among variants of it (`pick_on_heldout`): the transfer factor
alpha of its update (`pick_update_scale`, ``zol2l train``) and its early-step boost (`pick_boost`, ``zol2l
boost``). Picks are made on held-out problems, never on a test part."""
from __future__ import annotations

import copy
import sys
from typing import Any, Callable, Dict, Optional

import torch

from .lstm_optimizer import LearnedZO
from .meta_step import weighted_curve_mean
from .optimizers.lstm import ZOLSTM
from .runner import minimize

__all__ = ["evaluate_learned", "pick_on_heldout", "pick_update_scale", "pick_boost", "ALPHA_GRID", "STEP_GRID",
           "BOOST_GRID", "DECAY_GRID", "apply_boost_key"]


def evaluate_learned(model: LearnedZO, problem, steps: int, q: int, mu: float, use_query: bool,
                     query_prob: Optional[float] = 0.5, seed: int = 0,
                     baseline: Optional[str] = None) -> Dict[str, Any]:
    """Run ZO-LSTM (test-time behaviour, no gradients) and return mean final loss, loss curve and success
    (``query_prob`` / ``baseline`` None: the p / the estimator baseline saved with the weights, as `ZOLSTM`
    takes them)."""
    opt = ZOLSTM(model, q=q, mu=mu, use_query=use_query, query_prob=query_prob)
    if baseline is not None:
        opt.baseline = baseline
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
                    log: Optional[Callable[[Any, float, Dict[str, Any]], None]] = None,
                    baseline: Optional[str] = None):
    """(the best key, {key: held-out objective}): ``variants[key]`` changes a copy of ``model`` (a transfer
    factor, a boost), which runs at test time on ``problem``; the objective is its loss curve weighted as
    ``weighting`` (`weighted_curve_mean`), the lowest wins. ``log(key, score, run)`` after each."""
    scores: Dict[Any, float] = {}
    for key, change in variants.items():
        m = copy.deepcopy(model)
        change(m)
        run = evaluate_learned(m, problem, steps, q, mu, use_query=use_query, query_prob=query_prob, seed=seed,
                               baseline=baseline)
        scores[key] = weighted_curve_mean(run["curve"], weighting)
        if log is not None:
            log(key, scores[key], run)
    return min(scores, key=scores.get), scores


# The transfer factor alpha (DESIGN.md: "scale the UpdateRNN output by a factor alpha tuned on that task").
ALPHA_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
# The starting step of a fresh scale-free (scaling="rms") optimizer, in units of the normalised estimate: the
# step of normalised ZO-SGD that the untrained network is. Wide, because it is in the problem's own units.
STEP_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)


def pick_update_scale(model, val, cfg, grid=ALPHA_GRID, progress: bool = True) -> tuple[float, dict]:
    """The alpha of ``grid`` whose scaled UpdateRNN has the lowest held-out meta-objective (the mean loss curve
    weighted as ``cfg.weighting``; eq. 4's linear weights favour the late steps) on ``val`` (test-time run)."""

    def log(a, score, run):
        if progress:
            print(f"zol2l train: alpha {a:g}: held-out objective ({cfg.weighting}) {score:.4g}", file=sys.stderr)

    return pick_on_heldout(model, {a: (lambda m, a=a: m.scale_update(a)) for a in grid},
                           val.make(None, repeat=cfg.val_trials), cfg.val_steps or cfg.horizon, cfg.q, cfg.mu,
                           use_query=cfg.stage == 2, query_prob=cfg.query_prob, seed=cfg.seed + 7919,
                           weighting=cfg.weighting, log=log, baseline=cfg.baseline)


# The early-step boost's grid (LearnedZO.set_boost): the boost of step 0 and its decay time constant in steps.
BOOST_GRID = (1.0, 2.0, 3.0, 4.0)
DECAY_GRID = (10.0, 25.0, 50.0)


def apply_boost_key(model, key) -> None:
    """Sets a `pick_boost` key on ``model``: (boost, decay) or (boost, decay, query decay)."""
    model.set_boost(key[0], key[1])
    if len(key) == 3:
        model.set_query_decay(key[2])


def pick_boost(model, problem, steps: int, q: int, mu: float, boosts, decays, weighting: str = "uniform",
               seed: int = 0, log=None, baseline: Optional[str] = None, query_decays=None) -> tuple:
    """((boost, decay), {(boost, decay): held-out objective}) over the grid; boost 1 is run once. ZO-LSTM runs
    with the Bernoulli p saved with the weights, and the estimator ``baseline`` (None: the one saved with them).
    ``query_decays``: also try each of these fades of the QueryRNN's use (`LearnedZO.set_query_decay`; inf:
    none); the keys are then (boost, decay, query decay). None: the weights' own, keys (boost, decay)."""

    grid = [(b, t) for b in boosts for t in decays if b != 1.0]
    if 1.0 in boosts:
        grid.insert(0, (1.0, decays[0]))
    if query_decays is not None:
        grid = [(b, t, qd) for b, t in grid for qd in query_decays]

    def report(key, score, run):
        if log:
            fade = f" query decay {key[2]:g}" if len(key) == 3 else ""
            log(f"boost {key[0]:g} decay {key[1]:g}{fade}: held-out objective ({weighting}) {score:.4g}, "
                f"final {run['final_loss']:.4g}")

    return pick_on_heldout(model, {key: (lambda m, key=key: apply_boost_key(m, key)) for key in grid}, problem,
                           steps, q, mu, use_query=True, query_prob=None, seed=seed, weighting=weighting, log=report,
                           baseline=baseline)
