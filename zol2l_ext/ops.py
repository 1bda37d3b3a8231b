"""Python entry points of the fused ops, with their autograd formulas and fake (meta) kernels.

Contracts: docs/OPS.md. The kernels are registered by the compiled extension (csrc/); this module attaches
autograd through torch.library.register_autograd and shapes through register_fake, so that the ops work
under autograd, torch.compile(fullgraph=True) and opcheck.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loads the shared library, which registers the zol2l kernels)

_ops = torch.ops.zol2l

__all__ = [
    "has_cuda_kernels",
    "has_sample_out_kernel",
    "lstm_step",
    "sample_queries",
    "fd_gradient",
    "central_points",
    "learned_update_step",
    "learned_query_step",
    "has_learned_step_kernel",
    "attack_pixel_images",
    "has_attack_images_kernel",
    "splitmix64",
    "has_splitmix64_kernel",
    "draw_seeds",
]


def has_cuda_kernels() -> bool:
    """Whether this build registered the CUDA kernels (setup.py skips them without nvcc or a CUDA torch)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("zol2l::lstm_step", "CUDA")


# ----------------------------------------------------------------------------------------------------------
# 1. Coordinatewise LSTM step + linear head
# ----------------------------------------------------------------------------------------------------------
def lstm_step(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    w_out: Tensor,
    bias: Optional[Tensor] = None,
    b_out: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM step over N coordinates that share the weights, plus the linear head.

    x [N, I], h and c [N, H], w_ih [4H, I], w_hh [4H, H], w_out [O, H], bias [4H] or None, b_out [O] or None.
    Returns (y [N, O], h_new [N, H], c_new [N, H]). Without grad (or under torch.no_grad) nothing is saved.
    """
    return _ops.lstm_step.default(x, h, c, w_ih, w_hh, bias, w_out, b_out)


@torch.library.register_fake("zol2l::lstm_step")
def _lstm_step_fake(x, h, c, w_ih, w_hh, bias, w_out, b_out):
    torch._check(x.dim() == 2 and h.dim() == 2, lambda: "lstm_step: x and h must be 2-D")
    n, hidden = x.shape[0], h.shape[1]
    return x.new_empty((n, w_out.shape[0])), x.new_empty((n, hidden)), x.new_empty((n, hidden))


@torch.library.register_fake("zol2l::lstm_step_backward")
def _lstm_step_backward_fake(grad_y, grad_h_new, grad_c_new, x, h, c, w_ih, w_hh, bias, w_out, b_out):
    h4 = w_hh.shape[0]
    return (
        torch.empty_like(x),
        torch.empty_like(h),
        torch.empty_like(c),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        w_hh.new_empty((h4,)),
        torch.empty_like(w_out),
        w_out.new_empty((w_out.shape[0],)),
    )


def _lstm_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)
    ctx.has_bias = inputs[5] is not None
    ctx.has_b_out = inputs[7] is not None


def _lstm_backward(ctx, grad_y, grad_h_new, grad_c_new):
    x, h, c, w_ih, w_hh, bias, w_out, b_out = ctx.saved_tensors
    if grad_y is None:
        grad_y = x.new_zeros((x.shape[0], w_out.shape[0]))
    gx, gh, gc, gwih, gwhh, gb, gwout, gbout = _ops.lstm_step_backward.default(
        grad_y, grad_h_new, grad_c_new, x, h, c, w_ih, w_hh, bias, w_out, b_out
    )
    return (
        gx,
        gh,
        gc,
        gwih,
        gwhh,
        gb if ctx.has_bias else None,
        gwout,
        gbout if ctx.has_b_out else None,
    )


torch.library.register_autograd("zol2l::lstm_step", _lstm_backward, setup_context=_lstm_setup_context)


# ----------------------------------------------------------------------------------------------------------
# 2. Gaussian query sampling with variance normalization
# ----------------------------------------------------------------------------------------------------------
def draw_seeds(batch: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
    """One int64 Philox key per problem, drawn from `generator` (torch's default CPU generator if None)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    seeds = torch.randint(0, 2**62, (batch,), generator=generator, device=gen_device, dtype=torch.int64)
    return seeds.to(device) if device is not None else seeds


def sample_queries(
    theta: Tensor,
    q: int,
    mu: float,
    scale: Optional[Tensor] = None,
    use_scale: Optional[Tensor] = None,
    seed: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    out: Optional[tuple[Tensor, Tensor]] = None,
) -> tuple[Tensor, Tensor]:
    """Draw q Gaussian directions per problem and form the q + 1 query points.

    theta [B, d]; scale [B, d] (raw, rescaled per problem to norm sqrt(d)) or None for the identity;
    use_scale bool [B] (the per-problem Bernoulli choice) or None; seed int64 [B] or None to draw one per
    problem from `generator`. Returns (u [B, q, d], points [B, q + 1, d]) with points[:, 0] = theta and
    points[:, 1 + i] = theta + mu u_i. Differentiable in theta and scale (reparameterization).

    ``out=(u, points)``: write into these contiguous tensors (theta's dtype and device) and return them, so that
    a loop reuses its buffers instead of allocating new ones each step; not differentiable (like torch's
    ``out=``). Where the device has no out kernel (CUDA, whose caching allocator does not churn) the result is
    computed as usual and copied in.
    """
    if seed is None:
        seed = draw_seeds(theta.shape[0], generator, device=theta.device)
    if out is None:
        return _ops.sample_queries.default(seed, theta, scale, use_scale, q, float(mu))
    if torch.is_grad_enabled() and (theta.requires_grad or (scale is not None and scale.requires_grad)):
        raise RuntimeError("sample_queries(out=...) does not support automatic differentiation; "
                           "call it under torch.no_grad() or without out")
    u, points = out
    if _has_kernel("zol2l::sample_queries_out", theta.device.type):
        _ops.sample_queries_out.default(seed, theta, scale, use_scale, q, float(mu), u, points)
    else:
        u_new, points_new = _ops.sample_queries.default(seed, theta, scale, use_scale, q, float(mu))
        u.copy_(u_new)
        points.copy_(points_new)
    return u, points


def has_sample_out_kernel(device) -> bool:
    """Whether ``sample_queries(out=...)`` writes in place on ``device`` (CPU) rather than copying a new result."""
    return _has_kernel("zol2l::sample_queries_out", torch.device(device).type)


@functools.lru_cache(maxsize=None)
def _has_kernel(op: str, device_type: str) -> bool:
    # Cached: the dispatcher lookup costs ~15 us, a tenth of a one-image step's sampling.
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(op, key)


@torch.library.register_fake("zol2l::sample_queries_out")
def _sample_queries_out_fake(seed, theta, scale, use_scale, q, mu, u, points):
    return None


@torch.library.register_fake("zol2l::sample_queries")
def _sample_queries_fake(seed, theta, scale, use_scale, q, mu):
    b, d = theta.shape
    return theta.new_empty((b, q, d)), theta.new_empty((b, q + 1, d))


@torch.library.register_fake("zol2l::directions_vjp")
def _directions_vjp_fake(seed, grad_u):
    return grad_u.new_empty((grad_u.shape[0], grad_u.shape[2]))


def _sample_setup_context(ctx, inputs, output):
    seed, theta, scale, use_scale, q, mu = inputs
    ctx.mu = mu
    ctx.save_for_backward(seed, scale, use_scale)


def _normalization_backward(grad_s_hat: Tensor, scale: Tensor, use_scale: Optional[Tensor]) -> Tensor:
    # s_hat = sqrt(d) s / ||s||  =>  ds = sqrt(d) / ||s|| (g - (g . s) s / ||s||^2)
    d = scale.shape[1]
    norm = scale.norm(dim=1, keepdim=True).clamp_min(1e-30)
    proj = (grad_s_hat * scale).sum(dim=1, keepdim=True) / (norm * norm)
    grad = (math.sqrt(d) / norm) * (grad_s_hat - proj * scale)
    if use_scale is not None:
        grad = torch.where(use_scale.unsqueeze(1), grad, torch.zeros_like(grad))
    return grad


def _sample_backward(ctx, grad_u, grad_points):
    seed, scale, use_scale = ctx.saved_tensors
    grad_theta = grad_scale = None
    if ctx.needs_input_grad[1] and grad_points is not None:
        grad_theta = grad_points.sum(dim=1)
    if ctx.needs_input_grad[2] and scale is not None:
        total = grad_u
        if grad_points is not None:
            from_points = ctx.mu * grad_points[:, 1:]
            total = from_points if total is None else total + from_points
        if total is not None:
            grad_s_hat = _ops.directions_vjp.default(seed, total.contiguous())
            grad_scale = _normalization_backward(grad_s_hat, scale, use_scale)
    return None, grad_theta, grad_scale, None, None, None


torch.library.register_autograd("zol2l::sample_queries", _sample_backward, setup_context=_sample_setup_context)


# ----------------------------------------------------------------------------------------------------------
# 3. Batched finite differences
# ----------------------------------------------------------------------------------------------------------
def fd_gradient(f0: Tensor, fq: Tensor, u: Tensor, mu: float) -> Tensor:
    """ZO gradient estimate g [B, d] = sum_i (fq[:, i] - f0) u[:, i] / (mu q)  (paper eq. 1)."""
    return _ops.fd_gradient.default(f0, fq, u, float(mu))


@torch.library.register_fake("zol2l::fd_gradient")
def _fd_gradient_fake(f0, fq, u, mu):
    return u.new_empty((u.shape[0], u.shape[2]))


def _fd_setup_context(ctx, inputs, output):
    f0, fq, u, mu = inputs
    ctx.mu = mu
    ctx.save_for_backward(f0, fq, u)


def _fd_backward(ctx, grad_g):
    f0, fq, u = ctx.saved_tensors
    k = 1.0 / (ctx.mu * u.shape[1])
    grad_f0 = grad_fq = grad_u = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        grad_fq = torch.bmm(u, grad_g.unsqueeze(2)).squeeze(2) * k
        if ctx.needs_input_grad[0]:
            grad_f0 = -grad_fq.sum(dim=1)
        if not ctx.needs_input_grad[1]:
            grad_fq = None
    if ctx.needs_input_grad[2]:
        grad_u = ((fq - f0.unsqueeze(1)) * k).unsqueeze(2) * grad_g.unsqueeze(1)
    return grad_f0, grad_fq, grad_u, None


torch.library.register_autograd("zol2l::fd_gradient", _fd_backward, setup_context=_fd_setup_context)


def central_points(theta: Tensor, mu: float, start: int, count: int) -> Tensor:
    """Points of eq. 5 for coordinates [start, start + count): [B, 2 count, d], rows theta + mu e_j, theta - mu e_j."""
    return _ops.central_points.default(theta, float(mu), int(start), int(count))


@torch.library.register_fake("zol2l::central_points")
def _central_points_fake(theta, mu, start, count):
    b, d = theta.shape
    return theta.new_empty((b, 2 * count, d))


# ----------------------------------------------------------------------------------------------------------
# 4. Inference steps of the learned optimizer's two networks (LearnedZO, scaling "rms")
# ----------------------------------------------------------------------------------------------------------
def learned_update_step(g: Tensor, g_sq: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
                        bias: Optional[Tensor], w_out: Tensor, b_out: Optional[Tensor], log_step: Tensor,
                        rms_beta: float, eps: float, n: Optional[Tensor], boost: float,
                        boost_decay: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`LearnedZO.update_step` of a "rms" model without autograd, in one op (CPU; see `has_learned_step_kernel`):
    (Delta theta [B, d], the new g_sq [B, 1], h_new, c_new [B, d, H]). Contract: docs/OPS.md."""
    return _ops.learned_update_step.default(g, g_sq, h, c, w_ih, w_hh, bias, w_out, b_out, log_step,
                                            float(rms_beta), float(eps), n, float(boost), float(boost_decay))


def learned_query_step(g_prev: Tensor, dtheta_prev: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
                       bias: Optional[Tensor], w_out: Tensor, b_out: Optional[Tensor],
                       eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """`LearnedZO.query_step` of a "rms" model without autograd, in one op: (the raw scale s [B, d], h_new,
    c_new [B, d, H])."""
    return _ops.learned_query_step.default(g_prev, dtheta_prev, h, c, w_ih, w_hh, bias, w_out, b_out, float(eps))


def has_learned_step_kernel(device) -> bool:
    """Whether the learned_*_step ops have a kernel for ``device`` (the CPU; elsewhere LearnedZO runs tensor ops)."""
    return _has_kernel("zol2l::learned_update_step", torch.device(device).type)


@torch.library.register_fake("zol2l::learned_update_step")
def _learned_update_step_fake(g, g_sq, h, c, w_ih, w_hh, bias, w_out, b_out, log_step, rms_beta, eps, n, boost,
                              boost_decay):
    return g.new_empty(g.shape), g_sq.new_empty(g_sq.shape), h.new_empty(h.shape), h.new_empty(h.shape)


@torch.library.register_fake("zol2l::learned_query_step")
def _learned_query_step_fake(g_prev, dtheta_prev, h, c, w_ih, w_hh, bias, w_out, b_out, eps):
    return g_prev.new_empty(g_prev.shape), h.new_empty(h.shape), h.new_empty(h.shape)


# ----------------------------------------------------------------------------------------------------------
# 5. The query images of a pixel-space attack
# ----------------------------------------------------------------------------------------------------------
def attack_pixel_images(points: Tensor, clean: Tensor, norm: int) -> tuple[Tensor, Tensor]:
    """(images [B, Q, d] = clamp(clean + points, 0, 1), their distances [B, Q] to clean [B, d]: the sum of |.|
    for ``norm=1``, of squares for ``norm=2``) in one pass (CPU; see `has_attack_images_kernel`). No autograd."""
    return _ops.attack_pixel_images.default(points, clean, int(norm))


def has_attack_images_kernel(device) -> bool:
    """Whether ``attack_pixel_images`` has a kernel for ``device`` (the CPU; elsewhere AttackProblem runs tensor
    ops)."""
    return _has_kernel("zol2l::attack_pixel_images", torch.device(device).type)


@torch.library.register_fake("zol2l::attack_pixel_images")
def _attack_pixel_images_fake(points, clean, norm):
    return points.new_empty(points.shape), points.new_empty(points.shape[:2])


# ----------------------------------------------------------------------------------------------------------
# 6. The key hash of zo/seeding.py
# ----------------------------------------------------------------------------------------------------------
def splitmix64(x: Tensor) -> Tensor:
    """The SplitMix64 finaliser of int64 bit patterns, elementwise, in one kernel (CPU; see
    `has_splitmix64_kernel`). `zol2l_ext.zo.seeding.splitmix64` picks it or its tensor-op reference."""
    return _ops.splitmix64.default(x)


def has_splitmix64_kernel(device) -> bool:
    """Whether ``splitmix64`` has a kernel for ``device`` (the CPU; elsewhere seeding.py uses int64 tensor ops)."""
    return _has_kernel("zol2l::splitmix64", torch.device(device).type)


@torch.library.register_fake("zol2l::splitmix64")
def _splitmix64_fake(x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)
