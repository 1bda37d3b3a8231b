"""The registry of target classifiers: their names, datasets and architectures, and where their weights are.

Targets (``TARGETS``):
  mnist-authors   the paper authors' MNIST CNN, <root>/models/mnist_cnn.pt (log-probabilities, 99.15% test)
  cifar10-staged  the staged CIFAR-10 CNN, <root>/models/cifar10_model.pt (logits, 76.85% test)
  mnist-cw        the paper's Carlini-Wagner MNIST architecture, trained here (``zol2l train-target cw mnist``)
  cifar10-cw      the paper's CIFAR-10 architecture, trained here (``zol2l train-target cw cifar10``)
  digits-cnn      a small CNN on scikit-learn's 8x8 digits, trained on the fly and cached (see digits_cnn.py)
Own-trained targets are looked up in ``$ZOL2L_CACHE/targets/<name>.pt`` (default ``~/.cache/zol2l``), then
in the package as ``zol2l_ext/pretrained/target-<name>.pt``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .. import data as D
from .architectures import ARCHS

__all__ = ["TargetSpec", "TARGETS", "DEFAULT_TARGETS", "ARCH_NAMES", "target_name", "own_target_path",
           "own_target_candidates"]

#: the package folder, which holds pretrained/
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ARCH_NAMES = sorted({a for a, _ in ARCHS})


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


def own_target_candidates(name: str) -> list[str]:
    """Where an own-trained target's weights are looked for, in order: the user cache, then the package."""
    pkg = os.path.join(_PACKAGE_DIR, "pretrained", f"target-{name}.pt")
    return [own_target_path(name), pkg]
