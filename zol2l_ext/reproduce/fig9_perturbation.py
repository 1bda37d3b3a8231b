"""App. C.2 (Fig. 9): final adversarial perturbations of ZO-LSTM and ZO-LSTM-no-query, and the QueryRNN's predicted
variance.

ZO-LSTM and ZO-LSTM-no-query (the same pretrained weights: UpdateRNN with the QueryRNN's directions at the test-time
Bernoulli p = 0.5, resp. with standard Gaussian directions) attack the first ``items`` test images of the task for
``steps`` steps, from the same initial point with the same seed and row ids (so the same standard normal draws z at
every step). Recorded per image: the final perturbation x_adv - x0 of each optimizer, its success and L1 distortion,
and ZO-LSTM's predicted variance per pixel, s_hat_j^2 with s_hat = sqrt(d) |s| / || |s| || (mean 1 over the pixels),
averaged over the steps (read from the state before each step, whether or not the Bernoulli draw used it). Measured
per image and averaged: the Spearman (and Pearson) correlation over the pixels between the mean predicted variance
and ZO-LSTM's |x_adv - x0|; the mean variance inside the digit mask (x0 > 0.5) over that outside; the mean variance
on the 5% most perturbed pixels over the rest, and how many of the 5% highest-variance pixels are among them; the
variance's range and its per-step spread over the pixels; and how focused a perturbation is, the share of its L1
mass in the 5% of pixels where it is largest (higher = more focused).
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

from ..zo.seeding import step_seeds
from .compare import fmt
from .core import claim
from .probe import (attack_setup, learned_info, make_zo_lstm, num, nums, pearson, predicted_variance,
                    training_note)
from .figures import panels, save

TITLE = "Adversarial perturbations of ZO-LSTM and ZO-LSTM-no-query, and the QueryRNN's predicted variance"
PAPER = "App. C.2 (Fig. 9)"

SCALES = {
    "tiny": {"task": "digits-attack", "learned": "digits-attack", "items": 2, "steps": 10, "shown": 2},
    "default": {"task": "mnist-attack", "learned": "mnist-attack", "items": 10, "steps": 200, "shown": 4},
    "full": {"task": "mnist-attack", "learned": "mnist-attack", "items": 100, "steps": 200, "shown": 6},
}
OPTIMIZERS = ("zo-lstm", "zo-lstm-no-query")
TOP_SHARE = 0.05


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks (0..n-1) along the last dimension (ties broken by position)."""
    r = torch.empty_like(x)
    idx = x.argsort(dim=-1)
    r.scatter_(-1, idx, torch.arange(x.shape[-1], dtype=x.dtype, device=x.device).expand_as(x).contiguous())
    return r


def top_share(x: torch.Tensor, frac: float = TOP_SHARE) -> torch.Tensor:
    """Share of each row's L1 mass held by its ceil(frac d) largest |entries| (NaN for a zero row)."""
    a = x.abs()
    k = max(1, int(np.ceil(frac * a.shape[-1])))
    tot = a.sum(-1)
    s = a.topk(k, dim=-1).values.sum(-1) / tot.clamp_min(1e-30)
    return torch.where(tot > 0, s, torch.full_like(s, float("nan")))


def _attack(ctx, problem, opt, steps: int, trace: bool):
    theta = problem.initial_point().to(ctx.device)
    state = opt.init_state(theta)
    ids = torch.arange(problem.batch, dtype=torch.int64, device=theta.device)
    var_sum = torch.zeros_like(theta) if trace else None
    spread_sum = theta.new_zeros(theta.shape[0]) if trace else None
    for t in range(steps):
        if trace:
            v = predicted_variance(opt, state)
            var_sum += v
            spread_sum += v.std(dim=1)
        theta, state, _ = opt.step(problem, theta, state, step_seeds(ctx.seed, ids, t))
    if not trace:
        return theta, None, None
    return theta, var_sum / steps, spread_sum / steps


def _run(ctx) -> Dict[str, Any]:
    p = ctx.params
    spec, problem, model, desc = attack_setup(ctx, p["task"], p["learned"], int(p["items"]))
    steps = int(p["steps"])
    x0 = problem.images.flatten(1).double()
    mask = x0 > 0.5
    out: Dict[str, Any] = {"task": spec.name, "learned": desc, "items": problem.batch, "steps": steps,
                           "q": spec.q, "dim": problem.dim, "image_shape": list(problem.image_shape),
                           "x0": [nums(r, 4) for r in x0], "optimizers": {}}
    var = spread = None
    for name in OPTIMIZERS:
        opt = make_zo_lstm(spec, model, name=name)
        theta, v, sp = _attack(ctx, problem, opt, steps, trace=opt.use_query)
        if v is not None:
            var, spread = v.double(), sp.double()
        with torch.no_grad():
            delta = problem.adversarial_images(theta).flatten(1).double() - x0
            success = problem.success(theta)
            final = problem(theta.unsqueeze(1)).squeeze(1)
        out["optimizers"][name] = {
            "query_prob": opt.query_prob if opt.use_query else None,
            "perturbation": [nums(r, 4) for r in delta], "success": [bool(s) for s in success.cpu()],
            "final_loss": nums(final), "l1": nums(delta.abs().sum(1)), "top_share": nums(top_share(delta)),
            "mask_share": nums((delta.abs() * mask).sum(1) / delta.abs().sum(1).clamp_min(1e-30)),
        }
    out["variance"] = [nums(r, 4) for r in var]
    ad = {n: torch.tensor(out["optimizers"][n]["perturbation"], dtype=torch.float64).abs().to(var.device)
          for n in OPTIMIZERS}
    inside = (var * mask).sum(1) / mask.sum(1).clamp_min(1)
    outside = (var * ~mask).sum(1) / (~mask).sum(1).clamp_min(1)
    k = max(1, int(np.ceil(TOP_SHARE * var.shape[1])))
    top_pert = torch.zeros_like(mask).scatter_(1, ad["zo-lstm"].topk(k, dim=1).indices, True)
    top_var = torch.zeros_like(mask).scatter_(1, var.topk(k, dim=1).indices, True)
    on_top = (var * top_pert).sum(1) / k
    off_top = (var * ~top_pert).sum(1) / (~top_pert).sum(1).clamp_min(1)
    out["per_image"] = {
        "spearman_variance_perturbation": nums(pearson(_ranks(var), _ranks(ad["zo-lstm"]))),
        "pearson_variance_perturbation": nums(pearson(var, ad["zo-lstm"])),
        "spearman_variance_perturbation_no_query": nums(pearson(_ranks(var), _ranks(ad["zo-lstm-no-query"]))),
        "variance_inside_mask": nums(inside), "variance_outside_mask": nums(outside),
        "variance_mask_ratio": nums(inside / outside), "mask_pixel_share": nums(mask.double().mean(1)),
        "variance_mask_mass_share": nums((var * mask).sum(1) / var.sum(1)),
        "variance_top_perturbation_ratio": nums(on_top / off_top),
        "top_variance_in_top_perturbation": nums((top_var & top_pert).double().sum(1) / k),
        "spearman_deviation_perturbation": nums(pearson(_ranks((var - 1).abs()), _ranks(ad["zo-lstm"]))),
        "variance_min": nums(var.min(1).values), "variance_max": nums(var.max(1).values),
        "variance_spread_per_step": nums(spread),
    }
    return out


def _mean(v) -> float:
    a = np.array([np.nan if x is None else x for x in v], dtype=float)
    return num(np.nanmean(a)) if np.isfinite(a).any() else None


def run(ctx) -> Dict[str, Any]:
    p = ctx.params
    ctx.log(f"{p['task']}: {', '.join(OPTIMIZERS)} on {p['items']} test image(s), {p['steps']} steps")
    data = ctx.cached(f"{p['task']}-perturbations", {k: p[k] for k in ("task", "learned", "items", "steps")},
                      lambda: _run(ctx))
    data["shown"] = int(p["shown"])
    data["learned_info"] = learned_info(p["learned"])
    pi = data["per_image"]
    summary = {k: _mean(v) for k, v in pi.items()}
    for n in OPTIMIZERS:
        e = data["optimizers"][n]
        summary[f"{n}_top_share"] = _mean(e["top_share"])
        summary[f"{n}_mask_share"] = _mean(e["mask_share"])
        summary[f"{n}_l1"] = _mean(e["l1"])
        summary[f"{n}_success_rate"] = num(np.mean(e["success"]))
    a, b = data["optimizers"]["zo-lstm"]["top_share"], data["optimizers"]["zo-lstm-no-query"]["top_share"]
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    summary["zo-lstm_more_focused_fraction"] = num(np.mean([x > y for x, y in pairs])) if pairs else None
    data["summary"] = summary
    return trim_maps(data)


def trim_maps(data: Dict[str, Any]) -> Dict[str, Any]:
    """Keeps the per-pixel maps (x0, perturbations, variance) of the shown images only: the claims use the
    per-image statistics and the summary, and 100 images' maps would make result.json several MB."""
    n = min(int(data.get("shown", 4)), data["items"])
    data["x0"], data["variance"] = data["x0"][:n], data["variance"][:n]
    for e in data["optimizers"].values():
        e["perturbation"] = e["perturbation"][:n]
    data["maps_kept_for"] = n
    return data


def plot(data, out_dir) -> List[str]:
    n = min(int(data.get("shown", 4)), data["items"])
    shape = data["image_shape"][-2:]
    fig, axes = panels(4 * n, ncols=4, size=(2.8, 2.6))
    for i in range(n):
        x0 = np.array(data["x0"][i], dtype=float).reshape(shape)
        d1 = np.array(data["optimizers"]["zo-lstm"]["perturbation"][i], dtype=float).reshape(shape)
        d2 = np.array(data["optimizers"]["zo-lstm-no-query"]["perturbation"][i], dtype=float).reshape(shape)
        var = np.array(data["variance"][i], dtype=float).reshape(shape)
        lim = max(np.abs(d1).max(), np.abs(d2).max(), 1e-12)
        ok = {k: data["optimizers"][k]["success"][i] for k in ("zo-lstm", "zo-lstm-no-query")}
        cells = [(x0, "gray", 0, 1, f"image {i}: x0"),
                 (d1, "seismic", -lim, lim, f"ZO-LSTM x_adv - x0 ({'success' if ok['zo-lstm'] else 'no success'})"),
                 (d2, "seismic", -lim, lim,
                  f"no-query x_adv - x0 ({'success' if ok['zo-lstm-no-query'] else 'no success'})"),
                 (var, "viridis", None, None, "mean predicted variance")]
        for ax, (img, cmap, lo, hi, title) in zip(axes[4 * i:4 * i + 4], cells):
            im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return [save(fig, out_dir, "fig9_perturbation.png",
                 f"Fig. 9 ({data['task']}): perturbations and the QueryRNN's mean predicted variance")]


def table(data) -> str:
    s = data["summary"]
    rows = ["| optimizer | success | mean L1 | L1 share in top 5% pixels | L1 share inside digit mask |",
            "|---|--:|--:|--:|--:|"]
    for n in OPTIMIZERS:
        rows.append(f"| {n} | {100 * (s[f'{n}_success_rate'] or 0):.0f}% | {fmt(s[f'{n}_l1'], 4)} | "
                    f"{fmt(s[f'{n}_top_share'], 3)} | {fmt(s[f'{n}_mask_share'], 3)} |")
    rows += ["", "| mean over images | value |", "|---|--:|"]
    for k in ("spearman_variance_perturbation", "pearson_variance_perturbation",
              "spearman_variance_perturbation_no_query", "spearman_deviation_perturbation", "variance_inside_mask",
              "variance_outside_mask", "variance_mask_ratio", "mask_pixel_share", "variance_mask_mass_share",
              "variance_top_perturbation_ratio", "top_variance_in_top_perturbation", "variance_min",
              "variance_max", "variance_spread_per_step"):
        rows.append(f"| {k.replace('_', ' ')} | {fmt(s[k], 3)} |")
    return "\n".join(rows)


def claims(data) -> List[Dict[str, str]]:
    s = data["summary"]
    what = f"{data['task']}, {data['items']} image(s) x {data['steps']} steps"
    rho, ratio = s["spearman_variance_perturbation"], s["variance_mask_ratio"]
    top = s["variance_top_perturbation_ratio"]
    conds = [rho is not None and rho >= 0.3, ratio is not None and ratio >= 1.1, top is not None and top >= 1.1]
    out = [claim(
        f"{what}: the QueryRNN's predicted variance concentrates on the pixels that matter for the attack (the "
        "digit's strokes, where the perturbation is)",
        f"mean over images: Spearman corr over pixels of the mean predicted variance with ZO-LSTM's |x_adv - x0| "
        f"{fmt(rho, 3)} (Pearson {fmt(s['pearson_variance_perturbation'], 3)}; with no-query's |x_adv - x0| "
        f"{fmt(s['spearman_variance_perturbation_no_query'], 3)}); mean variance inside the digit mask x0 > 0.5 over "
        f"outside {fmt(ratio, 5)} (the mask holds {100 * (s['variance_mask_mass_share'] or 0):.1f}% of the variance "
        f"on {100 * (s['mask_pixel_share'] or 0):.1f}% of the pixels); on the top 5% perturbed pixels over the rest "
        f"{fmt(top, 5)}; top-5% variance pixels among the top-5% perturbed "
        f"{100 * (s['top_variance_in_top_perturbation'] or 0):.0f}% "
        f"(chance 5%). The mean variance lies in [{fmt(s['variance_min'], 4)}, {fmt(s['variance_max'], 4)}] "
        f"(1 = isotropic; per-step std over pixels {fmt(s['variance_spread_per_step'], 3)}); its deviation "
        f"|var - 1| vs |x_adv - x0|: Spearman {fmt(s['spearman_deviation_perturbation'], 3)}"
        f"{training_note(data.get('learned_info'))}. Supported needs "
        "Spearman >= 0.3 and both ratios >= 1.1; partly: one of the three",
        "supported" if all(conds) else ("partly" if any(conds) else "not supported"))]
    a, b, frac = s["zo-lstm_top_share"], s["zo-lstm-no-query_top_share"], s["zo-lstm_more_focused_fraction"]
    conds = [a is not None and b is not None and a > b, frac is not None and frac > 0.5]
    out.append(claim(
        f"{what}: ZO-LSTM's perturbation is more focused than ZO-LSTM-no-query's",
        f"share of the L1 perturbation in the top 5% pixels: ZO-LSTM {fmt(a, 3)}, no-query {fmt(b, 3)} (ZO-LSTM "
        f"higher on {100 * (frac or 0):.0f}% of images); share inside the digit mask: "
        f"{fmt(s['zo-lstm_mask_share'], 3)} vs {fmt(s['zo-lstm-no-query_mask_share'], 3)}; mean L1 "
        f"{fmt(s['zo-lstm_l1'], 4)} vs {fmt(s['zo-lstm-no-query_l1'], 4)}; success "
        f"{100 * (s['zo-lstm_success_rate'] or 0):.0f}% vs {100 * (s['zo-lstm-no-query_success_rate'] or 0):.0f}%",
        "supported" if all(conds) else ("partly" if any(conds) else "not supported")))
    return out
