"""The embedded default: scikit-learn's bundled 8x8 digits and a small CNN trained on the fly.

Needs no network and no data root. ``load_digits`` gives 1797 images with values 0..16, scaled here to [0, 1]
([N, 1, 8, 8] float32). A seeded stratified split keeps 30% for testing. The CNN (models.DigitsCNN) trains in a
few seconds on two CPU cores to > 90% test accuracy (about 98% in practice) and is cached as a checkpoint in
$ZOL2L_CACHE/targets/digits-cnn.pt (default ~/.cache/zol2l); a cached file whose settings differ from the
current ones is retrained.
"""
from __future__ import annotations

import os
import time
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from . import data as D

DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0
# Bump when the architecture or the training recipe changes: a cached model with another version retrains.
DIGITS_RECIPE = {"version": 1, "epochs": 12, "batch_size": 32, "lr": 3e-3, "seed": 0}
NAME = "digits-cnn"


@lru_cache(maxsize=1)
def _split_arrays():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ds = load_digits()
    x = (ds.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = ds.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    return x[tr], y[tr], x[te], y[te], te


def load_digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): float [N, 1, 8, 8] in [0, 1] and int64 labels (seeded split)."""
    x_tr, y_tr, x_te, y_te, _ = _split_arrays()
    return (torch.from_numpy(x_tr.copy()), torch.from_numpy(y_tr.copy()),
            torch.from_numpy(x_te.copy()), torch.from_numpy(y_te.copy()))


def digits_test_ids() -> np.ndarray:
    """Indices into sklearn's load_digits() of the test images (the order of load_digits_split's test part)."""
    return _split_arrays()[4].copy()


def digits_cache_path() -> str:
    return os.path.join(D.cache_dir(), "targets", f"{NAME}.pt")


def train_digits_cnn(epochs: int | None = None, seed: int | None = None, progress: bool = True,
                     device="cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Trains models.DigitsCNN (seeded, a few seconds on CPU); returns (model in eval mode, metadata)."""
    from .models import DigitsCNN, accuracy, fit

    recipe = dict(DIGITS_RECIPE)
    if epochs is not None:
        recipe["epochs"] = int(epochs)
    if seed is not None:
        recipe["seed"] = int(seed)
    x_tr, y_tr, x_te, y_te = load_digits_split()
    model = DigitsCNN()
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
    from .models import DigitsCNN, save_checkpoint

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
    save_checkpoint(model, path, meta)
    meta["path"], meta["cached"] = path, False
    return model, meta


def digits_attack_set(model: torch.nn.Module, positions: list[int] | None = None, count: int = 5):
    """Correctly classified digits test images, in the reference code's seeded shuffle (random.Random(1234)).

    ``positions`` index the shuffled list (default: the first ``count``). Returns (images [n, 1, 8, 8],
    labels [n], ids [n]) where ids are indices into sklearn's load_digits()."""
    _, _, x_te, y_te = load_digits_split()
    correct = D.correct_indices(model, x_te, y_te)
    shuffled = D.shuffled_correct(correct)
    if positions is None:
        positions = list(range(count))
    picked = D.take_positions(shuffled, positions, "digits test images")
    ids = digits_test_ids()[picked]
    return x_te[picked], y_te[picked], [int(i) for i in ids]
