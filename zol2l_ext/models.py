"""Target classifiers for the black-box attacks: architectures, registry, loading, checking and training.

Every model here takes images in [0, 1] ([N, C, H, W]) and normalizes inside the module (the normalization
constants are non-persistent buffers, so the staged state_dicts load unchanged), and carries an ``output``
attribute: "logprob" (log_softmax output) or "logits".

Targets (``TARGETS``):
  mnist-authors   the paper authors' MNIST CNN, <root>/models/mnist_cnn.pt (log-probabilities, 99.15% test)
  cifar10-staged  the staged CIFAR-10 CNN, <root>/models/cifar10_model.pt (logits, 76.85% test)
  mnist-cw        the paper's Carlini-Wagner MNIST architecture, trained here (``zol2l train-target cw mnist``)
  cifar10-cw      the paper's CIFAR-10 architecture, trained here (``zol2l train-target cw cifar10``)
  digits-cnn      a small CNN on scikit-learn's 8x8 digits, trained on the fly and cached (see digits.py)
Own-trained targets are looked up in ``$ZOL2L_CACHE/targets/<name>.pt`` (default ``~/.cache/zol2l``), then
in the package as ``zol2l_ext/pretrained/target-<name>.pt``. A target may also be given as a path to a
checkpoint written by :func:`train_target` (or a bare state_dict of one of the architectures).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import data as D

CHECKPOINT_FORMAT = "zol2l-target-v1"
OUTPUT_KINDS = ("logprob", "logits")


class ModelOutputError(ValueError):
    """The target model's outputs do not fit the attack (shape, class count, kind or values)."""


class Normalize(nn.Module):
    """(x - mean) / std per channel; the constants are buffers that the state_dict does not hold."""

    def __init__(self, mean, std, channels: int):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.numel() == 1:
            mean, std = mean.expand(channels), std.expand(channels)
        self.register_buffer("mean", mean.reshape(1, channels, 1, 1).clone(), persistent=False)
        self.register_buffer("std", std.reshape(1, channels, 1, 1).clone(), persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.std


# ------------------------------------------------------------------------------------------ architectures
class MnistAuthorsCNN(nn.Module):
    """The ZO-L2L authors' MNIST target (MnistConvModel): conv20-pool-conv50-pool-fc500-fc10, log_softmax."""
    output = "logprob"
    input_shape = (1, 28, 28)

    def __init__(self):
        super().__init__()
        self.normalize = Normalize(D.MNIST_MEAN, D.MNIST_STD, 1)
        self.conv1 = nn.Conv2d(1, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x):
        x = self.normalize(x)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return F.log_softmax(self.fc2(x), dim=1)


class Cifar10StagedCNN(nn.Module):
    """The staged CIFAR-10 CNN: conv16-pool-conv32-pool-conv64-pool-fc500-fc10 with dropout 0.2, logits."""
    output = "logits"
    input_shape = (3, 32, 32)

    def __init__(self):
        super().__init__()
        self.normalize = Normalize(0.5, 0.5, 3)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, 10)
        self.dropout = nn.Dropout(0.2)

    def forward(self, x):
        x = self.normalize(x)
        x = self.dropout(F.max_pool2d(F.relu(self.conv1(x)), 2, 2))
        x = self.dropout(F.max_pool2d(F.relu(self.conv2(x)), 2, 2))
        x = self.dropout(F.max_pool2d(F.relu(self.conv3(x)), 2, 2))
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))  # flatten(1): works on non-contiguous input too
        return self.fc2(x)


class CWCNN(nn.Module):
    """The Carlini-Wagner architecture used by the paper (3x3 convolutions, no padding, logits):
    MNIST   conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc10
    CIFAR10 conv64-conv64-pool-conv128-conv128-pool-fc256-fc256-fc10
    (dropout 0.5 after the first fully connected layer, as in Carlini and Wagner's training code)."""
    output = "logits"

    def __init__(self, dataset: str):
        super().__init__()
        if dataset == "mnist":
            c, hw, (a, b, fc), mean, std = 1, 28, (32, 64, 200), D.MNIST_MEAN, D.MNIST_STD
        elif dataset == "cifar10":
            c, hw, (a, b, fc), mean, std = 3, 32, (64, 128, 256), D.CIFAR10_MEAN, D.CIFAR10_STD
        else:
            raise ValueError(f"the cw architecture exists for mnist and cifar10, not {dataset!r}")
        self.input_shape = (c, hw, hw)
        self.normalize = Normalize(mean, std, c)
        self.conv1 = nn.Conv2d(c, a, 3)
        self.conv2 = nn.Conv2d(a, a, 3)
        self.conv3 = nn.Conv2d(a, b, 3)
        self.conv4 = nn.Conv2d(b, b, 3)
        side = ((hw - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(b * side * side, fc)
        self.fc2 = nn.Linear(fc, fc)
        self.fc3 = nn.Linear(fc, 10)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x = self.normalize(x)
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.conv4(F.relu(self.conv3(x))))
        x = F.max_pool2d(x, 2)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760  # pixel mean/std of sklearn's digits scaled to [0, 1]


class DigitsCNN(nn.Module):
    """A small CNN for scikit-learn's 8x8 digits: conv16-conv32-pool-fc64-fc10, logits."""
    output = "logits"
    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.normalize = Normalize(DIGITS_MEAN, DIGITS_STD, 1)
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.normalize(x)
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = F.max_pool2d(x, 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


# (arch, dataset) -> constructor
ARCHS = {
    ("authors", "mnist"): MnistAuthorsCNN,
    ("staged", "cifar10"): Cifar10StagedCNN,
    ("cw", "mnist"): lambda: CWCNN("mnist"),
    ("cw", "cifar10"): lambda: CWCNN("cifar10"),
    ("digits", "digits"): DigitsCNN,
}
ARCH_NAMES = sorted({a for a, _ in ARCHS})


def build_model(arch: str, dataset: str) -> nn.Module:
    try:
        ctor = ARCHS[(arch, dataset)]
    except KeyError:
        pairs = ", ".join(f"{a}/{d}" for a, d in sorted(ARCHS))
        raise ValueError(f"no architecture {arch!r} for dataset {dataset!r}; known arch/dataset pairs: {pairs}")
    return ctor()


# ------------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class TargetSpec:
    name: str
    dataset: str
    arch: str
    output: str
    staged_file: str | None  # relative to the data root; None: trained by this project
    description: str


TARGETS: dict[str, TargetSpec] = {s.name: s for s in (
    TargetSpec("mnist-authors", "mnist", "authors", "logprob", os.path.join("models", "mnist_cnn.pt"),
               "the ZO-L2L authors' MNIST CNN (staged, 99.15% test)"),
    TargetSpec("cifar10-staged", "cifar10", "staged", "logits", os.path.join("models", "cifar10_model.pt"),
               "the staged CIFAR-10 CNN (76.85% test)"),
    TargetSpec("mnist-cw", "mnist", "cw", "logits", None,
               "Carlini-Wagner MNIST architecture (train: zol2l train-target cw mnist)"),
    TargetSpec("cifar10-cw", "cifar10", "cw", "logits", None,
               "the paper's CIFAR-10 architecture (train: zol2l train-target cw cifar10)"),
    TargetSpec("digits-cnn", "digits", "digits", "logits", None,
               "small CNN on sklearn's 8x8 digits, trained on the fly and cached"),
)}
DEFAULT_TARGETS = {"digits": "digits-cnn", "mnist": "mnist-authors", "cifar10": "cifar10-staged"}


def target_name(arch: str, dataset: str) -> str:
    """The registry name of an (arch, dataset) pair ("cw", "mnist" -> "mnist-cw")."""
    for s in TARGETS.values():
        if s.arch == arch and s.dataset == dataset:
            return s.name
    return f"{dataset}-{arch}"


def own_target_path(name: str) -> str:
    """Where train_target saves an own-trained target by default: $ZOL2L_CACHE/targets/<name>.pt."""
    return os.path.join(D.cache_dir(), "targets", f"{name}.pt")


def _own_target_candidates(name: str) -> list[str]:
    pkg = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained", f"target-{name}.pt")
    return [own_target_path(name), pkg]


@dataclass
class LoadedTarget:
    model: nn.Module
    name: str
    dataset: str
    output: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def _finish(model: nn.Module, device) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device)


def _load_state(model: nn.Module, state: dict, source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelOutputError(f"the weights in {source} do not fit {type(model).__name__}: {e}") from e


def save_checkpoint(model: nn.Module, path: str, meta: dict[str, Any]) -> str:
    """Writes {"format", "state_dict", "meta"} atomically (tmp file + rename)."""
    from .fileio import atomic_torch_save

    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return atomic_torch_save({"format": CHECKPOINT_FORMAT, "state_dict": state, "meta": dict(meta)},
                             os.path.abspath(path))


def load_checkpoint_file(path: str, dataset: str | None = None, device="cpu") -> LoadedTarget:
    """A checkpoint written by train_target, or a bare state_dict of one of ARCHS (matched by its keys/shapes)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and "meta" in obj:
        meta = dict(obj["meta"])
        arch, ds = meta.get("arch"), meta.get("dataset")
        if dataset is not None and ds != dataset:
            raise ModelOutputError(f"{path} holds a {ds!r} model ({arch}), but the attack is on {dataset!r}")
        model = build_model(arch, ds)
        _load_state(model, obj["state_dict"], path)
        return LoadedTarget(_finish(model, device), meta.get("name", target_name(arch, ds)), ds, model.output,
                            path, meta)
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        tried = []
        for (arch, ds), ctor in ARCHS.items():
            if dataset is not None and ds != dataset:
                continue
            model = ctor()
            ref = model.state_dict()
            if set(ref) == set(obj) and all(ref[k].shape == obj[k].shape for k in ref):
                _load_state(model, obj, path)
                return LoadedTarget(_finish(model, device), target_name(arch, ds), ds, model.output, path,
                                    {"arch": arch, "dataset": ds})
            tried.append(f"{arch}/{ds}")
        raise ModelOutputError(f"the state_dict in {path} fits none of the architectures "
                               f"({', '.join(tried) or 'none for this dataset'})")
    raise ModelOutputError(f"{path} is neither a zol2l target checkpoint nor a state_dict")


def load_target(target: str | None = None, dataset: str | None = None, data_root: str | None = None,
                device: str | torch.device = "cpu", progress: bool = True) -> LoadedTarget:
    """Loads a target by registry name (or by path), in eval mode with frozen weights, on ``device``."""
    if target is None:
        if dataset is None:
            raise ValueError("give a target name/path or a dataset")
        target = DEFAULT_TARGETS[dataset]
    if target in TARGETS:
        spec = TARGETS[target]
        if dataset is not None and spec.dataset != dataset:
            raise ValueError(f"target {target!r} classifies {spec.dataset}, not {dataset}")
        if spec.name == "digits-cnn":
            from .digits import get_digits_model
            model, meta = get_digits_model(progress=progress)
            return LoadedTarget(_finish(model, device), spec.name, "digits", model.output,
                                meta.get("path", "digits cache"), meta)
        if spec.staged_file is not None:
            root = D.resolve_data_root(data_root)
            path = os.path.join(root, spec.staged_file)
            if not os.path.isfile(path):
                raise D.DataRootError(f"target {target!r}: {path!r} not found under the data root {root!r}; "
                                      f"pass --data-root PATH or set {D.ENV_DATA}=PATH")
            state = torch.load(path, map_location="cpu", weights_only=True)
            model = build_model(spec.arch, spec.dataset)
            _load_state(model, state, path)
            return LoadedTarget(_finish(model, device), spec.name, spec.dataset, spec.output, path,
                                {"arch": spec.arch, "dataset": spec.dataset})
        for path in _own_target_candidates(spec.name):
            if os.path.isfile(path):
                t = load_checkpoint_file(path, spec.dataset, device)
                t.name = spec.name
                return t
        raise FileNotFoundError(
            f"target {target!r} has no trained weights (looked in {', '.join(_own_target_candidates(spec.name))}); "
            f"train it with `zol2l train-target {spec.arch} {spec.dataset} --epochs N`")
    if os.path.isfile(target):
        return load_checkpoint_file(target, dataset, device)
    raise ValueError(f"unknown target {target!r}: use one of {', '.join(TARGETS)} or a checkpoint path")


# ------------------------------------------------------------------------------------------- output checks
@torch.no_grad()
def check_model_outputs(model: nn.Module, images: torch.Tensor, num_classes: int | None = 10,
                        declared: str | None = None) -> str:
    """Runs ``model`` on a few images and returns its output kind ("logprob" or "logits").

    Raises ModelOutputError when the outputs are not a finite float tensor [n, num_classes], when they look
    like probabilities (the attack needs log-probabilities or logits), or when ``declared`` is "logprob" and
    the rows are not log-probabilities. ``model`` may be any callable; ``num_classes`` None takes any K >= 2."""
    name = type(model).__name__
    x = images[: min(8, images.shape[0])]
    try:
        params = getattr(model, "parameters", None)  # a plain function has none: the images stay where they are
        p = next(iter(params()), None) if callable(params) else None
        if p is not None:
            x = x.to(p.device)
        out = model(x)
    except Exception as e:  # noqa: BLE001  (any failure to run is the model not fitting the images)
        raise ModelOutputError(f"target model {name} fails on images of shape {tuple(x.shape)} "
                               f"(values in [0, 1]): {type(e).__name__}: {e}") from e
    if not isinstance(out, torch.Tensor):
        raise ModelOutputError(f"target model {name} returns {type(out).__name__}, not a tensor of class scores")
    if (out.dim() != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 2
            or (num_classes is not None and out.shape[1] != num_classes)):
        raise ModelOutputError(f"target model {name} returns shape {tuple(out.shape)} for {x.shape[0]} images; "
                               f"the attack needs [{x.shape[0]}, {num_classes or 'K >= 2'}] class scores")
    if not out.is_floating_point():
        raise ModelOutputError(f"target model {name} returns {out.dtype}; the attack needs float class scores")
    if not torch.isfinite(out).all():
        raise ModelOutputError(f"target model {name} returns non-finite scores (nan/inf)")
    out = out.double()
    lse = torch.logsumexp(out, dim=1)
    is_logprob = bool((out <= 1e-5).all() and (lse.abs() < 1e-3).all())
    is_prob = bool((out >= 0).all() and (out <= 1).all() and ((out.sum(1) - 1).abs() < 1e-3).all())
    if is_prob and not is_logprob:
        raise ModelOutputError(f"target model {name} returns probabilities (rows sum to 1); the attack needs "
                               "log-probabilities (log_softmax) or logits")
    if declared is not None and declared not in OUTPUT_KINDS:
        raise ValueError(f"output kind must be one of {OUTPUT_KINDS}, got {declared!r}")
    if declared == "logprob" and not is_logprob:
        raise ModelOutputError(f"target model {name} is declared to return log-probabilities, but its rows do "
                               f"not (max logsumexp deviation {float(lse.abs().max()):.3g}); declare logits")
    return declared or ("logprob" if is_logprob else "logits")


# ------------------------------------------------------------------------------------------------ training
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
    from tqdm.auto import tqdm

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


def train_target(arch: str, dataset: str, epochs: int, out: str | None = None, data_root: str | None = None,
                 batch_size: int | None = None, lr: float | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", progress: bool = True,
                 download: bool = False) -> tuple[str, dict[str, Any]]:
    """Trains ``arch`` on ``dataset``'s training set, evaluates on its test set, saves state_dict + metadata.

    ``out`` defaults to $ZOL2L_CACHE/targets/<name>.pt, where load_target(<name>) finds it.
    Returns (path, meta)."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    model = build_model(arch, dataset)
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
