"""Fig. 4 (a-c) and App. A.4: ablation of the learned optimizer's parts on the three tasks.

On the MNIST attack, the CIFAR-10 attack and binary classification: ZO-SGD (tuned lr where the task has a shipped
tuning), ZO-LSTM (the task's pretrained weights), ZO-LSTM-no-query (its UpdateRNN with standard Gaussian directions),
ZO-LSTM-no-update (ZO-SGD at ZO-SGD's lr with the QueryRNN's directions) and ZO-LSTM-GuidedES (the UpdateRNN with
Guided-ES directions instead of the QueryRNN). All start from the same points with the same seed. Binary
classification compares the full-data loss of the final iterate (its per-step curve is a 64-sample minibatch loss).
"""
from __future__ import annotations

from typing import Any, Dict, List

from .compare import final, fmt, paired_lower
from ..evaluate import baseline_settings
from .core import claim
from .figures import curve_panel, panels, save, success_figure

TITLE = "Ablation: ZO-LSTM without its QueryRNN, without its UpdateRNN, with Guided ES"
PAPER = "Fig. 4 (a-c) and App. A.4"
OPTIMIZERS = ["zo-sgd", "zo-lstm", "zo-lstm-no-query", "zo-lstm-no-update", "zo-lstm-guided-es"]

SCALES = {
    "tiny": {"tasks": {"digits-attack": [2, 1], "binary": [2, 1]}, "steps": 8},
    "default": {"tasks": {"mnist-attack": [10, 1], "cifar-attack": [4, 1], "binary": [10, 3]}, "steps": None},
    "full": {"tasks": {"mnist-attack": [100, 10], "cifar-attack": [100, 10], "binary": [10, 10]}, "steps": None},
}


def run(ctx) -> Dict[str, Any]:
    p = ctx.params
    runs = []
    for task, (items, trials) in p["tasks"].items():
        lr, _, src = baseline_settings("zo-sgd", task)  # no-update is ZO-SGD with the QueryRNN: ZO-SGD's lr
        spec = {"task": task, "items": items, "trials": trials, "steps": p["steps"], "lr": lr}
        ctx.log(f"{task}: {items} item(s) x {trials} trial(s); ZO-SGD lr {lr} ({src}) for ZO-SGD and no-update")
        res = ctx.cached(task, spec, lambda: ctx.evaluate(
            task, OPTIMIZERS, items=items, trials=trials, steps=p["steps"], learned=task,
            optimizer_kwargs={"zo-lstm-no-update": {"lr": lr}}))
        runs.append({"task": task, "items": items, "trials": trials, "sgd_lr": lr, "sgd_lr_source": src,
                     "config": res["config"], "optimizers": res["optimizers"]})
    return {"runs": runs}


def _key(run) -> str:
    return "final_loss_full" if run["config"]["kind"] == "binary" else "final_loss"


def plot(data, out_dir) -> List[str]:
    runs = data["runs"]
    fig, axes = panels(len(runs))
    for ax, r in zip(axes, runs):
        ylabel = "minibatch loss" if r["config"]["kind"] == "binary" else "attack loss"
        curve_panel(ax, r["optimizers"], f"{r['task']}: {r['items']} item(s) x {r['trials']} trial(s)",
                    ylabel=ylabel, log_y=True)
    return [save(fig, out_dir, "fig4abc_ablation.png", "Fig. 4 (a-c): ablations")] + success_figure(
        runs, out_dir, "fig4abc_attack_success.png",
        lambda r: f"{r['task']}: {r['items']} item(s) x {r['trials']} trial(s), q={r['config']['q']}")


def table(data) -> str:
    rows = ["| task | " + " | ".join(OPTIMIZERS) + " |", "|---|" + "--:|" * len(OPTIMIZERS)]
    for r in data["runs"]:
        k = _key(r)
        rows.append(f"| {r['task']} ({k.replace('_', ' ')}) | "
                    + " | ".join(fmt(final(r["optimizers"][n], k)) for n in OPTIMIZERS) + " |")
    return "\n".join(rows)


def claims(data) -> List[Dict[str, str]]:
    out = []
    pairs = [
        ("zo-lstm", "zo-lstm-no-query", "the QueryRNN helps: ZO-LSTM ends lower than ZO-LSTM-no-query"),
        ("zo-lstm-no-update", "zo-sgd", "the QueryRNN helps ZO-SGD too: ZO-LSTM-no-update ends lower than ZO-SGD"),
        ("zo-lstm", "zo-lstm-guided-es", "learned directions beat Guided ES: ZO-LSTM ends lower than ZO-LSTM-GuidedES"),
        ("zo-lstm-no-query", "zo-sgd", "the UpdateRNN alone helps: ZO-LSTM-no-query ends lower than ZO-SGD"),
    ]
    for r in data["runs"]:
        k = _key(r)
        ents = r["optimizers"]
        for a, b, text in pairs:
            c = paired_lower(ents, a, b, k)
            out.append(claim(f"{r['task']}: {text}", c["measured"], c["verdict"]))
    return out
