"""Your own classifier as an attack target: ``--target module:factory`` or ``--target path.pt``.

``module:factory``: ``factory`` (a function or class in the importable ``module``; the current folder is searched
first) is called without arguments and returns the model, weights loaded. ``path.pt``: a checkpoint of
``zol2l train-target``, a bare state_dict of one of the built-in architectures, a TorchScript file
(``torch.jit.save``) or a whole pickled model (``torch.save(model, path)``; unpickling runs code from the file, as
``torch.load(weights_only=False)`` does, so give only files you trust). The model takes images in [0, 1]
([N, C, H, W], normalising inside) and returns logits or log-probabilities, which the attack tells apart itself.
"""
from __future__ import annotations

import importlib
import os
import pickle
import sys
import zipfile

import torch

from . import models as M


class TargetLoadError(ValueError):
    """A user's target cannot be loaded (one line, naming the spec and the cause)."""


def is_user_target(spec: str | None) -> bool:
    """Whether ``spec`` names a model file or a module:factory rather than a built-in target."""
    return bool(spec) and spec not in M.TARGETS and (os.path.exists(spec) or spec.endswith((".pt", ".pth"))
                                                     or ":" in spec)


def resolve_target(spec: str | None, dataset: str, data_root: str | None = None, device="cpu",
                   progress: bool = True) -> M.LoadedTarget:
    """A built-in target (`models.load_target`) or the user's (see the module docstring) for ``dataset``."""
    if not is_user_target(spec):
        return M.load_target(spec, dataset=dataset, data_root=data_root, device=device, progress=progress)
    if os.path.exists(spec) or spec.endswith((".pt", ".pth")):
        model, source = _from_file(spec, dataset, device)
    else:
        model, source = _from_factory(spec), spec
    if isinstance(model, M.LoadedTarget):
        return model
    if not callable(model):
        raise TargetLoadError(f"--target {spec!r} gives a {type(model).__name__}, not a model (nn.Module or "
                              "callable)")
    if isinstance(model, torch.nn.Module):
        model = M.frozen_eval_model(model, device)
    # output None: the attack detects logits or log-probabilities from the model's answers
    return M.LoadedTarget(model, name=source, dataset=dataset, output=None, source=source)


def _from_factory(spec: str):
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise TargetLoadError(f"--target {spec!r}: use module:factory (e.g. mynets:make_model) or a model file")
    # A console script does not search the current folder, where a user's module usually is.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure to import is the spec not loading
        raise TargetLoadError(f"--target {spec!r}: cannot import {module_name!r}: {type(e).__name__}: {e}") from e
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise TargetLoadError(f"--target {spec!r}: {module_name} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise TargetLoadError(f"--target {spec!r}: {attr} is a {type(factory).__name__}, not a function or class")
    try:
        return factory()
    except Exception as e:  # noqa: BLE001
        raise TargetLoadError(f"--target {spec!r}: {attr}() failed: {type(e).__name__}: {e}") from e


def _from_file(path: str, dataset: str, device):
    if not os.path.isfile(path):
        raise TargetLoadError(f"--target {path!r}: no such file")
    with open(path, "rb") as f:
        head = f.read(2)
    # torch.save writes a zip archive (a legacy file: a pickle, protocol 2+ starts with 0x80)
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        raise TargetLoadError(f"--target {path!r}: not a model file torch can read (neither a zip archive from "
                              "torch.save / torch.jit.save nor a legacy torch pickle)")
    if zipfile.is_zipfile(path) and any(n.endswith("/constants.pkl") for n in zipfile.ZipFile(path).namelist()):
        try:
            return torch.jit.load(path, map_location=device), path
        except Exception as e:  # noqa: BLE001
            raise TargetLoadError(f"--target {path!r}: not a loadable TorchScript file: {e}") from e
    try:
        return M.load_checkpoint_file(path, dataset, device), path
    except pickle.UnpicklingError:
        pass  # more than weights: a pickled model, tried below
    except M.ModelOutputError as e:
        raise TargetLoadError(f"--target {path!r}: {e}") from e
    except Exception as e:  # noqa: BLE001
        raise TargetLoadError(f"--target {path!r}: not a model file torch can read: {type(e).__name__}: {e}") from e
    try:
        return torch.load(path, map_location=device, weights_only=False), path
    except Exception as e:  # noqa: BLE001 - e.g. the model's class cannot be imported here
        raise TargetLoadError(f"--target {path!r}: cannot unpickle the model: {type(e).__name__}: {e} (a pickled "
                              "model needs its class importable; a module:factory target avoids that)") from e
