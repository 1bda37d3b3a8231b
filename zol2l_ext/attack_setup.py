"""What an attack runs on: the target model and the correctly classified test images it attacks.

``prepare_attack`` loads the target (a shipped name, your own model, or a ready `models.LoadedTarget` such as a
model behind an endpoint) and picks correctly classified test images of the dataset in the reference code's
seeded shuffle. It sits below `tasks` (whose attack tasks load their images through it) and `settings`, so
neither has to reach up into the attack runner.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from . import data as D
from . import models as M
from .data import digits_attack_set
from .user_targets import resolve_target

# The images attacked when none are named: the paper's test positions 5000:5100 of the shuffled correct list for
# MNIST / CIFAR-10; for the embedded digits the first 8 (a quick demo: digits has ~530 correct test images).
DEFAULT_POSITIONS: dict[str, list[int]] = {"digits": list(range(8)), "mnist": list(range(*D.TEST_POSITIONS)),
                                           "cifar10": list(range(*D.TEST_POSITIONS))}


class AttackSetupError(ValueError):
    """The attack cannot be set up as asked (unknown optimizer, no learned checkpoint, bad arguments)."""


# ------------------------------------------------------------------------------------------ images + target
@dataclass
class AttackSet:
    dataset: str
    images: torch.Tensor  # [B, C, H, W] in [0, 1], CPU
    labels: torch.Tensor  # [B]
    ids: list[int]  # dataset indices (MNIST/CIFAR test-set index; digits: index into sklearn's load_digits)
    positions: list[int]  # positions in the shuffled correct list
    target: M.LoadedTarget
    output: str  # "logprob" | "logits"
    classes: Sequence[str] | None = None


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AttackSetupError(f"device {device!r} asked for, but this torch has no usable CUDA device")
    return dev


def prepare_attack(dataset: str = "digits", data_root: str | None = None, target: str | None = None,
                   indices: str | Sequence[int] | None = None, count: int | None = None,
                   device: str | torch.device = "cpu", download: bool = False,
                   progress: bool = True) -> AttackSet:
    """Loads the target and picks correctly classified test images of ``dataset``.

    ``indices``: positions in the shuffled list of correctly classified test images ("5000:5100", "0,3,7");
    ``count`` alone takes that many from the dataset's default start (5000 for MNIST/CIFAR-10, 0 for digits).
    For MNIST with the authors' model the list is the staged label_correct_index.npy (the reference split); for
    any other target it is computed from the model (eval-mode argmax over the test set, then the same seeded
    shuffle)."""
    if dataset not in D.DATASETS:
        raise AttackSetupError(f"unknown dataset {dataset!r}; choose one of {', '.join(D.DATASETS)}")
    # a LoadedTarget is used as it is (e.g. a model behind an endpoint, remote_attack.endpoint_target)
    tgt = target if isinstance(target, M.LoadedTarget) else resolve_target(target, dataset, data_root=data_root,
                                                                           device=device, progress=progress)
    if tgt.dataset != dataset:
        raise AttackSetupError(f"target {tgt.name!r} classifies {tgt.dataset}, not {dataset}")
    if dataset == "digits":
        positions = D.parse_positions(indices, count, default_start=0)
        if positions is None:
            positions = list(DEFAULT_POSITIONS[dataset])
        images, labels, ids = digits_attack_set(tgt.model.cpu(), positions)
        tgt.model.to(device)
        classes = [str(i) for i in range(10)]
    else:
        root = D.resolve_data_root(data_root)
        positions = D.parse_positions(indices, count, default_start=D.TEST_POSITIONS[0])
        if positions is None:
            positions = list(DEFAULT_POSITIONS[dataset])
        if dataset == "mnist":
            x, y = D.load_mnist(root, train=False, download=download)
            if tgt.name == "mnist-authors":
                correct = D.mnist_correct_indices(root)
            else:
                correct = D.correct_indices(tgt.model, x, y)
            classes = [str(i) for i in range(10)]
        else:
            x, y = D.load_cifar10(root, train=False)
            correct = D.correct_indices(tgt.model, x, y)
            classes = list(D.CIFAR10_CLASSES)
        ids = D.take_positions(D.shuffled_correct(correct), positions, f"{dataset} test images")
        images, labels = x[ids].contiguous(), y[ids].clone()
    output = M.check_model_outputs(tgt.model, images, num_classes=10, declared=tgt.output)
    pred = D.predict(tgt.model, images)
    wrong = [int(i) for i, ok in zip(ids, (pred == labels).tolist()) if not ok]
    if wrong:
        raise AttackSetupError(f"target {tgt.name!r} misclassifies the clean images {wrong[:10]}; "
                               "an untargeted attack needs correctly classified images")
    return AttackSet(dataset, images, labels, [int(i) for i in ids], [int(p) for p in positions], tgt, output,
                     classes)
