"""sample_queries and directions_vjp against the reference (docs/OPS.md section 2), forward and backward."""
import math

import pytest
import torch

from testing import assert_close, device_dtype_params, gen, ops, randn, reference, seeds

Z = torch.ops.zol2l

# (B, q, d): empty batch, empty dimension, d below / across / not a multiple of the 4-wide Philox block and of
# 16, and a d above the CPU kernels' column chunk (1024).
SHAPES = [
    (0, 3, 5),
    (3, 2, 0),
    (1, 1, 1),
    (3, 3, 5),
    (2, 5, 13),
    (3, 2, 17),
    (4, 3, 33),
    (1, 2, 4),
    (2, 7, 16),
    (2, 3, 1025),
]
SHAPE_IDS = [f"B{b}-q{q}-d{d}" for b, q, d in SHAPES]
MODES = ["identity", "scale", "mixed"]  # scale None / scale with use_scale None / scale with a mixed use_scale
MU = 0.05


def _ref_dtype(dtype):
    # The kernels draw z in the op dtype (float for the half types, which accumulate in float).
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _inputs(B, d, mode, dtype, device, seed=0):
    g = gen(seed)
    theta = randn(B, d, g=g, dtype=dtype, device=device)
    scale = use_scale = None
    if mode != "identity":
        scale = (torch.rand(B, d, generator=g, dtype=torch.float64) * 2 + 0.1).to(dtype=dtype, device=device)
    if mode == "mixed":
        use_scale = (torch.arange(B) % 2 == 0).to(device)  # [True, False, True, ...]
    return seeds(B).to(device), theta, scale, use_scale


def _ref_inputs(seed, theta, scale, use_scale, dtype):
    rd = _ref_dtype(dtype)
    cast = lambda t: None if t is None else t.detach().cpu().to(rd).requires_grad_(t.requires_grad)  # noqa: E731
    return seed.cpu(), cast(theta), cast(scale), None if use_scale is None else use_scale.cpu()


@pytest.mark.parametrize("device,dtype", device_dtype_params(half=True))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B,q,d", SHAPES, ids=SHAPE_IDS)
def test_sample_queries_forward_matches_reference(B, q, d, mode, device, dtype):
    seed, theta, scale, use_scale = _inputs(B, d, mode, dtype, device)
    u, points = ops.sample_queries(theta, q, MU, scale=scale, use_scale=use_scale, seed=seed)
    assert u.shape == (B, q, d) and points.shape == (B, q + 1, d)
    assert u.dtype == dtype and points.dtype == dtype and u.device.type == device
    rs, rt, rsc, rus = _ref_inputs(seed, theta, scale, use_scale, dtype)
    u_r, p_r = reference.sample_queries_ref(rs, rt, q, MU, scale=rsc, use_scale=rus)
    assert_close(u, u_r, dtype, msg="u")
    assert_close(points, p_r, dtype, msg="points")
    # Row 0 is theta itself, bit for bit.
    assert torch.equal(points[:, 0], theta)


@pytest.mark.parametrize("device,dtype", device_dtype_params(half=True))
@pytest.mark.parametrize("used", ["u+points", "u", "points"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B,q,d", [(0, 2, 3), (3, 2, 0), (1, 1, 1), (3, 4, 5), (2, 3, 17), (2, 2, 1030)],
                         ids=["B0", "d0", "B1-q1-d1", "B3-q4-d5", "B2-q3-d17", "B2-q2-d1030"])
def test_sample_queries_backward_matches_reference(B, q, d, mode, used, device, dtype):
    seed, theta, scale, use_scale = _inputs(B, d, mode, dtype, device, seed=1)
    theta.requires_grad_(True)
    if scale is not None:
        scale.requires_grad_(True)
    u, points = ops.sample_queries(theta, q, MU, scale=scale, use_scale=use_scale, seed=seed)
    assert points.requires_grad and (scale is None or u.requires_grad)

    rs, rt, rsc, rus = _ref_inputs(seed, theta, scale, use_scale, dtype)
    u_r, p_r = reference.sample_queries_ref(rs, rt, q, MU, scale=rsc, use_scale=rus)

    g = gen(2)
    w_u = randn(B, q, d, g=g, dtype=dtype, device=device)
    w_p = randn(B, q + 1, d, g=g, dtype=dtype, device=device)
    loss, loss_r = 0, 0
    if "u" in used.split("+"):
        loss, loss_r = loss + (u * w_u).sum(), loss_r + (u_r * w_u.cpu().to(u_r.dtype)).sum()
    if "points" in used.split("+"):
        loss, loss_r = loss + (points * w_p).sum(), loss_r + (p_r * w_p.cpu().to(p_r.dtype)).sum()
    wrt = [theta] + ([scale] if scale is not None else [])
    wrt_r = [rt] + ([rsc] if rsc is not None else [])
    got = torch.autograd.grad(loss, wrt, allow_unused=True, materialize_grads=True)
    if not loss_r.requires_grad:  # identity scale and only u used: u does not depend on theta
        assert mode == "identity" and used == "u"
        assert torch.count_nonzero(got[0]) == 0
        return
    want = torch.autograd.grad(loss_r, wrt_r, allow_unused=True, materialize_grads=True)
    for name, a, b in zip(("theta", "scale"), got, want):
        assert a.shape == b.shape and a.dtype == dtype, name
        assert_close(a, b, dtype, scale=math.sqrt(q + 1) * 10, msg=f"grad of {name}")
    if mode == "mixed" and scale is not None and B > 0:
        # Problems that do not use their scale get no gradient into it.
        assert torch.count_nonzero(got[1][~use_scale]) == 0


@pytest.mark.parametrize("device,dtype", device_dtype_params())
@pytest.mark.parametrize("B,q,d", [(0, 2, 3), (2, 0, 3), (2, 3, 0), (1, 1, 1), (3, 4, 5), (2, 3, 17), (2, 2, 1030),
                                   (1, 3, 2049)])
def test_directions_vjp_matches_reference(B, q, d, device, dtype):
    g = gen(3)
    grad_u = randn(B, q, d, g=g, dtype=dtype, device=device)
    seed = seeds(B, base=77).to(device)
    out = Z.directions_vjp(seed, grad_u)
    assert out.shape == (B, d) and out.dtype == dtype and out.device.type == device
    want = reference.directions_vjp_ref(seed.cpu(), grad_u.cpu())
    assert_close(out, want, dtype, scale=math.sqrt(max(q, 1)), msg="directions_vjp")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_directions_vjp_is_the_transpose_of_sampling(device, dtype):
    # <directions_vjp(seed, G), s_hat> == <G, u> for the identity scale applied coordinatewise by s_hat.
    B, q, d = 3, 4, 9
    seed = seeds(B, base=5).to(device)
    g = gen(4)
    s_hat = randn(B, d, g=g, dtype=dtype, device=device)
    G = randn(B, q, d, g=g, dtype=dtype, device=device)
    theta = torch.zeros(B, d, dtype=dtype, device=device)
    u, _ = ops.sample_queries(theta, q, 1.0, seed=seed)  # u = z
    lhs = (Z.directions_vjp(seed, G) * s_hat).sum(dim=1)
    rhs = (G * (s_hat.unsqueeze(1) * u)).sum(dim=(1, 2))
    assert_close(lhs, rhs, dtype, scale=10, msg="<vjp, s> vs <G, u>")


def _philox_int(counter4, key2):
    """Philox4x32-10 on Python ints (all four counter words), from the Random123 definition."""
    M = 0xFFFFFFFF
    c = list(counter4)
    k0, k1 = key2
    for _ in range(10):
        p0 = 0xD2511F53 * c[0]
        p1 = 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & M, p1 & M, ((p0 >> 32) ^ c[3] ^ k1) & M, p0 & M]
        k0, k1 = (k0 + 0x9E3779B9) & M, (k1 + 0xBB67AE85) & M
    return c


def test_reference_philox_known_answer_vectors():
    """The reference Philox is Philox4x32-10: Random123's known-answer vectors, then the tensor version."""
    kat = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for counter, key, expected in kat:
        assert tuple(_philox_int(counter, key)) == expected
    # The tensor version (counter words 2, 3 = 0, as the ops use it) agrees with the integer one.
    counters = [0, 1, 5, 2**32 - 1, 2**32 + 7, 2**40 + 3]
    keys = [0, 1, 1234, 2**62 - 1, -1, -(2**63)]
    for ctr in counters:
        for key in keys:
            words = reference.philox4x32_10(torch.tensor([ctr]), torch.tensor([key]))
            ku = key % 2**64
            want = _philox_int((ctr & 0xFFFFFFFF, ctr >> 32, 0, 0), (ku & 0xFFFFFFFF, ku >> 32))
            assert [int(w) for w in words] == want, (ctr, key)


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_sample_queries_extreme_seeds_match_reference(device, dtype):
    # Any int64 is a valid key, including negative ones (used as their two's complement bits).
    seed = torch.tensor([0, 1, 2**32, 2**62 - 1, 2**63 - 1, -1, -(2**63)], dtype=torch.int64)
    B, q, d = seed.numel(), 3, 7
    theta = torch.zeros(B, d, dtype=dtype)
    u, _ = ops.sample_queries(theta.to(device), q, 1.0, seed=seed.to(device))
    u_r, _ = reference.sample_queries_ref(seed, theta, q, 1.0)
    assert_close(u, u_r, dtype, msg="u for extreme seeds")
    assert torch.isfinite(u).all()
