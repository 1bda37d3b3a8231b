"""Counter-based seeds: every random draw of a run is a pure function of (run seed, problem id, step, purpose).

Nothing here keeps a generator state, so a problem draws exactly the same numbers whether it is optimized alone
or in a batch, and a run interrupted at any step and resumed draws what the uninterrupted run draws.

All functions work on int64 tensors on any device (CPU or CUDA) without a host synchronisation. The hash is
SplitMix64 (Steele, Lea and Flood 2014) computed in two's-complement int64 arithmetic: multiplications and
additions wrap modulo 2^64 exactly as the unsigned reference, and right shifts are made logical by masking.
"""
from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from .. import ops

__all__ = [
    "splitmix64",
    "splitmix64_tensor_ops",
    "splitmix64_int",
    "step_seeds",
    "derive",
    "uniform01",
    "SALT_BERNOULLI",
    "SALT_GUIDED",
    "SALT_DATA",
    "SALT_FINAL",
    "SALT_META",
]

_MASK64 = (1 << 64) - 1


def _s64(v: int) -> int:
    """The int64 with the same 64 bits as the unsigned integer v (mod 2^64)."""
    v &= _MASK64
    return v - (1 << 64) if v >= (1 << 63) else v


_GOLDEN = _s64(0x9E3779B97F4A7C15)
_M1 = _s64(0xBF58476D1CE4E5B9)
_M2 = _s64(0x94D049BB133111EB)
_KEY_MASK = (1 << 63) - 1  # keys handed to the Philox sampler are kept non-negative (63 random bits)

# Purposes of derived streams (arbitrary distinct odd constants).
SALT_BERNOULLI = _s64(0xD1B54A32D192ED03)  # ZO-LSTM's per-step Bernoulli choice of the QueryRNN scale
SALT_GUIDED = _s64(0xAEF17502108EF2D9)  # Guided-ES coefficients in the guiding subspace
SALT_DATA = _s64(0x8CB92BA72F3D8DD7)  # minibatch of a stochastic problem
SALT_FINAL = _s64(0xF1357AEA2E62A9C5)  # reserved for evaluations outside a step
SALT_META = _s64(0x9E6C63D0676A9A99)  # the meta-loss's f(theta_t): a minibatch independent of the step's queries


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64(x: Tensor) -> Tensor:
    """SplitMix64 finaliser applied elementwise to an int64 tensor (bit-exact with the uint64 reference): the
    extension's one-pass kernel where the device has one (the CPU), else `splitmix64_tensor_ops`."""
    if x.dtype != torch.int64:
        raise TypeError(f"splitmix64 expects an int64 tensor, got {x.dtype}")
    if ops.has_splitmix64_kernel(x.device):
        return ops.splitmix64(x)
    return splitmix64_tensor_ops(x)


def splitmix64_tensor_ops(x: Tensor) -> Tensor:
    """`splitmix64` as int64 tensor ops (any device; the kernel's reference)."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def splitmix64_int(x: int) -> int:
    """Pure-Python reference of `splitmix64` on one value; returns the int64 (signed) result."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return _s64(z ^ (z >> 31))


def step_seeds(seed: int, problem_ids: Tensor, step: Union[int, Tensor]) -> Tensor:
    """Philox keys (int64 [B], non-negative) for one step of a run.

    key = splitmix64(splitmix64(splitmix64(seed) + problem_id) + step), so the key of a problem depends only on the
    run seed, its own id and the step: never on the batch it is in, nor on a generator state.
    `step` is a Python int (the same step for all rows) or an int64 tensor broadcastable to problem_ids.
    """
    base = splitmix64_int(int(seed))
    ids = problem_ids.to(torch.int64)
    k = splitmix64(ids + base)
    if isinstance(step, Tensor):
        k = splitmix64(k + step.to(device=k.device, dtype=torch.int64))
    else:
        k = splitmix64(k + _s64(int(step)))
    return k & _KEY_MASK


def derive(seeds: Tensor, salt: int) -> Tensor:
    """An independent stream's keys from a step's keys: splitmix64(seeds ^ salt), non-negative."""
    return splitmix64(seeds ^ _s64(salt)) & _KEY_MASK


def uniform01(seeds: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """One uniform number in [0, 1) per key (53 random bits of splitmix64(key))."""
    h = splitmix64(seeds)
    return _shr(h, 11).to(dtype) * (2.0 ** -53)
