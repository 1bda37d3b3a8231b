"""Black-box problems: B problems of dimension d evaluated together, one call per optimizer step.

Modules (the protocol every problem follows is in `base`'s docstring):
  base                   BlackBoxProblem (the protocol and shared row selection), has_success
  attack                 AttackProblem (score-based adversarial attack, paper App. A.1) and its SPACES
  binary_classification  BinaryClassificationProblem (synthetic datasets, paper Sec. 4.2)
  callable_problem       CallableProblem (any user function)
"""
from .attack import SPACES, AttackProblem
from .base import BlackBoxProblem, has_success
from .binary_classification import BinaryClassificationProblem
from .callable_problem import CallableProblem

__all__ = [
    "SPACES",
    "BlackBoxProblem",
    "AttackProblem",
    "BinaryClassificationProblem",
    "CallableProblem",
    "has_success",
]
