"""Comparisons the experiments' claims rest on: who ends lowest, whose mean curve lies below whose.

All take `evaluate.evaluate_task`'s per-optimizer entries ({name: entry}) and return plain numbers and
one-line descriptions, so that each experiment's ``claims`` reads the same way."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from .figures import arr

__all__ = ["final", "ranking", "fraction_below", "lowest_final_claim", "paired_lower", "fmt"]


def fmt(v: Optional[float], nd: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{nd}g}"


def final(entry: Mapping[str, Any], key: str = "final_loss") -> Optional[float]:
    v = entry.get(key)
    return None if v is None else float(v)


def ranking(entries: Mapping[str, Mapping[str, Any]], key: str = "final_loss") -> list:
    """Names sorted by ``key`` (lowest first; missing values last)."""
    return sorted(entries, key=lambda n: (final(entries[n], key) is None, final(entries[n], key) or 0.0))


def fraction_below(entries: Mapping[str, Mapping[str, Any]], name: str, others: Sequence[str],
                   from_step: int = 0) -> Optional[float]:
    """Fraction of the steps >= ``from_step`` where ``name``'s mean curve is strictly below every one of ``others``."""
    mine = arr(entries[name]["loss_mean"])
    rest = [arr(entries[o]["loss_mean"]) for o in others if o in entries and o != name]
    if not rest:
        return None
    T = min([mine.size] + [r.size for r in rest])
    best = np.min(np.stack([r[:T] for r in rest]), axis=0)
    with np.errstate(invalid="ignore"):
        below = mine[:T] < best
    tail = below[from_step:]
    return float(tail.mean()) if tail.size else None


def lowest_final_claim(entries: Mapping[str, Mapping[str, Any]], name: str, others: Sequence[str],
                       key: str = "final_loss", from_step: int = 20) -> Dict[str, Any]:
    """Whether ``name`` ends lowest among ``others`` and how often its curve is below theirs.

    "Ends lowest" needs the paired per-item (one item: per-trial) difference to every other to be significantly
    negative (`paired_lower`). Returns {"verdict", "measured"}: "supported" when it ends lowest and its curve is
    below all others at >= 90% of the steps >= ``from_step``; "partly" when only one of the two holds; else
    "not supported"."""
    others = [o for o in others if o in entries and o != name]
    from_step = min(int(from_step), len(entries[name]["loss_mean"]) // 4)  # short (test) runs compare all steps
    order = ranking({n: entries[n] for n in [name] + others}, key)
    frac = fraction_below(entries, name, others, from_step)
    pairs = {o: paired_lower(entries, name, o, key) for o in others}
    lowest = bool(pairs) and all(c["verdict"] == "supported" for c in pairs.values())
    faster = frac is not None and frac >= 0.9
    verdict = "supported" if lowest and faster else ("partly" if lowest or faster else "not supported")
    finals = ", ".join(f"{n} {fmt(final(entries[n], key))}" for n in order)
    runner_up = next((n for n in order if n != name), None)
    sig = ""
    if runner_up is not None and pairs[runner_up]["diff"] is not None:
        c = pairs[runner_up]
        sig = (f"; {name} - {runner_up} paired {fmt(c['diff'], 3)}"
               + (f" +- {fmt(c['se'], 2)} (s.e.)" if c["se"] is not None else "")
               + {"supported": ", significantly lower", "not supported": ", significantly higher"}.get(
                   c["verdict"], ", within noise"))
    measured = (f"{key.replace('_', ' ')}: {finals}{sig}; {name}'s mean curve below all others at "
                f"{'n/a' if frac is None else f'{100 * frac:.0f}%'} of steps >= {from_step}")
    return {"verdict": verdict, "measured": measured}


def paired_lower(entries: Mapping[str, Mapping[str, Any]], a: str, b: str, key: str = "final_loss") -> Dict[str, Any]:
    """Whether ``a`` ends lower than ``b``, judged on the paired per-item differences of ``key``.

    Uses the entries' ``per_item_<key>`` (each item's mean over trials; the same items and seeds for both), or with
    one item the ``per_trial_<key>`` (trial k draws the same directions for both). With n >= 2 pairs:
    "supported" when the mean difference a - b is below -2 standard errors, "not supported" when
    above +2, else "inconclusive"; with one item the sign decides. Returns {"verdict", "measured", "diff", "se"}."""
    va, vb = final(entries[a], key), final(entries[b], key)
    pa, pb = entries[a].get(f"per_item_{key}"), entries[b].get(f"per_item_{key}")
    if va is None or vb is None:
        return {"verdict": "not supported", "measured": f"{key}: {a} {fmt(va)}, {b} {fmt(vb)} (not finite)",
                "diff": None, "se": None}
    unit = "items"
    if pa is not None and len(pa) == 1 and entries[a].get(f"per_trial_{key}") is not None:
        pa, pb, unit = entries[a].get(f"per_trial_{key}"), entries[b].get(f"per_trial_{key}"), "trials"
    d = arr(pa) - arr(pb) if pa is not None and pb is not None and len(pa) == len(pb) else np.array([va - vb])
    d = d[np.isfinite(d)]
    n = d.size
    diff = float(d.mean()) if n else va - vb
    se = float(d.std(ddof=1) / np.sqrt(n)) if n >= 2 else None
    if se is None:
        verdict = "supported" if diff < 0 else "not supported"
    else:
        verdict = "supported" if diff < -2 * se else ("not supported" if diff > 2 * se else "inconclusive")
    measured = (f"{key.replace('_', ' ')}: {a} {fmt(va)}, {b} {fmt(vb)}; paired difference {fmt(diff, 3)}"
                + (f" +- {fmt(se, 2)} (s.e., {n} {unit})" if se is not None else " (one pair)"))
    return {"verdict": verdict, "measured": measured, "diff": diff, "se": se}
