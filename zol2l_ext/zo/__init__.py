"""Zeroth-order optimization on batches of black-box problems (ZO-L2L, Ruan et al., ICLR 2020).

Modules:
  problems        BlackBoxProblem protocol; AttackProblem, BinaryClassificationProblem, CallableProblem
  estimator       Gaussian / Guided-ES / central-difference estimators on the fused ops
  lstm_optimizer  CoordinateLSTM (ops.lstm_step), UpdateRNN, QueryRNN, LearnedZO (save / load / pretrained)
  optimizers      ZO-SGD, ZO-signSGD, ZO-ADAM, ZO-SZVR-G, Guided ES, ZO-LSTM and ablations; the registry
  runner          minimize(): exact query counting, budgets, early stops, resumable runs
  run_state       RunResult, RunState (checkpoints), StepInfo given to callbacks
  run_batch       BatchRun: the bookkeeping of one minimize() call
  seeding         counter-based per-problem seeds (SplitMix64)
"""
from .estimator import (  # noqa: F401
    GradientEstimate,
    NonFiniteValueError,
    central_difference_gradient,
    evaluate,
    gaussian_estimate,
    guided_directions,
    zo_objective,
)
from .lstm_optimizer import CoordinateLSTM, LearnedZO, QueryRNN, UpdateRNN  # noqa: F401
from .optimizers import (  # noqa: F401
    OPTIMIZER_NAMES,
    OPTIMIZERS,
    GuidedES,
    OptimizerTraits,
    ZOAdam,
    ZOLSTM,
    ZOLSTMGuidedES,
    ZOLSTMNoQuery,
    ZOLSTMNoUpdate,
    ZOOptimizer,
    ZOSGD,
    ZOSignSGD,
    ZOSZVRG,
    make_optimizer,
    optimizer_from_state_dict,
    optimizer_names,
    optimizer_traits,
)
from .problems import (  # noqa: F401
    AttackProblem,
    BinaryClassificationProblem,
    BlackBoxProblem,
    CallableProblem,
    has_success,
)
from .runner import STOP_REASONS, RunResult, RunState, StepInfo, minimize  # noqa: F401
from .seeding import step_seeds, splitmix64  # noqa: F401
