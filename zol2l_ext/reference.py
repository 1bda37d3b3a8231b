"""Pure-PyTorch references of every fused op (tests, benchmarks and docs use these).

They follow docs/OPS.md literally, with ordinary differentiable torch operations, including a tensor
implementation of the Philox4x32-10 + Box-Muller draw, so that the sampling op can be checked exactly.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF


def lstm_step_ref(x, h, c, w_ih, w_hh, w_out, bias=None, b_out=None):
    gates = x @ w_ih.t() + h @ w_hh.t()
    if bias is not None:
        gates = gates + bias
    i, f, g, o = gates.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + i * g
    h_new = o * torch.tanh(c_new)
    y = h_new @ w_out.t()
    if b_out is not None:
        y = y + b_out
    return y, h_new, c_new


def _mulhilo32(a: Tensor, b: int) -> tuple[Tensor, Tensor]:
    # a < 2^32 held in int64, b a 32-bit constant: split a in 16-bit halves so no product overflows int64.
    p1 = (a & 0xFFFF) * b
    p2 = (a >> 16) * b
    mid = p1 + ((p2 & 0xFFFF) << 16)
    return mid & _M32, (p2 >> 16) + (mid >> 32)


def philox4x32_10(counter: Tensor, key: Tensor) -> list[Tensor]:
    """Philox4x32-10 on int64 tensors (values < 2^32); counter and key broadcast together."""
    c0, c1 = counter & _M32, (counter >> 32) & _M32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    k0, k1 = key & _M32, (key >> 32) & _M32
    for _ in range(10):
        lo0, hi0 = _mulhilo32(c0, 0xD2511F53)
        lo1, hi1 = _mulhilo32(c2, 0xCD9E8D57)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + 0x9E3779B9) & _M32
        k1 = (k1 + 0xBB67AE85) & _M32
    return [c0, c1, c2, c3]


def _box_muller(a: Tensor, b: Tensor, dtype) -> tuple[Tensor, Tensor]:
    inv = torch.tensor(2.3283064365386963e-10, dtype=dtype)
    u1 = (a.to(dtype) + 1) * inv
    u2 = b.to(dtype) * inv
    r = torch.sqrt(-2 * torch.log(u1))
    t = 2 * math.pi * u2
    return r * torch.cos(t), r * torch.sin(t)


def gaussian_z_ref(seed: Tensor, q: int, d: int, dtype=torch.float32) -> Tensor:
    """z [B, q, d]: element e = i d + j of problem b is lane e % 4 of Philox block e // 4 keyed by seed[b]."""
    B = seed.shape[0]
    device = seed.device
    n = q * d
    n_blocks = (n + 3) // 4
    blocks = torch.arange(n_blocks, dtype=torch.int64, device=device)
    words = philox4x32_10(blocks.unsqueeze(0).expand(B, n_blocks), seed.to(torch.int64).unsqueeze(1))
    z0, z1 = _box_muller(words[0], words[1], dtype)
    z2, z3 = _box_muller(words[2], words[3], dtype)
    z = torch.stack([z0, z1, z2, z3], dim=2).reshape(B, n_blocks * 4)[:, :n]
    return z.reshape(B, q, d)


def normalized_scale_ref(scale: Tensor, use_scale: Optional[Tensor] = None) -> Tensor:
    d = scale.shape[1]
    s_hat = scale * (math.sqrt(d) / scale.norm(dim=1, keepdim=True).clamp_min(1e-30))
    if use_scale is not None:
        s_hat = torch.where(use_scale.unsqueeze(1), s_hat, torch.ones_like(s_hat))
    return s_hat


def sample_queries_ref(seed, theta, q, mu, scale=None, use_scale=None):
    B, d = theta.shape
    z = gaussian_z_ref(seed, q, d, dtype=theta.dtype).to(theta.device)
    u = z if scale is None else normalized_scale_ref(scale, use_scale).unsqueeze(1) * z
    points = torch.cat([theta.unsqueeze(1), theta.unsqueeze(1) + mu * u], dim=1)
    return u, points


def directions_vjp_ref(seed, grad_u):
    B, q, d = grad_u.shape
    z = gaussian_z_ref(seed, q, d, dtype=grad_u.dtype).to(grad_u.device)
    return (grad_u * z).sum(dim=1)


def fd_gradient_ref(f0, fq, u, mu):
    q = u.shape[1]
    return ((fq - f0.unsqueeze(1)).unsqueeze(2) * u).sum(dim=1) / (mu * q)


def central_points_ref(theta, mu, start, count):
    B, d = theta.shape
    eye = torch.eye(d, dtype=theta.dtype, device=theta.device)[start : start + count]
    plus = theta.unsqueeze(1) + mu * eye
    minus = theta.unsqueeze(1) - mu * eye
    return torch.stack([plus, minus], dim=2).reshape(B, 2 * count, d)
