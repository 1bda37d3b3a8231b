"""Figures of an attack run (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _arr(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def query_axis(entry: Mapping[str, Any], cfg: Mapping[str, Any], length: int) -> np.ndarray:
    """Queries spent before each step: the entry's own "query_axis" (run_attack records it), else t * (q + 1)."""
    if entry.get("query_axis"):
        return np.asarray(entry["query_axis"][:length], dtype=float)
    return np.arange(length, dtype=float) * (int(cfg.get("q", 0)) + 1)


def mean_std_curve(ax, xs, mean: np.ndarray, std: np.ndarray | None = None, label: str | None = None,
                   color=None, lw: float = 1.6, alpha: float = 0.2, log_floor: bool = False):
    """Draws ``mean`` against ``xs`` with a +-1 ``std`` band in the line's colour (``std`` None: the line alone;
    ``color`` None: the axes' next colour); returns the line. ``log_floor``: a band reaching 0 or below is cut at
    a tenth of the mean, which a log axis can show."""
    (line,) = ax.plot(xs, mean, label=label, lw=lw, color=color)
    if std is not None:
        low = mean - std
        if log_floor:
            low = np.where(low > 0, low, mean / 10)
        ax.fill_between(xs, low, mean + std, color=line.get_color(), alpha=alpha, lw=0)
    return line


def plot_loss_curves(results: Mapping[str, Any], path: str, log_y: bool | None = None, x: str = "iteration") -> str:
    """Mean loss of every optimizer with a +-1 std band (over trials, or over images for one trial), against the
    iteration or (``x="queries"``) the queries spent. ``log_y`` None: a log axis where every mean is positive
    (the loss falls by orders of magnitude early, and a linear axis flattens the end where optimizers differ)."""
    if x not in ("iteration", "queries"):
        raise ValueError(f"x must be 'iteration' or 'queries', got {x!r}")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    cfg = results.get("config", {})
    positive = True
    for name, entry in results["optimizers"].items():
        agg = entry["aggregate"]
        mean, std = _arr(agg["loss_mean"]), _arr(agg["loss_std"])
        xs = query_axis(entry, cfg, len(mean)) if x == "queries" else np.arange(len(mean))
        mean_std_curve(ax, xs, mean, std, label=name, lw=1.6, alpha=0.2, log_floor=log_y is not False)
        positive &= bool(np.nanmin(mean) > 0) if mean.size else True
    if (log_y is None or log_y) and positive:
        ax.set_yscale("log")
    over = next(iter(results["optimizers"].values()), {}).get("aggregate", {}).get("loss_std_over", "trials")
    title = (f"{cfg.get('dataset', '')} / {cfg.get('target', '')}: {cfg.get('images', '?')} images x "
             f"{cfg.get('trials', '?')} trials, q={cfg.get('q', '?')} (band: std over {over})")
    xlabel = "queries per attack" if x == "queries" else "iteration"
    if x == "queries" and cfg.get("budget"):
        ax.axvline(cfg["budget"], color="black", ls="--", lw=1, label=f"budget {cfg['budget']}")
    return finish_curve_plot(fig, ax, path, "attack loss", title, xlabel=xlabel)


def success_rate_curve(first_queries: Sequence[int], max_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """(queries Q, fraction of attacks whose first success came within Q queries) for Q = 0 .. max_queries;
    ``first_queries`` holds one entry per attack, -1 for an attack that never succeeded."""
    fq = np.asarray([v for v in first_queries if v is not None], dtype=float)
    qs = np.arange(int(max_queries) + 1, dtype=float)
    if fq.size == 0:
        return qs, np.full_like(qs, np.nan)
    hits = np.sort(fq[fq >= 0])
    return qs, np.searchsorted(hits, qs, side="right") / fq.size


def plot_success_vs_queries(results: Mapping[str, Any], path: str) -> str:
    """The share of attacks (image x trial) with a success within Q queries, against Q, per optimizer; the query
    budget, where one was set, is marked."""
    cfg = results.get("config", {})
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    budget = cfg.get("budget")
    for name, entry in results["optimizers"].items():
        per = entry.get("per_image", [])
        first = [v for img in per for v in img.get("first_success_queries", [])]
        spent = [v for img in per for v in img.get("queries", [])]
        top = max([budget or 0] + spent) or int(cfg.get("steps", 0)) * (int(cfg.get("q", 0)) + 1)
        qs, rate = success_rate_curve(first, top)
        ax.step(qs, 100 * rate, where="post", label=name, lw=1.6)
    if budget:
        ax.axvline(budget, color="black", ls="--", lw=1, label=f"budget {budget}")
    ax.set_ylim(-2, 102)
    title = (f"{cfg.get('dataset', '')} / {cfg.get('target', '')}: {cfg.get('images', '?')} images x "
             f"{cfg.get('trials', '?')} trials, q={cfg.get('q', '?')} ({int(cfg.get('q', 0)) + 1} queries a step)")
    return finish_curve_plot(fig, ax, path, "attacks succeeded (%)", title, xlabel="queries per attack")


def finish_curve_plot(fig, ax, path: str, ylabel: str, title: str, xlabel: str = "iteration") -> str:
    """Labels, grid and legend of a curve plot; saves it to ``path`` (folder created) and closes it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _to_display(img: torch.Tensor) -> tuple[np.ndarray, str | None]:
    x = img.detach().cpu().clamp(0, 1).numpy()
    if x.shape[0] == 1:
        return x[0], "gray"
    return np.transpose(x, (1, 2, 0)), None


def plot_adversarial_grid(images: torch.Tensor, labels: torch.Tensor, adversarial: Mapping[str, torch.Tensor],
                          adv_labels: Mapping[str, torch.Tensor], path: str, max_images: int = 8,
                          classes: Sequence[str] | None = None, trial: int = 0, trials: int | None = None) -> str:
    """Row 1: the clean images with their labels; then per optimizer the adversarial image of trial ``trial``
    and, beside it, its perturbation x_adv - x (channel mean for colour images) on one colour scale shared by
    the whole figure. A prediction is green where the label changed (success) and red where it did not."""
    n = min(int(images.shape[0]), max_images)
    names = list(adversarial)
    rows, cols = 1 + len(names), 2 * max(n, 1)
    fig, axes = plt.subplots(rows, cols, figsize=(0.95 * cols + 1.6, 1.25 * rows + 1.1), dpi=110, squeeze=False)
    diffs = {k: (adversarial[k][:n].float() - images[:n].float()).mean(dim=1) for k in names}
    scale = max([float(d.abs().max()) for d in diffs.values()] + [1e-6])

    def cls(i):
        i = int(i)
        return classes[i] if classes is not None and i < len(classes) else str(i)

    mappable = None
    for j in range(n):
        for r in range(rows):
            ax, ax_diff = axes[r][2 * j], axes[r][2 * j + 1]
            for a in (ax, ax_diff):
                a.set_xticks([])
                a.set_yticks([])
            if r == 0:
                img, cmap = _to_display(images[j])
                ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(f"label {cls(labels[j])}", fontsize=7)
                ax_diff.axis("off")
            else:
                name = names[r - 1]
                img, cmap = _to_display(adversarial[name][j])
                ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
                pred = int(adv_labels[name][j])
                ax.set_title(f"pred {cls(pred)}", fontsize=7, color="green" if pred != int(labels[j]) else "red")
                mappable = ax_diff.imshow(diffs[name][j].numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale,
                                          interpolation="nearest")
                ax_diff.set_title("x_adv - x", fontsize=6, color="0.35")
            if j == 0:
                ax.set_ylabel("clean" if r == 0 else names[r - 1], fontsize=7)
    shown = f"trial {trial}" + (f" of {trials}" if trials else "")
    fig.suptitle(f"Adversarial images ({shown}; first {n} images): each image, then its perturbation", fontsize=9)
    handles = [Patch(color="green", label="pred: label changed (attack succeeded)"),
               Patch(color="red", label="pred: label unchanged (attack failed)")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 0.92, 0.95))
    if mappable is not None:
        cax = fig.add_axes((0.93, 0.15, 0.015, 0.65))
        bar = fig.colorbar(mappable, cax=cax)
        bar.set_label("x_adv - x (pixel value)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
