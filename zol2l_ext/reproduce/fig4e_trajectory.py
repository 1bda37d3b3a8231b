"""Fig. 4(e): one coordinate's predicted variance, gradient estimate and updates over the iterations (MNIST attack).

ZO-LSTM (the task's pretrained weights, q and mu of the task, the test-time Bernoulli p = 0.5 choice of the
QueryRNN's scale) attacks the first ``items`` test images (one batch, seed ``ctx.seed``, row ids 0..items-1 as
`zo.runner.minimize` keys them) for ``steps`` steps. Before every step t the QueryRNN's predicted variance of each
coordinate is read from the state (it is a deterministic function of the state: s = QueryRNN(g_{t-1}, Delta
theta_{t-1}); the sampler draws u = s_hat z with s_hat = sqrt(d) |s| / || |s| ||, so the predicted variance of
coordinate j is s_hat_j^2, whose mean over the d coordinates is 1); after it, the step's gradient estimate g_t and
ZO-LSTM's update Delta theta_t. From the SAME estimates g_0..g_T-1 we form the updates ZO-SGD (-(lr/d) g_t) and
ZO-ADAM (bias-corrected Adam with coordinate step lr/d, as optimizers.ZOAdam) would make, with the task's shipped
tuned learning rates and betas. Per image the plotted coordinate is the one with the largest mean |g_t| over the
steps (ties: the lowest index). Measured: the roughness mean_t |u_{t+1} - u_t| / mean_t |u_t| of each update
sequence u (lower = smoother), the correlation of ZO-LSTM's update with -g_t and with -EMA(g)_t (Adam's first
moment, beta1), and the Pearson correlation over the steps of the predicted variance at step t with |g_{t-1}| and
with |Delta theta_{t-1}| (the QueryRNN's inputs) and its coefficient of variation over the steps, each at the
chosen coordinate (median over images) and over all coordinates (median).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor

from ..zo.seeding import step_seeds
from .compare import fmt
from .core import claim
from .figures import COLORS, arr, panels, save
from .probe import (attack_setup, baseline_kwargs, learned_info, make_zo_lstm, num, nums, pearson,
                    predicted_variance, training_note)

TITLE = "One coordinate's predicted variance, gradient estimate and updates (ZO-LSTM vs ZO-SGD / ZO-ADAM)"
PAPER = "Fig. 4(e)"

SCALES = {
    "tiny": {"task": "digits-attack", "learned": "digits-attack", "items": 2, "steps": 12},
    "default": {"task": "mnist-attack", "learned": "mnist-attack", "items": 5, "steps": 200},
    "full": {"task": "mnist-attack", "learned": "mnist-attack", "items": 100, "steps": 200},
}


def adam_updates(g: Tensor, lr: float, beta1: float, beta2: float, eps: float = 1e-8) -> Tensor:
    """The updates [T, ...] ZO-ADAM (optimizers.ZOAdam, coordinate step lr / d) makes from the estimates g [T, B, d]."""
    d = g.shape[-1]
    m = torch.zeros_like(g[0])
    v = torch.zeros_like(g[0])
    out = torch.empty_like(g)
    for t in range(g.shape[0]):
        m = m * beta1 + g[t] * (1.0 - beta1)
        v = v * beta2 + g[t] * g[t] * (1.0 - beta2)
        bc1, bc2 = 1.0 - beta1 ** (t + 1), 1.0 - beta2 ** (t + 1)
        out[t] = -(lr / d) / bc1 * m / ((v / bc2).sqrt() + eps)
    return out


def ema(g: Tensor, beta: float) -> Tensor:
    """Bias-corrected exponential moving average over the first dimension (Adam's m_hat)."""
    m = torch.zeros_like(g[0])
    out = torch.empty_like(g)
    for t in range(g.shape[0]):
        m = m * beta + g[t] * (1.0 - beta)
        out[t] = m / (1.0 - beta ** (t + 1))
    return out


def roughness(u: Tensor) -> Tensor:
    """mean_t |u_{t+1} - u_t| / mean_t |u_t| over the first dimension (lower = smoother); NaN where u is 0."""
    den = u.abs().mean(0)
    r = (u[1:] - u[:-1]).abs().mean(0) / den
    return torch.where(den > 0, r, torch.full_like(r, float("nan")))


def _nanmedian(x: Tensor) -> Optional[float]:
    x = x.detach().double().cpu().reshape(-1)
    x = x[torch.isfinite(x)]
    return num(x.median()) if x.numel() else None


# ------------------------------------------------------------------------------------------------- the run
def _trace(ctx) -> Dict[str, Any]:
    p = ctx.params
    spec, problem, model, desc = attack_setup(ctx, p["task"], p["learned"], int(p["items"]))
    opt = make_zo_lstm(spec, model)
    B, d, T = problem.batch, problem.dim, int(p["steps"])
    theta = problem.initial_point().to(ctx.device)
    state = opt.init_state(theta)
    ids = torch.arange(B, dtype=torch.int64, device=theta.device)
    var = torch.empty((T, B, d), dtype=theta.dtype, device=theta.device)
    g = torch.empty_like(var)
    delta = torch.empty_like(var)
    loss = torch.empty((T + 1, B), dtype=torch.float64, device=theta.device)
    for t in range(T):
        var[t] = predicted_variance(opt, state)
        theta, state, f0 = opt.step(problem, theta, state, step_seeds(ctx.seed, ids, t))
        g[t], delta[t], loss[t] = state["g_prev"], state["dtheta_prev"], f0
    with torch.no_grad():
        loss[T] = problem(theta.unsqueeze(1)).squeeze(1)
    sgd_kw, sgd_src = baseline_kwargs(spec.name, "zo-sgd")
    adam_kw, adam_src = baseline_kwargs(spec.name, "zo-adam")
    sgd = g * (-sgd_kw["lr"] / d)
    adam = adam_updates(g, adam_kw["lr"], adam_kw["beta1"], adam_kw["beta2"])
    mom = -ema(g, adam_kw["beta1"])

    # per image and coordinate [B, d]
    rough = {"zo-lstm": roughness(delta), "zo-sgd": roughness(sgd), "zo-adam": roughness(adam)}
    corr_g = pearson(delta, -g, dim=0)  # over the steps
    corr_mom = pearson(delta, mom, dim=0)
    corr_var = pearson(var[1:], g[:-1].abs(), dim=0)
    corr_var_dt = pearson(var[1:], delta[:-1].abs(), dim=0)
    var_cv = var.std(0) / var.mean(0)
    spread = var.std(dim=2).mean(0)  # [B]: std of the variance over the coordinates, mean over the steps
    chosen = g.abs().mean(0).argmax(dim=1)  # [B]: first index of the max
    rows = torch.arange(B, device=chosen.device)

    def at(x: Tensor) -> Tensor:
        return x[rows, chosen]

    images = []
    for b in range(B):
        j = int(chosen[b])
        images.append({
            "coordinate": j, "pixel": [j // problem.image_shape[-1], j % problem.image_shape[-1]],
            "x0": num(problem.images.flatten(1)[b, j]),
            "variance": nums(var[:, b, j]), "g": nums(g[:, b, j]), "zo-lstm": nums(delta[:, b, j]),
            "zo-sgd": nums(sgd[:, b, j]), "zo-adam": nums(adam[:, b, j]), "loss": nums(loss[:, b]),
            "roughness": {k: num(v[b, j]) for k, v in rough.items()},
            "corr_update_g": num(corr_g[b, j]), "corr_update_momentum": num(corr_mom[b, j]),
            "corr_variance_prev_abs_g": num(corr_var[b, j]), "corr_variance_prev_abs_update": num(corr_var_dt[b, j]),
            "variance_cv": num(var_cv[b, j]), "variance_spread_over_coordinates": num(spread[b]),
        })
    summary = {
        "chosen": {
            "roughness": {k: _nanmedian(at(v)) for k, v in rough.items()},
            "corr_update_g": _nanmedian(at(corr_g)), "corr_update_momentum": _nanmedian(at(corr_mom)),
            "corr_variance_prev_abs_g": _nanmedian(at(corr_var)),
            "corr_variance_prev_abs_update": _nanmedian(at(corr_var_dt)), "variance_cv": _nanmedian(at(var_cv)),
        },
        "all": {
            "roughness": {k: _nanmedian(v) for k, v in rough.items()},
            "corr_update_g": _nanmedian(corr_g), "corr_update_momentum": _nanmedian(corr_mom),
            "corr_variance_prev_abs_g": _nanmedian(corr_var), "corr_variance_prev_abs_update": _nanmedian(corr_var_dt),
            "variance_cv": _nanmedian(var_cv), "variance_spread_over_coordinates": _nanmedian(spread),
            "variance_min": num(var.min()), "variance_max": num(var.max()),
        },
    }
    return {
        "task": spec.name, "learned": desc, "items": B, "steps": T, "dim": d, "q": spec.q, "mu": spec.mu,
        "query_prob": opt.query_prob, "image_shape": list(problem.image_shape),
        "baselines": {"zo-sgd": {**sgd_kw, "source": sgd_src}, "zo-adam": {**adam_kw, "source": adam_src}},
        "coordinate_rule": "per image, the coordinate with the largest mean |g_t| over the steps",
        "variance_definition": "s_hat_j^2 with s_hat = sqrt(d) |s| / || |s| || (mean 1 over the coordinates)",
        "images": images, "summary": summary,
    }


def run(ctx) -> Dict[str, Any]:
    p = ctx.params
    ctx.log(f"{p['task']}: ZO-LSTM on {p['items']} test image(s), {p['steps']} steps, tracing every coordinate")
    data = ctx.cached(f"{p['task']}-trace", dict(p), lambda: _trace(ctx))
    data["learned_info"] = learned_info(p["learned"])
    return trim_traces(data)


#: per-step traces kept in result.json (the plot shows image 0; the claims use the per-image statistics)
KEPT_TRACES = 3
_TRACE_KEYS = ("variance", "g", "zo-lstm", "zo-sgd", "zo-adam", "loss")


def trim_traces(data: Dict[str, Any]) -> Dict[str, Any]:
    """Drops the per-step traces of images after the first `KEPT_TRACES` (several MB at the full scale)."""
    for im in data["images"][KEPT_TRACES:]:
        for k in _TRACE_KEYS:
            im.pop(k, None)
    return data


def plot(data, out_dir) -> List[str]:
    im = data["images"][0]
    fig, axes = panels(4, ncols=1, size=(8.0, 2.3))
    t = np.arange(data["steps"])
    where = f"image 0, coordinate {im['coordinate']} (pixel {tuple(im['pixel'])}, x0 = {fmt(im['x0'], 3)})"
    axes[0].plot(t, arr(im["variance"]), color="tab:red", lw=1.2)
    axes[0].axhline(1.0, color="k", lw=0.6, ls=":")
    axes[0].set_ylabel("predicted variance")
    axes[0].set_title(f"{data['task']}, {where}\nQueryRNN's predicted variance s_hat_j^2 (1 = isotropic)", fontsize=9)
    axes[1].plot(t, arr(im["g"]), color="k", lw=0.9)
    axes[1].set_ylabel("g_j")
    axes[1].set_title("gradient estimate g_j (ZO-LSTM's own estimates)", fontsize=9)
    for name in ("zo-sgd", "zo-adam", "zo-lstm"):
        axes[2].plot(t, arr(im[name]), label=f"{name} (roughness {fmt(im['roughness'][name], 3)})",
                     color=COLORS.get(name), lw=1.0 if name != "zo-lstm" else 1.6)
    axes[2].set_ylabel("Delta theta_j")
    axes[2].set_title("updates from the same estimates", fontsize=9)
    axes[2].legend(fontsize=7)
    axes[3].plot(np.arange(data["steps"] + 1), arr(im["loss"]), color=COLORS["zo-lstm"])
    axes[3].set_yscale("log")
    axes[3].set_ylabel("attack loss")
    axes[3].set_xlabel("iteration")
    for ax in axes:
        ax.grid(alpha=0.3)
    return [save(fig, out_dir, "fig4e_trajectory.png", "Fig. 4(e): one coordinate over the iterations")]


def table(data) -> str:
    rows = ["| set | roughness ZO-LSTM | roughness ZO-SGD | roughness ZO-ADAM | corr(update, -g) | "
            "corr(update, -EMA g) | corr(var_t, abs g_t-1) | corr(var_t, abs update_t-1) | CV of variance |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for key, what in (("chosen", "chosen coordinate (median over images)"), ("all", "all coordinates (median)")):
        s = data["summary"][key]
        r = s["roughness"]
        rows.append(f"| {what} | {fmt(r['zo-lstm'], 3)} | {fmt(r['zo-sgd'], 3)} | {fmt(r['zo-adam'], 3)} | "
                    f"{fmt(s['corr_update_g'], 3)} | {fmt(s['corr_update_momentum'], 3)} | "
                    f"{fmt(s['corr_variance_prev_abs_g'], 3)} | {fmt(s['corr_variance_prev_abs_update'], 3)} | "
                    f"{fmt(s['variance_cv'], 3)} |")
    return "\n".join(rows)


def _lt(a, b) -> bool:
    return a is not None and b is not None and a < b


def claims(data) -> List[Dict[str, str]]:
    ch, al = data["summary"]["chosen"], data["summary"]["all"]
    what = f"{data['task']}, {data['items']} image(s) x {data['steps']} steps"
    conds = [_lt(s["roughness"]["zo-lstm"], s["roughness"][o]) for s in (ch, al) for o in ("zo-sgd", "zo-adam")]
    verdict = "supported" if all(conds) else ("partly" if any(conds) else "not supported")
    rc, ra = ch["roughness"], al["roughness"]
    out = [claim(
        f"{what}: ZO-LSTM's update (UpdateRNN) is smoother over the iterations than the updates ZO-SGD and ZO-ADAM "
        "would make from the same gradient estimates",
        f"roughness mean|u_t+1 - u_t| / mean|u_t| (lower = smoother), chosen coordinate (median over images): "
        f"ZO-LSTM {fmt(rc['zo-lstm'], 3)}, ZO-SGD {fmt(rc['zo-sgd'], 3)}, ZO-ADAM {fmt(rc['zo-adam'], 3)}; all "
        f"coordinates (median): ZO-LSTM {fmt(ra['zo-lstm'], 3)}, ZO-SGD {fmt(ra['zo-sgd'], 3)}, ZO-ADAM "
        f"{fmt(ra['zo-adam'], 3)}", verdict)]
    mconds = [s["corr_update_momentum"] is not None and s["corr_update_g"] is not None
              and s["corr_update_momentum"] > max(s["corr_update_g"], 0.0) for s in (ch, al)]
    out.append(claim(
        f"{what}: the UpdateRNN behaves like a learned momentum rule: its update follows a running average of the "
        "gradient estimates rather than the current estimate alone",
        f"corr(ZO-LSTM update, -EMA(g), beta1 {data['baselines']['zo-adam']['beta1']}) vs corr(update, -g_t): "
        f"chosen coordinate {fmt(ch['corr_update_momentum'], 3)} vs {fmt(ch['corr_update_g'], 3)}; all "
        f"coordinates {fmt(al['corr_update_momentum'], 3)} vs {fmt(al['corr_update_g'], 3)}",
        "supported" if all(mconds) else ("partly" if any(mconds) else "not supported")))
    cv = [abs(s["corr_variance_prev_abs_g"]) if s["corr_variance_prev_abs_g"] is not None else None for s in (ch, al)]
    strong = [c is not None and c >= 0.3 for c in cv]
    weak = [c is not None and c >= 0.1 for c in cv]
    moves = ch["variance_cv"] is not None and ch["variance_cv"] >= 0.05
    verdict = ("supported" if all(strong) and moves else
               "partly" if any(strong) or all(weak) else "not supported")
    out.append(claim(
        f"{what}: the QueryRNN's predicted variance changes with the gradient estimate (it adapts the sampling "
        "variance to the coordinate's recent gradient)",
        f"Pearson corr over steps of the variance at t with |g_t-1| (the QueryRNN's input): chosen coordinate "
        f"(median over images) {fmt(ch['corr_variance_prev_abs_g'], 3)}, all coordinates (median) "
        f"{fmt(al['corr_variance_prev_abs_g'], 3)}; with |Delta theta_t-1| (its other input) "
        f"{fmt(ch['corr_variance_prev_abs_update'], 3)} / {fmt(al['corr_variance_prev_abs_update'], 3)}; the "
        f"variance's coefficient of variation over steps {fmt(ch['variance_cv'], 3)} (chosen) / "
        f"{fmt(al['variance_cv'], 3)} (all); all variances lie in [{fmt(al['variance_min'], 4)}, "
        f"{fmt(al['variance_max'], 4)}] (1 = isotropic){training_note(data.get('learned_info'))}. "
        "Supported needs |corr| >= 0.3 in both and a coefficient "
        "of variation >= 0.05; partly: |corr| >= 0.3 in one or >= 0.1 in both", verdict))
    return out
