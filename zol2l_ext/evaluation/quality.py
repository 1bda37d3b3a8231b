"""The issue's three criteria on an `evaluate_task` result: the learned optimizer's mean loss curve below every
baseline's from a step on, its final mean loss the lowest, and its mean queries to first success fewer than the
best baseline's; each with a one-line verdict that says where the learned optimizer does not win."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from ..fileio import json_number
from .common import BASELINES, mean_curve, optimizer_key

__all__ = ["quality_criteria"]


def _final_metric(result: Mapping[str, Any], names: Sequence[str]) -> tuple:
    """(key, description) of the final loss the criterion compares: full-data loss where every run has it."""
    opts = result["optimizers"]
    if all(opts[n].get("final_loss_full") is not None for n in names):
        return "final_loss_full", "full-data loss (all n samples) of the final iterate, mean over rows"
    return "final_loss", "loss of the final iterate, mean over rows"


def quality_criteria(result: Mapping[str, Any], learned: str = "zo-lstm", baselines: Sequence[str] = BASELINES,
                     from_step: int = 50) -> Dict[str, Any]:
    """The issue's three criteria for ``learned`` against ``baselines`` (those present in the result).

    ``curve_below_from_step``: the learned mean loss curve strictly below every baseline's at every step >=
    ``from_step`` (with the fraction of those steps where it is, and the first step from which it stays below).
    ``final_loss_lowest``: its final mean loss strictly below every baseline's (binary: the full-data loss).
    ``queries_fewer_than_best_baseline``: its mean queries to first success below the lowest among the baselines
    (tasks with success only; None otherwise, or when no optimizer ever succeeded). Each criterion has ``met``
    (True / False / None = not applicable) and a one-line ``verdict``; ``all_met`` is True when every applicable
    criterion is met."""
    opts = result["optimizers"]
    learned = optimizer_key(learned)
    present = [b for b in (optimizer_key(b) for b in baselines) if b in opts and b != learned]
    missing = [b for b in (optimizer_key(b) for b in baselines) if b not in opts]
    out: Dict[str, Any] = {"learned": learned, "baselines": present, "missing_baselines": missing,
                           "from_step": int(from_step)}
    if learned not in opts or not present:
        why = (f"{learned} was not run" if learned not in opts else "no baseline was run")
        out.update(applicable=False, reason=why, all_met=None, verdicts=[f"criteria not evaluated: {why}"])
        return out
    out["applicable"] = True
    LN = learned.upper() if learned == "zo-lstm" else learned

    # 1. the mean curve below every baseline's from step from_step on
    lc = mean_curve(opts[learned])
    bcs = {b: mean_curve(opts[b]) for b in present}
    T1 = min([lc.size] + [c.size for c in bcs.values()])
    lc = lc[:T1]
    best = np.min(np.stack([c[:T1] for c in bcs.values()]), axis=0)  # NaN propagates: NaN is "not below"
    with np.errstate(invalid="ignore"):
        below = lc < best  # False where anything is NaN
    fs = int(from_step)

    def stays_below_from(mask: np.ndarray) -> Optional[int]:
        if mask.size == 0 or not mask[-1]:
            return None
        bad = np.nonzero(~mask)[0]
        return int(bad[-1] + 1) if bad.size else 0

    per_b = {}
    for b, c in bcs.items():
        with np.errstate(invalid="ignore"):
            m = lc < c[:T1]
        tail = m[fs:] if fs < T1 else m[:0]
        per_b[b] = {"fraction_below": json_number(tail.mean(), 4) if tail.size else None,
                    "stays_below_from": stays_below_from(m),
                    "steps_not_below": int((~tail).sum()) if tail.size else 0}
    tail = below[fs:] if fs < T1 else below[:0]
    c1: Dict[str, Any] = {"per_baseline": per_b, "steps_compared": int(tail.size),
                          "stays_below_from": stays_below_from(below),
                          "fraction_below": json_number(tail.mean(), 4) if tail.size else None}
    if tail.size == 0:
        c1["met"] = None
        c1["verdict"] = (f"not applicable: the run has {T1 - 1} steps, none >= step {fs}")
    else:
        c1["met"] = bool(tail.all())
        if c1["met"]:
            c1["verdict"] = (f"met: {LN}'s mean loss curve is below every baseline's at all {tail.size} steps "
                             f">= {fs} (it stays below from step {c1['stays_below_from']})")
        else:
            losers = [f"{b} ({100 * (1 - (per_b[b]['fraction_below'] or 0)):.0f}% of steps not below)"
                      for b in present if per_b[b]["steps_not_below"]]
            first_bad = int(fs + np.nonzero(~tail)[0][0])
            sb = c1["stays_below_from"]
            c1["verdict"] = (f"NOT met: {LN}'s mean curve is below every baseline's at only "
                             f"{100 * c1['fraction_below']:.1f}% of the steps >= {fs} (first failure at step "
                             f"{first_bad}; " + ("it stays below from step " + str(sb) if sb is not None else
                                                  "it is not below at the last step") +
                             "); not below: " + ", ".join(losers))
    out["curve_below_from_step"] = c1

    # 2. the final mean loss lowest
    key, desc = _final_metric(result, [learned] + present)
    lf = opts[learned].get(key)
    bf = {b: opts[b].get(key) for b in present}
    finite_b = {b: v for b, v in bf.items() if v is not None}
    best_b = min(finite_b, key=finite_b.get) if finite_b else None
    c2: Dict[str, Any] = {"metric": key, "metric_description": desc, "learned": lf, "baselines": bf,
                          "best_baseline": best_b, "best_baseline_value": finite_b.get(best_b)}
    what = "final mean loss" + (" (full data)" if key == "final_loss_full" else "")
    if lf is None:
        c2["met"] = False
        c2["verdict"] = f"NOT met: {LN}'s {what} is not finite"
    else:
        beaten_by = [b for b in present if bf[b] is not None and not lf < bf[b]]
        c2["met"] = not beaten_by
        if best_b is not None:
            c2["margin_to_best_baseline"] = json_number(finite_b[best_b] - lf)
            c2["ratio_to_best_baseline"] = json_number(lf / finite_b[best_b]) if finite_b[best_b] else None
        if c2["met"]:
            c2["verdict"] = (f"met: {LN}'s {what} {lf:.4g} is the lowest"
                             + (f" (best baseline {best_b}: {finite_b[best_b]:.4g})" if best_b else ""))
        else:
            c2["verdict"] = (f"NOT met: {LN}'s {what} {lf:.4g} is not the lowest: "
                             + ", ".join(f"{b} {bf[b]:.4g}" for b in beaten_by))
    out["final_loss_lowest"] = c2

    # 3. mean queries to first success below the best baseline's
    has_succ = bool(result.get("config", {}).get("has_success")) or any(
        "mean_queries_to_success" in opts[n] for n in [learned] + present)
    c3: Dict[str, Any] = {}
    if not has_succ:
        c3.update(met=None, verdict="not applicable: the task has no success notion")
    else:
        lq = opts[learned].get("mean_queries_to_success")
        bq = {b: opts[b].get("mean_queries_to_success") for b in present}
        rates = {n: opts[n].get("ever_success_rate") for n in [learned] + present}
        finite_q = {b: v for b, v in bq.items() if v is not None}
        best_q = min(finite_q, key=finite_q.get) if finite_q else None
        c3.update(learned=lq, baselines=bq, best_baseline=best_q, best_baseline_value=finite_q.get(best_q),
                  ever_success_rates=rates)

        def rate(n):
            r = rates.get(n)
            return "-" if r is None else f"{100 * r:.0f}%"

        if lq is None and best_q is None:
            c3.update(met=None, verdict="not comparable: no optimizer reached a success")
        elif lq is None:
            c3.update(met=False, verdict=f"NOT met: {LN} never succeeded (best baseline {best_q}: "
                                         f"{finite_q[best_q]:.1f} queries, success {rate(best_q)})")
        elif best_q is None:
            c3.update(met=True, verdict=f"met: {LN} succeeded ({lq:.1f} queries, success {rate(learned)}) where no "
                                        "baseline did")
        else:
            met = lq < finite_q[best_q]
            c3["met"] = bool(met)
            c3["verdict"] = (f"{'met' if met else 'NOT met'}: {LN} needs {lq:.1f} queries to first success on "
                             f"average (ever-success {rate(learned)}), the best baseline {best_q} "
                             f"{finite_q[best_q]:.1f} (ever-success {rate(best_q)}); means over the rows that "
                             "succeeded")
    out["queries_fewer_than_best_baseline"] = c3

    crit = [out[k]["met"] for k in ("curve_below_from_step", "final_loss_lowest", "queries_fewer_than_best_baseline")]
    applicable = [m for m in crit if m is not None]
    out["all_met"] = bool(applicable) and all(applicable)
    out["verdicts"] = [out[k]["verdict"] for k in ("curve_below_from_step", "final_loss_lowest",
                                                   "queries_fewer_than_best_baseline")]
    return out
