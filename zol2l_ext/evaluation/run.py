"""Running the quality check of the learned optimizer: every optimizer on a task's test problems.

The issue's check: "On MNIST test images [5000:5100] of the authors' split, 10 trials each, 200 steps, q = 20,
the same initial points for all optimizers, the baselines' learning rates tuned as DESIGN.md says: ZO-LSTM's
mean loss curve lies below those of ZO-SGD, ZO-signSGD and ZO-ADAM from step 50 on, its final mean loss is the
lowest, and its mean queries to first success are fewer than the best baseline's. The same comparison on
CIFAR-10 (q = 50, 100 test images) and on the 10 test datasets of binary classification (final loss). Where the
learned optimizer does not win, say so."

`evaluate_task(task)` builds ONE problem of items x trials rows of the task's part (`tasks.make_problem(td,
rows, repeat=trials)`: row = trial * items + item; trials are extra rows whose directions differ, since the
runner keys each row's directions by (seed, row, step)) and runs every optimizer through `zo.runner.minimize`
from the same initial point ``problem.initial_point()`` with the same seed: at a given step all optimizers draw
the same Gaussian keys (and, for the binary task, the same minibatches). Per optimizer it records the mean loss
curve over rows (forward-filled after a row's stop, as `attack.forward_fill`), the std over trials of the
per-trial item-mean curve (over items when there is one trial, as `attack.summarize`), the final mean loss,
success rates and mean queries to first success (attacks), the wall time and the learning rate with its source.

Binary task: the per-step "loss" is what the runner records, the loss on the step's 64-sample minibatch (the
same minibatch for every optimizer at a step). The full-data loss (all n samples) of the final iterate and the
accuracy are recorded too, and the final-loss criterion uses the full-data loss there (the minibatch final loss
is a single 64-sample draw; the full-data loss is what the tuning scored, see tune.py).

Attack tasks run in their task's ``space`` (pixel or tanh; `tasks.task_with`, ``zol2l evaluate --space``),
recorded as ``config.space``; the baselines' tuning must have been made in the same space (`resolve_tuned`).
Per optimizer the result also keeps per-item mean losses at ``item_steps`` and the final step
(``per_item_loss_at``) and, for attacks, per-row queries to first success, for the paired criteria.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch

from .. import attack as A
from .. import settings as S
from .. import tasks as T
from .. import tune as TU
from ..attack import forward_fill
from ..fileio import json_number, json_numbers
from ..zo import runner  # runner.minimize looked up at call time: tests put a spy there
from ..zo.lstm_optimizer import LearnedZO
from ..zo.optimizers import optimizer_names
from ..zo.problems import has_success
from .common import DEFAULT_OPTIMIZERS, FORMAT, ITEM_STEPS, optimizer_key

__all__ = ["evaluate_task", "resolve_learned", "resolve_tuned", "baseline_settings"]


def resolve_learned(learned, task_name: str):
    """(LearnedZO, description) from a LearnedZO, a .pt path or a pretrained name (None: the task's own name),
    through `settings.load_learned`."""
    if isinstance(learned, LearnedZO):
        return learned, "LearnedZO object"
    model, what = S.load_learned(task_name if learned is None else learned)
    return model, f"file {what}" if LearnedZO.is_path(what) else S.pretrained_source(what)


def resolve_tuned(tuned, task_name: str, space: Optional[str] = None):
    """(source dict or None, description, tuned task) of the baselines' tuning.

    ``tuned``: None (the task's shipped tuning ``zol2l_ext/tuned/<task>.json`` when there is one), a tuning
    result or `tune.load_tuned` dict, a file path, a task name (its shipped tuning), or "none"/False (no
    tuning: settings.DEFAULT_LRS of the dataset and space, else the optimizer's default). ``space``: the run's
    attack space (None: not an attack, not checked); a tuning made in another space raises a one-line
    ValueError (`tune.check_tuning_space`; a bare `load_tuned` dict carries no space and is not checked)."""
    if tuned is False or (isinstance(tuned, str) and tuned.lower() in ("none", "off")):
        return None, None, None
    if tuned is None:
        result = TU.shipped_tuning(task_name)
        if result is None:
            return None, None, None
        source, tuned_task = TU.tuning_source(task_name), result.get("task", task_name)
        TU.check_tuning_space(TU.tuning_space(result), space, source, tuned_task, task_name)
        return result, source, tuned_task
    if isinstance(tuned, Mapping):
        if "optimizers" not in tuned:
            return dict(tuned), "tuning dict", None
        TU.check_tuning_space(TU.tuning_space(tuned), space, "tuning dict", tuned.get("task"), task_name)
        return dict(tuned), "tuning dict", tuned.get("task")
    if isinstance(tuned, os.PathLike):
        tuned = os.fspath(tuned)
    return TU.resolve_tuning(str(tuned), space=space, run_task=task_name)


def baseline_settings(name: str, task, space: Optional[str] = None):
    """(lr or None, extra make_optimizer kwargs, source) of optimizer ``name`` on ``task`` (a name or a TaskSpec;
    ``space``: see `tasks.task_with`) from the task's shipped tuning, else the untuned fallbacks: what
    `evaluate_task` uses with ``tuned=None`` (a shipped tuning of another space raises ValueError)."""
    spec = T.task_with(task, space)
    run_space = _run_space(spec)
    table, source, _ = resolve_tuned(None, spec.name, space=run_space)
    return S.lr_for(optimizer_key(name), spec.dataset, run_space, table, source)


def _run_space(spec) -> Optional[str]:
    """The attack space of a task spec (None for a task that is not an attack)."""
    return spec.space if spec.kind == "attack" else None


# ----------------------------------------------------------------------------------------------- evaluate
def evaluate_task(task, part: str = "test", optimizers: Sequence[str] = DEFAULT_OPTIMIZERS, trials: int = 10,
                  steps: Optional[int] = None, items: Optional[int] = None, seed: int = 0, learned=None,
                  tuned=None, device: Union[str, torch.device] = "cpu", data_root: Optional[str] = None,
                  progress: bool = True, optimizer_kwargs: Optional[Dict[str, Dict[str, Any]]] = None,
                  item_steps: Sequence[int] = ITEM_STEPS) -> Dict[str, Any]:
    """Runs every optimizer on ``items`` x ``trials`` rows of ``task``'s ``part``; returns a JSON-able dict.

    ``task``: a task name or `tasks.TaskSpec` (attacks run in its ``space``; `tasks.task_with` picks the other
    one, and the tuning must be of the same space, see `resolve_tuned`). ``steps``: default the task's horizon.
    ``items``: the first N items (images / datasets) of the part (None: all). ``learned``: a `LearnedZO`, a .pt
    path or a pretrained name (default: the task's name; only loaded when a zo-lstm* optimizer runs). ``tuned``:
    see `resolve_tuned`.
    ``optimizer_kwargs``: {name: extra make_optimizer keyword arguments} (win over the tuned betas).
    ``item_steps``: the steps (those <= ``steps``; the final step always) at which per-item mean losses are kept
    for the paired criteria (`criteria.paired_criteria`).

    Keys: ``format``, ``task``, ``config`` and ``optimizers`` (per name: lr, lr_source, kwargs, wall_seconds,
    loss_mean / loss_std [steps + 1], loss_std_over, final_loss (mean), final_loss_std, failed_rows; attacks:
    success_rate, ever_success_rate, mean/median queries to first success (over the rows that succeeded),
    mean_first_success_step, mean_l1 / mean_l2 (of successes), first_success_queries (per row, -1: never);
    binary: final_loss_full, final_loss_full_std, accuracy, initial_loss_full, per_item_final_loss_full;
    per_item_loss_at: {step: per-item mean over trials of the loss}), ``wall_seconds``, ``created``. Attacks
    record ``config.space``."""
    t_all = time.perf_counter()
    spec = T.get_task(task) if isinstance(task, str) else task
    names: list = []
    for n in optimizers:
        n = optimizer_key(n)
        if n not in optimizer_names():
            raise ValueError(f"unknown optimizer {n!r}; known: {', '.join(optimizer_names())}")
        if n not in names:
            names.append(n)
    if not names:
        raise ValueError("no optimizer to evaluate")
    trials, seed = int(trials), int(seed)
    steps = int(spec.horizon if steps is None else steps)
    if trials < 1 or steps < 1:
        raise ValueError(f"trials and steps must be >= 1 (got trials={trials}, steps={steps})")
    dev = torch.device(device)

    model, learned_desc, learned_meta = None, None, None
    if any(S.is_learned(n) for n in names):
        model, learned_desc = resolve_learned(learned, spec.name)
        learned_meta = {k: v for k, v in dict(getattr(model, "meta", {}) or {}).items()
                        if isinstance(v, (str, int, float, bool))}
    run_space = _run_space(spec)
    table, tuned_source, tuned_task = resolve_tuned(tuned, spec.name, space=run_space)

    td = T.load_task(spec, part, data_root=data_root, device=dev)
    n_all = len(td)
    if items is not None:
        items = int(items)
        if not 1 <= items <= n_all:
            raise ValueError(f"items must lie in 1..{n_all} (the {part} part of {spec.name} has {n_all} items), "
                             f"got {items}")
    n_items = n_all if items is None else items
    rows = list(range(n_items))
    problem = T.make_problem(td, rows, repeat=trials, device=dev)
    R = int(problem.batch)
    theta0 = problem.initial_point().to(dev)
    attack = spec.kind == "attack"
    binary = spec.kind == "binary"
    track = has_success(problem)

    config: Dict[str, Any] = {
        "kind": spec.kind, "dataset": spec.dataset, "part": part, "items": n_items, "trials": trials, "rows": R,
        "dim": int(problem.dim), "steps": steps, "q": spec.q, "mu": spec.mu, "baseline": spec.baseline, "seed": seed,
        "device": str(dev),
        "optimizers": names, "row_order": "row = trial * items + item",
        "initial_point": "problem.initial_point(), the same for every optimizer",
        "has_success": bool(track), "learned": learned_desc, "learned_meta": learned_meta,
        "tuned": tuned_source, "tuned_task": tuned_task, "torch": str(torch.__version__),
    }
    if attack:
        pos = spec.positions(part)[:n_items]
        config.update(space=spec.space, c=spec.c, positions=[pos[0], pos[-1] + 1], target=td.target_name,
                      output=td.output, labels=[int(v) for v in td.labels[:n_items]])
        config["loss"] = "attack loss max{F_t0 - max_j F_j, 0} + c ||x - x0||_1 (DESIGN.md)"
    else:
        config.update(seeds=list(td.seeds[:n_items]), n=spec.n, minibatch=spec.minibatch)
        config["loss"] = ("per-step: the loss on the step's minibatch (the same for every optimizer); final: also "
                          "the loss on all n samples (final_loss_full)")
    if tuned_task is not None and tuned_task != spec.name:
        config["tuned_note"] = f"the tuning was made on task {tuned_task}, not {spec.name}"

    result: Dict[str, Any] = {"format": FORMAT, "task": spec.name, "config": config, "optimizers": {}}
    extra_kw = {optimizer_key(k): dict(v) for k, v in (optimizer_kwargs or {}).items()}
    for name in names:
        lr, kw, source = S.lr_for(name, spec.dataset, run_space, table, tuned_source)
        kw.update(extra_kw.get(name, {}))
        if "lr" in kw:
            lr = float(kw.pop("lr"))
            source = "optimizer_kwargs"
        opt = A.build_optimizer(name, spec.q, spec.mu, lr, learned=model, **{"baseline": spec.baseline, **kw})
        t0 = time.perf_counter()
        res = runner.minimize(opt, problem, steps, theta0=theta0.clone(), seed=seed, progress=progress,
                              track_success=track, desc=name)
        wall = time.perf_counter() - t0
        entry = _summarize(res, trials, n_items, item_steps)
        entry = {"lr": lr if lr is not None else (getattr(opt, "lr", None) if S.uses_lr(name) else None),
                 "lr_source": source, "kwargs": {k: v for k, v in kw.items() if isinstance(v, (int, float, str))},
                 "wall_seconds": round(wall, 3), **entry}
        theta = res.theta.to(dev)
        if attack and track:
            ok = res.success.bool()
            l1, l2 = problem.distortion(theta)
            l1, l2 = l1.double().cpu(), l2.double().cpu()
            entry["mean_l1"] = json_number(l1[ok].mean()) if ok.any() else None
            entry["mean_l2"] = json_number(l2[ok].mean()) if ok.any() else None
        if binary:
            with torch.no_grad():
                full = problem.full_loss(theta).double().cpu()
                acc = problem.accuracy(theta).double().cpu()
                full0 = problem.full_loss(theta0).double().cpu()
            per_trial = full.reshape(trials, n_items).mean(1)
            entry["final_loss_full"] = json_number(full.mean())
            entry["final_loss_full_std"] = json_number(per_trial.std(unbiased=False)) if trials > 1 else json_number(
                full.std(unbiased=False))
            entry["accuracy"] = json_number(acc.mean())
            entry["initial_loss_full"] = json_number(full0.mean())
            entry["per_item_final_loss_full"] = json_numbers(full.reshape(trials, n_items).mean(0), 8)
        result["optimizers"][name] = entry
    result["wall_seconds"] = round(time.perf_counter() - t_all, 2)
    result["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return result


def _summarize(res, trials: int, items: int, item_steps: Sequence[int] = ITEM_STEPS) -> Dict[str, Any]:
    L = forward_fill(res.loss.double().cpu())  # [T+1, R]
    T1 = L.shape[0]
    per = L.reshape(T1, trials, items)
    item_mean = per.mean(2)  # [T+1, trials]: one curve per trial, averaged over items
    if trials > 1:
        std, over = item_mean.std(1, unbiased=False), "trials"
    elif items > 1:
        std, over = per[:, 0, :].std(1, unbiased=False), "items"
    else:
        std, over = torch.zeros(T1, dtype=torch.float64), "none"
    out: Dict[str, Any] = {
        "loss_mean": json_numbers(L.mean(1), 8), "loss_std": json_numbers(std, 8), "loss_std_over": over,
        "final_loss": json_number(L[-1].mean()),
        "final_loss_std": json_number(std[-1]),
        "per_item_final_loss": json_numbers(per[-1].mean(0), 8),
        "per_trial_final_loss": json_numbers(item_mean[-1], 8),
        # per-item means over trials at a few steps, for the paired criteria (criteria.py)
        "per_item_loss_at": {str(t): json_numbers(per[t].mean(0), 8) for t in
                             sorted({int(t) for t in item_steps if 1 <= int(t) < T1} | {T1 - 1})},
        "failed_rows": int(res.failed.sum()),
    }
    if res.has_success:
        ever = res.ever_success.bool()
        fq = res.first_success_queries[ever].double()
        fs = res.first_success_step[ever].double()
        out.update(
            success_rate=json_number(res.success.double().mean()),
            ever_success_rate=json_number(ever.double().mean()),
            mean_queries_to_success=json_number(fq.mean()) if ever.any() else None,
            median_queries_to_success=json_number(fq.median()) if ever.any() else None,
            mean_first_success_step=json_number(fs.mean()) if ever.any() else None,
            mean_queries=json_number(res.queries.double().mean()),
            # per row (row = trial * items + item), -1 where the row never succeeded: paired query comparisons
            first_success_queries=[int(v) for v in res.first_success_queries.cpu().tolist()],
        )
    return out

