"""Looking inside a learned ZO optimizer, shared by fig4d, fig4e and fig9: the attack problem of a task's first test
images, the ZO-LSTM built on given weights, the QueryRNN's predicted scale and variance at a state, what the weights'
metadata says about their training, and the baselines' tuned settings."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from .. import tasks as T
from ..fileio import json_number, json_numbers
from ..attack import build_optimizer
from ..evaluate import baseline_settings, resolve_learned
from ..zo.optimizers import make_optimizer


def num(x, nd: int = 6) -> Optional[float]:
    """A JSON number with ``nd`` significant digits (None for NaN / inf): `fileio.json_number`."""
    return json_number(x, sig=nd)


def nums(t, nd: int = 6) -> list:
    return json_numbers(t, sig=nd)


def attack_setup(ctx, task: str, learned: str, items: int):
    """(spec, problem of the first ``items`` test images on ctx.device, LearnedZO, its description)."""
    spec = T.get_task(task)
    if spec.kind != "attack":
        raise ValueError(f"{task} is not an attack task")
    td = T.load_task(spec, "test", data_root=ctx.data_root, device=ctx.device)
    if not 1 <= items <= len(td):
        raise ValueError(f"items must lie in 1..{len(td)}, got {items}")
    problem = T.make_problem(td, list(range(items)), device=ctx.device)
    model, desc = resolve_learned(learned, spec.name)
    return spec, problem, model, desc


def learned_info(learned: str) -> Dict[str, Any]:
    """What the weights' metadata says about their training (stage, epoch, meta-updates, gradient mode)."""
    model, desc = resolve_learned(learned, learned)
    meta = dict(getattr(model, "meta", {}) or {})
    return {"weights": desc, **{k: meta[k] for k in ("stage", "epoch", "updates", "grad_mode", "q") if k in meta}}


def training_note(info: Optional[Dict[str, Any]]) -> str:
    """" (weights: stage 2, 5 meta-updates)" from `learned_info`, or "" when the metadata does not say."""
    if not info or "updates" not in info:
        return ""
    return f" (weights {info.get('weights')}: training stage {info.get('stage', '?')}, {info['updates']} meta-updates)"


def make_zo_lstm(spec, model, q: Optional[int] = None, name: str = "zo-lstm"):
    return build_optimizer(name, spec.q if q is None else int(q), spec.mu, None, learned=model)


def predicted_scale(opt, state: Dict[str, Any]) -> Tensor:
    """s_hat [B, d]: the QueryRNN's normalised scale of the coming step (norm sqrt(d) per row), from the state
    before the step, exactly as ZOLSTM.step computes it and the sampler normalises it."""
    with torch.no_grad():
        s, _ = opt.model.query(state["g_prev"], state["dtheta_prev"], (state["h_query"], state["c_query"]))
        a = s.abs()
        return a * (math.sqrt(a.shape[1]) / a.norm(dim=1, keepdim=True).clamp_min(1e-30))


def predicted_variance(opt, state: Dict[str, Any]) -> Tensor:
    """s_hat^2 [B, d]: the per-coordinate variance of the QueryRNN's directions (mean 1 over coordinates)."""
    return predicted_scale(opt, state).square()


def baseline_kwargs(task: str, name: str) -> Tuple[Dict[str, float], str]:
    """(make_optimizer kwargs: lr and, for zo-adam, betas; their source): `evaluate.baseline_settings`, with the
    optimizer's own defaults where that gives no lr."""
    lr, kw, source = baseline_settings(name, task)
    if lr is not None:
        return {"lr": lr, **kw}, source
    cfg = make_optimizer(name).config()
    kw = {k: cfg[k] for k in ("lr", "beta1", "beta2") if k in cfg}  # betas: zo-adam
    return kw, "optimizer default (untuned)"


def cosine(a: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """Cosine similarity of ``a`` and ``b`` along ``dim`` (NaN where either is zero)."""
    den = a.norm(dim=dim) * b.norm(dim=dim)
    c = (a * b).sum(dim) / den.clamp_min(1e-30)
    return torch.where(den > 0, c, torch.full_like(c, float("nan")))


def pearson(a: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """Pearson correlation along ``dim`` (NaN where a series is constant): the cosine of the centred series."""
    return cosine(a - a.mean(dim, keepdim=True), b - b.mean(dim, keepdim=True), dim)


# ---------------------------------------------------------------------------------------------- analysis
