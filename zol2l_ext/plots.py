"""Figures of an attack run (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _arr(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def plot_loss_curves(results: Mapping[str, Any], path: str, log_y: bool | None = None) -> str:
    """Mean loss per step of every optimizer with a +-1 std band (over trials, or over images for one trial)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    cfg = results.get("config", {})
    positive = True
    for name, entry in results["optimizers"].items():
        agg = entry["aggregate"]
        mean, std = _arr(agg["loss_mean"]), _arr(agg["loss_std"])
        steps = np.arange(len(mean))
        (line,) = ax.plot(steps, mean, label=name, lw=1.6)
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
        positive &= bool(np.nanmin(mean - std) > 0) if mean.size else True
    if log_y is None:
        log_y = False
    if log_y and positive:
        ax.set_yscale("log")
    over = next(iter(results["optimizers"].values()), {}).get("aggregate", {}).get("loss_std_over", "trials")
    title = (f"{cfg.get('dataset', '')} / {cfg.get('target', '')}: {cfg.get('images', '?')} images x "
             f"{cfg.get('trials', '?')} trials, q={cfg.get('q', '?')} (band: std over {over})")
    return finish_curve_plot(fig, ax, path, "attack loss", title)


def finish_curve_plot(fig, ax, path: str, ylabel: str, title: str) -> str:
    """Labels, grid and legend of a loss-vs-iteration plot; saves it to ``path`` (folder created) and closes it."""
    ax.set_xlabel("iteration")
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
                          classes: Sequence[str] | None = None) -> str:
    """Rows: the originals, then one row per optimizer (trial 0); titles give the predicted labels.

    Adversarial titles are green where the label changed (success) and red where it did not."""
    n = min(int(images.shape[0]), max_images)
    names = list(adversarial)
    rows = 1 + len(names)
    fig, axes = plt.subplots(rows, max(n, 1), figsize=(1.35 * max(n, 1) + 1.2, 1.45 * rows + 0.3), dpi=110,
                             squeeze=False)

    def cls(i):
        i = int(i)
        return classes[i] if classes is not None and i < len(classes) else str(i)

    for j in range(n):
        for r in range(rows):
            ax = axes[r][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                img, cmap = _to_display(images[j])
                ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(f"label {cls(labels[j])}", fontsize=7)
            else:
                name = names[r - 1]
                img, cmap = _to_display(adversarial[name][j])
                ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
                pred = int(adv_labels[name][j])
                ok = pred != int(labels[j])
                ax.set_title(f"pred {cls(pred)}", fontsize=7, color="green" if ok else "red")
            if j == 0:
                ax.set_ylabel("original" if r == 0 else names[r - 1], fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
