"""bench_ops.py cases of the CPU-only fused helpers (docs/OPS.md section 4), each against the tensor ops it replaces.

``learned_step_cases``: `LearnedZO.update_step` / `query_step` of a "rms" model as one op each
(`learned_update_step`, `learned_query_step`) against the same methods on their tensor-op path (the reference, and
what every other device runs). ``attack_image_cases``: `attack_pixel_images` against clamp(x0 + delta, 0, 1) and
its l1 distance as tensor ops. ``splitmix64_cases``: the key hash against `seeding.splitmix64_tensor_ops`. All
without autograd (the ops have none: they serve inference), logged as mode "inference". Where the device has no
kernel (CUDA), the row says so and only the reference is timed.
"""
from __future__ import annotations

import torch

from common import no_grad_fn
from ops_cases import _fused_available, _maxerr, _nbytes
from zol2l_ext import ops
from zol2l_ext.zo import seeding
from zol2l_ext.zo.lstm_optimizer import LearnedZO

STEP_SHAPES = [(1, 784), (100, 3072)]  # one MNIST image; 100 CIFAR-10 images
STEP_SHAPES_QUICK = STEP_SHAPES[:1]
IMAGE_SHAPES = [(1, 21, 784), (100, 51, 3072)]  # a step's query points: B x (q + 1) x d
IMAGE_SHAPES_QUICK = IMAGE_SHAPES[:1]
KEY_SIZES = [1, 100, 1 << 20]
KEY_SIZES_QUICK = KEY_SIZES[:2]


def _time_inference(timer, log, op, shape, dims, fused, ref, n_bytes, same):
    """Times fused and ref (no autograd) and logs one row; ``same(a, b)`` compares their outputs."""
    ok, why = _fused_available(fused)
    with torch.no_grad():
        err = {"ref": same(fused(), ref()) if ok else None}
    impls = {"fused": (fused, None), "ref": (ref, None)} if ok else {"ref": (ref, None)}
    res = {k: v["fwd"] for k, v in timer.time(impls).items()}
    log(dict(op=op, shape=shape, dims=dims, mode="inference", impls=res, bytes=n_bytes,
             kernel=timer.kernel_ms(fused) if ok else None, err=err, note=None if ok else why))


def _missing(device):
    def run():
        raise NotImplementedError(f"no kernel for {device} (CPU-only op; LearnedZO runs the tensor ops there)")
    return run


def learned_step_cases(device, timer, shapes, log):
    torch.manual_seed(4321)
    model = LearnedZO(scaling="rms").to(device).requires_grad_(False)
    reference = LearnedZO(scaling="rms").to(device).requires_grad_(False)
    reference.load_state_dict(model.state_dict())
    reference._fused = lambda *inputs: False  # this instance always takes the tensor ops

    for B, d in shapes:
        g = torch.randn(B, d, device=device)
        st = {**model.init_update_state(B, d, device), **model.init_query_state(B, d, device),
              "g_prev": torch.randn(B, d, device=device), "dtheta_prev": 1e-3 * torch.randn(B, d, device=device)}
        for k in ("h_update", "c_update", "h_query", "c_query"):
            st[k] = 0.3 * torch.randn_like(st[k])
        st["g_sq"] = g.square().mean(dim=1, keepdim=True)
        H = st["h_update"].shape[-1]
        shape, dims = f"B={B},d={d}", dict(B=B, d=d, H=H)

        def flat(out):  # (tensor, {name: tensor}) -> a tuple of tensors in a fixed order
            return (out[0], *(out[1][k] for k in sorted(out[1])))

        def agree(a, b):
            return _maxerr(flat(a), flat(b))

        state_bytes = 2 * B * d * H * g.element_size()  # h, c in; h_new, c_new out
        if ops.has_learned_step_kernel(device):
            fused_update = no_grad_fn(lambda: model.update_step(g, st))
            fused_query = no_grad_fn(lambda: model.query_step(st))
        else:  # LearnedZO would quietly take the tensor ops there: say so instead of timing them twice
            fused_update = fused_query = _missing(device)
        _time_inference(timer, log, "learned_update_step", shape, dims, fused_update,
                        no_grad_fn(lambda: reference.update_step(g, st)),
                        2 * B * d * g.element_size() + 2 * state_bytes, agree)
        _time_inference(timer, log, "learned_query_step", shape, dims, fused_query,
                        no_grad_fn(lambda: reference.query_step(st)),
                        3 * B * d * g.element_size() + 2 * state_bytes, agree)


def attack_image_cases(device, timer, shapes, log):
    for B, Q, d in shapes:
        gen = torch.Generator().manual_seed(B + Q + d)
        clean = torch.rand(B, d, generator=gen).to(device)
        points = (0.05 * torch.randn(B, Q, d, generator=gen)).to(device)

        def ref():
            x = (clean.unsqueeze(1) + points).clamp_(0.0, 1.0)
            return x, (x - clean.unsqueeze(1)).abs_().sum(dim=2)

        _time_inference(timer, log, "attack_pixel_images", f"B={B},Q={Q},d={d}", dict(B=B, Q=Q, d=d),
                        no_grad_fn(lambda: ops.attack_pixel_images(points, clean, 1)), no_grad_fn(ref),
                        _nbytes(clean, points) + (B * Q * d + B * Q) * points.element_size(), _maxerr)


def splitmix64_cases(device, timer, sizes, log):
    for n in sizes:
        x = torch.randint(-(1 << 62), 1 << 62, (n,), generator=torch.Generator().manual_seed(n)).to(device)

        def exact(a, b):  # a hash: any difference is a failure, not a rounding error
            return 0.0 if torch.equal(a, b) else float("inf")

        _time_inference(timer, log, "splitmix64", f"n={n}", dict(n=n), no_grad_fn(lambda: ops.splitmix64(x)),
                        no_grad_fn(lambda: seeding.splitmix64_tensor_ops(x)), 2 * x.numel() * x.element_size(),
                        exact)
