"""Fig. 8 and App. C.1: iterations to the first successful attack vs the dimension of the optimized variable.

The MNIST attack with its perturbation optimized at a lower resolution h x w in {28x28, 21x28, 14x28, 14x14,
7x14, 7x7} (d = h * w): the variable is a low-resolution offset delta, upsampled bilinearly (``F.interpolate``,
align_corners=False) to 28 x 28 before the black box and added in the task's space (`zo.problems.AttackProblem`
with ``upsample_from`` and ``space``): pixel x = clamp(x0 + up(delta), 0, 1), tanh w = w0 + up(delta) and
x = (tanh(w) + 1) / 2; so delta = 0, the initial point, is the clean image at every d. ZO-SGD (the task's tuned
lr, of the same space) and ZO-LSTM-no-update (the pretrained QueryRNN of the task's ZO-LSTM with the ZO-SGD
update at the same lr; coordinate step lr / d for both) attack the first ``items`` test images, ``trials``
trials each, from the same point with the same seed; every row stops at its first success (at most ``steps``
steps, q of the task). Per d and optimizer: the success rate and the mean iterations to first success, over all
rows with an unsuccessful row counted as ``steps`` (the primary number) and over the successful rows only. The tiny scale runs the 8 x 8 digits attack at 8x8, 4x8 and 4x4.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

from ..attack import build_optimizer
from ..evaluate import baseline_settings
from ..evaluate import resolve_learned
from ..tasks import get_task, load_task
from ..zo.problems import AttackProblem
from ..zo.runner import minimize
from .compare import fmt
from .core import claim
from .figures import COLORS, panels, save

TITLE = "Iterations to first success vs the optimized dimension (attack at lower resolutions)"
PAPER = "Fig. 8 and App. C.1"
OPTIMIZERS = ["zo-sgd", "zo-lstm-no-update"]

_MNIST_RES = [[28, 28], [21, 28], [14, 28], [14, 14], [7, 14], [7, 7]]
SCALES = {
    "tiny": {"task": "digits-attack", "learned": "digits-attack", "resolutions": [[8, 8], [4, 8], [4, 4]],
             "items": 4, "trials": 1, "steps": 40, "lr": None},
    "default": {"task": "mnist-attack", "learned": "mnist-attack", "resolutions": _MNIST_RES, "items": 100,
                "trials": 1, "steps": 200, "lr": None},
    "full": {"task": "mnist-attack", "learned": "mnist-attack", "resolutions": _MNIST_RES, "items": 100,
             "trials": 10, "steps": 200, "lr": None},
}


def build_problem(td, rows: int, trials: int, resolution, device) -> Any:
    """The attack of the first ``rows`` items of ``td`` (``trials`` copies, trial-major) with its variable at
    ``resolution`` (h, w), upsampled to the image size (None or the image size: the full-resolution problem)."""
    spec = td.spec
    images = td.images[:rows].to(device).repeat(trials, 1, 1, 1)
    labels = td.labels[:rows].to(device).repeat(trials)
    H, W = images.shape[-2:]
    up = None if resolution is None or tuple(resolution) == (H, W) else tuple(int(v) for v in resolution)
    chunk = 16384 if torch.device(device).type == "cuda" else 4096
    return AttackProblem(td.model.to(device), images, labels, c=spec.c, output=td.output, chunk_size=chunk,
                         upsample_from=up, space=spec.space)


def _one(ctx, td, resolution, name: str, lr: float, learned) -> Dict[str, Any]:
    """One optimizer at one resolution: per-row iterations to first success (-1: none within the steps)."""
    p = ctx.params
    spec = td.spec
    problem = build_problem(td, p["items"], p["trials"], resolution, ctx.device)
    opt = build_optimizer(name, spec.q, spec.mu, lr, learned=learned)
    theta0 = problem.initial_point()
    with torch.no_grad():
        f_init = problem(theta0.unsqueeze(1)).squeeze(1).double().cpu()
    res = minimize(opt, problem, p["steps"], theta0=theta0, seed=ctx.seed, progress=ctx.progress,
                   stop_at_success=True, desc=f"{name} {resolution[0]}x{resolution[1]}")
    first = res.first_success_step.to(torch.int64).cpu()
    ok = first >= 0
    censored = torch.where(ok, first, torch.full_like(first, p["steps"])).double()
    R = int(first.numel())
    return {
        "dim": int(problem.dim), "rows": R, "lr": lr,
        "first_success_step": [int(v) for v in first],
        "success_rate": float(ok.double().mean()),
        "mean_iterations": float(censored.mean()),
        "sem_iterations": float(censored.std(unbiased=True) / np.sqrt(R)) if R > 1 else 0.0,
        "mean_iterations_successful": float(first[ok].double().mean()) if ok.any() else None,
        "initial_loss": float(f_init.mean()),
    }


def run(ctx) -> Dict[str, Any]:
    p = ctx.params
    spec = get_task(p["task"])
    if p.get("lr") is not None:
        lr, src = float(p["lr"]), "parameter lr"
    else:
        lr, _, src = baseline_settings("zo-sgd", spec)
    learned, learned_desc = resolve_learned(p["learned"], spec.name)
    td = load_task(spec, "test", data_root=ctx.data_root, device=ctx.device)
    ctx.log(f"{spec.name}: {p['items']} image(s) x {p['trials']} trial(s), up to {p['steps']} steps, q {spec.q}; "
            f"lr {lr} ({src}) for both optimizers; QueryRNN of {learned_desc}")
    out: Dict[str, Any] = {"task": spec.name, "space": spec.space, "q": spec.q, "mu": spec.mu, "steps": p["steps"],
                           "lr": lr, "lr_source": src, "learned": learned_desc,
                           "image_shape": list(td.images.shape[1:]), "resolutions": []}
    for resolution in p["resolutions"]:
        h, w = int(resolution[0]), int(resolution[1])
        entry = {"resolution": [h, w], "optimizers": {}}
        for name in OPTIMIZERS:
            spec_key = {"task": spec.name, "space": spec.space, "learned": str(p["learned"]), "res": [h, w],
                        "opt": name, "lr": lr, "items": p["items"], "trials": p["trials"], "steps": p["steps"]}
            entry["optimizers"][name] = ctx.cached(f"{spec.name}-{h}x{w}-{name}", spec_key,
                                                   lambda n=name: _one(ctx, td, (h, w), n, lr, learned))
        entry["dim"] = entry["optimizers"][OPTIMIZERS[0]]["dim"]
        it = {n: e["mean_iterations"] for n, e in entry["optimizers"].items()}
        ctx.log(f"{h}x{w} (d={entry['dim']}): mean iterations to first success "
                + ", ".join(f"{n} {v:.2f}" for n, v in it.items()))
        out["resolutions"].append(entry)
    out["resolutions"].sort(key=lambda e: -e["dim"])
    return out


# ------------------------------------------------------------------------------------------------ report
def _series(data, name: str, key: str = "mean_iterations"):
    dims = np.array([e["dim"] for e in data["resolutions"]], dtype=float)
    vals = np.array([np.nan if e["optimizers"][name].get(key) is None else e["optimizers"][name][key]
                     for e in data["resolutions"]], dtype=float)
    return dims, vals


def _label(e) -> str:
    return f"{e['resolution'][0]}x{e['resolution'][1]}\n(d={e['dim']})"


def plot(data, out_dir) -> List[str]:
    fig, (ax1, ax2) = panels(2, ncols=2, size=(5.4, 3.8))
    for name in OPTIMIZERS:
        dims, it = _series(data, name)
        _, sem = _series(data, name, "sem_iterations")
        _, sr = _series(data, name, "success_rate")
        ax1.errorbar(dims, it, yerr=sem, marker="o", capsize=3, lw=1.4, label=name, color=COLORS.get(name))
        ax2.plot(dims, 100 * sr, marker="o", lw=1.4, label=name, color=COLORS.get(name))
    rows = data["resolutions"][0]["optimizers"][OPTIMIZERS[0]]["rows"]
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xticks([e["dim"] for e in data["resolutions"]])
        ax.set_xticklabels([_label(e) for e in data["resolutions"]], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("optimized resolution (dimension d)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_ylabel("iterations to first success")
    ax1.set_title(f"{data['task']}: mean over {rows} rows (failures count as the budget; bars: s.e.m.)", fontsize=8)
    ax2.set_ylabel("success rate (%)")
    ax2.set_title(f"{data['task']}: success within the budget", fontsize=8)
    return [save(fig, out_dir, "fig8_dimension.png", "Fig. 8: iterations to first success vs dimension")]


def table(data) -> str:
    rows = ["| resolution | d | optimizer | mean iterations to first success (failures = budget) ± s.e.m. | "
            "mean over successes | success | paired gap ZO-SGD minus ZO-LSTM-no-update |",
            "|---|--:|---|--:|--:|--:|--:|"]
    for e in data["resolutions"]:
        g, s = paired_gap(e, data["steps"])
        for j, (name, o) in enumerate(e["optimizers"].items()):
            rows.append(f"| {e['resolution'][0]}x{e['resolution'][1]} | {e['dim']} | {name} | "
                        f"{fmt(o['mean_iterations'])} ± {fmt(o['sem_iterations'], 2)} | "
                        f"{fmt(o['mean_iterations_successful'])} | {100 * o['success_rate']:.0f}% | "
                        + (f"{fmt(g, 3)} ± {fmt(s, 2)} |" if j == 0 else " |"))
    return "\n".join(rows)


def _spearman(x: np.ndarray, y: np.ndarray):
    """Spearman's rank correlation (average ranks for ties); None when undefined."""
    def ranks(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v), dtype=float)
        r[order] = np.arange(len(v), dtype=float)
        for u in np.unique(v):  # average the ranks of ties
            m = v == u
            r[m] = r[m].mean()
        return r

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return None
    rx, ry = ranks(x[ok]), ranks(y[ok])
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def paired_gap(entry, steps: int):
    """(mean, standard error) over rows of ZO-SGD's minus ZO-LSTM-no-update's iterations to first success (an
    unsuccessful row counts as ``steps``): the rows are paired (same image, same initial point and seed)."""
    def censored(name):
        v = np.array(entry["optimizers"][name]["first_success_step"], dtype=float)
        return np.where(v < 0, float(steps), v)

    diff = censored(OPTIMIZERS[0]) - censored(OPTIMIZERS[1])
    sem = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
    return float(diff.mean()), sem


def claims(data) -> List[Dict[str, str]]:
    steps = data["steps"]
    dims = np.array([e["dim"] for e in data["resolutions"]], dtype=float)
    gaps = [paired_gap(e, steps) for e in data["resolutions"]]
    gap = np.array([g for g, _ in gaps])
    sem = np.array([s for _, s in gaps])
    n = len(dims)
    labels = [f"{e['resolution'][0]}x{e['resolution'][1]}" for e in data["resolutions"]]
    out = []

    # a difference counts where it exceeds twice its paired standard error
    fewer, more = gap > 2 * sem, gap < -2 * sem
    pairs = "; ".join(f"{lab}: {fmt(g, 3)} ± {fmt(s, 2)}" for lab, g, s in zip(labels, gap, sem))
    verdict = ("supported" if fewer.all() else "partly" if 2 * fewer.sum() > n and not more.any()
               else "not supported")
    out.append(claim("ZO-LSTM-no-update (ZO-SGD with the QueryRNN's directions) needs fewer iterations to the first "
                     "successful attack than ZO-SGD at every dimension",
                     f"paired mean gap, ZO-SGD minus ZO-LSTM-no-update iterations (± s.e.m.): {pairs}; "
                     f"significantly fewer (gap > 2 s.e.m.) at {int(fewer.sum())} of {n} dimensions, significantly "
                     f"more at {int(more.sum())}", verdict))

    rho = _spearman(dims, gap)
    hi, lo = int(np.argmax(dims)), int(np.argmin(dims))
    grows = gap[hi] - gap[lo] > 2 * np.hypot(sem[hi], sem[lo])  # (the two gaps are on the same rows: a rough test)
    if n < 3 or rho is None:
        verdict = "not tested"
    else:
        ranked = rho >= 0.6
        verdict = "supported" if ranked and grows else ("partly" if ranked or grows else "not supported")
    out.append(claim("The gap between ZO-SGD and ZO-LSTM-no-update grows with the dimension: the QueryRNN helps "
                     "more in high dimension",
                     f"gap at the largest d ({labels[hi]}) {fmt(gap[hi], 3)} ± {fmt(sem[hi], 2)} vs at the smallest "
                     f"({labels[lo]}) {fmt(gap[lo], 3)} ± {fmt(sem[lo], 2)} ({'' if grows else 'not '}larger by more "
                     f"than 2 s.e.m.); Spearman rank correlation of the gap with d {fmt(rho, 2)}", verdict))

    rhos = {name: _spearman(dims, _series(data, name)[1]) for name in OPTIMIZERS}
    if n < 3 or any(r is None for r in rhos.values()):
        verdict = "not tested"
    else:
        strong = [r >= 0.8 for r in rhos.values()]
        verdict = "supported" if all(strong) else ("partly" if any(strong) or all(r > 0 for r in rhos.values())
                                                 else "not supported")
    out.append(claim("Fewer dimensions need fewer iterations to the first success, for both optimizers",
                     "; ".join(f"{name}: " + ", ".join(f"{lab} {fmt(v, 3)}" for lab, v in
                                                       zip(labels, _series(data, name)[1]))
                               + f" (Spearman with d {fmt(rhos[name], 2)})" for name in OPTIMIZERS), verdict))
    return out
