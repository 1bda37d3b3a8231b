"""Fig. 11 (App. C.4): ZO-SZVR-G (variance reduction) vs ZO-SGD vs ZO-LSTM-no-update, per iteration and per query.

Black-box attack (MNIST; "digits-attack" at the tiny scale), the first ``items`` test images x ``trials``
trials, every optimizer from the same point with the same seed (`evaluate.evaluate_task`): ZO-SGD (the task's
shipped tuned lr), ZO-SZVR-G (epochs of 10 steps; a snapshot step costs q' + 1 = 101 queries, an inner step
2 (q + 1)) and ZO-LSTM-no-update (ZO-SGD with the QueryRNN of the task's pretrained weights, q + 1 queries per
step). Neither ZO-SZVR-G nor ZO-LSTM-no-update has a tuned lr: both use the tuned ZO-SGD lr. The mean attack
loss is plotted against iterations and against the cumulative queries per problem (the sum of each
optimizer's ``queries_at(t)`` over the steps done). The per-query comparisons interpolate each mean curve on
a common grid of query counts up to the smallest total budget of the optimizers compared.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from ..evaluate import baseline_settings
from ..zo.lstm_optimizer import LearnedZO
from ..zo.optimizers import make_optimizer, optimizer_traits
from .compare import fmt, lowest_final_claim
from .core import claim
from .figures import arr, curve_panel, panels, save

TITLE = "ZO-SZVR-G vs ZO-SGD vs ZO-LSTM-no-update: attack loss per iteration and per query"
PAPER = "Fig. 11 (App. C.4)"
OPTIMIZERS = ["zo-sgd", "zo-szvr-g", "zo-lstm-no-update"]

SCALES = {
    "tiny": {"task": "digits-attack", "learned": "digits-attack", "steps": 25, "items": 2, "trials": 1},
    "default": {"task": "mnist-attack", "learned": "mnist-attack", "steps": 200, "items": 20, "trials": 3},
    "full": {"task": "mnist-attack", "learned": "mnist-attack", "steps": 200, "items": 100, "trials": 10},
}


def cumulative_queries(name: str, q: int, steps: int) -> List[int]:
    """Queries per problem spent after 0..steps steps of optimizer ``name`` (its ``queries_at``)."""
    kw = {"model": LearnedZO()} if optimizer_traits(name).learned else {}  # weights do not change the cost
    opt = make_optimizer(name, q=q, **kw)
    return opt.query_axis(steps)


def run(ctx) -> Dict[str, Any]:
    p = ctx.params
    lr, _, lr_source = baseline_settings("zo-sgd", p["task"])
    spec = {"task": p["task"], "learned": p["learned"], "steps": p["steps"], "items": p["items"],
            "trials": p["trials"], "lr": lr}
    ctx.log(f"{p['task']}: {p['items']} image(s) x {p['trials']} trial(s), {p['steps']} steps; ZO-SZVR-G and "
            f"ZO-LSTM-no-update with the ZO-SGD lr {lr:g}")
    res = ctx.cached(f"{p['task']}-szvrg", spec, lambda: ctx.evaluate(
        p["task"], OPTIMIZERS, items=p["items"], trials=p["trials"], steps=p["steps"], learned=p["learned"],
        optimizer_kwargs={"zo-szvr-g": {"lr": lr}, "zo-lstm-no-update": {"lr": lr}}))
    q = int(res["config"]["q"])
    queries = {n: cumulative_queries(n, q, p["steps"]) for n in res["optimizers"]}
    return {"task": p["task"], "config": res["config"], "optimizers": res["optimizers"], "queries": queries,
            "sgd_lr": lr, "sgd_lr_source": lr_source}


def plot(data, out_dir) -> List[str]:
    cfg = data["config"]
    fig, axes = panels(2, ncols=2)
    what = f"{data['task']}: {cfg['items']} image(s) x {cfg['trials']} trial(s)"
    curve_panel(axes[0], data["optimizers"], f"{what}, per iteration", ylabel="attack loss", log_y=True)
    curve_panel(axes[1], data["optimizers"], f"{what}, per query", ylabel="attack loss", log_y=True,
                xlabel="queries per problem", x=data["queries"])
    return [save(fig, out_dir, "fig11_szvrg.png", "Fig. 11: ZO-SZVR-G vs ZO-SGD vs ZO-LSTM-no-update")]


def table(data) -> str:
    rows = ["| optimizer | lr (source) | final loss | ever success | mean queries to 1st success | "
            "queries per problem |", "|---|---|--:|--:|--:|--:|"]
    for name, e in data["optimizers"].items():
        lr = "-" if e.get("lr") is None else f"{e['lr']:g}"
        rows.append(f"| {name} | {lr} ({e.get('lr_source')}) | {fmt(e.get('final_loss'))} | "
                    f"{fmt(e.get('ever_success_rate'), 3)} | {fmt(e.get('mean_queries_to_success'), 5)} | "
                    f"{data['queries'][name][-1]} |")
    return "\n".join(rows)


def per_query(data, name: str, others: List[str], points: int = 200) -> Dict[str, Optional[float]]:
    """``name``'s mean loss against ``others``' at equal queries: on a grid over (10%, 100%] of the smallest total
    budget, the fraction of points where it is below all of them, and the losses at that budget."""
    names = [name] + others
    budget = min(data["queries"][n][-1] for n in names)
    grid = np.linspace(0.1 * budget, budget, points)
    at = {n: np.interp(grid, np.array(data["queries"][n], dtype=float), arr(data["optimizers"][n]["loss_mean"]))
          for n in names}
    best_other = np.min(np.stack([at[o] for o in others]), axis=0)
    with np.errstate(invalid="ignore"):
        below = at[name] < best_other
    return {"budget": float(budget), "fraction_below": float(below.mean()),
            **{f"loss_at_budget[{n}]": float(at[n][-1]) for n in names}}


def claims(data) -> List[Dict[str, str]]:
    ents = data["optimizers"]
    cfg = data["config"]
    what = f"{data['task']}, {cfg['items']} image(s) x {cfg['trials']} trial(s)"
    out = []
    c = lowest_final_claim(ents, "zo-szvr-g", ["zo-sgd"])
    out.append(claim(f"{what}: ZO-SZVR-G converges faster than ZO-SGD per iteration (variance reduction)",
                     c["measured"], c["verdict"]))

    pq = per_query(data, "zo-sgd", ["zo-szvr-g"])
    sz_at, sg_at = pq["loss_at_budget[zo-szvr-g]"], pq["loss_at_budget[zo-sgd]"]
    ok_frac, ok_end = pq["fraction_below"] >= 0.9, sg_at < sz_at
    verdict = "supported" if ok_frac and ok_end else ("partly" if ok_frac or ok_end else "not supported")
    out.append(claim(f"{what}: per query, ZO-SZVR-G is not faster than ZO-SGD (its steps cost more queries)",
                     f"at equal queries (up to {pq['budget']:.0f} per problem) ZO-SGD's mean loss is below "
                     f"ZO-SZVR-G's at {100 * pq['fraction_below']:.0f}% of the grid; at {pq['budget']:.0f} queries: "
                     f"zo-sgd {fmt(sg_at)}, zo-szvr-g {fmt(sz_at)}", verdict))

    c = lowest_final_claim(ents, "zo-lstm-no-update", ["zo-sgd", "zo-szvr-g"])
    out.append(claim(f"{what}: ZO-LSTM-no-update converges faster and lower than ZO-SGD and ZO-SZVR-G per iteration",
                     c["measured"], c["verdict"]))
    pq = per_query(data, "zo-lstm-no-update", ["zo-sgd", "zo-szvr-g"])
    mine = pq["loss_at_budget[zo-lstm-no-update]"]
    rest = min(pq["loss_at_budget[zo-sgd]"], pq["loss_at_budget[zo-szvr-g]"])
    ok_frac, ok_end = pq["fraction_below"] >= 0.9, mine < rest
    verdict = "supported" if ok_frac and ok_end else ("partly" if ok_frac or ok_end else "not supported")
    out.append(claim(f"{what}: per query, ZO-LSTM-no-update beats ZO-SGD and ZO-SZVR-G",
                     f"at equal queries (up to {pq['budget']:.0f} per problem) its mean loss is below both at "
                     f"{100 * pq['fraction_below']:.0f}% of the grid; at {pq['budget']:.0f} queries: "
                     + ", ".join(f"{n} {fmt(pq[f'loss_at_budget[{n}]'])}" for n in OPTIMIZERS), verdict))
    return out
