"""The embedded default target: a small CNN on scikit-learn's 8x8 digits (`data.load_digits_split`), trained on
the fly. It trains in a few seconds on two CPU cores to > 90% test accuracy (about 98% in practice) and is cached
as a checkpoint in $ZOL2L_CACHE/targets/digits-cnn.pt (default ~/.cache/zol2l); a cached file whose settings
differ from the current ones is retrained.
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Any

import torch

from .. import data as D
from .architectures import DigitsCNN
from .registry import own_target_path
from .training import accuracy, fit, save_checkpoint, seeded

__all__ = ["DIGITS_RECIPE", "NAME", "digits_cache_path", "train_digits_cnn", "get_digits_model"]

# Bump when the architecture or the training recipe changes: a cached model with another version retrains.
# version 2: the initial weights are seeded too (version 1 trained a different model every time; a cached one
# is retrained once)
DIGITS_RECIPE = {"version": 2, "epochs": 12, "batch_size": 32, "lr": 3e-3, "seed": 0}
NAME = "digits-cnn"


def digits_cache_path() -> str:
    return own_target_path(NAME)


def train_digits_cnn(epochs: int | None = None, seed: int | None = None, progress: bool = True,
                     device="cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Trains architectures.DigitsCNN (seeded, a few seconds on CPU); returns (model in eval mode, metadata)."""
    recipe = dict(DIGITS_RECIPE)
    if epochs is not None:
        recipe["epochs"] = int(epochs)
    if seed is not None:
        recipe["seed"] = int(seed)
    x_tr, y_tr, x_te, y_te = D.load_digits_split()
    model = seeded(DigitsCNN, recipe["seed"])
    t0 = time.perf_counter()
    # One thread: the batches are tiny, so a second thread only adds synchronisation (several times slower on a
    # busy 2-core machine), and the result then does not depend on the machine's thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(model, x_tr, y_tr, recipe["epochs"], batch_size=recipe["batch_size"], lr=recipe["lr"],
            seed=recipe["seed"], device=device, progress=progress, desc="train digits-cnn")
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    model.cpu().eval()
    meta = {"name": NAME, "arch": "digits", "dataset": "digits", "output": model.output,
            "recipe_version": recipe["version"], "epochs": recipe["epochs"], "seed": recipe["seed"],
            "batch_size": recipe["batch_size"], "lr": recipe["lr"],
            "train_accuracy": accuracy(model, x_tr, y_tr), "test_accuracy": accuracy(model, x_te, y_te),
            "train_seconds": round(seconds, 2), "torch": str(torch.__version__)}
    return model, meta


def get_digits_model(retrain: bool = False, progress: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The cached digits CNN, trained (and cached) first when absent, stale or ``retrain``."""
    path = digits_cache_path()
    if not retrain and os.path.isfile(path):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            meta = dict(obj["meta"])
            if meta.get("recipe_version") == DIGITS_RECIPE["version"] and meta.get("epochs") == \
                    DIGITS_RECIPE["epochs"] and meta.get("seed") == DIGITS_RECIPE["seed"]:
                model = DigitsCNN()
                model.load_state_dict(obj["state_dict"])
                meta["path"], meta["cached"] = path, True
                return model.eval(), meta
        except Exception:  # noqa: BLE001  (a corrupt or foreign cache file: retrain over it)
            pass
    model, meta = train_digits_cnn(progress=progress)
    try:
        save_checkpoint(model, path, meta)  # atomic: a failed write leaves no half file
    except OSError as e:  # a full disk or a read-only cache: the model is trained, only the cache is lost
        warnings.warn(f"could not cache the digits CNN at {path} ({e.strerror or e}); it is retrained next time",
                      stacklevel=2)
    meta["path"], meta["cached"] = path, False
    return model, meta
