"""The optimizer registry: every optimizer class registers itself, with its traits, when it is defined.

A subclass of `ZOOptimizer` that sets ``name`` in its class body is registered under that name (in definition
order: the order of `optimizer_names`). Its ``traits`` (`OptimizerTraits`) say what the rest of the package
needs to know about it, so that no name list elsewhere has to be edited when an optimizer is added: whether it
runs learned weights, whether `zol2l tune` tunes it, whether its update uses ``lr``, and how figures and tables
show it (label, colour).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

__all__ = ["OptimizerTraits", "OPTIMIZERS", "register_optimizer", "unregister_optimizer", "optimizer_names",
           "optimizer_traits", "optimizer_class", "canonical_name", "make_optimizer", "optimizer_from_state_dict"]


@dataclass(frozen=True)
class OptimizerTraits:
    """What the package needs to know about an optimizer besides its step."""

    label: str  #: display name in tables and legends, e.g. "ZO-SGD"
    colour: str  #: matplotlib colour, the same in every figure
    learned: bool = False  #: runs learned weights (a `LearnedZO`): needs a trained or pretrained model
    tunable: bool = False  #: `zol2l tune` tunes its lr (per-row learning rates, see ZOOptimizer)
    uses_lr: bool = True  #: its update uses ``lr`` (False: the update is learned, lr is ignored)


#: name -> class, in registration order (the live registry; use `optimizer_names` to list it)
OPTIMIZERS: Dict[str, type] = {}


def canonical_name(name: str) -> str:
    """Registry spelling: lower case, '-' for '_'."""
    return str(name).lower().replace("_", "-")


def register_optimizer(cls: type) -> type:
    """Add ``cls`` under ``cls.name`` (called by ``ZOOptimizer.__init_subclass__``). A name registered by another
    class raises ValueError (the same class defined again, e.g. on a module reload, replaces itself)."""
    name = canonical_name(cls.name)
    if name != cls.name:
        raise ValueError(f"optimizer name {cls.name!r} must be lower case with '-' (e.g. {name!r})")
    if not isinstance(cls.__dict__.get("traits"), OptimizerTraits):
        raise TypeError(f"optimizer {name!r}: its class must set traits = OptimizerTraits(...)")
    old = OPTIMIZERS.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"optimizer name {name!r} is already registered by {old.__module__}.{old.__qualname__}")
    OPTIMIZERS[name] = cls
    return cls


def unregister_optimizer(name: str) -> None:
    """Remove ``name`` from the registry (an optimizer defined for a test or a session)."""
    OPTIMIZERS.pop(canonical_name(name), None)


def optimizer_names(learned: Optional[bool] = None, tunable: Optional[bool] = None) -> Tuple[str, ...]:
    """The registered names in registration order, those whose traits match the filters given (None: any)."""
    out = []
    for name, cls in OPTIMIZERS.items():
        t = cls.traits
        if (learned is None or t.learned == learned) and (tunable is None or t.tunable == tunable):
            out.append(name)
    return tuple(out)


def optimizer_class(name: str) -> type:
    """The class registered as ``name`` (case-insensitive, '_' or '-'); ValueError naming the known ones."""
    key = canonical_name(name)
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key]


def optimizer_traits(name: str) -> OptimizerTraits:
    """The `OptimizerTraits` of a registered optimizer."""
    return optimizer_class(name).traits


def make_optimizer(name: str, baseline: Optional[str] = None, **kwargs):
    """An optimizer by registry name (case-insensitive; '_' and '-' are interchangeable). ``baseline``: the
    estimator's (`ZOOptimizer.baseline`; None: "f0", the paper's eq. 1), common to every optimizer."""
    opt = optimizer_class(name)(**kwargs)
    if baseline is not None:
        opt.baseline = baseline
        opt._validate()
    return opt


def optimizer_from_state_dict(sd: Dict[str, Any], device=None):
    """Rebuild an optimizer from ``state_dict()``; returns (optimizer, per-problem state or None)."""
    opt = optimizer_class(sd["name"]).from_state_dict(sd)
    state = opt.load_state_dict(sd, device=device)
    opt.to_device(device)
    return opt, state
