"""Fig. 10 (App. C.3): the effect of the Bernoulli probability p of using the QueryRNN at test time.

ZO-LSTM (the task's pretrained weights) on the black-box attack (MNIST; "digits-attack" at the tiny scale) with
the probability p (``query_prob``) that a step samples its directions from the QueryRNN's predicted
distribution, instead of the standard Gaussian, set to each value of ``p_values`` (p = 0.5 is the test-time
default; p = 1 is the training behaviour; p = 0 never uses the QueryRNN, leaving the UpdateRNN with Gaussian
directions). For each p: the mean number of iterations to first success (over the rows that succeeded, with the
fraction that ever succeeded) and the final mean attack loss, over the first ``items`` test images x
``trials`` trials; every p starts from the same point with the same seed (`evaluate.evaluate_task`), so the
Gaussian draws and the per-step Bernoulli draws are shared across p.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from .compare import fmt
from .core import claim
from .figures import curve_panel, panels, plt, save

TITLE = "Effect of the Bernoulli probability p of using the QueryRNN (ZO-LSTM, black-box attack)"
PAPER = "Fig. 10 (App. C.3)"
P_VALUES = [0.0, 0.25, 0.5, 0.75, 1.0]

SCALES = {
    "tiny": {"task": "digits-attack", "learned": "digits-attack", "p_values": P_VALUES, "steps": 30, "items": 2,
             "trials": 1},
    "default": {"task": "mnist-attack", "learned": "mnist-attack", "p_values": P_VALUES, "steps": 200,
                "items": 20, "trials": 3},
    "full": {"task": "mnist-attack", "learned": "mnist-attack", "p_values": P_VALUES, "steps": 200,
             "items": 100, "trials": 10},
}

_KEEP = ("final_loss", "final_loss_std", "success_rate", "ever_success_rate", "mean_queries_to_success",
         "mean_first_success_step", "mean_queries", "wall_seconds", "failed_rows", "loss_mean", "loss_std",
         "loss_std_over")


def run(ctx) -> Dict[str, Any]:
    p = ctx.params
    runs: Dict[str, Any] = {}
    config = None
    for prob in [float(v) for v in p["p_values"]]:
        spec = {"task": p["task"], "learned": p["learned"], "p": prob, "steps": p["steps"], "items": p["items"],
                "trials": p["trials"]}
        ctx.log(f"p = {prob:g}: {p['items']} image(s) x {p['trials']} trial(s), {p['steps']} steps")
        res = ctx.cached(f"{p['task']}-p{prob:g}", spec, lambda prob=prob: ctx.evaluate(
            p["task"], ["zo-lstm"], items=p["items"], trials=p["trials"], steps=p["steps"], learned=p["learned"],
            optimizer_kwargs={"zo-lstm": {"query_prob": prob}}))
        config = res["config"]
        e = res["optimizers"]["zo-lstm"]
        runs[f"{prob:g}"] = {"p": prob, "query_prob": e.get("kwargs", {}).get("query_prob"),
                             **{k: e.get(k) for k in _KEEP}}
    return {"task": p["task"], "config": config, "p_values": [float(v) for v in p["p_values"]], "runs": runs}


def _arr(data, key) -> np.ndarray:
    return np.array([np.nan if data["runs"][f"{v:g}"].get(key) is None else data["runs"][f"{v:g}"][key]
                     for v in data["p_values"]], dtype=float)


def plot(data, out_dir) -> List[str]:
    ps = np.array(data["p_values"], dtype=float)
    cfg = data["config"]
    fig, axes = panels(3, ncols=3)
    ax = axes[0]
    ax.plot(ps, _arr(data, "mean_first_success_step"), "o-", color="tab:red", label="iterations to 1st success")
    ax.set_xlabel("Bernoulli probability p")
    ax.set_ylabel("mean iterations to first success", color="tab:red")
    ax2 = ax.twinx()
    ax2.plot(ps, 100 * _arr(data, "ever_success_rate"), "s--", color="tab:gray", label="ever-success %")
    ax2.set_ylabel("rows that ever succeeded (%)", color="tab:gray")
    ax2.set_ylim(0, 105)
    ax.set_title("iterations to first success vs p", fontsize=9)
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.errorbar(ps, _arr(data, "final_loss"), yerr=np.nan_to_num(_arr(data, "final_loss_std")), fmt="o-",
                capsize=3, color="tab:blue")
    ax.set_xlabel("Bernoulli probability p")
    ax.set_ylabel("final mean attack loss")
    ax.set_title("final loss vs p", fontsize=9)
    ax.grid(alpha=0.3)
    cmap = plt.get_cmap("viridis")
    ents = {f"p={v:g}": data["runs"][f"{v:g}"] for v in data["p_values"]}
    curve_panel(axes[2], ents, f"{data['task']}: {cfg['items']} image(s) x {cfg['trials']} trial(s), mean loss",
                ylabel="attack loss", log_y=True, band=False)  # the bands overlap: means only
    for i, line in enumerate(axes[2].get_lines()):
        line.set_color(cmap(i / max(1, len(ents) - 1)))
    axes[2].legend(fontsize=7)
    return [save(fig, out_dir, "fig10_bernoulli.png", "Fig. 10: effect of the Bernoulli probability p (ZO-LSTM)")]


def table(data) -> str:
    rows = ["| p | final loss | success | ever success | mean iterations to 1st success | "
            "mean queries to 1st success |", "|--:|--:|--:|--:|--:|--:|"]
    for v in data["p_values"]:
        e = data["runs"][f"{v:g}"]
        rows.append(f"| {v:g} | {fmt(e.get('final_loss'))} | {fmt(e.get('success_rate'), 3)} | "
                    f"{fmt(e.get('ever_success_rate'), 3)} | {fmt(e.get('mean_first_success_step'))} | "
                    f"{fmt(e.get('mean_queries_to_success'), 5)} |")
    return "\n".join(rows)


def _vs_extremes(data, key: str, what: str) -> Dict[str, str]:
    """p = 0.5 against p = 0 and p = 1 on ``key`` (lower is better)."""
    have = {f"{v:g}" for v in data["p_values"]}
    if not {"0", "0.5", "1"} <= have:
        return {"verdict": "not tested", "measured": f"p values {sorted(have)} lack 0, 0.5 or 1"}
    val = {k: data["runs"][k].get(key) for k in ("0", "0.5", "1")}
    allv = ", ".join(f"p={v:g} {fmt(data['runs'][f'{v:g}'].get(key))}" for v in data["p_values"])
    rates = ", ".join(f"p={v:g} {fmt(data['runs'][f'{v:g}'].get('ever_success_rate'), 3)}"
                      for v in data["p_values"])
    measured = f"{what}: {allv}" + (f" (ever-success rate: {rates})" if key == "mean_first_success_step" else "")
    finite = _arr(data, key)
    finite = finite[np.isfinite(finite)]
    if finite.size > 1 and finite.mean() != 0:
        spread = finite.max() - finite.min()
        measured += f"; spread over p: {fmt(spread, 3)} ({100 * spread / abs(finite.mean()):.1f}% of the mean)"
    if val["0.5"] is None:
        return {"verdict": "not tested" if all(v is None for v in val.values()) else "not supported",
                "measured": measured}
    beats = [k for k in ("0", "1") if val[k] is None or val["0.5"] < val[k]]
    verdict = "supported" if len(beats) == 2 else ("partly" if beats else "not supported")
    return {"verdict": verdict, "measured": measured}


def claims(data) -> List[Dict[str, str]]:
    cfg = data["config"]
    what = f"{data['task']}, {cfg['items']} image(s) x {cfg['trials']} trial(s)"
    c1 = _vs_extremes(data, "mean_first_success_step", "mean iterations to first success (rows that succeeded)")
    c2 = _vs_extremes(data, "final_loss", "final mean attack loss")
    return [claim(f"{what}: p = 0.5 balances the QueryRNN and standard Gaussian sampling: it needs fewer "
                  "iterations to first success than using the QueryRNN always (p = 1) or never (p = 0)",
                  c1["measured"], c1["verdict"]),
            claim(f"{what}: p = 0.5 reaches a lower final loss than p = 1 and p = 0", c2["measured"], c2["verdict"])]
