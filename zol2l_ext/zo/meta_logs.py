"""Logs of a meta-training run: log.json (everything), log.csv (one row per update) and curves.png."""
from __future__ import annotations

import csv
import math
import os
from typing import Any, Dict, List

from ..fileio import atomic_write_file, atomic_write_json

__all__ = ["write_logs", "plot_training_curves"]

CSV_FIELDS = ("update", "epoch", "meta_loss", "initial_loss", "final_loss", "loss_ratio", "skipped_windows",
              "grad_norm", "clipped_fraction", "seconds", "val_final_loss", "val_objective", "val_success")


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_logs(out_dir: str, history: Dict[str, List[Dict[str, Any]]], best: Dict[str, Any],
               config: Dict[str, Any]) -> Dict[str, str]:
    paths = {k: os.path.join(out_dir, n) for k, n in (("json", "log.json"), ("csv", "log.csv"),
                                                       ("png", "curves.png"))}
    atomic_write_json(_clean({"config": config, "best": best, **history}), paths["json"])
    by_epoch = {r["epoch"]: r for r in history["epochs"]}
    last_of_epoch = {}
    for r in history["updates"]:
        last_of_epoch[r["epoch"]] = r["update"]

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            for r in history["updates"]:
                row = dict(r)
                ep = by_epoch.get(r["epoch"])
                if ep is not None and last_of_epoch[r["epoch"]] == r["update"]:
                    row["val_final_loss"] = ep.get("val_final_loss")
                    row["val_objective"] = ep.get("val_objective")
                    row["val_success"] = ep.get("val_success")
                w.writerow(_clean(row))

    atomic_write_file(paths["csv"], write_csv)
    plot_training_curves(history, best, paths["png"], title=f"{config.get('task')} stage {config.get('stage')} "
                                                            f"({config.get('grad_mode')})")
    return paths


def plot_training_curves(history, best, path: str, title: str = "") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ups, eps = history["updates"], history["epochs"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    x = [r["update"] for r in ups]
    axes[0].plot(x, [r["meta_loss"] for r in ups], lw=1)
    axes[0].set(xlabel="update", ylabel="meta-loss (mean over windows)", title="meta-loss")
    axes[1].plot(x, [r["loss_ratio"] for r in ups], lw=1, label="per update")
    trained = [r for r in eps if r.get("train_loss_ratio") is not None]  # epoch 0 (the start) has none
    if trained and x:
        per_epoch = x[-1] / trained[-1]["epoch"]
        axes[1].plot([r["epoch"] * per_epoch for r in trained], [r["train_loss_ratio"] for r in trained],
                     "o-", label="epoch mean")
    axes[1].set(xlabel="update", ylabel="final / initial loss", title="training trajectories")
    axes[1].legend(fontsize=8)
    ve = [r for r in eps if r.get("val_final_loss") is not None]
    if ve:
        # The best weights are picked by the held-out objective (the weighted mean of the loss curve) where the
        # log has it: plot it, with the final loss beside it, so that the marked best is the plotted minimum.
        key = "val_objective" if all(r.get("val_objective") is not None for r in ve) else "val_final_loss"
        axes[2].plot([r["epoch"] for r in ve], [r[key] for r in ve], "o-",
                     label="objective (weighted mean of the curve)" if key == "val_objective" else "final loss")
        if key == "val_objective":
            axes[2].plot([r["epoch"] for r in ve], [r["val_final_loss"] for r in ve], "s--", ms=3, lw=1,
                         label="final loss")
        if best.get("epoch", -1) >= 0 and best.get("val_final_loss") is not None \
                and math.isfinite(best["val_final_loss"]):
            axes[2].axvline(best["epoch"], color="gray", ls="--", lw=1, label=f"best (epoch {best['epoch']})")
        axes[2].legend(fontsize=8)
    axes[2].set(xlabel="epoch", ylabel="mean loss", title="held-out problems")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
