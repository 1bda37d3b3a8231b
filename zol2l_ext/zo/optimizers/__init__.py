"""Zeroth-order optimizers over batches of B problems, one file per update rule, and their registry.

  base        the interface (`ZOOptimizer`: state, costs, per-row learning rates, state_dict)
  registry    `OptimizerTraits`, `optimizer_names`, `optimizer_traits`, `make_optimizer`
  sgd         ZO-SGD, ZO-signSGD
  adam        ZO-ADAM
  szvrg       ZO-SZVR-G
  guided_es   Guided ES
  lstm        ZO-LSTM and its ablations (the learned optimizer; its step is the meta-trainer's too)

An optimizer is added by one more module in this folder (docs/ADDING_AN_OPTIMIZER.md): its class registers
itself when defined, and every module here is imported below, after the built-in ones (whose import order is
the registry's order).
"""
import importlib
import pkgutil

from .registry import (  # noqa: F401
    OPTIMIZERS,
    OptimizerTraits,
    canonical_name,
    make_optimizer,
    optimizer_class,
    optimizer_from_state_dict,
    optimizer_names,
    optimizer_traits,
    register_optimizer,
    unregister_optimizer,
)
from .base import ZOOptimizer  # noqa: F401
from .sgd import ZOSGD, ZOSignSGD  # noqa: F401
from .adam import ZOAdam  # noqa: F401
from .szvrg import ZOSZVRG  # noqa: F401
from .guided_es import GuidedES  # noqa: F401
from .lstm import LSTMStep, ZOLSTM, ZOLSTMGuidedES, ZOLSTMNoQuery, ZOLSTMNoUpdate  # noqa: F401

# Optimizers added as modules of this folder register themselves on import (a plugin folder: nothing else to edit).
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

#: the names registered when the package was imported (`optimizer_names()` lists the live registry)
OPTIMIZER_NAMES = optimizer_names()

__all__ = [
    "ZOOptimizer", "ZOSGD", "ZOSignSGD", "ZOAdam", "ZOSZVRG", "GuidedES", "ZOLSTM", "ZOLSTMNoQuery", "ZOLSTMNoUpdate",
    "ZOLSTMGuidedES", "LSTMStep", "OPTIMIZERS", "OPTIMIZER_NAMES", "OptimizerTraits", "make_optimizer",
    "optimizer_from_state_dict", "optimizer_names", "optimizer_traits", "optimizer_class", "register_optimizer",
    "unregister_optimizer", "canonical_name",
]
