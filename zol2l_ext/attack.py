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

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from . import data as D
from . import distributed as DI
from . import models as M
from . import tasks as T
from .fileio import atomic_write_file, atomic_write_json
from .user_targets import resolve_target

#: the attack dataset -> its task in tasks.TASKS (digits -> digits-attack, mnist -> mnist-attack, cifar10 ->
#: cifar-attack): the task whose space is the dataset's default and whose shipped tuning `zol2l attack` uses
DATASET_TASKS: dict[str, str] = {t.dataset: t.name for t in T.TASKS.values() if t.kind == "attack"}

# Per-dataset settings of the paper (App. A.1): q, c and 200 iterations; test images at positions 5000:5100 of
# the shuffled correct list; 10 trials. The digits default is the embedded quick demo (a handful of images).
# "space" (the attack's parameterisation) and "mu" are the dataset's task's (tasks.TASKS), not second literals;
# a run in the other space takes that space's mu (tasks.SPACE_MU) unless mu is given.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    ds: dict(kw, space=T.TASKS[DATASET_TASKS[ds]].space, mu=T.TASKS[DATASET_TASKS[ds]].mu) for ds, kw in (
        ("digits", dict(q=10, c=0.1, steps=200, trials=3, count=8, indices=None)),
        ("mnist", dict(q=20, c=0.1, steps=200, trials=10, count=None, indices="5000:5100")),
        ("cifar10", dict(q=50, c=0.25, steps=200, trials=10, count=None, indices="5000:5100")),
    )
}

BASELINES = ("zo-sgd", "zo-signsgd", "zo-adam")
LEARNED = ("zo-lstm", "zo-lstm-no-query", "zo-lstm-no-update", "zo-lstm-guided-es")

# Learning rates per (dataset, space) and optimizer, as passed to make_optimizer(lr=...): delta, with the
# coordinate step delta / d (the reference code's convention; DESIGN.md's "ZO-SGD lr = delta / d").
# FALLBACKS, not the tuned values: DESIGN.md's protocol (delta over {0.01, 0.1, 1, 10, 100, 1000}, then finer;
# ZO-ADAM betas) is run by `zol2l tune TASK [--space S] --ship` (zol2l_ext/tune.py) on the task's "tune" images,
# and `zol2l attack` takes the baselines' lr (and ZO-ADAM betas) from the shipped zol2l_ext/tuned/<task>.json of
# the dataset's task when one exists (--tuned PATH|TASK|none; results.json config.lr_source says which; a tuning
# made in another space is an error, tune.check_tuning_space). This table applies with --tuned none, to the
# optimizers a tuning does not cover, and to run_attack called without lrs (use tune.tuned_kwargs there).
# tanh space: a coarse sweep on a few test images (200 steps, 2 trials; docs/ATTACK.md gives the numbers, and the
# tuned ones); with x = (tanh(w) + 1) / 2 saturated pixels need much larger steps. pixel space
# (x = clamp(x0 + delta)): mnist from a coarse sweep on 10 MNIST test images (zo-sgd 8, zo-signsgd 2, zo-adam 2;
# the reference code's MNIST values are 4, 8, 8), cifar10 the same values (not measured); digits the choices of
# DESIGN.md's protocol on digits-attack's tune part (20 images x 2 trials, 200 steps; zo-adam's best betas were
# 0.9/0.99) - mnist's 8 scores 3x worse there (smaller d, so a larger coordinate step delta / d).
# ZO-SZVR-G, Guided ES and ZO-LSTM-no-update start from ZO-SGD's value. Override with --lr [NAME=]VALUE (wins
# over a tuning).
_LR = {
    ("digits", "tanh"): (3.0, 1.0, 2.0), ("mnist", "tanh"): (300.0, 30.0, 100.0),
    ("cifar10", "tanh"): (10.0, 10.0, 10.0),
    ("digits", "pixel"): (0.3, 0.3333, 1.0), ("mnist", "pixel"): (8.0, 2.0, 2.0),
    ("cifar10", "pixel"): (8.0, 2.0, 2.0),
}
DEFAULT_LRS: dict[tuple[str, str], dict[str, float]] = {
    key: {"zo-sgd": sgd, "zo-signsgd": sign, "zo-adam": adam, "zo-szvr-g": sgd, "guided-es": sgd,
          "zo-lstm-no-update": sgd}
    for key, (sgd, sign, adam) in _LR.items()
}


def dataset_space(dataset: str, space: str | None = None) -> str:
    """``space`` checked, or (None) the default space of ``dataset`` (its task's, see DATASET_DEFAULTS)."""
    from .zo.problems import SPACES

    if space is None:
        return DATASET_DEFAULTS.get(dataset, DATASET_DEFAULTS["mnist"])["space"]
    if space not in SPACES:
        raise AttackSetupError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    return space


def default_lrs(dataset: str, space: str | None = None) -> dict[str, float]:
    """The fallback lr table (DEFAULT_LRS) of ``dataset`` in ``space`` (None: the dataset's default space);
    empty for a dataset without one (the binary task)."""
    if dataset not in DATASET_DEFAULTS:
        return {}
    return DEFAULT_LRS.get((dataset, dataset_space(dataset, space)), {})


# Checkpoints of the learned optimizer tried per dataset (zol2l_ext/pretrained/<name>.pt), first found wins.
LEARNED_CANDIDATES: dict[str, tuple[str, ...]] = {
    "digits": ("digits-attack", "mnist-attack"),
    "mnist": ("mnist-attack",),
    "cifar10": ("cifar-attack", "cifar-attack-finetune", "mnist-attack"),
}


class AttackSetupError(ValueError):
    """The attack cannot be set up as asked (unknown optimizer, no learned checkpoint, bad arguments)."""


# ------------------------------------------------------------------------------------------ images + target
@dataclass
class AttackSet:
    dataset: str
    images: torch.Tensor  # [B, C, H, W] in [0, 1], CPU
    labels: torch.Tensor  # [B]
    ids: list[int]  # dataset indices (MNIST/CIFAR test-set index; digits: index into sklearn's load_digits)
    positions: list[int]  # positions in the shuffled correct list
    target: M.LoadedTarget
    output: str  # "logprob" | "logits"
    classes: Sequence[str] | None = None


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AttackSetupError(f"device {device!r} asked for, but this torch has no usable CUDA device")
    return dev


def prepare_attack(dataset: str = "digits", data_root: str | None = None, target: str | None = None,
                   indices: str | Sequence[int] | None = None, count: int | None = None,
                   device: str | torch.device = "cpu", download: bool = False,
                   progress: bool = True) -> AttackSet:
    """Loads the target and picks correctly classified test images of ``dataset``.

    ``indices``: positions in the shuffled list of correctly classified test images ("5000:5100", "0,3,7");
    ``count`` alone takes that many from the dataset's default start (5000 for MNIST/CIFAR-10, 0 for digits).
    For MNIST with the authors' model the list is the staged label_correct_index.npy (the reference split); for
    any other target it is computed from the model (eval-mode argmax over the test set, then the same seeded
    shuffle)."""
    if dataset not in D.DATASETS:
        raise AttackSetupError(f"unknown dataset {dataset!r}; choose one of {', '.join(D.DATASETS)}")
    defaults = DATASET_DEFAULTS[dataset]
    # a LoadedTarget is used as it is (e.g. a model behind an endpoint, remote_attack.endpoint_target)
    tgt = target if isinstance(target, M.LoadedTarget) else resolve_target(target, dataset, data_root=data_root,
                                                                           device=device, progress=progress)
    if tgt.dataset != dataset:
        raise AttackSetupError(f"target {tgt.name!r} classifies {tgt.dataset}, not {dataset}")
    if dataset == "digits":
        from .digits import digits_attack_set
        positions = D.parse_positions(indices, count, default_start=0)
        if positions is None:
            positions = list(range(defaults["count"]))
        images, labels, ids = digits_attack_set(tgt.model.cpu(), positions)
        tgt.model.to(device)
        classes = [str(i) for i in range(10)]
    else:
        root = D.resolve_data_root(data_root)
        positions = D.parse_positions(indices, count, default_start=D.TEST_POSITIONS[0])
        if positions is None:
            positions = D.parse_positions(defaults["indices"])
        if dataset == "mnist":
            x, y = D.load_mnist(root, train=False, download=download)
            if tgt.name == "mnist-authors":
                correct = D.mnist_correct_indices(root)
            else:
                correct = D.correct_indices(tgt.model, x, y)
            classes = [str(i) for i in range(10)]
        else:
            x, y = D.load_cifar10(root, train=False)
            correct = D.correct_indices(tgt.model, x, y)
            classes = list(D.CIFAR10_CLASSES)
        ids = D.take_positions(D.shuffled_correct(correct), positions, f"{dataset} test images")
        images, labels = x[ids].contiguous(), y[ids].clone()
    output = M.check_model_outputs(tgt.model, images, num_classes=10, declared=tgt.output)
    pred = D.predict(tgt.model, images)
    wrong = [int(i) for i, ok in zip(ids, (pred == labels).tolist()) if not ok]
    if wrong:
        raise AttackSetupError(f"target {tgt.name!r} misclassifies the clean images {wrong[:10]}; "
                               "an untargeted attack needs correctly classified images")
    return AttackSet(dataset, images, labels, [int(i) for i in ids], [int(p) for p in positions], tgt, output,
                     classes)


# -------------------------------------------------------------------------------------------- optimizers
def parse_optimizers(spec: str | Sequence[str]) -> list[str]:
    from .zo.optimizers import OPTIMIZER_NAMES

    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise AttackSetupError("no optimizer given")
    unknown = [n for n in names if n not in OPTIMIZER_NAMES]
    if unknown:
        raise AttackSetupError(f"unknown optimizer(s) {', '.join(unknown)}; known: {', '.join(OPTIMIZER_NAMES)}")
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return seen


def find_learned(dataset: str, names: Sequence[str] | None = None):
    """(LearnedZO, name) of the first pretrained checkpoint that loads, or (None, reasons)."""
    from .zo.lstm_optimizer import LearnedZO

    reasons = []
    for name in names or LEARNED_CANDIDATES.get(dataset, ("mnist-attack",)):
        try:
            return LearnedZO.pretrained(name), name
        except FileNotFoundError as e:
            reasons.append(str(e))
    return None, "; ".join(reasons)


def parse_lr_overrides(items: Sequence[str] | None) -> tuple[float | None, dict[str, float]]:
    """--lr values: "0.1" (every optimizer) or "NAME=0.1" (one optimizer); comma-separated lists allowed."""
    common, per = None, {}
    for item in items or []:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "=" in part:
                    k, v = part.split("=", 1)
                    per[k.strip()] = float(v)
                else:
                    common = float(part)
            except ValueError as e:
                raise AttackSetupError(f"bad --lr {part!r}: use a number or NAME=NUMBER") from e
    return common, per


def learning_rates(dataset: str, optimizers: Sequence[str], lrs: dict[str, float] | float | None = None,
                   space: str | None = None) -> dict[str, float | None]:
    """The lr of every optimizer: override, else DEFAULT_LRS of (dataset, space), else None (the optimizer's own
    default)."""
    table = default_lrs(dataset, space)
    out: dict[str, float | None] = {}
    for name in optimizers:
        if isinstance(lrs, (int, float)):
            out[name] = float(lrs)
        elif lrs and name in lrs:
            out[name] = float(lrs[name])
        else:
            out[name] = table.get(name)
    return out


def build_optimizer(name: str, q: int, mu: float, lr: float | None, learned=None, **extra):
    from .zo.optimizers import make_optimizer

    kw: dict[str, Any] = dict(q=q, mu=mu, **extra)
    if lr is not None:
        kw["lr"] = lr
    if name.startswith("zo-lstm"):
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


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _list(t: torch.Tensor, nd: int = 6) -> list:
    arr = t.detach().double().cpu().numpy()
    return [None if not np.isfinite(v) else round(float(v), nd) for v in arr.reshape(-1)]


def _mean_or_none(values: torch.Tensor) -> float | None:
    values = values.double()
    return _f(values.mean()) if values.numel() else None


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
            "loss_mean": _list(L[:, :, i].mean(1)), "loss_std": _list(std(L[:, :, i], 1)),
            "final_loss": _list(L[-1, :, i]),
            "success": [bool(v) for v in succ[:, i]], "ever_success": [bool(v) for v in ok],
            "success_rate": _f(succ[:, i].double().mean()),
            "first_success_step": [int(v) for v in fstep[:, i]],
            "first_success_queries": [int(v) for v in fq[:, i]],
            "queries": [int(v) for v in qs[:, i]],
            "l1": _list(d1[:, i]), "l2": _list(d2[:, i]),
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
        "success_rate": _f(succ.double().mean()),
        "ever_success_rate": _f(ever.double().mean()),
        "mean_final_loss": _f(L[-1].mean()),
        "mean_queries_to_success": _mean_or_none(fq.reshape(-1)[ever_all]),
        "median_queries_to_success": _f(fq.reshape(-1)[ever_all].double().median()) if ever_all.any() else None,
        "mean_first_success_step": _mean_or_none(fstep.reshape(-1)[ever_all].double()),
        "mean_queries": _mean_or_none(qs.double()),
        "mean_l1_success": _mean_or_none(d1.reshape(-1)[ok_all]),
        "mean_l2_success": _mean_or_none(d2.reshape(-1)[ok_all]),
        "mean_l1": _mean_or_none(d1), "mean_l2": _mean_or_none(d2),
        "loss_mean": _list(image_mean.mean(1)), "loss_std": _list(curve_std), "loss_std_over": std_over,
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
               optimizers: Sequence[str] = BASELINES, *, output: str = "logprob",
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
    DATASET_DEFAULTS[dataset]["space"]); it also picks the fallback lrs (DEFAULT_LRS). ``minimize_kwargs`` go to
    every ``zo.runner.minimize`` call (checkpoints, resume: see remote_attack.run_resumable_attack).
    ``shard``: a `distributed.Dist` under torchrun: this rank attacks only its block of rows, rank 0 gathers every
    row and returns the outcome of the whole attack, the other ranks return None."""
    from .zo.problems import AttackProblem

    defaults = DATASET_DEFAULTS.get(dataset, DATASET_DEFAULTS["mnist"])
    q = int(defaults["q"] if q is None else q)
    c = float(defaults["c"] if c is None else c)
    space = dataset_space(dataset, space)
    mu = float(T.SPACE_MU[space] if mu is None else mu)
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
    lr_table = learning_rates(dataset, optimizers, lrs, space)

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
    kept = DI.load_shard(shard, key) if shard is not None else None
    if kept is not None:
        print(f"zol2l attack: rank {shard.rank} kept its finished rows from an earlier run", file=sys.stderr)
    per_row = kept or {name: _attack_rows(opts[name], problem, theta0, steps, seed, row_ids, budget, stop_at_success,
                                          progress and (shard is None or shard.main), name, model, minimize_kwargs,
                                          images.shape[1:]) for name in optimizers}
    if shard is not None:
        if kept is None:
            DI.save_shard(shard, key, per_row)
        per_row = DI.gather_rows(per_row, row_ids, shard)
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


def _attack_rows(opt, problem, theta0, steps, seed, row_ids, budget, stop_at_success, progress, name, model,
                 minimize_kwargs, images_shape) -> dict[str, Any]:
    """One optimizer on the problem's rows (ids ``row_ids``): per-row tensors (first dimension the row, on the
    CPU) and the wall time; an empty shard (more ranks than rows) gives empty ones."""
    from .zo.runner import minimize

    if problem is None:
        shape = tuple(images_shape)
        empty = torch.zeros(0, dtype=torch.int64)
        return {"loss": torch.zeros(0, steps + 1), "success": empty.bool(), "first_step": empty,
                "first_queries": empty, "queries": empty, "l1": torch.zeros(0), "l2": torch.zeros(0),
                "adversarial": torch.zeros((0,) + shape), "adv_labels": empty, "wall": 0.0}
    t0 = time.perf_counter()
    dev = theta0.device
    res = minimize(opt, problem, steps, theta0=theta0.clone(), seed=seed, budget=budget, problem_ids=row_ids,
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
    from . import plots

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
