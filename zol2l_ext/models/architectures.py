"""The target classifiers' architectures: every model takes images in [0, 1] ([N, C, H, W]) and normalizes inside
the module (the normalization constants are non-persistent buffers, so the staged state_dicts load unchanged),
and carries an ``output`` attribute: "logprob" (log_softmax output) or "logits"."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import data as D

__all__ = ["Normalize", "MnistAuthorsCNN", "Cifar10StagedCNN", "CWCNN", "DigitsCNN", "DIGITS_MEAN", "DIGITS_STD",
           "ARCHS", "build_model"]


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


def build_model(arch: str, dataset: str) -> nn.Module:
    try:
        ctor = ARCHS[(arch, dataset)]
    except KeyError:
        pairs = ", ".join(f"{a}/{d}" for a, d in sorted(ARCHS))
        raise ValueError(f"no architecture {arch!r} for dataset {dataset!r}; known arch/dataset pairs: {pairs}")
    return ctor()
