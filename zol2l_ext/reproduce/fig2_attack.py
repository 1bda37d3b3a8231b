"""Fig. 2 and App. A.3: black-box attack loss vs iterations, on one test image and averaged over test images.

Per task (MNIST, CIFAR-10): ZO-SGD, ZO-signSGD, ZO-ADAM (tuned learning rates where the task has a shipped
tuning), ZO-LSTM (the task's pretrained weights) and, where given, ZO-LSTM-finetune (weights trained on MNIST and
transferred/finetuned). "single": the first test image (test position 0 of the task's split), ``single_trials``
trials; "average": the first ``items`` test images, ``trials`` trials each. Every optimizer starts from the same
point with the same seed (`evaluate.evaluate_task`).
"""
from __future__ import annotations

from typing import Any, Dict, List

from .compare import fmt, lowest_final_claim, paired_lower
from .core import BASELINES, claim
from .figures import curve_panel, panels, save, success_figure

TITLE = "Black-box attack loss vs iterations (MNIST, CIFAR-10)"
PAPER = "Fig. 2 and App. A.3"

_MNIST = {"task": "mnist-attack", "learned": "mnist-attack", "finetune": None}
_CIFAR = {"task": "cifar-attack", "learned": "cifar-attack", "finetune": "cifar-attack-finetune"}
SCALES = {
    "tiny": {"tasks": [{"task": "digits-attack", "learned": "digits-attack", "finetune": "mnist-attack"}],
             "steps": 8, "single_trials": 2, "items": 2, "trials": 1},
    "default": {"tasks": [_MNIST, _CIFAR], "steps": 200, "single_trials": 3, "items": 10, "trials": 1,
                "cifar_items": 5},
    "full": {"tasks": [_MNIST, _CIFAR], "steps": 200, "single_trials": 10, "items": 100, "trials": 10,
             "cifar_items": 100},
}


def _run_task(ctx, t: Dict[str, Any], which: str, items: int, trials: int) -> Dict[str, Any]:
    p = ctx.params
    spec = {"task": t, "which": which, "items": items, "trials": trials, "steps": p["steps"]}

    def go():
        res = ctx.evaluate(t["task"], BASELINES + ["zo-lstm"], items=items, trials=trials, steps=p["steps"],
                           learned=t["learned"])
        if t.get("finetune"):
            ft = ctx.evaluate(t["task"], ["zo-lstm"], items=items, trials=trials, steps=p["steps"],
                              learned=t["finetune"], rename={"zo-lstm": "zo-lstm-finetune"})
            res["optimizers"].update(ft["optimizers"])
            res["config"]["learned_finetune"] = ft["config"]["learned"]
        return res

    return ctx.cached(f"{t['task']}-{which}", spec, go)


def run(ctx) -> Dict[str, Any]:
    p = ctx.params
    out: Dict[str, Any] = {"runs": []}
    for t in p["tasks"]:
        items = p.get("cifar_items", p["items"]) if t["task"].startswith("cifar") else p["items"]
        for which, n, tr in (("single", 1, p["single_trials"]), ("average", items, p["trials"])):
            ctx.log(f"{t['task']} {which}: {n} image(s) x {tr} trial(s), {p['steps']} steps")
            res = _run_task(ctx, t, which, n, tr)
            out["runs"].append({"task": t["task"], "which": which, "items": n, "trials": tr,
                                "config": res["config"], "optimizers": res["optimizers"]})
    return out


def _what(r) -> str:
    return f"{r['task']}: {'test image 0' if r['which'] == 'single' else str(r['items']) + ' test images'} x " \
           f"{r['trials']} trial(s)"


def plot(data, out_dir) -> List[str]:
    runs = data["runs"]
    fig, axes = panels(len(runs), ncols=2)
    for ax, r in zip(axes, runs):
        band = "trials" if r["trials"] > 1 else "images"
        curve_panel(ax, r["optimizers"], f"{_what(r)}; band: std over {band}", ylabel="attack loss", log_y=True)
    paths = [save(fig, out_dir, "fig2_attack_loss.png", "Fig. 2: attack loss vs iterations")]
    return paths + success_figure(runs, out_dir, "fig2_attack_success.png",
                                  lambda r: f"{_what(r)}, q={r['config']['q']}")


def table(data) -> str:
    rows = ["| task | set | optimizer | final loss | success | mean queries to first success |",
            "|---|---|---|--:|--:|--:|"]
    for r in data["runs"]:
        for name, e in r["optimizers"].items():
            succ = e.get("success_rate")
            rows.append(f"| {r['task']} | {r['which']} ({r['items']} x {r['trials']}) | {name} | "
                        f"{fmt(e.get('final_loss'))} | {'n/a' if succ is None else f'{100 * succ:.0f}%'} | "
                        f"{fmt(e.get('mean_queries_to_success'), 5)} |")
    return "\n".join(rows)


def claims(data) -> List[Dict[str, str]]:
    out = []
    for r in data["runs"]:
        ents = r["optimizers"]
        what = f"{r['task']}, {r['which']} ({r['items']} image(s) x {r['trials']} trial(s))"
        c = lowest_final_claim(ents, "zo-lstm", BASELINES)
        out.append(claim(f"{what}: ZO-LSTM converges faster and to a lower loss than ZO-SGD, ZO-signSGD and "
                         "ZO-ADAM", c["measured"], c["verdict"]))
        if "zo-lstm-finetune" in ents:
            c = paired_lower(ents, "zo-lstm-finetune", "zo-lstm")
            out.append(claim(f"{what}: ZO-LSTM-finetune (from MNIST) ends lower than ZO-LSTM trained from scratch",
                             c["measured"], c["verdict"]))
    return out
