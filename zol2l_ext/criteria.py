"""The learned-optimizer issue's quality criteria as paired, noise-aware comparisons of an `evaluate_task` result.

Every optimizer of an evaluation runs on the same items (images / datasets) x trials rows from the same initial
point with the same seed, so optimizers can be compared item by item: the per-item difference learned -
baseline (each item's loss averaged over its trials) removes the item-to-item spread that dominates the raw
mean curves. A difference is *significantly lower* when its mean + 2 standard errors (s.e. = sample std of the
per-item differences / sqrt(n)) is below 0, *higher* when mean - 2 s.e. > 0, else *within noise*.

`paired_criteria(result)` checks, for ``learned`` (default "zo-lstm"):

(a) ``loss_lower_at_steps``: at each checked step (those of ``steps`` the run recorded, and its final step) the
    paired per-item loss difference to EVERY baseline present is significantly lower;
(b) ``queries_fewer``: its mean queries to first success (over the rows that succeeded, as
    ``mean_queries_to_success``) at most 0.8 x the best baseline's, AND the paired per-item comparison of mean
    queries to the best baseline (items where both succeeded at least once) significantly lower; where no item
    has successes of both, the ratio alone decides (noted);
(c) ``success_rate_not_lower``: its success rate (final iterate) >= the best baseline's;
(d) ``query_rnn_helps`` (when ``no_query``, default "zo-lstm-no-query", ran too): ZO-LSTM significantly lower
    than ZO-LSTM-no-query at the final step (paired), or at least 10% fewer mean queries to first success.

Each criterion has ``met`` (True / False / None = not applicable) and a one-line ``verdict``. Binary task: at
the final step the full-data loss per item (``per_item_final_loss_full``) is compared where every optimizer has
it, as `evaluate.quality_criteria` does; the other steps compare the minibatch loss (the same minibatch for
every optimizer at a step). Needs the per-item fields `evaluate_task` records (``per_item_loss_at``,
``first_success_queries``); results written before them give None with the reason.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .evaluation.common import BASELINES, ITEM_STEPS, optimizer_key
from .fileio import json_number

__all__ = ["Z", "QUERY_RATIO", "QUERY_RNN_RATIO", "paired_difference", "per_item_queries", "paired_criteria",
           "format_paired"]

Z = 2.0  # standard errors of a significant difference
QUERY_RATIO = 0.8  # (b): learned mean queries <= QUERY_RATIO x the best baseline's
QUERY_RNN_RATIO = 0.9  # (d): ZO-LSTM mean queries <= QUERY_RNN_RATIO x ZO-LSTM-no-query's
_KEYS = ("loss_lower_at_steps", "queries_fewer", "success_rate_not_lower", "query_rnn_helps")
_TOL = 1e-12


def paired_difference(a: Sequence, b: Sequence, z: float = Z) -> Dict[str, Any]:
    """The paired difference a - b over the items where both are finite: mean_diff, se (None for n < 2), n and
    verdict "lower" (mean + z se < 0), "higher" (mean - z se > 0), "within noise" (also for n = 1) or "no pairs"."""
    pairs = ((json_number(x), json_number(y)) for x, y in zip(a, b))
    d = [x - y for x, y in pairs if x is not None and y is not None]
    n = len(d)
    if n == 0:
        return {"mean_diff": None, "se": None, "n": 0, "verdict": "no pairs"}
    mean = sum(d) / n
    if n < 2:
        return {"mean_diff": json_number(mean, sig=6), "se": None, "n": 1, "verdict": "within noise"}
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n)
    verdict = "lower" if mean + z * se < 0 else "higher" if mean - z * se > 0 else "within noise"
    return {"mean_diff": json_number(mean, sig=6), "se": json_number(se, sig=6), "n": n, "verdict": verdict}


def _layout(result: Mapping[str, Any], entry: Mapping[str, Any]) -> tuple:
    """(items, trials) of the result (row = trial * items + item)."""
    cfg = result.get("config", {})
    items = cfg.get("items") or len(entry.get("per_item_final_loss") or []) or 1
    trials = cfg.get("trials") or max(1, len(entry.get("first_success_queries") or []) // items)
    return int(items), int(trials)


def per_item_queries(entry: Mapping[str, Any], items: int, trials: int) -> Optional[List[Optional[float]]]:
    """Per item, the mean over its successful trials of the queries to first success (None: never succeeded);
    None when the entry has no per-row ``first_success_queries``."""
    rows = entry.get("first_success_queries")
    if rows is None or len(rows) != items * trials:
        return None
    out = []
    for i in range(items):
        qs = [q for q in (rows[t * items + i] for t in range(trials)) if q is not None and q >= 0]
        out.append(sum(qs) / len(qs) if qs else None)
    return out


def _step_values(entry: Mapping[str, Any], step: int, final: int, full: bool) -> Optional[list]:
    if full and step == final:
        return entry.get("per_item_final_loss_full")
    return (entry.get("per_item_loss_at") or {}).get(str(step))


def _fmt_diff(p: Mapping[str, Any]) -> str:
    if p["mean_diff"] is None:
        return "no pairs"
    se = "-" if p["se"] is None else f"{p['se']:.3g}"
    return f"{p['mean_diff']:+.3g} ± {se} s.e., n={p['n']}"


def _loss_criterion(opts, learned, present, steps, LN) -> Dict[str, Any]:
    names = [learned] + present
    keys = [set((opts[n].get("per_item_loss_at") or {}).keys()) for n in names]
    common = sorted({int(k) for k in set.intersection(*keys)}) if keys else []
    if not common:
        return {"met": None, "verdict": "not applicable: the result has no per-item losses (per_item_loss_at)"}
    final = max(common)
    checked = [s for s in common if s in {int(v) for v in steps} or s == final]
    full = all(opts[n].get("per_item_final_loss_full") is not None for n in names)
    per_step: Dict[str, Any] = {}
    failures = []
    for s in checked:
        row: Dict[str, Any] = {}
        for b in present:
            p = paired_difference(_step_values(opts[learned], s, final, full), _step_values(opts[b], s, final, full))
            row[b] = p
            if p["verdict"] != "lower":
                failures.append(f"step {s} vs {b}: {p['verdict']} ({_fmt_diff(p)})")
        per_step[str(s)] = row
    out: Dict[str, Any] = {"steps": checked, "final_step": final, "per_step": per_step,
                           "final_metric": "full-data loss" if full else "loss"}
    out["met"] = not failures
    listed = ", ".join(str(s) for s in checked)
    if out["met"]:
        out["verdict"] = (f"met: {LN}'s per-item loss is significantly lower (paired, mean + {Z:g} s.e. < 0) than "
                          f"every baseline's at steps {listed}")
    else:
        more = f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
        out["verdict"] = (f"NOT met: {LN} is not significantly lower than every baseline at steps {listed}: "
                          + "; ".join(failures[:3]) + more)
    return out


def _queries_criterion(result, opts, learned, present, LN) -> Dict[str, Any]:
    lq = opts[learned].get("mean_queries_to_success")
    bq = {b: opts[b].get("mean_queries_to_success") for b in present}
    finite = {b: v for b, v in bq.items() if v is not None}
    best = min(finite, key=finite.get) if finite else None
    out: Dict[str, Any] = {"learned": lq, "baselines": bq, "best_baseline": best,
                           "best_baseline_value": finite.get(best), "ratio_threshold": QUERY_RATIO}
    items, trials = _layout(result, opts[learned])
    lpi = per_item_queries(opts[learned], items, trials)
    paired = {}
    for b in present:
        bpi = per_item_queries(opts[b], items, trials)
        if lpi is not None and bpi is not None:
            paired[b] = paired_difference(lpi, bpi)
    out["paired"] = paired
    if lq is None and best is None:
        out.update(met=None, verdict="not comparable: no optimizer reached a success")
        return out
    if lq is None:
        out.update(met=False, verdict=f"NOT met: {LN} never succeeded (best baseline {best}: "
                                      f"{finite[best]:.1f} queries)")
        return out
    if best is None:
        out.update(met=True, verdict=f"met: {LN} succeeded ({lq:.1f} queries) where no baseline did")
        return out
    ratio = lq / finite[best] if finite[best] else math.inf
    out["ratio"] = json_number(ratio, sig=4)
    ratio_met = lq <= QUERY_RATIO * finite[best] * (1 + _TOL)
    pb = paired.get(best)
    paired_usable = pb is not None and pb["n"] > 0
    paired_met = pb["verdict"] == "lower" if paired_usable else None
    out["ratio_met"], out["paired_met"] = bool(ratio_met), paired_met
    out["met"] = bool(ratio_met and paired_met is not False)
    head = (f"{LN} needs {lq:.1f} queries to first success (mean over the rows that succeeded), "
            f"{ratio:.2f} x the best baseline {best}'s {finite[best]:.1f} (needs <= {QUERY_RATIO:g})")
    tail = (f"; paired per item vs {best}: {pb['verdict']} ({_fmt_diff(pb)})" if paired_usable else
            f"; no paired comparison (no item where both {LN} and {best} succeeded, or no per-row queries)")
    out["verdict"] = ("met: " if out["met"] else "NOT met: ") + head + tail
    return out


def _success_criterion(opts, learned, present, LN) -> Dict[str, Any]:
    ls = opts[learned].get("success_rate")
    bs = {b: opts[b].get("success_rate") for b in present}
    finite = {b: v for b, v in bs.items() if v is not None}
    best = max(finite, key=finite.get) if finite else None
    out: Dict[str, Any] = {"learned": ls, "baselines": bs, "best_baseline": best,
                           "best_baseline_value": finite.get(best)}
    if ls is None and best is None:
        out.update(met=None, verdict="not applicable: no success rates in the result")
    elif ls is None:
        out.update(met=False, verdict=f"NOT met: {LN} has no success rate")
    elif best is None:
        out.update(met=True, verdict=f"met: {LN} success rate {100 * ls:.1f}%, no baseline has one")
    else:
        met = ls >= finite[best] - _TOL
        out["met"] = bool(met)
        out["verdict"] = (f"{'met' if met else 'NOT met'}: {LN}'s success rate (final iterate) {100 * ls:.1f}% "
                          f"{'>=' if met else '<'} the best baseline {best}'s {100 * finite[best]:.1f}%")
    return out


def _query_rnn_criterion(result, opts, learned, no_query, has_success) -> Dict[str, Any]:
    if learned not in opts or no_query not in opts:
        return {"met": None, "verdict": f"not applicable: {no_query} was not run"}
    names = [learned, no_query]
    keys = [set((opts[n].get("per_item_loss_at") or {}).keys()) for n in names]
    common = sorted({int(k) for k in keys[0] & keys[1]})
    out: Dict[str, Any] = {"ablation": no_query}
    loss_lower = None
    if common:
        final = max(common)
        full = all(opts[n].get("per_item_final_loss_full") is not None for n in names)
        p = paired_difference(_step_values(opts[learned], final, final, full),
                              _step_values(opts[no_query], final, final, full))
        out["final_step"], out["final_loss_paired"] = final, p
        loss_lower = p["verdict"] == "lower"
    lq, nq = opts[learned].get("mean_queries_to_success"), opts[no_query].get("mean_queries_to_success")
    q_fewer = None
    if has_success and lq is not None and nq is not None:
        q_fewer = lq <= QUERY_RNN_RATIO * nq * (1 + _TOL)
        out["queries_ratio"] = json_number(lq / nq if nq else math.inf, sig=4)
    elif has_success and lq is not None and nq is None:
        q_fewer = True  # only the QueryRNN variant ever succeeded
    elif has_success and lq is None and nq is not None:
        q_fewer = False
    out["loss_lower"], out["queries_fewer"] = loss_lower, q_fewer
    if loss_lower is None and q_fewer is None:
        out.update(met=None, verdict="not applicable: no per-item losses nor queries to compare")
        return out
    out["met"] = bool(loss_lower or q_fewer)
    bits = []
    if loss_lower is not None:
        p = out["final_loss_paired"]
        bits.append(f"final-step loss vs {no_query}: {p['verdict']} ({_fmt_diff(p)})")
    if q_fewer is not None:
        what = "mean queries " + " vs ".join("never" if v is None else f"{v:.1f}" for v in (lq, nq))
        bits.append(f"{what} ({'' if q_fewer else 'not '}<= {QUERY_RNN_RATIO:g} x)")
    helps = "met: the QueryRNN helps" if out["met"] else "NOT met: the QueryRNN does not help"
    out["verdict"] = (f"{helps} (significantly lower final loss or >= {100 * (1 - QUERY_RNN_RATIO):.0f}% fewer "
                      "queries): " + "; ".join(bits))
    return out


def paired_criteria(result: Mapping[str, Any], learned: str = "zo-lstm", baselines: Sequence[str] = BASELINES,
                    steps: Sequence[int] = ITEM_STEPS, no_query: str = "zo-lstm-no-query") -> Dict[str, Any]:
    """The paired criteria (a)-(d) of the module docstring for ``learned`` against the ``baselines`` present in
    an `evaluate_task` result. Keys: learned, baselines (present), missing_baselines, steps, applicable, the
    four criteria (each with met and verdict), all_met (every applicable criterion met; None when none is) and
    verdicts (the four one-line verdicts)."""
    opts = result["optimizers"]
    learned, no_query = optimizer_key(learned), optimizer_key(no_query)
    wanted = [optimizer_key(b) for b in baselines]
    present = [b for b in wanted if b in opts and b != learned]
    missing = [b for b in wanted if b not in opts]
    out: Dict[str, Any] = {"learned": learned, "baselines": present, "missing_baselines": missing,
                           "steps": [int(s) for s in steps], "z": Z}
    if learned not in opts:
        why = f"{learned} was not run"
        out.update(applicable=False, reason=why, all_met=None, verdicts=[f"criteria not evaluated: {why}"])
        return out
    out["applicable"] = True
    LN = learned.upper() if learned == "zo-lstm" else learned
    has_success = bool(result.get("config", {}).get("has_success")) or any(
        "success_rate" in opts[n] for n in [learned] + present)
    if present:
        out["loss_lower_at_steps"] = _loss_criterion(opts, learned, present, steps, LN)
    else:
        out["loss_lower_at_steps"] = {"met": None, "verdict": "not applicable: no baseline was run"}
    if not has_success:
        na = {"met": None, "verdict": "not applicable: the task has no success notion"}
        out["queries_fewer"], out["success_rate_not_lower"] = dict(na), dict(na)
    elif not present:
        na = {"met": None, "verdict": "not applicable: no baseline was run"}
        out["queries_fewer"], out["success_rate_not_lower"] = dict(na), dict(na)
    else:
        out["queries_fewer"] = _queries_criterion(result, opts, learned, present, LN)
        out["success_rate_not_lower"] = _success_criterion(opts, learned, present, LN)
    out["query_rnn_helps"] = _query_rnn_criterion(result, opts, learned, no_query, has_success)
    mets = [out[k]["met"] for k in _KEYS if out[k]["met"] is not None]
    out["all_met"] = all(mets) if mets else None
    out["verdicts"] = [out[k]["verdict"] for k in _KEYS]
    return out


def format_paired(criteria: Mapping[str, Any]) -> str:
    """Markdown: the per-step paired loss differences (learned - baseline) and one line per criterion."""
    if not criteria.get("applicable"):
        return f"- paired criteria not evaluated: {criteria.get('reason')}"
    lines = []
    ll = criteria["loss_lower_at_steps"]
    if ll.get("per_step"):
        bs = criteria["baselines"]
        lines += [f"Paired per-item loss difference {criteria['learned']} - baseline (mean ± s.e. over items; "
                  f"significant: {criteria['z']:g} s.e.):", "",
                  "| step | " + " | ".join(bs) + " |", "|" + "|".join("---" for _ in range(len(bs) + 1)) + "|"]
        for s, row in ll["per_step"].items():
            label = s + (" (full data)" if int(s) == ll["final_step"] and ll["final_metric"] != "loss" else "")
            lines.append(f"| {label} | " + " | ".join(f"{_fmt_diff(row[b])}: {row[b]['verdict']}" for b in bs) + " |")
        lines.append("")
    titles = {"loss_lower_at_steps": "(a) significantly lower loss than every baseline at every checked step",
              "queries_fewer": f"(b) mean queries to first success <= {QUERY_RATIO:g} x the best baseline's",
              "success_rate_not_lower": "(c) success rate >= the best baseline's",
              "query_rnn_helps": "(d) the QueryRNN helps (vs ZO-LSTM-no-query)"}
    for k, title in titles.items():
        lines.append(f"- **{title}**: {criteria[k]['verdict']}")
    if criteria.get("missing_baselines"):
        lines.append(f"- baselines not in this run: {', '.join(criteria['missing_baselines'])}")
    overall = criteria.get("all_met")
    lines.append("- **overall (paired)**: " + ("no criterion applies" if overall is None else
                                                "all applicable criteria met" if overall else
                                                "the learned optimizer does NOT meet every applicable criterion"))
    return "\n".join(lines)
