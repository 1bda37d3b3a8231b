"""Training a target classifier: the loop (`fit`), its accuracy, and the checkpoints it writes."""
from __future__ import annotations

import math
import os
import time
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import data as D
from ..fileio import atomic_torch_save
from .architectures import build_model
from .registry import own_target_path, target_name

__all__ = ["CHECKPOINT_FORMAT", "TRAIN_DEFAULTS", "accuracy", "fit", "save_checkpoint", "train_target"]

CHECKPOINT_FORMAT = "zol2l-target-v1"


def save_checkpoint(model: nn.Module, path: str, meta: dict[str, Any]) -> str:
    """Writes {"format", "state_dict", "meta"} atomically (tmp file + rename)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return atomic_torch_save({"format": CHECKPOINT_FORMAT, "state_dict": state, "meta": dict(meta)},
                             os.path.abspath(path))


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    was = model.training
    model.eval()
    try:
        pred = D.predict(model, images, batch_size)
    finally:
        model.train(was)
    return float((pred == labels.cpu()).float().mean()) if labels.numel() else float("nan")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """CIFAR-style augmentation: random horizontal flips and a random 4-pixel shift per batch."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
    dx, dy = (int(v) for v in torch.randint(-4, 5, (2,), generator=gen))
    x = F.pad(x, (4, 4, 4, 4))
    h, w = x.shape[2] - 8, x.shape[3] - 8
    return x[:, :, 4 + dy:4 + dy + h, 4 + dx:4 + dx + w]


def fit(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, epochs: int, batch_size: int = 128,
        lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0, device="cpu", augment: bool = False,
        progress: bool = True, desc: str = "train") -> nn.Module:
    """Adam with cosine decay, seeded shuffles; a tqdm bar over the batches of all epochs."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = x_train.shape[0]
    per_epoch = math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * per_epoch))
    bar = tqdm(total=epochs * per_epoch, desc=desc, disable=not progress, leave=False)
    try:
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=gen)
            total, seen = 0.0, 0
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size]
                xb, yb = x_train[idx].to(device), y_train[idx].to(device)
                if augment:
                    xb = _augment(xb, gen)
                out = model(xb)
                loss = F.nll_loss(out, yb) if getattr(model, "output", "logits") == "logprob" \
                    else F.cross_entropy(out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * idx.numel()
                seen += idx.numel()
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{total / seen:.4f}")
    finally:
        bar.close()
    return model.eval()


TRAIN_DEFAULTS = {  # per dataset: batch size, learning rate, weight decay, augmentation
    "mnist": dict(batch_size=128, lr=1e-3, weight_decay=0.0, augment=False),
    "cifar10": dict(batch_size=128, lr=1e-3, weight_decay=5e-4, augment=True),
    "digits": dict(batch_size=64, lr=3e-3, weight_decay=0.0, augment=False),
}


def seeded(build, seed: int):
    """``build()`` with torch's global generator seeded by ``seed`` (and restored after), so that a model's initial
    weights, and so the trained model, depend on the seed alone (before, the unseeded initialisation made every
    training of the same recipe differ)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def train_target(arch: str, dataset: str, epochs: int, out: str | None = None, data_root: str | None = None,
                 batch_size: int | None = None, lr: float | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", progress: bool = True,
                 download: bool = False) -> tuple[str, dict[str, Any]]:
    """Trains ``arch`` on ``dataset``'s training set, evaluates on its test set, saves state_dict + metadata.

    ``out`` defaults to $ZOL2L_CACHE/targets/<name>.pt, where load_target(<name>) finds it.
    Returns (path, meta)."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    model = seeded(lambda: build_model(arch, dataset), seed)
    x_tr, y_tr = D.load_dataset(dataset, data_root, train=True, download=download)
    x_te, y_te = D.load_dataset(dataset, data_root, train=False, download=download)
    cfg = dict(TRAIN_DEFAULTS[dataset])
    if batch_size is not None:
        cfg["batch_size"] = batch_size
    if lr is not None:
        cfg["lr"] = lr
    t0 = time.perf_counter()
    fit(model, x_tr, y_tr, epochs, seed=seed, device=device, progress=progress,
        desc=f"train {arch}/{dataset}", **cfg)
    seconds = time.perf_counter() - t0
    model.cpu()
    name = target_name(arch, dataset)
    meta = {"name": name, "arch": arch, "dataset": dataset, "output": model.output, "epochs": int(epochs),
            "seed": int(seed), "batch_size": int(cfg["batch_size"]), "lr": float(cfg["lr"]),
            "weight_decay": float(cfg["weight_decay"]), "augment": bool(cfg["augment"]),
            "train_accuracy": accuracy(model, x_tr, y_tr), "test_accuracy": accuracy(model, x_te, y_te),
            "train_seconds": round(seconds, 2), "torch": str(torch.__version__)}
    path = save_checkpoint(model, out or own_target_path(name), meta)
    meta["path"] = path
    return path, meta
