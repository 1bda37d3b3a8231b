"""What the ops keep for backward (docs/OPS.md: the LSTM forward saves nothing but its inputs; inference saves
nothing at all; sample_queries regenerates z from the seed instead of storing it)."""
import contextlib

import pytest
import torch

from testing import LSTM_ARG_ORDER, device_params, lstm_inputs, ops, seeds


@contextlib.contextmanager
def record_saved():
    """Records every tensor autograd packs for backward, as (shape, numel, data_ptr)."""
    saved = []

    def pack(t):
        saved.append((tuple(t.shape), t.numel(), t.data_ptr() if t.numel() else 0))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield saved


N, H, I, O = 300, 16, 2, 1


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("mode", ["no_grad", "inputs_without_grad", "inference_mode"])
def test_lstm_step_inference_saves_nothing(mode, device):
    args = lstm_inputs(N, H, I, O, device=device, requires_grad=(mode != "inputs_without_grad"))
    ctx = {"no_grad": torch.no_grad(), "inference_mode": torch.inference_mode(),
           "inputs_without_grad": contextlib.nullcontext()}[mode]
    with record_saved() as saved, ctx:
        outs = ops.lstm_step(**args)
    assert saved == []
    for o in outs:
        assert o.grad_fn is None and not o.requires_grad


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "nobias"])
def test_lstm_step_training_saves_only_its_inputs(has_bias, device):
    args = lstm_inputs(N, H, I, O, bias=has_bias, b_out=has_bias, device=device, requires_grad=True)
    with record_saved() as saved:
        y, h_new, c_new = ops.lstm_step(**args)
    assert y.grad_fn is not None and h_new.grad_fn is y.grad_fn and c_new.grad_fn is y.grad_fn
    inputs = [args[k] for k in LSTM_ARG_ORDER if args[k] is not None]
    input_numel = sum(t.numel() for t in inputs)
    total = sum(n for _, n, _ in saved)
    # No [N, 4H] gate buffer, no copy of an output: exactly the inputs, by storage.
    assert total == input_numel, (total, input_numel, saved)
    assert all(shape != (N, 4 * H) for shape, _, _ in saved)
    assert sorted(p for _, _, p in saved) == sorted(t.data_ptr() for t in inputs)
    # And the backward still works from those.
    torch.autograd.grad(y.sum() + h_new.sum() + c_new.sum(), inputs)


@pytest.mark.parametrize("device", device_params())
def test_sample_queries_does_not_save_directions(device):
    B, q, d = 4, 64, 50
    theta = torch.zeros(B, d, dtype=torch.float64, device=device, requires_grad=True)
    scale = torch.rand(B, d, dtype=torch.float64, device=device).add_(0.1).requires_grad_(True)
    with record_saved() as saved:
        u, points = ops.sample_queries(theta, q, 0.1, scale=scale, seed=seeds(B).to(device))
    total = sum(n for _, n, _ in saved)
    assert total <= B * (d + 2), saved  # seed and scale; nothing of size B * q * d
    (u.sum() + points.sum()).backward()
    assert scale.grad is not None and theta.grad is not None
    with torch.no_grad(), record_saved() as saved:
        u, _ = ops.sample_queries(theta, q, 0.1, scale=scale, seed=seeds(B).to(device))
    assert saved == [] and u.grad_fn is None
