"""What bench_gpu_attack.py attacks: its cases, the black box's model call and the target of each case.

cifar10: bench_attack_step's case 3 (the staged CIFAR-10 CNN and test images where a data root is found).
resnet50: torchvision's ResNet-50 (else the copy in resnet50.py) with random weights on uniform random images.
"""
from __future__ import annotations

import torch
from torch import nn

from bench_attack_step import CASES as CPU_CASES, load_case_data
from common import error_line
from resnet50 import ResNet50

from zol2l_ext.tasks import SPACE_MU

TARGET_OUTSIDE = 0.05  # issue 6: at most 5% of the step outside the model forward
OPTIMIZERS = ("zo-sgd", "zo-lstm")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CASES = {
    "cifar10": dict(images=100, q=50, hw=32, quick=dict(images=2, q=2, hw=32)),
    "resnet50": dict(images=8, q=20, hw=224, quick=dict(images=2, q=2, hw=32)),
}
N_SEEDS = 8  # the steps' seeds cycle through the keys of steps 1..8
MU = SPACE_MU["tanh"]  # the attack step of these cases is in tanh space (AttackProblem's default)


class TargetModel(nn.Module):
    """The black box's model call: images [N, C, H, W] in [0, 1] -> float32 scores [N, K].

    ``normalize`` (per-channel mean, std): (x - mean) / std, written in channels_last when ``channels_last``
    (one pass: it is also the layout conversion) and in the autocast dtype when ``amp`` is set (what autocast
    would cast the first convolution's input to). ``amp``: the network runs under
    ``torch.autocast(dtype=amp, cache_enabled=False)`` (no weight-cast cache: CUDA-graph safe; the cache lives
    for one autocast region anyway) and its output is cast back to float32.
    """

    def __init__(self, net, normalize=None, channels_last=False, amp=None):
        super().__init__()
        self.net = net
        self.channels_last = bool(channels_last)
        self.amp = amp
        self.output = getattr(net, "output", "logits")
        self.input_shape = getattr(net, "input_shape", None)
        if normalize is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in normalize)
            self.register_buffer("scale", 1.0 / std, persistent=False)
            self.register_buffer("shift", -mean / std, persistent=False)
        else:
            self.scale = self.shift = None

    def forward(self, x):
        if self.scale is not None:
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            y = torch.empty_like(x, dtype=self.amp or x.dtype, memory_format=fmt)
            x = torch.addcmul(self.shift, x, self.scale, out=y)
        elif self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp is None:
            return self.net(x)
        with torch.autocast(x.device.type, dtype=self.amp, cache_enabled=False):
            out = self.net(x)
        return out.float()



def resnet50(impl="auto"):
    """(model with random weights, description): torchvision's resnet50(weights=None), else the built-in copy."""
    if impl in ("auto", "torchvision"):
        try:
            import torchvision  # noqa: PLC0415
            return torchvision.models.resnet50(weights=None), f"torchvision {torchvision.__version__} resnet50"
        except Exception as e:  # noqa: BLE001  (missing, or built for another torch)
            if impl == "torchvision":
                raise
            why = error_line(e)
    else:
        why = "--resnet builtin"
    return ResNet50(), f"the benchmark's built-in copy of torchvision's resnet50 ({why})"


def build_target(case, amp, B, hw, root, device, resnet_impl="auto"):
    """(target callable, images [B, 3, hw, hw], labels [B], output kind, description)."""
    amp_dtype = {"none": None, "bf16": torch.bfloat16}[amp]
    if case == "cifar10":
        model, images, labels, output, source = load_case_data(CPU_CASES["3"], root, B, device)
        target = model if amp_dtype is None else TargetModel(model, amp=amp_dtype).eval()
        return target, images, labels, output, source
    torch.manual_seed(0)
    net, which = resnet50(resnet_impl)
    net = net.eval().requires_grad_(False)
    net = net.to(device=device, memory_format=torch.channels_last)
    target = TargetModel(net, normalize=(IMAGENET_MEAN, IMAGENET_STD), channels_last=True, amp=amp_dtype).eval()
    target = target.to(device)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(B, 3, hw, hw, generator=g)
    labels = torch.randint(0, 1000, (B,), generator=g)
    source = (f"{which}, random weights (weights=None), channels_last, "
              f"ImageNet normalisation in the target; uniform random {hw}x{hw} images, random labels of 1000")
    return target, images.to(device), labels.to(device), "logits", source

