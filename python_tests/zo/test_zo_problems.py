"""Black-box problems: the attack loss, the binary-classification task, the callable wrapper, their errors."""
from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

from zol2l_ext import zo
from zol2l_ext.zo import seeding

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the shared helpers, under any import mode
from zo_testing import one_thread, tiny_attack  # noqa: F401  (one_thread: autouse fixture)


def _manual_attack_loss(model, x, x0, labels, c, targeted=False, target=None, norm="l1"):
    logp = torch.log_softmax(model(x), dim=1)
    cls = target if targeted else labels
    f_cls = logp.gather(1, cls.view(-1, 1)).squeeze(1)
    other = logp.clone()
    other.scatter_(1, cls.view(-1, 1), float("-inf"))
    m = other.max(dim=1).values
    hinge = (m - f_cls if targeted else f_cls - m).clamp_min(0)
    diff = (x - x0).flatten(1)
    dist = diff.abs().sum(1) if norm == "l1" else diff.square().sum(1)
    return hinge + c * dist


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_attack_loss_matches_the_formula(norm):
    prob, model, images, labels = tiny_attack(B=4, dtype=torch.float64, norm=norm)
    th0 = prob.initial_point()
    assert th0.shape == (4, 64) and prob.dim == 64 and prob.batch == 4
    x0 = prob.adversarial_images(th0)
    assert torch.allclose(x0, images, atol=1e-6)  # the initial variable is the clean image
    pts = th0.unsqueeze(1) + 0.3 * torch.randn(4, 5, 64, dtype=torch.float64)
    vals = prob(pts)
    assert vals.shape == (4, 5)
    for j in range(5):
        x = (torch.tanh(pts[:, j].view(4, 1, 8, 8)) + 1) / 2
        ref = _manual_attack_loss(model, x, images, labels, 0.1, norm=norm)
        assert torch.allclose(vals[:, j], ref, atol=1e-10)
    # at the clean image the loss is the margin (> 0: correctly classified) + ~0 distortion
    f0 = prob(th0.unsqueeze(1)).squeeze(1)
    assert (f0 > 0).all() and not prob.success(th0).any()
    l1, l2 = prob.distortion(th0)
    assert (l1 < 1e-4).all() and (l2 < 1e-4).all()


def test_attack_differentiable_loss_for_training():
    prob, *_ = tiny_attack(B=3, dtype=torch.float64)
    th = (prob.initial_point() + 0.1).requires_grad_(True)
    f = prob.differentiable_loss(th)
    assert torch.allclose(f.detach(), prob(th.detach().unsqueeze(1)).squeeze(1))
    (g,) = torch.autograd.grad(f.sum(), th)
    assert g.shape == th.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    v = prob(th.unsqueeze(1))  # the black-box call itself never builds a graph
    assert not v.requires_grad


def test_attack_targeted_logits_and_success():
    prob, model, images, labels = tiny_attack(B=4, dtype=torch.float64)
    logits_model = nn.Sequential(*list(model.children())[:-1]).eval()  # without log_softmax
    p_logits = zo.AttackProblem(logits_model, images, labels, output="logits")
    pts = prob.initial_point().unsqueeze(1) + 0.5 * torch.randn(4, 3, 64, dtype=torch.float64)
    assert torch.allclose(p_logits(pts), prob(pts), atol=1e-10)
    target = (labels + 1) % 3
    pt = zo.AttackProblem(model, images, labels, targeted=True, target_labels=target, c=0.2)
    vals = pt(pts)
    for j in range(3):
        x = (torch.tanh(pts[:, j].view(4, 1, 8, 8)) + 1) / 2
        ref = _manual_attack_loss(model, x, images, labels, 0.2, targeted=True, target=target)
        assert torch.allclose(vals[:, j], ref, atol=1e-10)
    # success: untargeted = label changed, targeted = label == target
    th = pts[:, 0]
    pred = model((torch.tanh(th.view(4, 1, 8, 8)) + 1) / 2).argmax(1)
    assert torch.equal(prob.success(th), pred != labels)
    assert torch.equal(pt.success(th), pred == target)


def test_attack_select_upsample_and_chunks():
    prob, model, images, labels = tiny_attack(B=5, dtype=torch.float64)
    pts = prob.initial_point().unsqueeze(1) + 0.2 * torch.randn(5, 4, 64, dtype=torch.float64)
    idx = torch.tensor([3, 0])
    sub = prob.select(idx)
    assert sub.batch == 2 and torch.allclose(sub(pts[idx]), prob(pts)[idx])
    chunked = zo.AttackProblem(model, images, labels, chunk_size=3)
    assert torch.allclose(chunked(pts), prob(pts))
    up = zo.AttackProblem(model, images, labels, upsample_from=(4, 4))
    assert up.dim == 16 and torch.equal(up.initial_point(), torch.zeros(5, 16, dtype=torch.float64))
    assert torch.allclose(up.adversarial_images(up.initial_point()), images, atol=1e-6)
    v = up(torch.randn(5, 3, 16, dtype=torch.float64))
    assert v.shape == (5, 3) and torch.isfinite(v).all()
    # a constant low-resolution offset upsamples to the same constant offset
    off = torch.full((5, 16), 0.5, dtype=torch.float64)
    x = up.adversarial_images(off)
    assert torch.allclose(x, (torch.tanh(up.w0 + 0.5) + 1) / 2)


def test_attack_errors():
    prob, model, images, labels = tiny_attack(B=3)
    with pytest.raises(ValueError, match="empty batch"):
        zo.AttackProblem(model, images[:0], labels[:0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        zo.AttackProblem(model, images * 3, labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        zo.AttackProblem(model, images, labels[:2])
    with pytest.raises(ValueError, match="target_labels"):
        zo.AttackProblem(model, images, labels, targeted=True)
    with pytest.raises(ValueError, match="points must have shape"):
        prob(torch.zeros(3, 2, 10))
    flat = zo.AttackProblem(lambda x: x.flatten(), images, labels)  # wrong model output
    with pytest.raises(ValueError, match=r"\[N, num_classes\]"):
        flat(flat.initial_point().unsqueeze(1))
    bad_labels = zo.AttackProblem(model, images, torch.tensor([0, 1, 7]))
    with pytest.raises(ValueError, match="labels must lie"):
        bad_labels(bad_labels.initial_point().unsqueeze(1))


def test_binary_classification_task():
    p = zo.BinaryClassificationProblem(num_datasets=3, dim=10, n=200, minibatch=16, seeds=5)
    assert p.batch == 3 and p.dim == 10 and p.stochastic
    again = zo.BinaryClassificationProblem(num_datasets=1, dim=10, n=200, minibatch=16, seeds=[6])
    assert torch.equal(again.X[0], p.X[1]) and torch.equal(again.theta_star[0], p.theta_star[1])
    assert torch.equal(p.y, (torch.einsum("bnd,bd->bn", p.X.double(), p.theta_star.double()) > 0).float())
    th0 = p.initial_point()
    assert torch.allclose(p.full_loss(th0), torch.full((3,), 0.25))
    # the same key gives the same minibatch for all points of a row; a row alone sees the same minibatch
    keys = seeding.step_seeds(0, torch.arange(3), 4)
    pts = torch.randn(3, 4, 10)
    v = p(pts, seed=keys)
    idx = p.minibatch_indices(keys)
    assert idx.shape == (3, 16) and all(len(set(r)) == 16 for r in idx.tolist())
    for b in range(3):
        Xb, yb = p.X[b, idx[b]], p.y[b, idx[b]]
        ref = (yb - torch.sigmoid(pts[b] @ Xb.T)).square().mean(1)
        assert torch.allclose(v[b], ref, atol=1e-6)
    sub = p.select(torch.tensor([2]))
    assert torch.allclose(sub(pts[2:], seed=keys[2:]), v[2:])
    # different keys, different minibatch; full batch when minibatch is None
    assert not torch.equal(p.minibatch_indices(keys + 1), idx)
    full = zo.BinaryClassificationProblem(num_datasets=3, dim=10, n=200, minibatch=None, seeds=5)
    assert torch.allclose(full(th0.unsqueeze(1)).squeeze(1), full.full_loss(th0))
    # a good classifier has low loss
    assert (p.full_loss(p.theta_star * 10) < 0.05).all() and (p.accuracy(p.theta_star) == 1).all()


def test_callable_problem():
    fn = lambda pts: pts.square().sum(dim=2)  # noqa: E731
    p = zo.CallableProblem(fn, 4, 3, x0=torch.ones(4))
    assert torch.equal(p.initial_point(), torch.ones(3, 4)) and not zo.has_success(p)
    sub = p.select(torch.tensor([1, 2]))
    assert sub.batch == 2 and sub(torch.ones(2, 5, 4)).shape == (2, 5)
    seen = []

    def per_row(pts, index):
        seen.append(index.tolist())
        return pts.sum(dim=2) + index.unsqueeze(1)

    q = zo.CallableProblem(per_row, 2, 4, per_row=True, success=lambda th, index: index > 1)
    assert zo.has_success(q)
    s = q.select(torch.tensor([3, 0]))
    assert torch.equal(s(torch.zeros(2, 1, 2)), torch.tensor([[3.0], [0.0]])) and seen[-1] == [3, 0]
    assert s.success(torch.zeros(2, 2)).tolist() == [True, False]
    with pytest.raises(ValueError, match="empty batch"):
        zo.CallableProblem(fn, 4, 0)
    with pytest.raises(ValueError, match="x0 must have shape"):
        zo.CallableProblem(fn, 4, 2, x0=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="empty index"):
        p.select(torch.tensor([], dtype=torch.int64))
    with pytest.raises(IndexError):
        p.select(torch.tensor([5]))
