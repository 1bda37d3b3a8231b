"""Table 1 and App. A.2: adversarial examples and predicted labels along the optimization on an MNIST test image.

ZO-SGD, ZO-signSGD and ZO-ADAM (the task's tuned learning rates) and ZO-LSTM (the task's pretrained weights)
attack the first ``stat_images`` test images of the task (one trial, the same initial point, the clean image,
and the same seed for every optimizer; ``steps`` steps, q of the task, no early stop). The first ``images`` of
them are shown: the adversarial image x(theta_k) and the model's predicted label at each iteration k of
``iterations`` (the paper's 0, 25, 48, 62, 75, 100, 116, 150; iteration k is the iterate after k steps), with the
attack loss and the L1 / L2 distances to the clean image there. Per optimizer and image: the first shown iteration
with a changed label, the exact first iteration (the label is read after every step) and the distortion of that
first adversarial example. The claims are judged on each shown image and, as a check of how far one image
generalizes, on the means over all ``stat_images`` images (an image whose label never changes counts as ``steps``).
"""
from __future__ import annotations

import base64
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..attack import build_optimizer
from ..evaluate import baseline_settings, resolve_learned
from ..tasks import get_task, load_task, make_problem
from ..zo.runner import minimize
from .compare import fmt
from .core import BASELINES, claim
from .figures import plt, save

TITLE = "Adversarial examples and predicted labels along the attack (MNIST)"
PAPER = "Table 1 and App. A.2"
OPTIMIZERS = BASELINES + ["zo-lstm"]
PAPER_ITERATIONS = [0, 25, 48, 62, 75, 100, 116, 150]

SCALES = {
    "tiny": {"task": "digits-attack", "learned": "digits-attack", "images": 1, "stat_images": 3,
             "iterations": [0, 5, 10, 15, 20, 30], "steps": 30},
    "default": {"task": "mnist-attack", "learned": "mnist-attack", "images": 1, "stat_images": 20,
                "iterations": PAPER_ITERATIONS, "steps": 200},
    "full": {"task": "mnist-attack", "learned": "mnist-attack", "images": 1, "stat_images": 100,
             "iterations": PAPER_ITERATIONS, "steps": 200},
}


def _u8(x: torch.Tensor) -> str:
    """Images in [0, 1] as base64 of their uint8 quantisation (compact enough for result.json)."""
    a = (x.detach().double().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return base64.b64encode(a.tobytes()).decode("ascii")


def _from_u8(s: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.uint8).reshape(shape).astype(float) / 255.0


def _attack(ctx, td, name: str, learned) -> Dict[str, Any]:
    """One optimizer on all rows: labels, loss, L1, L2 (and images of the shown rows) at the shown iterations;
    the exact first changed label and the distortion there."""
    p = ctx.params
    spec = td.spec
    n_stat = int(p["stat_images"])
    shown = int(p["images"])
    iters = sorted(int(k) for k in p["iterations"])
    problem = make_problem(td, list(range(n_stat)), repeat=1, device=ctx.device)
    lr, kw, src = baseline_settings(name, spec.name)
    opt = build_optimizer(name, spec.q, spec.mu, lr, learned=learned, **kw)
    theta0 = problem.initial_point()
    labels = problem.labels
    theta_now = theta0.clone()
    first = torch.full((n_stat,), -1, dtype=torch.int64, device=theta0.device)
    first_l1 = torch.full((n_stat,), float("nan"), dtype=torch.float64, device=theta0.device)
    first_l2 = first_l1.clone()
    snaps: Dict[int, Dict[str, Any]] = {}

    def record(k: int) -> None:
        pred = problem.predict(theta_now)
        l1, l2 = problem.distortion(theta_now)
        new = (pred != labels) & (first < 0)
        first.masked_fill_(new, k)
        first_l1.copy_(torch.where(new, l1.double(), first_l1))
        first_l2.copy_(torch.where(new, l2.double(), first_l2))
        if k in iters:
            with torch.no_grad():
                loss = problem(theta_now.unsqueeze(1)).squeeze(1)
            snaps[k] = {"pred": pred.cpu(), "loss": loss.double().cpu(), "l1": l1.double().cpu(),
                        "l2": l2.double().cpu(), "x": problem.adversarial_images(theta_now)[:shown].cpu()}

    def callback(info) -> None:
        theta_now.index_copy_(0, info.active, info.theta.detach())
        record(info.step + 1)

    record(0)
    res = minimize(opt, problem, p["steps"], theta0=theta0.clone(), seed=ctx.seed, progress=ctx.progress,
                   callback=callback, desc=name)
    runner_first = res.first_success_step.to(torch.int64)
    first_c = first.cpu()
    rows = []
    for i in range(n_stat):
        seen = [k for k in iters if k in snaps and int(snaps[k]["pred"][i]) != int(labels[i])]
        fi = int(first_c[i])
        row = {"image": i, "label": int(labels[i]), "first_change": fi if fi >= 0 else None,
               "first_change_shown": seen[0] if seen else None,
               "first_l1": None if fi < 0 else float(first_l1[i]), "first_l2": None if fi < 0 else float(first_l2[i]),
               "runner_first_success": int(runner_first[i])}
        if i < shown:
            row["at"] = {str(k): {"pred": int(s["pred"][i]), "loss": float(s["loss"][i]), "l1": float(s["l1"][i]),
                                  "l2": float(s["l2"][i])} for k, s in sorted(snaps.items())}
            row["images_u8"] = _u8(torch.stack([snaps[k]["x"][i] for k in sorted(snaps)]))
        else:
            last = max(snaps)
            row["at"] = {str(last): {"pred": int(snaps[last]["pred"][i]), "loss": float(snaps[last]["loss"][i]),
                                     "l1": float(snaps[last]["l1"][i]), "l2": float(snaps[last]["l2"][i])}}
        rows.append(row)
    return {"lr": lr, "lr_source": src, "kwargs": {k: v for k, v in kw.items() if isinstance(v, (int, float))},
            "rows": rows}


def run(ctx) -> Dict[str, Any]:
    p = ctx.params
    spec = get_task(p["task"])
    if not 1 <= int(p["images"]) <= int(p["stat_images"]):
        raise ValueError(f"table1: need 1 <= images ({p['images']}) <= stat_images ({p['stat_images']})")
    iters = sorted(int(k) for k in p["iterations"])
    if iters[0] < 0 or iters[-1] > int(p["steps"]):
        raise ValueError(f"table1: iterations must lie in [0, steps={p['steps']}], got {iters}")
    learned, learned_desc = resolve_learned(p["learned"], spec.name)
    td = load_task(spec, "test", data_root=ctx.data_root, device=ctx.device)
    ctx.log(f"{spec.name}: {p['stat_images']} test image(s) ({p['images']} shown), {p['steps']} steps, q {spec.q}; "
            f"shown iterations {iters}")
    out: Dict[str, Any] = {"task": spec.name, "learned": learned_desc, "iterations": iters, "steps": p["steps"],
                           "image_shape": list(td.images.shape[1:]), "optimizers": {}}
    for name in OPTIMIZERS:
        key = {"task": spec.name, "learned": str(p["learned"]), "opt": name, "stat_images": p["stat_images"],
               "images": p["images"], "iterations": iters, "steps": p["steps"]}
        out["optimizers"][name] = ctx.cached(f"{spec.name}-{name}", key, lambda n=name: _attack(ctx, td, n, learned))
        e = out["optimizers"][name]
        ctx.log(f"{name} (lr {e['lr']}, {e['lr_source']}): first changed label of shown image(s) "
                + ", ".join(str(r["first_change"]) for r in e["rows"][:p["images"]]))
    out["table"] = _table_rows(out, int(p["images"]))
    return out


def _table_rows(data, shown: int) -> List[Dict[str, Any]]:
    """The JSON table: per shown image, optimizer and iteration the predicted label, loss, L1 and L2."""
    rows = []
    for name, e in data["optimizers"].items():
        for r in e["rows"][:shown]:
            for k, a in r["at"].items():
                rows.append({"image": r["image"], "label": r["label"], "optimizer": name, "iteration": int(k),
                             "pred": a["pred"], "changed": a["pred"] != r["label"], "loss": round(a["loss"], 6),
                             "l1": round(a["l1"], 6), "l2": round(a["l2"], 6)})
    return rows


# ------------------------------------------------------------------------------------------------ report
def _shown(data) -> int:
    return sum(1 for r in next(iter(data["optimizers"].values()))["rows"] if "images_u8" in r)


def plot(data, out_dir) -> List[str]:
    iters = data["iterations"]
    shape = [len(iters)] + data["image_shape"]
    paths = []
    for i in range(_shown(data)):
        names = list(data["optimizers"])
        fig, axes = plt.subplots(len(names), len(iters), figsize=(1.3 * len(iters) + 1.0, 1.75 * len(names) + 0.6),
                                 dpi=110, squeeze=False)
        for r, name in enumerate(names):
            row = data["optimizers"][name]["rows"][i]
            imgs = _from_u8(row["images_u8"], shape)
            for c, k in enumerate(iters):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                img = imgs[c]
                if img.shape[0] == 1:
                    ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                else:
                    ax.imshow(np.transpose(img, (1, 2, 0)), vmin=0, vmax=1, interpolation="nearest")
                a = row["at"][str(k)]
                changed = a["pred"] != row["label"]
                ax.set_title(f"pred {a['pred']}", fontsize=8, color="green" if changed else "black",
                             fontweight="bold" if changed else "normal")
                ax.set_xlabel(f"L1 {a['l1']:.1f}", fontsize=6)
                if r == 0:
                    ax.annotate(f"iteration {k}", xy=(0.5, 1.0), xycoords="axes fraction", xytext=(0, 16),
                                textcoords="offset points", ha="center", fontsize=8, fontweight="bold")
                if c == 0:
                    ax.set_ylabel(name, fontsize=8)
        paths.append(save(fig, out_dir, f"table1_examples_{i}.png",
                          f"Table 1: {data['task']} test image {i} (label {row['label']}); green: label changed"))
    return paths


def table(data) -> str:
    iters = data["iterations"]
    out = []
    for i in range(_shown(data)):
        lab = data["optimizers"][OPTIMIZERS[0]]["rows"][i]["label"]
        out += [f"Test image {i} (true label {lab}): predicted label (L1 distortion) at each iteration; **bold**: "
                "changed label", "",
                "| optimizer | " + " | ".join(f"iter {k}" for k in iters) + " | first change (exact) | L1 / L2 there |",
                "|---|" + "--:|" * (len(iters) + 2)]
        for name, e in data["optimizers"].items():
            r = e["rows"][i]
            cells = []
            for k in iters:
                a = r["at"][str(k)]
                lbl = f"**{a['pred']}**" if a["pred"] != r["label"] else str(a["pred"])
                cells.append(f"{lbl} ({a['l1']:.1f})")
            fc = "none" if r["first_change"] is None else str(r["first_change"])
            dist = "-" if r["first_l1"] is None else f"{r['first_l1']:.2f} / {r['first_l2']:.3f}"
            out.append(f"| {name} | " + " | ".join(cells) + f" | {fc} | {dist} |")
        out.append("")
    out += [_aggregate_table(data)]
    return "\n".join(out)


def _aggregate(data) -> Dict[str, Dict[str, Any]]:
    """Per optimizer over all stat images: success, mean exact first change (no change = steps), mean L1 / L2 of
    the first adversarial example (over the images where it exists)."""
    steps = data["steps"]
    out = {}
    for name, e in data["optimizers"].items():
        fc = np.array([steps if r["first_change"] is None else r["first_change"] for r in e["rows"]], dtype=float)
        ok = np.array([r["first_change"] is not None for r in e["rows"]])
        l1 = np.array([r["first_l1"] for r in e["rows"] if r["first_l1"] is not None], dtype=float)
        l2 = np.array([r["first_l2"] for r in e["rows"] if r["first_l2"] is not None], dtype=float)
        out[name] = {"images": len(e["rows"]), "success": float(ok.mean()), "mean_first_change": float(fc.mean()),
                     "first_change": fc, "ok": ok,
                     "mean_first_l1": float(l1.mean()) if l1.size else None,
                     "mean_first_l2": float(l2.mean()) if l2.size else None}
    return out


def _aggregate_table(data) -> str:
    agg = _aggregate(data)
    n = next(iter(agg.values()))["images"]
    rows = [f"Over the first {n} test images (no change within {data['steps']} steps counts as {data['steps']}):", "",
            "| optimizer | label changed | mean first change (exact) | mean L1 / L2 of the first adversarial example |",
            "|---|--:|--:|--:|"]
    for name, a in agg.items():
        rows.append(f"| {name} | {100 * a['success']:.0f}% | {a['mean_first_change']:.1f} | "
                    f"{fmt(a['mean_first_l1'])} / {fmt(a['mean_first_l2'])} |")
    return "\n".join(rows)


def _earliest_verdict(mine: float, others: List[float], mine_shown: Optional[float] = None,
                      others_shown: Optional[List[float]] = None) -> str:
    best = min(others)
    if mine < best:
        return "supported"
    if mine == best or (mine_shown is not None and others_shown and mine_shown <= min(others_shown)):
        return "partly"
    return "not supported"


def _distortion_verdict(mine, others) -> str:
    """mine / others: (l1, l2) of the first adversarial example, None where the label never changed."""
    if mine is None:
        return "not supported"
    others = [o for o in others if o is not None]
    if not others:
        return "not tested"
    lower = [mine[j] < min(o[j] for o in others) for j in (0, 1)]
    return "supported" if all(lower) else ("partly" if any(lower) else "not supported")


def _or_none(v) -> str:
    return "none" if v is None else str(v)


def claims(data) -> List[Dict[str, str]]:
    steps = data["steps"]
    out = []
    opts = data["optimizers"]
    for i in range(_shown(data)):
        rows = {n: opts[n]["rows"][i] for n in OPTIMIZERS}

        def val(r, key):
            return steps + 1 if r[key] is None else r[key]  # no change: after every shown column

        desc = "; ".join(f"{n}: first shown {_or_none(rows[n]['first_change_shown'])}, exact "
                         f"{_or_none(rows[n]['first_change'])}" for n in OPTIMIZERS)
        if all(rows[n]["first_change"] is None for n in OPTIMIZERS):
            verdict = "not tested"  # no optimizer changed the label within the steps
        else:
            verdict = _earliest_verdict(val(rows["zo-lstm"], "first_change"),
                                        [val(rows[n], "first_change") for n in BASELINES],
                                        val(rows["zo-lstm"], "first_change_shown"),
                                        [val(rows[n], "first_change_shown") for n in BASELINES])
        out.append(claim(f"Test image {i}: ZO-LSTM changes the predicted label at an earlier iteration than ZO-SGD, "
                         "ZO-signSGD and ZO-ADAM", desc, verdict))
        dist = {n: None if rows[n]["first_l1"] is None else (rows[n]["first_l1"], rows[n]["first_l2"])
                for n in OPTIMIZERS}
        verdict = _distortion_verdict(dist["zo-lstm"], [dist[n] for n in BASELINES])
        out.append(claim(f"Test image {i}: ZO-LSTM's adversarial example is less visibly perturbed",
                         "L1 / L2 of each optimizer's first adversarial example: "
                         + "; ".join(f"{n} " + ("none" if dist[n] is None else f"{dist[n][0]:.2f} / {dist[n][1]:.3f}")
                                     for n in OPTIMIZERS), verdict))
    agg = _aggregate(data)
    n = agg["zo-lstm"]["images"]
    if n > 1:
        mine = agg["zo-lstm"]["mean_first_change"]
        verdict = ("not tested" if not any(agg[o]["ok"].any() for o in OPTIMIZERS)
                   else _earliest_verdict(mine, [agg[o]["mean_first_change"] for o in BASELINES]))
        earlier = {o: float(np.mean(agg["zo-lstm"]["first_change"] < agg[o]["first_change"])) for o in BASELINES}
        out.append(claim(f"Over the first {n} test images: ZO-LSTM changes the label at an earlier iteration",
                         "mean exact first change (none = " f"{steps}): "
                         + ", ".join(f"{o} {agg[o]['mean_first_change']:.1f}" for o in OPTIMIZERS)
                         + "; ZO-LSTM strictly earlier than " + ", ".join(f"{o} on {100 * v:.0f}%"
                                                                           for o, v in earlier.items())
                         + " of the images", verdict))
        dist = {o: None if agg[o]["mean_first_l1"] is None else (agg[o]["mean_first_l1"], agg[o]["mean_first_l2"])
                for o in OPTIMIZERS}
        verdict = _distortion_verdict(dist["zo-lstm"], [dist[o] for o in BASELINES])
        out.append(claim(f"Over the first {n} test images: ZO-LSTM's first adversarial examples are less perturbed",
                         "mean L1 / L2 of the first adversarial example (over the images where the label changed): "
                         + "; ".join(f"{o} {fmt(agg[o]['mean_first_l1'])} / {fmt(agg[o]['mean_first_l2'])}"
                                     for o in OPTIMIZERS), verdict))
    return out
