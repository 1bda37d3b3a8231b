"""Plot helpers the experiments share: loss curves with std bands, panel grids, saving (matplotlib Agg)."""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..plots import mean_std_curve, success_rate_curve  # noqa: E402
from ..zo.optimizers import optimizer_names, optimizer_traits  # noqa: E402

__all__ = ["arr", "panels", "curve_panel", "success_panel", "success_figure", "save", "plt"]

#: one colour per optimizer across every figure of the report: each optimizer's own (its registry traits), and
#: the fine-tuned ZO-LSTM's (a variant of zo-lstm that the experiments name "zo-lstm-finetune")
COLORS = {**{name: optimizer_traits(name).colour for name in optimizer_names()}, "zo-lstm-finetune": "tab:purple"}


def arr(values) -> np.ndarray:
    """A float array from a JSON list (None -> NaN)."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def panels(n: int, ncols: Optional[int] = None, size=(4.6, 3.4)):
    """A figure with ``n`` axes in a grid (extra axes hidden); returns (fig, flat list of n axes)."""
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), dpi=100, squeeze=False)
    flat = list(axes.reshape(-1))
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def curve_panel(ax, entries: Mapping[str, Mapping[str, Any]], title: str, ylabel: str = "loss",
                xlabel: str = "iteration", log_y: bool = False, x: Optional[Mapping[str, Sequence[float]]] = None,
                band: bool = True) -> None:
    """Each entry's mean curve ("loss_mean") with a +-1 std band ("loss_std"; ``band=False``: means only); ``x``
    optionally gives each entry its x values (e.g. queries)."""
    for name, e in entries.items():
        mean = arr(e["loss_mean"])
        xs = arr(x[name]) if x is not None else np.arange(len(mean))
        std = arr(e["loss_std"]) if band and e.get("loss_std") else None
        mean_std_curve(ax, xs, mean, std, label=name, color=COLORS.get(name), lw=1.4, alpha=0.15)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def success_panel(ax, entries: Mapping[str, Mapping[str, Any]], max_queries: int, title: str,
                  budget: Optional[int] = None) -> bool:
    """The share of attacks with a success within Q queries against Q, one step curve per entry that records
    "first_success_queries" (one per attack, -1: never); the budget, if any, marked. False: no entry had them."""
    drawn = False
    for name, e in entries.items():
        if e.get("first_success_queries") is None:
            continue
        qs, rate = success_rate_curve(e["first_success_queries"], max_queries)
        ax.step(qs, 100 * rate, where="post", label=name, lw=1.4, color=COLORS.get(name))
        drawn = True
    if budget:
        ax.axvline(budget, color="black", ls="--", lw=1, label=f"budget {budget}")
    ax.set_ylim(-2, 102)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("queries per attack")
    ax.set_ylabel("attacks succeeded (%)")
    ax.grid(alpha=0.3)
    if drawn or budget:
        ax.legend(fontsize=7)
    return drawn


def success_figure(runs: Sequence[Mapping[str, Any]], out_dir: str, name: str, title) -> list:
    """The attack literature's main figure (not in the paper) for an experiment's attack runs: one
    `success_panel` per run, named by ``title(run)``; [] where no run is an attack or none recorded its
    first-success queries (results saved before they were)."""
    runs = [r for r in runs if r["config"].get("kind", "attack") == "attack"]
    if not runs:
        return []
    fig, axes = panels(len(runs), ncols=min(len(runs), 2))
    drawn = False
    for ax, r in zip(axes, runs):
        cfg = r["config"]
        drawn |= success_panel(ax, r["optimizers"], int(cfg["steps"]) * (int(cfg["q"]) + 1), title(r))
    if not drawn:
        plt.close(fig)
        return []
    return [save(fig, out_dir, name, "Attack success rate vs queries")]


def save(fig, out_dir: str, name: str, suptitle: Optional[str] = None) -> str:
    """Saves ``fig`` as ``out_dir/name`` (folder created), closes it, returns the path."""
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    fig.savefig(path)
    plt.close(fig)
    return path
