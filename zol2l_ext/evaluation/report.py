"""The written evaluation: the table and verdicts (markdown), the loss curve figure, and the files of a run
(results.json, paired_criteria.json, loss_curves.png, quality.md)."""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

import numpy as np

from ..criteria import format_paired, paired_criteria
from ..fileio import atomic_write_json, atomic_write_text
from .common import mean_curve
from .quality import quality_criteria

__all__ = ["format_table", "format_criteria", "plot_curves", "write_evaluation"]


def _fmt(v, spec: str, scale: float = 1.0) -> str:
    return "-" if v is None else format(v * scale, spec)


def format_table(result: Mapping[str, Any]) -> str:
    """A markdown table: optimizer, lr (source), final mean loss, success, mean queries to 1st success, seconds
    (binary: also the full-data final loss and the accuracy)."""
    opts = result["optimizers"]
    binary = any("final_loss_full" in e for e in opts.values())
    head = ["optimizer", "lr (source)", "final mean loss", "success", "mean queries to 1st success", "seconds"]
    if binary:
        head[3:3] = ["full-data final loss", "accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, e in opts.items():
        lr = "-" if e.get("lr") is None else f"{e['lr']:g}"
        if e.get("kwargs"):
            lr += " " + " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in e["kwargs"].items())
        std = f" ± {e['final_loss_std']:.3g}" if e.get("final_loss_std") is not None else ""
        succ = "-"
        if e.get("success_rate") is not None:
            succ = f"{100 * e['success_rate']:.1f}% (ever {100 * e['ever_success_rate']:.1f}%)"
        row = [name, f"{lr} ({e.get('lr_source')})", _fmt(e.get("final_loss"), ".4g") + std, succ,
               _fmt(e.get("mean_queries_to_success"), ".1f"), _fmt(e.get("wall_seconds"), ".1f")]
        if binary:
            row[3:3] = [_fmt(e.get("final_loss_full"), ".4g"), _fmt(e.get("accuracy"), ".1f", 100.0) + "%"]
        if e.get("failed_rows"):
            row[0] += f" ({e['failed_rows']} rows failed)"
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def format_criteria(criteria: Mapping[str, Any]) -> str:
    if not criteria.get("applicable"):
        return f"- criteria not evaluated: {criteria.get('reason')}"
    titles = {"curve_below_from_step": f"mean loss curve below every baseline's from step {criteria['from_step']}",
              "final_loss_lowest": "final mean loss the lowest",
              "queries_fewer_than_best_baseline": "mean queries to first success fewer than the best baseline's"}
    lines = []
    for k, title in titles.items():
        c = criteria[k]
        lines.append(f"- **{title}**: {c['verdict']}")
    if criteria.get("missing_baselines"):
        lines.append(f"- baselines not in this run: {', '.join(criteria['missing_baselines'])}")
    overall = criteria.get("all_met")
    lines.append("- **overall**: " + ("all applicable criteria met" if overall else
                                      "the learned optimizer does NOT win on every criterion"))
    return "\n".join(lines)


def plot_curves(result: Mapping[str, Any], path: str, from_step: Optional[int] = 50,
                log_y: Optional[bool] = None) -> str:
    """Mean loss per step of every optimizer with a +-1 std band and a vertical line at ``from_step``."""
    # matplotlib is loaded when a figure is drawn, not when the evaluation is imported (a run needs no plots)
    import matplotlib.pyplot as plt

    from .. import plots  # (importing it also selects the Agg backend)

    cfg = result.get("config", {})
    fig, ax = plt.subplots(figsize=(6.8, 4.4), dpi=110)
    lo, hi = np.inf, 0.0
    positive = True
    for name, e in result["optimizers"].items():
        mean = mean_curve(e)
        std = np.array([np.nan if v is None else v for v in e["loss_std"]], dtype=float)
        x = np.arange(mean.size)
        plots.mean_std_curve(ax, x, mean, std, label=name, lw=1.6, alpha=0.18)
        fin = mean[np.isfinite(mean)]
        if fin.size:
            positive &= bool(fin.min() > 0)
            lo, hi = min(lo, fin.min()), max(hi, fin.max())
    if log_y is None:
        log_y = positive and np.isfinite(lo) and lo > 0 and hi / lo > 20
    if log_y and positive:
        ax.set_yscale("log")
    if from_step is not None and 0 < from_step < (len(next(iter(result["optimizers"].values()))["loss_mean"]) - 1):
        ax.axvline(from_step, color="gray", ls="--", lw=1, label=f"step {from_step}")
    over = next(iter(result["optimizers"].values())).get("loss_std_over", "trials")
    what = (f"{cfg.get('items')} images" if cfg.get("kind") == "attack" else f"{cfg.get('items')} datasets")
    return plots.finish_curve_plot(
        fig, ax, path, "attack loss" if cfg.get("kind") == "attack" else "minibatch loss",
        f"{result.get('task')} ({cfg.get('part')}): {what} x {cfg.get('trials')} trials, q={cfg.get('q')} "
        f"(band: std over {over})")


def write_evaluation(result: Dict[str, Any], out_dir: str, criteria: Optional[Dict[str, Any]] = None,
                     from_step: int = 50, paired: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """results.json (the result with its ``criteria`` and ``paired_criteria``), paired_criteria.json (the paired
    criteria alone, `criteria.paired_criteria`), loss_curves.png and quality.md in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    if criteria is None:
        criteria = result.get("criteria") or quality_criteria(result, from_step=from_step)
    if paired is None:
        paired = result.get("paired_criteria") or paired_criteria(result)
    result["criteria"] = criteria
    result["paired_criteria"] = paired
    paths = {"results": os.path.join(out_dir, "results.json"),
             "paired_criteria": os.path.join(out_dir, "paired_criteria.json"),
             "loss_curves": os.path.join(out_dir, "loss_curves.png"),
             "quality": os.path.join(out_dir, "quality.md")}
    atomic_write_json(result, paths["results"])
    atomic_write_json({"task": result.get("task"), "config": result.get("config"), **paired},
                      paths["paired_criteria"])
    plot_curves(result, paths["loss_curves"], from_step=criteria.get("from_step", from_step))
    cfg = result["config"]
    if cfg.get("kind") == "attack":
        what = (f"{cfg['items']} images (positions {cfg['positions'][0]}:{cfg['positions'][1]} of the shuffled "
                f"correct {cfg['dataset']} test images; target {cfg.get('target')})")
    else:
        what = f"{cfg['items']} datasets (seeds {', '.join(map(str, cfg.get('seeds', [])))})"
    space = f", {cfg['space']} space" if cfg.get("space") else ""
    md = [f"# Evaluation of {result['task']} ({cfg['part']} part{space})", "",
          f"{what} x {cfg['trials']} trials, {cfg['steps']} steps, q = {cfg['q']}, mu = {cfg['mu']}, seed "
          f"{cfg['seed']}, device {cfg['device']}; the same initial point and seed for every optimizer.",
          f"Learned optimizer: {cfg.get('learned') or '-'}. Baselines' tuning: {cfg.get('tuned') or 'none'}"
          + (f" ({cfg['tuned_note']})" if cfg.get("tuned_note") else "") + ".", ""]
    if cfg.get("kind") == "binary":
        md += ["Final mean loss: the minibatch loss of the final iterate; full-data final loss: on all n samples "
               "(the final-loss criterion uses it).", ""]
    md += [format_table(result), "",
           "Success: label changed at the final iterate (ever: at any iterate); queries: mean over the rows that "
           "succeeded. ± : std over trials of the item-mean." if cfg.get("has_success") else
           "± : std over trials of the item-mean.", "", "## Criteria", "", format_criteria(criteria), "",
           "## Paired criteria", "", format_paired(paired), "",
           f"({result.get('wall_seconds', 0):.1f} s, {result.get('created', '')})", ""]
    atomic_write_text(paths["quality"], "\n".join(md))
    return paths
