"""Checks that a target model's outputs fit the attack: a finite float tensor of class scores, log-probabilities
or logits (not probabilities)."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["OUTPUT_KINDS", "ModelOutputError", "check_model_outputs"]

OUTPUT_KINDS = ("logprob", "logits")


class ModelOutputError(ValueError):
    """The target model's outputs do not fit the attack (shape, class count, kind or values)."""


@torch.no_grad()
def check_model_outputs(model: nn.Module, images: torch.Tensor, num_classes: int | None = 10,
                        declared: str | None = None) -> str:
    """Runs ``model`` on a few images and returns its output kind ("logprob" or "logits").

    Raises ModelOutputError when the outputs are not a finite float tensor [n, num_classes], when they look
    like probabilities (the attack needs log-probabilities or logits), or when ``declared`` is "logprob" and
    the rows are not log-probabilities. ``model`` may be any callable; ``num_classes`` None takes any K >= 2."""
    name = type(model).__name__
    x = images[: min(8, images.shape[0])]
    try:
        params = getattr(model, "parameters", None)  # a plain function has none: the images stay where they are
        p = next(iter(params()), None) if callable(params) else None
        if p is not None:
            x = x.to(p.device)
        out = model(x)
    except Exception as e:  # noqa: BLE001  (any failure to run is the model not fitting the images)
        raise ModelOutputError(f"target model {name} fails on images of shape {tuple(x.shape)} "
                               f"(values in [0, 1]): {type(e).__name__}: {e}") from e
    if not isinstance(out, torch.Tensor):
        raise ModelOutputError(f"target model {name} returns {type(out).__name__}, not a tensor of class scores")
    if (out.dim() != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 2
            or (num_classes is not None and out.shape[1] != num_classes)):
        raise ModelOutputError(f"target model {name} returns shape {tuple(out.shape)} for {x.shape[0]} images; "
                               f"the attack needs [{x.shape[0]}, {num_classes or 'K >= 2'}] class scores")
    if not out.is_floating_point():
        raise ModelOutputError(f"target model {name} returns {out.dtype}; the attack needs float class scores")
    if not torch.isfinite(out).all():
        raise ModelOutputError(f"target model {name} returns non-finite scores (nan/inf)")
    out = out.double()
    lse = torch.logsumexp(out, dim=1)
    is_logprob = bool((out <= 1e-5).all() and (lse.abs() < 1e-3).all())
    is_prob = bool((out >= 0).all() and (out <= 1).all() and ((out.sum(1) - 1).abs() < 1e-3).all())
    if is_prob and not is_logprob:
        raise ModelOutputError(f"target model {name} returns probabilities (rows sum to 1); the attack needs "
                               "log-probabilities (log_softmax) or logits")
    if declared is not None and declared not in OUTPUT_KINDS:
        raise ValueError(f"output kind must be one of {OUTPUT_KINDS}, got {declared!r}")
    if declared == "logprob" and not is_logprob:
        raise ModelOutputError(f"target model {name} is declared to return log-probabilities, but its rows do "
                               f"not (max logsumexp deviation {float(lse.abs().max()):.3g}); declare logits")
    return declared or ("logprob" if is_logprob else "logits")
