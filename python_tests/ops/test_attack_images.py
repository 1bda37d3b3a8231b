"""ops.attack_pixel_images (the query images of a pixel-space attack and their distances, one pass) against tensor
ops, and AttackProblem's values with it against its tensor-op path."""
from __future__ import annotations

import pytest
import torch

from testing import gen
from zol2l_ext import ops
from zo_testing import tiny_attack

Z = torch.ops.zol2l


def _reference(points, clean, norm):
    x = (clean.unsqueeze(1) + points).clamp(0.0, 1.0)
    diff = x - clean.unsqueeze(1)
    return x, (diff.abs() if norm == 1 else diff.square()).sum(dim=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("B,Q,d", [(2, 3, 17), (1, 21, 784), (5, 4, 3072), (0, 2, 3), (2, 0, 5), (3, 2, 7)])
def test_images_and_distances_equal_the_tensor_ops(B, Q, d, norm, dtype):
    g = gen(B * 1000 + Q * 10 + d)
    points = torch.randn(B, Q, d, generator=g, dtype=dtype) * 0.4  # many values clamp at 0 and at 1
    clean = torch.rand(B, d, generator=g, dtype=dtype)
    x, dist = ops.attack_pixel_images(points, clean, norm)
    xr, dr = _reference(points, clean, norm)
    assert torch.equal(x, xr)  # elementwise: the same operations in the same order
    torch.testing.assert_close(dist, dr, rtol=1e-6 if dtype == torch.float32 else 1e-13, atol=1e-6)


def test_nan_passes_through_and_strided_points_are_read_right():
    g = gen(3)
    points = torch.randn(4, 3, 9, generator=g).transpose(0, 1)  # [3, 4, 9], not contiguous
    clean = torch.rand(3, 9, generator=g)
    points[1, 2, 4] = float("nan")
    x, dist = ops.attack_pixel_images(points, clean, 1)
    xr, dr = _reference(points, clean, 1)
    assert torch.equal(x.isnan(), xr.isnan()) and torch.allclose(x, xr, equal_nan=True)
    assert dist.isnan().nonzero().tolist() == [[1, 2]]
    torch.testing.assert_close(dist, dr, equal_nan=True)


def test_bad_inputs_name_the_op_and_the_argument():
    p, c = torch.rand(2, 3, 5), torch.rand(2, 5)
    for args, match in (((p, c[:1], 1), "attack_pixel_images: clean must have shape"),
                        ((p, c.double(), 1), "clean has dtype"),
                        ((p[0], c, 1), "points must be \\[B, Q, d\\]"),
                        ((p, c, 3), "norm must be 1"),
                        ((p.half(), c.half(), 1), "supports float32 and float64")):
        with pytest.raises(RuntimeError, match=match):
            ops.attack_pixel_images(*args)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_attack_values_equal_the_tensor_op_path(norm, monkeypatch):
    problem, *_ = tiny_attack(B=4, c=0.3, norm=norm, space="pixel")
    points = torch.randn(4, 7, problem.dim, generator=gen(5)) * 0.3
    calls = []
    real = ops.attack_pixel_images
    monkeypatch.setattr(ops, "attack_pixel_images", lambda *a: calls.append(1) or real(*a))
    fused = problem(points)
    assert calls == [1]
    with torch.no_grad():  # the same black box through its tensor ops (the autograd path's code)
        want = problem._loss(points, no_grad=False)
    assert calls == [1]
    torch.testing.assert_close(fused, want, rtol=1e-6, atol=1e-6)


def test_the_tanh_space_and_low_resolution_variables_keep_the_tensor_ops(monkeypatch):
    calls = []
    real = ops.attack_pixel_images
    monkeypatch.setattr(ops, "attack_pixel_images", lambda *a: calls.append(1) or real(*a))
    for kw in (dict(space="tanh"), dict(space="pixel", upsample_from=(4, 4))):
        problem, *_ = tiny_attack(B=2, **kw)
        problem(torch.zeros(2, 3, problem.dim))
    assert calls == []


def test_opcheck():
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    result = torch.library.opcheck(Z.attack_pixel_images.default, (torch.rand(2, 3, 5), torch.rand(2, 5), 1),
                                   test_utils=tests)
    assert result == {t: "SUCCESS" for t in tests}, result
