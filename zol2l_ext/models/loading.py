"""Loading a target classifier by registry name or by checkpoint path, in eval mode with frozen weights."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from .. import data as D
from .architectures import ARCHS, build_model
from .checks import ModelOutputError
from .digits_cnn import get_digits_model
from .registry import DEFAULT_TARGETS, TARGETS, own_target_candidates, target_name

__all__ = ["LoadedTarget", "channels_last_on_cpu", "frozen_eval_model", "load_checkpoint_file", "load_target"]


@dataclass
class LoadedTarget:
    model: nn.Module
    name: str
    dataset: str
    output: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def frozen_eval_model(model: nn.Module, device) -> nn.Module:
    """``model`` in eval mode with frozen weights, on ``device`` (how every target is attacked); on the CPU, a
    model with convolutions in channels-last memory format (`channels_last_on_cpu`)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return channels_last_on_cpu(model.to(device))


def channels_last_on_cpu(model: nn.Module) -> nn.Module:
    """Converts the 4-D weights of a CPU model (its convolutions) to channels-last memory format, in place.

    oneDNN's CPU convolutions reorder NCHW weights and activations into their own layout on every call and work
    on channels-last ones as they are: measured on a 2-core EPYC (one thread), the forward of the authors' MNIST
    CNN takes about half the time (2100 images: 366 -> 177 ms; 21 images: 4.0 -> 1.9 ms) and the CIFAR-10 CNN's
    too (5100 images: 1063 -> 537 ms). Images may stay NCHW (the first convolution takes either). Outputs agree
    with the NCHW forward to float32 rounding (4e-6 on logits), and a row's output depends on the batch it is in
    exactly as much as before. Models without 4-D parameters, and models on other devices, are left alone."""
    params = list(model.parameters())
    if params and all(p.device.type == "cpu" for p in params) and any(p.dim() == 4 for p in params):
        model.to(memory_format=torch.channels_last)
    return model


def _load_state(model: nn.Module, state: dict, source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelOutputError(f"the weights in {source} do not fit {type(model).__name__}: {e}") from e


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
        return LoadedTarget(frozen_eval_model(model, device), meta.get("name", target_name(arch, ds)), ds, model.output,
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
                return LoadedTarget(frozen_eval_model(model, device), target_name(arch, ds), ds, model.output, path,
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
            model, meta = get_digits_model(progress=progress)
            return LoadedTarget(frozen_eval_model(model, device), spec.name, "digits", model.output,
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
            return LoadedTarget(frozen_eval_model(model, device), spec.name, spec.dataset, spec.output, path,
                                {"arch": spec.arch, "dataset": spec.dataset})
        for path in own_target_candidates(spec.name):
            if os.path.isfile(path):
                t = load_checkpoint_file(path, spec.dataset, device)
                t.name = spec.name
                return t
        raise FileNotFoundError(
            f"target {target!r} has no trained weights (looked in {', '.join(own_target_candidates(spec.name))}); "
            f"train it with `zol2l train-target {spec.arch} {spec.dataset} --epochs N`")
    if os.path.isfile(target):
        return load_checkpoint_file(target, dataset, device)
    raise ValueError(f"unknown target {target!r}: use one of {', '.join(TARGETS)} or a checkpoint path")
