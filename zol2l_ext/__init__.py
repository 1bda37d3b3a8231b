"""zol2l_ext: a learned zeroth-order optimizer (ZO-L2L) with fused C++/CUDA kernels for PyTorch."""
from . import ops, reference  # noqa: F401
from .ops import central_points, draw_seeds, fd_gradient, has_cuda_kernels, lstm_step, sample_queries  # noqa: F401

__version__ = "0.1.0"


def __getattr__(name):
    # The attack API pulls in the optimizers, tunings and models: loaded on first use, not on `import zol2l_ext`.
    if name in ("ZOAttack", "AttackResult"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
