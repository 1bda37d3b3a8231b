"""Black-box attacks on image classifiers: several ZO optimizers on the same images, seeds and start points.

``prepare_attack`` picks the target model and the attacked images (correctly classified test images in the
reference code's seeded shuffle); ``run_attack`` builds ONE AttackProblem for all images x trials (trial t of
image i is batch row t * B + i, so trials are extra rows whose random directions differ, since the runner keys
each row's directions by (seed, row, step)), runs every optimizer from the same initial point with the same
seed through ``zo.runner.minimize``, and returns a JSON-able summary plus the adversarial images.
``write_outputs`` writes results.json, success_vs_queries.png, loss_curves.png and adversarial_grid.png.

Loss (DESIGN.md, paper App. A.1): max{F_t0(x) - max_{j != t0} F_j(x), 0} + c ||x - x0||_1 with F the
log-probabilities, x = clamp(x0 + delta, 0, 1) ("pixel" space) or x = (tanh(w) + 1) / 2 ("tanh" space); the
default space of a dataset is its task's (tasks.TASKS), ``space=`` / ``--space`` picks the other (see
zo.problems.AttackProblem).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import json
import os
import sys
import time
from typing import Any, Sequence

import torch

from . import data as D
from . import distributed as DI
from . import settings as S
from .attack_setup import AttackSetupError
from .distributed_progress import ShardProgress
from .fileio import atomic_write_file, atomic_write_json, json_number, json_numbers
from .tasks import SPACE_MU
from .zo import runner  # runner.minimize looked up at call time: tests spy on it
from .zo.optimizers import make_optimizer
from .zo.problems import SPACES, AttackProblem


# -------------------------------------------------------------------------------------------- optimizers
def build_optimizer(name: str, q: int, mu: float, lr: float | None, learned=None, **extra):
    kw: dict[str, Any] = dict(q=q, mu=mu, **extra)
    if lr is not None:
        kw["lr"] = lr
    if S.is_learned(name):
        if learned is None:
            raise AttackSetupError(f"{name} needs a learned optimizer checkpoint (LearnedZO)")
        kw["model"] = learned
    return make_optimizer(name, **kw)


# -------------------------------------------------------------------------------------------------- stats
def forward_fill(loss: torch.Tensor) -> torch.Tensor:
    """loss [T+1, R] with the NaNs after a row's stop (budget, early success) replaced by its last value.

    The runner leaves NaN after a problem stops; a stopped attack keeps its final iterate, so its loss stays
    at the final value for the rest of the curve."""
    out = loss.clone()
    for t in range(1, out.shape[0]):
        gap = torch.isnan(out[t])
        if gap.any():
            out[t] = torch.where(gap, out[t - 1], out[t])
    return out


def _mean_or_none(values: torch.Tensor) -> float | None:
    values = values.double()
    return json_number(values.mean()) if values.numel() else None


def summarize(loss: torch.Tensor, success: torch.Tensor, first_step: torch.Tensor, first_queries: torch.Tensor,
              queries: torch.Tensor, l1: torch.Tensor, l2: torch.Tensor, B: int, trials: int) -> dict[str, Any]:
    """Per-image and aggregate statistics; rows are ordered trial-major (row = t * B + i)."""
    steps1 = loss.shape[0]
    L = loss.double().reshape(steps1, trials, B)  # [T+1, trials, B]
    succ = success.reshape(trials, B)
    fstep = first_step.reshape(trials, B)
    fq = first_queries.reshape(trials, B)
    qs = queries.reshape(trials, B)
    d1, d2 = l1.double().reshape(trials, B), l2.double().reshape(trials, B)
    ever = fstep >= 0

    def std(x, dim):
        return x.std(dim=dim, unbiased=False) if x.shape[dim] > 1 else torch.zeros_like(x.mean(dim=dim))

    per_image = []
    for i in range(B):
        ok = ever[:, i]
        per_image.append({
            "loss_mean": json_numbers(L[:, :, i].mean(1), 6),
            "loss_std": json_numbers(std(L[:, :, i], 1), 6),
            "final_loss": json_numbers(L[-1, :, i], 6),
            "success": [bool(v) for v in succ[:, i]], "ever_success": [bool(v) for v in ok],
            "success_rate": json_number(succ[:, i].double().mean()),
            "first_success_step": [int(v) for v in fstep[:, i]],
            "first_success_queries": [int(v) for v in fq[:, i]],
            "queries": [int(v) for v in qs[:, i]],
            "l1": json_numbers(d1[:, i], 6), "l2": json_numbers(d2[:, i], 6),
            "mean_queries_to_success": _mean_or_none(fq[:, i][ok]),
        })
    image_mean = L.mean(2)  # [T+1, trials]: the loss averaged over images, one curve per trial
    if trials > 1:
        curve_std, std_over = std(image_mean, 1), "trials"
    else:
        curve_std, std_over = std(L[:, 0, :], 1), "images"
    ok_all = succ.reshape(-1)
    ever_all = ever.reshape(-1)
    aggregate = {
        "rows": int(B * trials),
        "success_rate": json_number(succ.double().mean()),
        "ever_success_rate": json_number(ever.double().mean()),
        "mean_final_loss": json_number(L[-1].mean()),
        "mean_queries_to_success": _mean_or_none(fq.reshape(-1)[ever_all]),
        "median_queries_to_success": (json_number(fq.reshape(-1)[ever_all].double().median()) if ever_all.any()
                                      else None),
        "mean_first_success_step": _mean_or_none(fstep.reshape(-1)[ever_all].double()),
        "mean_queries": _mean_or_none(qs.double()),
        "mean_l1_success": _mean_or_none(d1.reshape(-1)[ok_all]),
        "mean_l2_success": _mean_or_none(d2.reshape(-1)[ok_all]),
        "mean_l1": _mean_or_none(d1), "mean_l2": _mean_or_none(d2),
        "loss_mean": json_numbers(image_mean.mean(1), 6), "loss_std": json_numbers(curve_std, 6), "loss_std_over": std_over,
    }
    return {"per_image": per_image, "aggregate": aggregate}


# ---------------------------------------------------------------------------------------------------- run
@dataclass
class AttackOutcome:
    results: dict[str, Any]  # JSON-able
    images: torch.Tensor  # [B, C, H, W] clean images (CPU)
    labels: torch.Tensor  # [B]
    adversarial: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B, C, H, W] (trial 0)
    adv_labels: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B] predicted labels (trial 0)
    classes: Sequence[str] | None = None


def run_attack(dataset: str, images: torch.Tensor, labels: torch.Tensor, model: torch.nn.Module,
               optimizers: Sequence[str] = S.BASELINES, *, output: str = "logprob",
               image_ids: Sequence[int] | None = None, q: int | None = None, mu: float | None = None,
               steps: int | None = None, trials: int | None = None, seed: int = 0,
               device: str | torch.device = "cpu", lrs: dict[str, float] | float | None = None,
               c: float | None = None, norm: str = "l1", budget: int | None = None,
               stop_at_success: bool = False, chunk_size: int | None = None, learned=None,
               learned_name: str | None = None, target_name: str | None = None, classes=None,
               optimizer_kwargs: dict[str, dict[str, Any]] | None = None,
               progress: bool = True, space: str | None = None,
               minimize_kwargs: dict[str, Any] | None = None, shard=None) -> AttackOutcome | None:
    """Runs each optimizer on B images x ``trials`` rows of one AttackProblem, same start point and seed.

    ``space``: the attack's parameterisation, "pixel" or "tanh" (None: the dataset's default,
    settings.DATASET_DEFAULTS[dataset]["space"]); it also picks the fallback lrs (settings.DEFAULT_LRS). Values left
    None are the dataset's defaults (`settings`); a command passes them all resolved, and ``lrs`` naming every
    optimizer is used as it is (None for one without a learning rate). ``minimize_kwargs`` go to
    every ``zo.runner.minimize`` call (checkpoints, resume: see remote_attack.run_resumable_attack).
    ``shard``: a `distributed.Dist` under torchrun: this rank attacks only its block of rows, rank 0 gathers every
    row and returns the outcome of the whole attack, the other ranks return None."""
    defaults = S.DATASET_DEFAULTS.get(dataset, S.DATASET_DEFAULTS["mnist"])
    q = int(defaults["q"] if q is None else q)
    c = float(defaults["c"] if c is None else c)
    space = S.dataset_space(dataset) if space is None else space
    if space not in SPACES:
        raise AttackSetupError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    mu = float(SPACE_MU[space] if mu is None else mu)
    steps = int(defaults["steps"] if steps is None else steps)
    trials = int(defaults["trials"] if trials is None else trials)
    if q < 1 or steps < 1 or trials < 1:
        raise AttackSetupError(f"q, steps and trials must be >= 1 (got q={q}, steps={steps}, trials={trials})")
    if not mu > 0:
        raise AttackSetupError(f"mu must be > 0, got {mu}")
    if budget is not None and budget < q + 1:
        raise AttackSetupError(f"budget {budget} is below one step's q + 1 = {q + 1} queries")
    optimizers = list(optimizers)
    dev = torch.device(device)
    model = model.to(dev).eval()
    B = images.shape[0]
    if chunk_size is None:
        chunk_size = 16384 if dev.type == "cuda" else 4096
    # rows are problem ids for the runner's seeds: a shard of them draws what the whole batch draws for them
    row_ids = list(range(B * trials)) if shard is None else DI.shard_rows(B * trials, shard.rank, shard.world)
    rows_images = images.to(dev).repeat(trials, 1, 1, 1)[row_ids]
    rows_labels = labels.to(dev).repeat(trials)[row_ids]
    problem = None if not row_ids else AttackProblem(model, rows_images, rows_labels, c=c, norm=norm, output=output,
                                                     chunk_size=chunk_size, space=space)  # None: an idle rank
    theta0 = None if problem is None else problem.initial_point()
    complete = isinstance(lrs, dict) and all(n in lrs for n in optimizers)
    lr_table = ({n: lrs[n] for n in optimizers} if complete
                else S.learning_rates(dataset, optimizers, lrs, space))

    results: dict[str, Any] = {
        "config": {
            "dataset": dataset, "target": target_name, "output": output, "optimizers": optimizers,
            "space": space, "q": q, "mu": mu, "c": c, "norm": norm, "steps": steps, "trials": trials, "seed": int(seed),
            "budget": budget, "stop_at_success": bool(stop_at_success), "device": str(dev),
            "images": int(B), "dim": None if problem is None else int(problem.dim),
            "image_ids": list(image_ids or range(B)),
            "labels": [int(v) for v in labels], "lrs": lr_table, "learned": learned_name,
            "row_order": "row = trial * images + image", "torch": str(torch.__version__),
        },
        "optimizers": {},
    }
    opts = {name: build_optimizer(name, q, mu, lr_table[name], learned=learned,
                                  **((optimizer_kwargs or {}).get(name, {}))) for name in optimizers}
    key = json.dumps([results["config"], optimizer_kwargs], sort_keys=True, default=str)
    args = (problem, theta0, steps, seed, row_ids, budget, stop_at_success)
    if shard is None:
        per_row = {name: _attack_rows(opts[name], *args, progress, name, model, minimize_kwargs, images.shape[1:])
                   for name in optimizers}
    else:
        per_row = _attack_shard(shard, key, opts, args, B * trials, progress, model, minimize_kwargs,
                                images.shape[1:])
        if per_row is None:
            return None
    outcome = AttackOutcome(results, images.cpu(), labels.cpu(), classes=classes)
    for name in optimizers:
        r = per_row[name]
        entry = summarize(forward_fill(r["loss"].T), r["success"], r["first_step"], r["first_queries"],
                          r["queries"], r["l1"], r["l2"], B, trials)
        # queries spent before each step (ZO-SZVR-G's snapshot steps cost more)
        entry = {"lr": lr_table[name], "wall_seconds": round(r["wall"], 3), **entry,
                 "query_axis": opts[name].query_axis(steps)}
        results["optimizers"][name] = entry
        outcome.adversarial[name] = r["adversarial"][:B]
        outcome.adv_labels[name] = r["adv_labels"][:B]
    return outcome


def _attack_shard(shard, key, opts, args, all_rows, progress, model, minimize_kwargs, images_shape):
    """This rank's rows (``args``: as `_attack_rows`) for every optimizer in turn, then the gather: every rank's
    per-row results on rank 0, None on the others. What the rank finished, and every ``shard.checkpoint_every``
    steps the live state of the optimizer it runs, are kept (`distributed.save_shard`), so that the same command
    after a kill or a failure anywhere picks up where this rank was."""
    kept = DI.load_shard(shard, key) or {"done": {}, "partial": {}}
    problem, _, steps, _, row_ids, _, _ = args
    bar = ShardProgress(shard, all_rows, len(row_ids), steps, len(opts), progress)
    user_callback = (minimize_kwargs or {}).get("callback")

    def callback(info):  # the shared bar's and the caller's; either may stop the run
        bar.callback(info)
        return user_callback(info) if user_callback is not None else None
    per_row = {}
    for name, opt in opts.items():
        if name in kept["done"]:
            print(f"zol2l attack: rank {shard.rank} kept its finished rows of {name} from an earlier run",
                  file=sys.stderr)
            per_row[name] = kept["done"][name]
            bar.optimizer_done()
            continue
        mk = dict(minimize_kwargs or {}, callback=callback)
        if shard.checkpoint_every and problem is not None:
            resume = kept["partial"].get(name)
            if resume is not None:
                print(f"zol2l attack: rank {shard.rank} resumes {name} at step {resume['t']}", file=sys.stderr)

            def save_partial(run_state, _name=name):
                kept["partial"][_name] = run_state.to_dict()
                DI.save_shard(shard, key, kept)

            mk.update(checkpoint_every=shard.checkpoint_every, on_checkpoint=save_partial, resume_from=resume)
        per_row[name] = _attack_rows(opt, *args, False, name, model, mk, images_shape)
        kept["done"][name] = per_row[name]
        kept["partial"].pop(name, None)
        DI.save_shard(shard, key, kept)
        bar.optimizer_done()
    bar.wait_for_all()
    return DI.gather_rows(per_row, row_ids, shard)


def _attack_rows(opt, problem, theta0, steps, seed, row_ids, budget, stop_at_success, progress, name, model,
                 minimize_kwargs, images_shape) -> dict[str, Any]:
    """One optimizer on the problem's rows (ids ``row_ids``): per-row tensors (first dimension the row, on the
    CPU) and the wall time; an empty shard (more ranks than rows) gives empty ones."""
    if problem is None:
        shape = tuple(images_shape)
        empty = torch.zeros(0, dtype=torch.int64)
        return {"loss": torch.zeros(0, steps + 1), "success": empty.bool(), "first_step": empty,
                "first_queries": empty, "queries": empty, "l1": torch.zeros(0), "l2": torch.zeros(0),
                "adversarial": torch.zeros((0,) + shape), "adv_labels": empty, "wall": 0.0}
    t0 = time.perf_counter()
    dev = theta0.device
    res = runner.minimize(opt, problem, steps, theta0=theta0.clone(), seed=seed, budget=budget, problem_ids=row_ids,
                          stop_at_success=stop_at_success, progress=progress, desc=name, **(minimize_kwargs or {}))
    wall = time.perf_counter() - t0
    theta = res.theta.to(dev)
    l1, l2 = problem.distortion(theta)
    adv = problem.adversarial_images(theta)
    return {"loss": res.loss.cpu().T, "success": res.success.cpu(), "first_step": res.first_success_step.cpu(),
            "first_queries": res.first_success_queries.cpu(), "queries": res.queries.cpu(), "l1": l1.cpu(),
            "l2": l2.cpu(), "adversarial": adv.cpu(), "adv_labels": D.predict(model, adv).cpu(),
            "wall": wall}


# ------------------------------------------------------------------------------------------------- output
def comparison_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, entry in results["optimizers"].items():
        a = entry["aggregate"]
        rows.append({"optimizer": name, "success": a["success_rate"], "final_loss": a["mean_final_loss"],
                     "queries": a["mean_queries_to_success"], "l1": a["mean_l1_success"],
                     "l2": a["mean_l2_success"], "seconds": entry["wall_seconds"]})
    return rows


def format_table(results: dict[str, Any]) -> str:
    """A short comparison table: success rate, mean final loss, mean queries to first success, mean l1/l2."""
    def fmt(v, spec):
        width = int(spec.split(".")[0])
        return "-".rjust(width) if v is None else format(v, spec)

    head = f"{'optimizer':<20} {'success':>8} {'final loss':>11} {'queries@succ':>13} {'l1 (succ)':>10} " \
           f"{'l2 (succ)':>10} {'time s':>8}"
    lines = [head, "-" * len(head)]
    for r in comparison_rows(results):
        lines.append(f"{r['optimizer']:<20} {fmt(None if r['success'] is None else 100 * r['success'], '7.1f')}% "
                     f"{fmt(r['final_loss'], '11.4f')} {fmt(r['queries'], '13.1f')} {fmt(r['l1'], '10.3f')} "
                     f"{fmt(r['l2'], '10.3f')} {fmt(r['seconds'], '8.1f')}")
    cfg = results["config"]
    lines.append(f"({cfg['images']} images x {cfg['trials']} trials, {cfg['steps']} steps, "
                 f"{cfg.get('space', 'tanh')} space, q={cfg['q']}, "
                 f"mu={cfg['mu']}, c={cfg['c']}; success = label changed at the final iterate; queries@succ = "
                 f"mean queries to the first success over the attacks that succeeded; l1/l2 over successes)")
    return "\n".join(lines)


def write_outputs(outcome: AttackOutcome, out_dir: str, grid_images: int = 8, loss_x: str = "iteration",
                  loss_log: bool | None = None) -> dict[str, str]:
    """results.json, success_vs_queries.png, loss_curves.png (against ``loss_x``, "iteration" or "queries";
    ``loss_log`` None: a log axis where the losses allow one) and adversarial_grid.png in ``out_dir``; returns
    their paths."""
    from . import plots  # matplotlib is heavy: only writing figures pays for it

    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, file) for name, file in (
        ("results", "results.json"), ("success_vs_queries", "success_vs_queries.png"),
        ("loss_curves", "loss_curves.png"), ("adversarial_grid", "adversarial_grid.png"))}
    # each file whole or not at all (a full disk stops the run with one line, leaving no half-written figure)
    atomic_write_json(outcome.results, paths["results"])
    atomic_write_file(paths["success_vs_queries"], lambda p: plots.plot_success_vs_queries(outcome.results, p))
    atomic_write_file(paths["loss_curves"],
                      lambda p: plots.plot_loss_curves(outcome.results, p, log_y=loss_log, x=loss_x))
    atomic_write_file(paths["adversarial_grid"], lambda p: plots.plot_adversarial_grid(
        outcome.images, outcome.labels, outcome.adversarial, outcome.adv_labels, p, max_images=grid_images,
        classes=outcome.classes, trial=0, trials=outcome.results["config"].get("trials")))
    return paths
