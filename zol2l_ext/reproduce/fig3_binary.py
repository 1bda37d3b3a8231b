"""Fig. 3 (Sec. 4.2): stochastic ZO binary classification: loss vs iterations and the effect of q, b and d.

Synthetic binary classification (task "binary": d = 100, n = 2000 samples, minibatch b = 64, q = 20, 500 steps,
the 10 test datasets, seeds 90..99). (a) The minibatch loss per iteration of ZO-SGD, ZO-signSGD, ZO-ADAM (the
shipped tuned learning rates of task "binary"), ZO-LSTM (pretrained "binary") and ZO-LSTM-finetune (pretrained
"binary-finetune": the MNIST-attack optimizer transferred to binary classification with its UpdateRNN output
scaled by alpha = 3; its 25 finetuning updates did not beat the transferred weights on held-out data, so these
are the transferred weights, not finetuned ones). (b)-(d) For each q in ``q_values``, minibatch size b in
``b_values`` and dimension d in ``d_values`` (the other two at 20 / 64 / 100), ZO-SGD, ZO-signSGD, ZO-ADAM and
ZO-LSTM on variants of the task (``dataclasses.replace`` of its TaskSpec); the baselines reuse the learning rates
tuned at d = 100, q = 20, b = 64 (no retuning per variant; the coordinate step lr / d follows d), and ZO-LSTM
its pretrained "binary" weights. Every optimizer of a run starts from the same point with the same seed and
sees the same minibatches (`evaluate.evaluate_task`). The verdicts use the full-data loss (all n samples) of
the final iterate, mean over ``items`` datasets x ``trials`` trials.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

import numpy as np

from ..tasks import get_task
from .compare import fmt, lowest_final_claim
from .core import BASELINES, claim
from .figures import COLORS, curve_panel, panels, save

TITLE = "Synthetic binary classification: loss vs iterations, and the effect of q, b and d"
PAPER = "Fig. 3 (Sec. 4.2)"
OPTIMIZERS = BASELINES + ["zo-lstm"]
TASK = "binary"
#: sweep name -> TaskSpec field
FIELDS = {"q": "q", "b": "minibatch", "d": "dim"}
LABELS = {"q": "query directions q", "b": "minibatch size b", "d": "dimension d"}

SCALES = {
    "tiny": {"steps": 20, "items": 2, "trials": 2, "sweep_items": 2, "sweep_trials": 1,
             "q_values": [5, 20], "b_values": [16, 64], "d_values": [50, 100]},
    "default": {"steps": 500, "items": 10, "trials": 10, "sweep_items": 10, "sweep_trials": 5,
                "q_values": [5, 10, 20, 40], "b_values": [16, 32, 64, 128], "d_values": [50, 100, 150, 200]},
    "full": {"steps": 500, "items": 10, "trials": 10, "sweep_items": 10, "sweep_trials": 10,
             "q_values": [5, 10, 20, 40], "b_values": [16, 32, 64, 128], "d_values": [50, 100, 150, 200]},
}

#: what a sweep entry keeps of an optimizer's evaluation (the curves stay in parts/)
_KEEP = ("lr", "lr_source", "kwargs", "final_loss", "final_loss_std", "final_loss_full", "final_loss_full_std",
         "accuracy", "initial_loss_full", "wall_seconds", "failed_rows")


def _spec(q: int, b: int, d: int):
    base = get_task(TASK)
    if (q, b, d) == (base.q, base.minibatch, base.dim):
        return base
    return dataclasses.replace(base, name=f"{TASK}-q{q}-b{b}-d{d}", q=int(q), minibatch=int(b), dim=int(d))


def _evaluate(ctx, q: int, b: int, d: int, items: int, trials: int, optimizers: List[str], learned: str,
              tag: str = "") -> Dict[str, Any]:
    """One cached evaluation of ``optimizers`` on the binary task with q, b, d (tuning: task "binary")."""
    spec = {"q": q, "b": b, "d": d, "items": items, "trials": trials, "steps": ctx.params["steps"],
            "optimizers": optimizers, "learned": learned}
    key = f"{TASK}-q{q}-b{b}-d{d}-{items}x{trials}{tag}"

    def go():
        return ctx.evaluate(_spec(q, b, d), optimizers, items=items, trials=trials, steps=ctx.params["steps"],
                            learned=learned, tuned=TASK)

    return ctx.cached(key, spec, go)


def run(ctx) -> Dict[str, Any]:
    p = ctx.params
    base = get_task(TASK)
    b0 = {"q": base.q, "b": base.minibatch, "d": base.dim}
    ctx.log(f"(a) {p['items']} datasets x {p['trials']} trials, {p['steps']} steps")
    main = _evaluate(ctx, b0["q"], b0["b"], b0["d"], p["items"], p["trials"], OPTIMIZERS, "binary")
    ft = _evaluate(ctx, b0["q"], b0["b"], b0["d"], p["items"], p["trials"], ["zo-lstm"], "binary-finetune",
                   tag="-finetune")
    curves = {"config": main["config"], "optimizers": dict(main["optimizers"])}
    curves["optimizers"]["zo-lstm-finetune"] = ft["optimizers"]["zo-lstm"]
    curves["config"]["learned_finetune"] = ft["config"]["learned"]

    sweeps: Dict[str, Any] = {}
    for name in FIELDS:
        values = [int(v) for v in p[f"{name}_values"]]
        runs = {}
        for v in values:
            cfg = {**b0, name: v}
            ctx.log(f"({'bcd'[list(FIELDS).index(name)]}) {name} = {v}: {p['sweep_items']} datasets x "
                    f"{p['sweep_trials']} trials")
            res = _evaluate(ctx, cfg["q"], cfg["b"], cfg["d"], p["sweep_items"], p["sweep_trials"], OPTIMIZERS,
                            "binary")
            runs[str(v)] = {"config": {k: res["config"].get(k) for k in ("dim", "q", "minibatch", "items",
                                                                         "trials", "rows", "steps")},
                            "optimizers": {n: {**{k: e.get(k) for k in _KEEP},
                                               "initial_loss": e["loss_mean"][0]}
                                           for n, e in res["optimizers"].items()}}
        sweeps[name] = {"field": FIELDS[name], "values": values, "runs": runs}
    return {"base": b0, "curves": curves, "sweeps": sweeps,
            "lr_note": "baselines' lrs tuned on task binary (d=100, q=20, b=64), reused for every variant"}


def _series(sweep: Dict[str, Any], name: str, key: str = "final_loss_full") -> np.ndarray:
    return np.array([np.nan if sweep["runs"][str(v)]["optimizers"][name].get(key) is None
                     else sweep["runs"][str(v)]["optimizers"][name][key] for v in sweep["values"]], dtype=float)


def plot(data, out_dir) -> List[str]:
    fig, axes = panels(4, ncols=2)
    c = data["curves"]
    cfg = c["config"]
    curve_panel(axes[0], c["optimizers"], f"(a) d={cfg['dim']}, q={cfg['q']}, b={cfg['minibatch']}: "
                f"{cfg['items']} datasets x {cfg['trials']} trials", ylabel="minibatch loss", log_y=True)
    for ax, (name, sweep) in zip(axes[1:], data["sweeps"].items()):
        xs = np.array(sweep["values"], dtype=float)
        for opt in OPTIMIZERS:
            mean = _series(sweep, opt)
            std = np.nan_to_num(_series(sweep, opt, "final_loss_full_std"))
            ax.errorbar(xs, mean, yerr=std, marker="o", ms=4, capsize=3, lw=1.4, label=opt, color=COLORS.get(opt))
        any_run = next(iter(sweep["runs"].values()))["config"]
        ax.set_title(f"({'bcd'[list(FIELDS).index(name)]}) effect of {name} ({any_run['items']} datasets x "
                     f"{any_run['trials']} trials)", fontsize=9)
        ax.set_xlabel(LABELS[name])
        ax.set_ylabel("final full-data loss")
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return [save(fig, out_dir, "fig3_binary.png", "Fig. 3: binary classification")]


def _lr(e: Dict[str, Any]) -> str:
    lr = "-" if e.get("lr") is None else f"{e['lr']:g}"
    return f"{lr} ({e.get('lr_source')})"


def table(data) -> str:
    rows = ["| setting | optimizer | final full-data loss | accuracy | lr (source) |", "|---|---|--:|--:|---|"]
    for name, e in data["curves"]["optimizers"].items():
        rows.append(f"| (a) d=100, q=20, b=64 | {name} | {fmt(e.get('final_loss_full'))} ± "
                    f"{fmt(e.get('final_loss_full_std'), 2)} | {fmt(e.get('accuracy'))} | "
                    f"{_lr(e)} |")
    for name, sweep in data["sweeps"].items():
        for v in sweep["values"]:
            for opt, e in sweep["runs"][str(v)]["optimizers"].items():
                rows.append(f"| {name} = {v} | {opt} | {fmt(e.get('final_loss_full'))} ± "
                            f"{fmt(e.get('final_loss_full_std'), 2)} | {fmt(e.get('accuracy'))} | "
                            f"{_lr(e)} |")
    return "\n".join(rows)


def _monotone_claim(sweep: Dict[str, Any], decreasing: bool) -> Dict[str, str]:
    """Whether every optimizer's final full-data loss moves the same way as the swept value grows."""
    per, mono, ends = [], 0, 0
    for opt in OPTIMIZERS:
        s = _series(sweep, opt)
        d = np.diff(s)
        is_mono = bool(np.all(d <= 0) if decreasing else np.all(d >= 0)) and np.isfinite(s).all()
        end_ok = bool(s[-1] < s[0] if decreasing else s[-1] > s[0])
        mono += is_mono
        ends += end_ok
        per.append(f"{opt} " + " -> ".join(fmt(x, 3) for x in s))
    n = len(OPTIMIZERS)
    if len(sweep["values"]) < 2:
        verdict = "not tested"
    elif mono == n:
        verdict = "supported"
    elif ends > 0:
        verdict = "partly"
    else:
        verdict = "not supported"
    word = "decreases" if decreasing else "increases"
    return {"verdict": verdict,
            "measured": f"final full-data loss over {sweep['values']}: " + "; ".join(per)
                        + f" ({word} monotonically for {mono}/{n}, {'lower' if decreasing else 'higher'} at the "
                          f"largest value than at the smallest for {ends}/{n})"}


def claims(data) -> List[Dict[str, str]]:
    out = []
    ents = data["curves"]["optimizers"]
    cfg = data["curves"]["config"]
    what = f"(a) d={cfg['dim']}, q={cfg['q']}, b={cfg['minibatch']}, {cfg['items']} datasets x {cfg['trials']} trials"
    c = lowest_final_claim(ents, "zo-lstm", BASELINES, key="final_loss_full")
    out.append(claim(f"{what}: ZO-LSTM converges faster and to a lower loss than ZO-SGD, ZO-signSGD and ZO-ADAM "
                     "(curves: minibatch loss; final: full-data loss)", c["measured"], c["verdict"]))
    if "zo-lstm-finetune" in ents:
        c = lowest_final_claim(ents, "zo-lstm-finetune", BASELINES, key="final_loss_full")
        out.append(claim(f"{what}: ZO-LSTM-finetune (the MNIST-attack optimizer transferred with alpha = 3) also "
                         "converges faster and to a lower loss than the hand-designed ZO optimizers",
                         c["measured"], c["verdict"]))
    for name, sweep in data["sweeps"].items():
        wins, parts = 0, []
        for v in sweep["values"]:
            o = sweep["runs"][str(v)]["optimizers"]
            vals = {n: o[n].get("final_loss_full") for n in OPTIMIZERS}
            best_base = min((vals[n] for n in BASELINES if vals[n] is not None), default=None)
            win = vals["zo-lstm"] is not None and best_base is not None and vals["zo-lstm"] < best_base
            wins += win
            parts.append(f"{name}={v}: zo-lstm {fmt(vals['zo-lstm'])} vs best baseline {fmt(best_base)}"
                         f"{' (lowest)' if win else ''}")
        n = len(sweep["values"])
        verdict = "supported" if wins == n else ("partly" if wins else "not supported")
        letter = "bcd"[list(FIELDS).index(name)]
        out.append(claim(f"({letter}) ZO-LSTM outperforms ZO-SGD, ZO-signSGD and ZO-ADAM at every {LABELS[name]} "
                         "(final full-data loss; baselines' lrs tuned at d=100, q=20, b=64)",
                         f"ZO-LSTM lowest at {wins}/{n}: " + "; ".join(parts), verdict))
        if name == "q":
            c = _monotone_claim(sweep, decreasing=True)
            out.append(claim("(b) more query directions q lower the final loss of every optimizer",
                             c["measured"], c["verdict"]))
        if name == "d":
            c = _monotone_claim(sweep, decreasing=False)
            out.append(claim("(d) a larger dimension d makes the problem harder: every optimizer's final loss "
                             "grows with d", c["measured"], c["verdict"]))
    return out
