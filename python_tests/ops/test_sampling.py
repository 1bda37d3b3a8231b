"""Statistics and reproducibility of sample_queries (docs/OPS.md section 2).

All draws use fixed seeds, so these tests are deterministic; the statistical bounds are 5 or more standard
errors wide, so that a correct generator would pass them for almost any seed.
"""
import math

import pytest
import torch

from testing import assert_close, assert_equal, device_dtype_params, device_params, gen, ops, randn, reference, seeds


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_identity_directions_are_standard_normal(device, dtype):
    B, q, d = 4, 4096, 7
    theta = torch.zeros(B, d, dtype=dtype, device=device)
    u, _ = ops.sample_queries(theta, q, 1.0, seed=seeds(B, base=2024).to(device))
    u = u.double().cpu()
    n = q  # draws per (problem, coordinate)
    mean, var = u.mean(dim=1), u.var(dim=1)
    assert mean.abs().max() < 5 / math.sqrt(n), mean
    assert (var - 1).abs().max() < 5 * math.sqrt(2 / n), var
    # Shape of the distribution: mass within one sigma, and tails.
    flat = u.reshape(-1)
    within = (flat.abs() < 1).double().mean().item()
    assert abs(within - 0.682689) < 5 * math.sqrt(0.2166 / flat.numel())
    beyond3 = (flat.abs() > 3).double().mean().item()
    assert 0.0005 < beyond3 < 0.0050  # 0.0027 expected
    # Independence: coordinates, directions and problems uncorrelated (a reused counter shows up as 1).
    corr = torch.corrcoef(u.permute(2, 0, 1).reshape(d, -1))
    off = corr - torch.eye(d, dtype=corr.dtype)
    assert off.abs().max() < 5 / math.sqrt(B * q)
    # No value repeats (lanes, blocks and keys all distinct). float32 has only ~2^26 values in the bulk of the
    # distribution, so about 100 chance collisions among these 115k draws are expected there; a reused
    # counter or lane would repeat a large fraction.
    repeats = flat.numel() - torch.unique(flat).numel()
    assert repeats == 0 if dtype == torch.float64 else repeats < 0.005 * flat.numel(), repeats


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_scaled_directions_have_variance_s_hat_squared(device, dtype):
    B, q, d = 3, 4096, 6
    g = gen(8)
    scale = (torch.rand(B, d, generator=g, dtype=torch.float64) * 3 + 0.05).to(dtype=dtype, device=device)
    theta = torch.zeros(B, d, dtype=dtype, device=device)
    seed = seeds(B, base=31).to(device)
    u, _ = ops.sample_queries(theta, q, 1.0, scale=scale, seed=seed)
    u64 = u.double().cpu()
    s = scale.double().cpu()
    s_hat = math.sqrt(d) * s / s.norm(dim=1, keepdim=True)
    var = u64.var(dim=1)
    assert ((var / s_hat**2) - 1).abs().max() < 5 * math.sqrt(2 / q), (var, s_hat**2)
    # Recover s_hat exactly as u / z with the reference z: the same per problem for every direction, with
    # ||s_hat|| = sqrt(d).
    z = reference.gaussian_z_ref(seed.cpu(), q, d, dtype=dtype).double()
    ratio = u64 / z
    recovered = ratio.median(dim=1).values
    assert_close(recovered.norm(dim=1), torch.full((B,), math.sqrt(d), dtype=torch.float64), dtype,
                 msg="||s_hat||")
    assert_close(recovered, s_hat, dtype, msg="s_hat")
    good = z.abs() > 1e-3  # away from z = 0 the ratio is s_hat for every direction
    assert_close(ratio[good], s_hat.unsqueeze(1).expand_as(ratio)[good], dtype, scale=10, rscale=10,
                 msg="u / z per direction")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_scale_is_invariant_to_its_norm(device, dtype):
    # s_hat depends on the direction of s only: s and 7.5 s give the same u.
    B, q, d = 2, 3, 9
    g = gen(9)
    scale = (torch.rand(B, d, generator=g, dtype=torch.float64) + 0.1).to(dtype=dtype, device=device)
    theta = randn(B, d, g=g, dtype=dtype, device=device)
    seed = seeds(B).to(device)
    u1, _ = ops.sample_queries(theta, q, 0.1, scale=scale, seed=seed)
    u2, _ = ops.sample_queries(theta, q, 0.1, scale=scale * 7.5, seed=seed)
    assert_close(u1, u2, dtype, msg="u for s and 7.5 s")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_use_scale_false_rows_are_identity(device, dtype):
    B, q, d = 4, 5, 11
    g = gen(10)
    theta = randn(B, d, g=g, dtype=dtype, device=device)
    scale = (torch.rand(B, d, generator=g, dtype=torch.float64) * 4 + 0.1).to(dtype=dtype, device=device)
    seed = seeds(B, base=3).to(device)
    use_scale = torch.tensor([False, True, False, True], device=device)
    u_id, p_id = ops.sample_queries(theta, q, 0.2, seed=seed)
    u_sc, p_sc = ops.sample_queries(theta, q, 0.2, scale=scale, seed=seed)
    u_mx, p_mx = ops.sample_queries(theta, q, 0.2, scale=scale, use_scale=use_scale, seed=seed)
    assert_equal(u_mx[~use_scale], u_id[~use_scale], msg="use_scale False rows vs identity")
    assert_equal(p_mx[~use_scale], p_id[~use_scale], msg="use_scale False points vs identity")
    assert_close(u_mx[use_scale], u_sc[use_scale], dtype, msg="use_scale True rows vs scaled")
    assert not torch.allclose(u_sc[~use_scale], u_id[~use_scale])  # the scale does change those rows
    # All false: exactly the identity draw; all true: exactly the scaled draw.
    u_f, _ = ops.sample_queries(theta, q, 0.2, scale=scale, use_scale=torch.zeros(B, dtype=torch.bool,
                                                                                  device=device), seed=seed)
    u_t, _ = ops.sample_queries(theta, q, 0.2, scale=scale, use_scale=torch.ones(B, dtype=torch.bool,
                                                                                 device=device), seed=seed)
    assert_equal(u_f, u_id, msg="all use_scale False")
    assert_equal(u_t, u_sc, msg="all use_scale True")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_points_are_theta_plus_mu_u(device, dtype):
    B, q, d, mu = 3, 4, 10, 0.37
    g = gen(11)
    theta = randn(B, d, g=g, dtype=dtype, device=device)
    scale = (torch.rand(B, d, generator=g, dtype=torch.float64) + 0.1).to(dtype=dtype, device=device)
    u, points = ops.sample_queries(theta, q, mu, scale=scale, seed=seeds(B).to(device))
    assert_equal(points[:, 0], theta, msg="row 0")
    assert_close(points[:, 1:], theta.unsqueeze(1) + mu * u, dtype, msg="rows 1..q")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_same_seed_same_directions_different_seed_different(device, dtype):
    B, q, d = 3, 4, 9
    theta = randn(B, d, g=gen(12), dtype=dtype, device=device)
    seed = seeds(B, base=100).to(device)
    u1, p1 = ops.sample_queries(theta, q, 0.1, seed=seed)
    u2, p2 = ops.sample_queries(theta, q, 0.1, seed=seed.clone())
    assert_equal(u1, u2, msg="same seed u")
    assert_equal(p1, p2, msg="same seed points")
    u3, _ = ops.sample_queries(theta, q, 0.1, seed=seed + 1)
    for b in range(B):  # every problem changes, in every direction
        for i in range(q):
            assert not torch.allclose(u1[b, i], u3[b, i]), (b, i)
    # theta and mu do not enter the directions.
    u4, _ = ops.sample_queries(theta * 3 + 1, q, 0.7, seed=seed)
    assert_equal(u4, u1, msg="u independent of theta and mu")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_problem_alone_or_in_batch_draws_the_same(device, dtype):
    B, q, d = 5, 3, 13
    g = gen(13)
    theta = randn(B, d, g=g, dtype=dtype, device=device)
    scale = (torch.rand(B, d, generator=g, dtype=torch.float64) + 0.1).to(dtype=dtype, device=device)
    use_scale = torch.tensor([True, False, True, True, False], device=device)
    seed = seeds(B, base=555).to(device)
    u, p = ops.sample_queries(theta, q, 0.1, scale=scale, use_scale=use_scale, seed=seed)
    for b in range(B):
        sl = slice(b, b + 1)
        ub, pb = ops.sample_queries(theta[sl], q, 0.1, scale=scale[sl], use_scale=use_scale[sl], seed=seed[sl])
        assert_equal(ub[0], u[b], msg=f"problem {b} alone vs batched u")
        assert_equal(pb[0], p[b], msg=f"problem {b} alone vs batched points")
    # Reordering the batch reorders the draws.
    perm = torch.tensor([3, 0, 4, 2, 1], device=device)
    up, _ = ops.sample_queries(theta[perm], q, 0.1, scale=scale[perm], use_scale=use_scale[perm], seed=seed[perm])
    assert_equal(up, u[perm], msg="permuted batch")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_more_directions_extend_the_same_stream(device, dtype):
    # z[b, i, j] depends on (seed, i d + j) only: the first q directions do not change when q grows.
    B, d = 2, 7
    theta = torch.zeros(B, d, dtype=dtype, device=device)
    seed = seeds(B, base=8).to(device)
    u3, _ = ops.sample_queries(theta, 3, 1.0, seed=seed)
    u8, _ = ops.sample_queries(theta, 8, 1.0, seed=seed)
    assert_equal(u8[:, :3], u3, msg="prefix of the direction stream")


@pytest.mark.parametrize("device", device_params())
def test_generator_seeds_reproduce(device):
    B, q, d = 4, 3, 6
    theta = randn(B, d, g=gen(14), device=device)
    s1 = ops.draw_seeds(B, torch.Generator().manual_seed(42), device=device)
    s2 = ops.draw_seeds(B, torch.Generator().manual_seed(42), device=device)
    s3 = ops.draw_seeds(B, torch.Generator().manual_seed(43), device=device)
    assert s1.dtype == torch.int64 and s1.shape == (B,) and s1.device.type == device
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)
    assert torch.unique(s1).numel() == B and (s1 >= 0).all()
    # sample_queries(generator=...) draws its seeds exactly like draw_seeds on the same generator.
    u_a, p_a = ops.sample_queries(theta, q, 0.1, generator=torch.Generator().manual_seed(42))
    u_b, p_b = ops.sample_queries(theta, q, 0.1, generator=torch.Generator().manual_seed(42))
    u_s, p_s = ops.sample_queries(theta, q, 0.1, seed=s1)
    assert_equal(u_a, u_b, msg="same generator state")
    assert_equal(u_a, u_s, msg="generator vs draw_seeds")
    assert_equal(p_a, p_s, msg="generator vs draw_seeds points")
    # A generator advances: two successive calls draw different directions.
    gen_state = torch.Generator().manual_seed(42)
    first, _ = ops.sample_queries(theta, q, 0.1, generator=gen_state)
    second, _ = ops.sample_queries(theta, q, 0.1, generator=gen_state)
    assert_equal(first, u_a)
    assert not torch.allclose(first, second)
    # Without a generator the seeds come from torch's default CPU generator.
    torch.manual_seed(7)
    u_d1, _ = ops.sample_queries(theta, q, 0.1)
    torch.manual_seed(7)
    u_d2, _ = ops.sample_queries(theta, q, 0.1)
    assert_equal(u_d1, u_d2, msg="torch.manual_seed")
