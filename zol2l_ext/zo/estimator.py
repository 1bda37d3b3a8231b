"""Zeroth-order gradient estimators on batches of problems, built on the fused ops.

Gaussian estimator (paper eq. 1), for B problems at once:

    g[b] = 1 / (mu q) * sum_i [f_b(theta_b + mu u_bi) - f_b(theta_b)] u_bi,   u_bi = s_hat_b * z_bi, z ~ N(0, I)

``ops.sample_queries`` draws the directions and builds the B x (q + 1) points (row 0 = theta, so f(theta) is
queried once per step, not once per direction: q + 1 queries per step), the black box is called once on all
points, and ``ops.fd_gradient`` forms the B estimates. With s_hat = 1 (identity), E[g] = grad f_mu(theta), the
gradient of the Gaussian-smoothed function, which equals grad f(theta) for a quadratic; with a scale,
E[g] = diag(s_hat^2) grad f_mu (s_hat normalised so that ||s_hat||_2 = sqrt(d): the mean squared norm of a
direction stays d, as for a standard Gaussian).

*Deviation from the reference code*: the authors' ``GradientEstimate`` re-evaluates f(theta) for every
direction (2q + 1 queries per step) and uses mu = 1e-6 in float64; we evaluate f(theta) once (DESIGN.md) and
default to mu = 0.005, a radius that float32 values resolve.

Guided-ES directions (Maheswaranathan et al. 2019, as the authors' ``guided=True`` branch):
u = sqrt(alpha) z + sqrt(1 - alpha) U z_k, z ~ N(0, I_d), z_k ~ N(0, I_k), U an orthonormal basis of the last
gradient estimate and the last update (k = 2), then u is rescaled to the norm of z (direction norm preserved).

Also the coordinatewise central differences of eq. 5 (2d queries, in chunks built by ``ops.central_points``)
and `ZOObjective`, an autograd function whose backward is those central differences (the zeroth-order
training mode of DESIGN.md).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .. import ops
from ..malloc_tuning import keep_freed_memory_once
from .seeding import SALT_DATA, SALT_GUIDED, derive

__all__ = [
    "NonFiniteValueError",
    "GradientEstimate",
    "Workspace",
    "evaluate",
    "mark_nonfinite",
    "gaussian_estimate",
    "FD_BASELINES",
    "check_baseline",
    "fd_base",
    "guided_directions",
    "guided_estimate",
    "orthonormal_pair",
    "central_difference_gradient",
    "ZOObjective",
    "zo_objective",
]


class NonFiniteValueError(FloatingPointError):
    """The black box returned NaN or infinite values (or the iterate became non-finite)."""


class GradientEstimate(NamedTuple):
    g: Tensor  # [B, d]
    f0: Tensor  # [B]: f(theta), NaN where a value of the row was not finite
    u: Tensor  # [B, q, d] the directions
    values: Tensor  # [B, Q] all values of the call


class Workspace:
    """Buffers that a step writes into and the next step writes over, instead of allocating new ones.

    A batch of query points is tens of MB (CIFAR-10, 100 images: u and the points 61 MB each); allocated afresh
    every step, glibc maps such a block from the kernel and returns it on free, and the step page-faults it in
    again. ``buffer(name, shape, like)`` returns a contiguous tensor of ``shape`` with ``like``'s dtype and
    device: the rows [:B] of a kept buffer when one of at least B rows and the same trailing shape exists (the
    runner drops finished problems, so B only shrinks within a run), else a new one that is kept.
    What a buffer held is overwritten by the next use: nothing returned to a caller may alias one. Not
    thread-safe (one workspace per optimizer, used by its steps in turn).
    """

    def __init__(self) -> None:
        self._buffers: dict = {}

    def buffer(self, name: str, shape: Tuple[int, ...], like: Tensor) -> Tensor:
        buf = self._buffers.get(name)
        if (buf is None or buf.dtype != like.dtype or buf.device != like.device or buf.dim() != len(shape)
                or tuple(buf.shape[1:]) != tuple(shape[1:]) or buf.shape[0] < shape[0]):
            buf = like.new_empty(shape)
            self._buffers[name] = buf
        return buf[: shape[0]]

    def clear(self) -> None:
        """Free the buffers (the next use allocates them again)."""
        self._buffers.clear()

    # Buffers are scratch, not state: a copied or pickled optimizer starts with an empty workspace instead of
    # carrying (and sharing or serialising) tens of MB of stale query points.
    def __deepcopy__(self, memo) -> "Workspace":
        return Workspace()

    def __getstate__(self) -> dict:
        return {"_buffers": {}}


def evaluate(problem, points: Tensor, seeds: Optional[Tensor] = None) -> Tensor:
    """Call the black box once on ``points [B, Q, d]`` and validate the result ``[B, Q]``.

    A stochastic problem gets ``seed=derive(seeds, SALT_DATA)`` so that its sample (minibatch) is a function
    of the step's keys. The first call of the process applies `malloc_tuning.keep_freed_memory_once`. Values
    are returned in the dtype of ``points``. Raises ValueError on a wrong shape, and on bool or complex values
    (a cast would silently keep 0/1 or drop the imaginary part).
    """
    B, Q, d = points.shape
    # Every black-box call of the library passes here: the first one keeps the process from returning the black
    # box's big per-call buffers to the kernel (malloc_tuning), which it would page-fault in again every step.
    keep_freed_memory_once()
    if getattr(problem, "stochastic", False) and seeds is not None:
        values = problem(points, seed=derive(seeds, SALT_DATA))
    else:
        values = problem(points)
    if not isinstance(values, Tensor):
        raise ValueError(f"the black box must return a Tensor [B={B}, Q={Q}], got {type(values).__name__}")
    if values.shape != (B, Q):
        raise ValueError(
            f"the black box must map points [B={B}, Q={Q}, d={d}] to values [B={B}, Q={Q}], "
            f"got values of shape {tuple(values.shape)}"
        )
    if values.dtype == torch.bool or values.is_complex():  # a cast would keep 0/1 or drop the imaginary part
        raise ValueError(f"the black box must return real values (floating point or integer), got {values.dtype}")
    if values.dtype != points.dtype or values.device != points.device:
        values = values.to(device=points.device, dtype=points.dtype)
    return values


def mark_nonfinite(values: Tensor, f0: Optional[Tensor] = None) -> Tensor:
    """f0 [B] (default: values[:, 0]) with NaN where any value of the row is not finite (no host sync)."""
    if f0 is None:
        f0 = values[:, 0]
    finite = torch.isfinite(values).all(dim=1)
    return torch.where(finite, f0, torch.full_like(f0, float("nan")))


def _check_batch(x: Tensor, name: str, dims: Tuple[str, ...], owner: str = "") -> None:
    """Raise ValueError unless ``x`` is a floating-point tensor with the dimensions named ``dims`` (the first
    one the batch B) and at least one row. ``owner`` prefixes the messages (e.g. a class name)."""
    where = f"{owner}: " if owner else ""
    if not isinstance(x, Tensor) or x.dim() != len(dims):
        raise ValueError(f"{where}{name} must be a [{', '.join(dims)}] tensor, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if x.shape[0] == 0:
        raise ValueError(f"{where}empty batch: {name} has B = 0 rows")
    if not x.is_floating_point():
        raise ValueError(f"{where}{name} must be floating point, got {x.dtype}")


def _check_theta(theta: Tensor, seeds: Tensor) -> None:
    _check_batch(theta, "theta", ("B", "d"))
    if not isinstance(seeds, Tensor) or seeds.shape != (theta.shape[0],) or seeds.dtype != torch.int64:
        raise ValueError(f"seeds must be an int64 tensor of shape [{theta.shape[0]}], got "
                         f"{(tuple(seeds.shape), seeds.dtype) if isinstance(seeds, Tensor) else type(seeds).__name__}")


def gaussian_estimate(
    problem,
    theta: Tensor,
    q: int,
    mu: float,
    seeds: Tensor,
    scale: Optional[Tensor] = None,
    use_scale: Optional[Tensor] = None,
    workspace: Optional[Workspace] = None,
    baseline: str = "f0",
) -> GradientEstimate:
    """The Gaussian estimator for B problems with one black-box call of B x (q + 1) points.

    ``baseline``: what each direction's value is differenced against (`FD_BASELINES`). "f0" is the paper's eq. 1,
    f(theta + mu u_i) - f(theta). "mean" takes the mean of the q direction values instead, a control variate: a
    part of the values that all directions share (the dense l1 term of an attack, whose kink at a saturated
    pixel moves every value alike) then cancels instead of multiplying every u_i. It costs no query, since
    f(theta) is still evaluated for the loss.

    ``workspace``: the directions and the points are written into its buffers (when no gradient flows to theta
    or the scale, and the device has the in-place kernel: on CUDA the caching allocator already reuses memory,
    and a copy would only add work); the returned ``u`` then aliases a buffer that the next call overwrites, and
    so do the points the black box sees (a black box that keeps them must copy them)."""
    _check_theta(theta, seeds)
    if seeds.device != theta.device:
        seeds = seeds.to(theta.device)
    out = None
    if workspace is not None and ops.has_sample_out_kernel(theta.device) and not (torch.is_grad_enabled() and (
            theta.requires_grad or (scale is not None and scale.requires_grad))):
        B, d = theta.shape
        out = (workspace.buffer("u", (B, q, d), theta), workspace.buffer("points", (B, q + 1, d), theta))
    u, points = ops.sample_queries(theta, q, mu, scale=scale, use_scale=use_scale, seed=seeds, out=out)
    values = evaluate(problem, points, seeds)
    f0 = values[:, 0]
    g = ops.fd_gradient(fd_base(values, baseline), values[:, 1:], u, mu)
    return GradientEstimate(g, mark_nonfinite(values, f0), u, values)


#: the values an estimate differences against: f(theta) (eq. 1) or the mean of the q direction values
FD_BASELINES = ("f0", "mean")


def check_baseline(baseline: str) -> str:
    if baseline not in FD_BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(FD_BASELINES)}, got {baseline!r}")
    return baseline


def fd_base(values: Tensor, baseline: str) -> Tensor:
    """[B] values the q direction values are differenced against (``values`` [B, q + 1], f(theta) first)."""
    if check_baseline(baseline) == "mean":
        return values[:, 1:].mean(dim=1)
    return values[:, 0]


def orthonormal_pair(a: Tensor, b: Tensor, rtol: float = 1e-6) -> Tuple[Tensor, Tensor]:
    """Batched Gram-Schmidt of a, b [B, d] -> e1, e2 [B, d] orthonormal, or zero where degenerate.

    The authors take ``torch.qr`` of [a, b]; a rank-deficient pair (b parallel to a, as after a ZO-SGD step,
    or both zero at the first step) then yields arbitrary basis vectors (e.g. e_1, e_2 at the first step). We
    drop the degenerate vectors instead (zero columns), so that the guiding subspace only holds information.
    """
    na = a.norm(dim=1, keepdim=True)
    ok_a = na > 0
    e1 = torch.where(ok_a, a / na.clamp_min(1e-30), torch.zeros_like(a))
    v = b - (e1 * b).sum(dim=1, keepdim=True) * e1
    nv, nb = v.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ok_b = (nv > rtol * nb) & (nv > 0)
    e2 = torch.where(ok_b, v / nv.clamp_min(1e-30), torch.zeros_like(v))
    return e1, e2


def guided_directions(
    theta: Tensor,
    q: int,
    mu: float,
    seeds: Tensor,
    g_prev: Tensor,
    dtheta_prev: Tensor,
    alpha: float = 0.5,
) -> Tuple[Tensor, Tensor]:
    """Guided-ES directions and points: (u [B, q, d], points [B, q + 1, d]).

    z comes from ``ops.sample_queries`` (keys ``seeds``), z_k [B, q, 2] from ``ops.sample_queries`` on a
    2-dimensional zero point with keys ``derive(seeds, SALT_GUIDED)`` (counter-based as well). Each direction is
    rescaled to the norm of its z (the reference code's "norm_prev").
    """
    _check_theta(theta, seeds)
    z, points = ops.sample_queries(theta, q, mu, seed=seeds)
    e1, e2 = orthonormal_pair(g_prev, dtheta_prev)
    zk, _ = ops.sample_queries(theta.new_zeros((theta.shape[0], 2)), q, 1.0, seed=derive(seeds, SALT_GUIDED))
    sub = zk[:, :, 0:1] * e1.unsqueeze(1) + zk[:, :, 1:2] * e2.unsqueeze(1)  # [B, q, d]
    u = z * math.sqrt(alpha) + sub * math.sqrt(1.0 - alpha)
    u = u * (z.norm(dim=2, keepdim=True) / u.norm(dim=2, keepdim=True).clamp_min(1e-30))
    if torch.is_grad_enabled() and (theta.requires_grad or u.requires_grad):
        points = torch.cat([theta.unsqueeze(1), theta.unsqueeze(1) + mu * u], dim=1)
    else:
        torch.add(theta.unsqueeze(1), u, alpha=mu, out=points[:, 1:])  # reuse the op's buffer
    return u, points


def guided_estimate(problem, theta: Tensor, q: int, mu: float, seeds: Tensor, g_prev: Tensor, dtheta_prev: Tensor,
                    alpha: float = 0.5, baseline: str = "f0") -> GradientEstimate:
    """The estimator on `guided_directions` for B problems with one black-box call of B x (q + 1) points
    (``baseline``: see `gaussian_estimate`)."""
    u, points = guided_directions(theta, q, mu, seeds, g_prev, dtheta_prev, alpha)
    values = evaluate(problem, points, seeds)
    g = ops.fd_gradient(fd_base(values, baseline), values[:, 1:], u, mu)
    return GradientEstimate(g, mark_nonfinite(values), u, values)


def central_difference_gradient(
    problem,
    theta: Tensor,
    mu: float = 1e-3,
    chunk: Optional[int] = None,
    seeds: Optional[Tensor] = None,
) -> Tensor:
    """Coordinatewise central differences (paper eq. 5): g [B, d] from 2d queries per problem.

    g_j = [f(theta + mu e_j) - f(theta - mu e_j)] / (2 mu). The points are built ``chunk`` coordinates at a time
    by ``ops.central_points`` (one black-box call of [B, 2 chunk, d] points per chunk; default: all d at once)
    so that memory stays bounded. A stochastic problem sees the same keys, hence the same minibatch, in every
    chunk.
    """
    B, d = theta.shape
    chunk = d if chunk is None else max(1, min(int(chunk), d))
    parts = []
    with torch.no_grad():
        for start in range(0, d, chunk):
            count = min(chunk, d - start)
            pts = ops.central_points(theta.detach(), mu, start, count)
            vals = evaluate(problem, pts, seeds)
            parts.append((vals[:, 0::2] - vals[:, 1::2]) / (2.0 * mu))
    return torch.cat(parts, dim=1)


class ZOObjective(torch.autograd.Function):
    """f(theta) [B] whose backward uses central differences instead of autograd through the black box."""

    @staticmethod
    def forward(ctx, theta, problem, mu, chunk, seeds):
        with torch.no_grad():
            f = evaluate(problem, theta.detach().unsqueeze(1), seeds).squeeze(1)
        ctx.problem, ctx.mu, ctx.chunk, ctx.seeds = problem, mu, chunk, seeds
        ctx.save_for_backward(theta.detach())
        return f

    @staticmethod
    def backward(ctx, grad_f):
        (theta,) = ctx.saved_tensors
        g = central_difference_gradient(ctx.problem, theta, ctx.mu, ctx.chunk, ctx.seeds)
        return grad_f.unsqueeze(1) * g, None, None, None, None


def zo_objective(problem, theta: Tensor, mu: float = 1e-3, chunk: Optional[int] = None,
                 seeds: Optional[Tensor] = None) -> Tensor:
    """Differentiable f(theta) [B] for meta-training in zeroth-order mode (backward: 2d queries, eq. 5)."""
    return ZOObjective.apply(theta, problem, mu, chunk, seeds)
