"""The quality check of the learned optimizer: every optimizer on a task's test problems, and the issue's criteria.

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

`quality_criteria(result)` checks the three claims and says where the learned optimizer does not win;
`criteria.paired_criteria(result)` the issue's paired, noise-aware criteria; `write_evaluation(result, out_dir)`
writes results.json, paired_criteria.json, loss_curves.png and quality.md.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .fileio import atomic_write_json, atomic_write_text

__all__ = ["FORMAT", "DEFAULT_OPTIMIZERS", "BASELINES", "ITEM_STEPS", "evaluate_task", "quality_criteria",
           "write_evaluation", "format_table", "format_criteria", "resolve_learned", "resolve_tuned",
           "baseline_settings"]

FORMAT = "zol2l-evaluation/1"
BASELINES = ("zo-sgd", "zo-signsgd", "zo-adam")
DEFAULT_OPTIMIZERS = BASELINES + ("zo-lstm",)
#: steps at which evaluate_task keeps per-item mean losses (and the final step): the paired criteria's steps
ITEM_STEPS = (25, 50, 100, 200)
#: optimizers whose update is the UpdateRNN's (their lr is not used)
_LEARNED_UPDATE = ("zo-lstm", "zo-lstm-no-query", "zo-lstm-guided-es")


# ------------------------------------------------------------------------------------------------ helpers
def _f(x, nd: Optional[int] = None) -> Optional[float]:
    """A JSON number (None for NaN / inf)."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return round(x, nd) if nd is not None else x


def _list(t: torch.Tensor, nd: int = 8) -> list:
    arr = t.detach().double().cpu().numpy().reshape(-1)
    return [None if not np.isfinite(v) else round(float(v), nd) for v in arr]


def _norm_name(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


def resolve_learned(learned, task_name: str):
    """(LearnedZO, description) from a LearnedZO, a .pt path or a pretrained name (None: the task's own name)."""
    from .zo.lstm_optimizer import LearnedZO

    if isinstance(learned, LearnedZO):
        return learned, "LearnedZO object"
    spec = task_name if learned is None else str(learned)
    what = f"file {spec}" if LearnedZO.is_path(spec) else f"pretrained {spec} (zol2l_ext/pretrained/{spec}.pt)"
    return LearnedZO.from_name_or_path(spec), what


def resolve_tuned(tuned, task_name: str, space: Optional[str] = None):
    """(source dict or None, description, tuned task) of the baselines' tuning.

    ``tuned``: None (the task's shipped tuning ``zol2l_ext/tuned/<task>.json`` when there is one), a tuning
    result or `tune.load_tuned` dict, a file path, a task name (its shipped tuning), or "none"/False (no
    tuning: settings.DEFAULT_LRS of the dataset and space, else the optimizer's default). ``space``: the run's
    attack space (None: not an attack, not checked); a tuning made in another space raises a one-line
    ValueError (`tune.check_tuning_space`; a bare `load_tuned` dict carries no space and is not checked)."""
    from . import tune as TU

    if tuned is False or (isinstance(tuned, str) and tuned.lower() in ("none", "off")):
        return None, None, None
    if tuned is None:
        result = TU.shipped_tuning(task_name)
        if result is None:
            return None, None, None
        source, tuned_task = f"shipped tuning zol2l_ext/tuned/{task_name}.json", result.get("task", task_name)
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


def _lr_for(name: str, dataset: str, table, source: Optional[str], space: Optional[str] = None):
    """(lr or None, extra make_optimizer kwargs, lr source) of optimizer ``name``: `settings.lr_for`'s order
    (``space``: the attack's, for the fallback table; None: the dataset's default)."""
    from . import settings as S

    return S.lr_for(name, dataset, space, table, source)


def baseline_settings(name: str, task, space: Optional[str] = None):
    """(lr or None, extra make_optimizer kwargs, source) of optimizer ``name`` on ``task`` (a name or a TaskSpec;
    ``space``: see `tasks.task_with`) from the task's shipped tuning, else the untuned fallbacks: what
    `evaluate_task` uses with ``tuned=None`` (a shipped tuning of another space raises ValueError)."""
    from .tasks import task_with

    spec = task_with(task, space)
    run_space = _run_space(spec)
    table, source, _ = resolve_tuned(None, spec.name, space=run_space)
    return _lr_for(_norm_name(name), spec.dataset, table, source, run_space)


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
    from . import attack as A
    from . import tasks as T
    from .zo.optimizers import OPTIMIZER_NAMES
    from .zo.problems import has_success
    from .zo.runner import minimize

    t_all = time.perf_counter()
    spec = T.get_task(task) if isinstance(task, str) else task
    names: list = []
    for n in optimizers:
        n = _norm_name(n)
        if n not in OPTIMIZER_NAMES:
            raise ValueError(f"unknown optimizer {n!r}; known: {', '.join(OPTIMIZER_NAMES)}")
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
    if any(n.startswith("zo-lstm") for n in names):
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
        "dim": int(problem.dim), "steps": steps, "q": spec.q, "mu": spec.mu, "seed": seed, "device": str(dev),
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
    extra_kw = {_norm_name(k): dict(v) for k, v in (optimizer_kwargs or {}).items()}
    for name in names:
        lr, kw, source = _lr_for(name, spec.dataset, table, tuned_source, run_space)
        kw.update(extra_kw.get(name, {}))
        if "lr" in kw:
            lr = float(kw.pop("lr"))
            source = "optimizer_kwargs"
        opt = A.build_optimizer(name, spec.q, spec.mu, lr, learned=model, **kw)
        t0 = time.perf_counter()
        res = minimize(opt, problem, steps, theta0=theta0.clone(), seed=seed, progress=progress,
                       track_success=track, desc=name)
        wall = time.perf_counter() - t0
        entry = _summarize(res, trials, n_items, item_steps)
        entry = {"lr": lr if lr is not None else (getattr(opt, "lr", None) if name not in _LEARNED_UPDATE else None),
                 "lr_source": source, "kwargs": {k: v for k, v in kw.items() if isinstance(v, (int, float, str))},
                 "wall_seconds": round(wall, 3), **entry}
        theta = res.theta.to(dev)
        if attack and track:
            ok = res.success.bool()
            l1, l2 = problem.distortion(theta)
            l1, l2 = l1.double().cpu(), l2.double().cpu()
            entry["mean_l1"] = _f(l1[ok].mean()) if ok.any() else None
            entry["mean_l2"] = _f(l2[ok].mean()) if ok.any() else None
        if binary:
            with torch.no_grad():
                full = problem.full_loss(theta).double().cpu()
                acc = problem.accuracy(theta).double().cpu()
                full0 = problem.full_loss(theta0).double().cpu()
            per_trial = full.reshape(trials, n_items).mean(1)
            entry["final_loss_full"] = _f(full.mean())
            entry["final_loss_full_std"] = _f(per_trial.std(unbiased=False)) if trials > 1 else _f(
                full.std(unbiased=False))
            entry["accuracy"] = _f(acc.mean())
            entry["initial_loss_full"] = _f(full0.mean())
            entry["per_item_final_loss_full"] = _list(full.reshape(trials, n_items).mean(0))
        result["optimizers"][name] = entry
    result["wall_seconds"] = round(time.perf_counter() - t_all, 2)
    result["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return result


def _summarize(res, trials: int, items: int, item_steps: Sequence[int] = ITEM_STEPS) -> Dict[str, Any]:
    from .attack import forward_fill

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
        "loss_mean": _list(L.mean(1)), "loss_std": _list(std), "loss_std_over": over,
        "final_loss": _f(L[-1].mean()),
        "final_loss_std": _f(std[-1]),
        "per_item_final_loss": _list(per[-1].mean(0)),
        "per_trial_final_loss": _list(item_mean[-1]),
        # per-item means over trials at a few steps, for the paired criteria (criteria.py)
        "per_item_loss_at": {str(t): _list(per[t].mean(0)) for t in
                             sorted({int(t) for t in item_steps if 1 <= int(t) < T1} | {T1 - 1})},
        "failed_rows": int(res.failed.sum()),
    }
    if res.has_success:
        ever = res.ever_success.bool()
        fq = res.first_success_queries[ever].double()
        fs = res.first_success_step[ever].double()
        out.update(
            success_rate=_f(res.success.double().mean()),
            ever_success_rate=_f(ever.double().mean()),
            mean_queries_to_success=_f(fq.mean()) if ever.any() else None,
            median_queries_to_success=_f(fq.median()) if ever.any() else None,
            mean_first_success_step=_f(fs.mean()) if ever.any() else None,
            mean_queries=_f(res.queries.double().mean()),
            # per row (row = trial * items + item), -1 where the row never succeeded: paired query comparisons
            first_success_queries=[int(v) for v in res.first_success_queries.cpu().tolist()],
        )
    return out


# ----------------------------------------------------------------------------------------------- criteria
def _curve(entry) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in entry["loss_mean"]], dtype=float)


def _final_metric(result: Mapping[str, Any], names: Sequence[str]) -> tuple:
    """(key, description) of the final loss the criterion compares: full-data loss where every run has it."""
    opts = result["optimizers"]
    if all(opts[n].get("final_loss_full") is not None for n in names):
        return "final_loss_full", "full-data loss (all n samples) of the final iterate, mean over rows"
    return "final_loss", "loss of the final iterate, mean over rows"


def quality_criteria(result: Mapping[str, Any], learned: str = "zo-lstm", baselines: Sequence[str] = BASELINES,
                     from_step: int = 50) -> Dict[str, Any]:
    """The issue's three criteria for ``learned`` against ``baselines`` (those present in the result).

    ``curve_below_from_step``: the learned mean loss curve strictly below every baseline's at every step >=
    ``from_step`` (with the fraction of those steps where it is, and the first step from which it stays below).
    ``final_loss_lowest``: its final mean loss strictly below every baseline's (binary: the full-data loss).
    ``queries_fewer_than_best_baseline``: its mean queries to first success below the lowest among the baselines
    (tasks with success only; None otherwise, or when no optimizer ever succeeded). Each criterion has ``met``
    (True / False / None = not applicable) and a one-line ``verdict``; ``all_met`` is True when every applicable
    criterion is met."""
    opts = result["optimizers"]
    learned = _norm_name(learned)
    present = [b for b in (_norm_name(b) for b in baselines) if b in opts and b != learned]
    missing = [b for b in (_norm_name(b) for b in baselines) if b not in opts]
    out: Dict[str, Any] = {"learned": learned, "baselines": present, "missing_baselines": missing,
                           "from_step": int(from_step)}
    if learned not in opts or not present:
        why = (f"{learned} was not run" if learned not in opts else "no baseline was run")
        out.update(applicable=False, reason=why, all_met=None, verdicts=[f"criteria not evaluated: {why}"])
        return out
    out["applicable"] = True
    LN = learned.upper() if learned == "zo-lstm" else learned

    # 1. the mean curve below every baseline's from step from_step on
    lc = _curve(opts[learned])
    bcs = {b: _curve(opts[b]) for b in present}
    T1 = min([lc.size] + [c.size for c in bcs.values()])
    lc = lc[:T1]
    best = np.min(np.stack([c[:T1] for c in bcs.values()]), axis=0)  # NaN propagates: NaN is "not below"
    with np.errstate(invalid="ignore"):
        below = lc < best  # False where anything is NaN
    fs = int(from_step)

    def stays_below_from(mask: np.ndarray) -> Optional[int]:
        if mask.size == 0 or not mask[-1]:
            return None
        bad = np.nonzero(~mask)[0]
        return int(bad[-1] + 1) if bad.size else 0

    per_b = {}
    for b, c in bcs.items():
        with np.errstate(invalid="ignore"):
            m = lc < c[:T1]
        tail = m[fs:] if fs < T1 else m[:0]
        per_b[b] = {"fraction_below": _f(tail.mean(), 4) if tail.size else None,
                    "stays_below_from": stays_below_from(m),
                    "steps_not_below": int((~tail).sum()) if tail.size else 0}
    tail = below[fs:] if fs < T1 else below[:0]
    c1: Dict[str, Any] = {"per_baseline": per_b, "steps_compared": int(tail.size),
                          "stays_below_from": stays_below_from(below),
                          "fraction_below": _f(tail.mean(), 4) if tail.size else None}
    if tail.size == 0:
        c1["met"] = None
        c1["verdict"] = (f"not applicable: the run has {T1 - 1} steps, none >= step {fs}")
    else:
        c1["met"] = bool(tail.all())
        if c1["met"]:
            c1["verdict"] = (f"met: {LN}'s mean loss curve is below every baseline's at all {tail.size} steps "
                             f">= {fs} (it stays below from step {c1['stays_below_from']})")
        else:
            losers = [f"{b} ({100 * (1 - (per_b[b]['fraction_below'] or 0)):.0f}% of steps not below)"
                      for b in present if per_b[b]["steps_not_below"]]
            first_bad = int(fs + np.nonzero(~tail)[0][0])
            sb = c1["stays_below_from"]
            c1["verdict"] = (f"NOT met: {LN}'s mean curve is below every baseline's at only "
                             f"{100 * c1['fraction_below']:.1f}% of the steps >= {fs} (first failure at step "
                             f"{first_bad}; " + ("it stays below from step " + str(sb) if sb is not None else
                                                  "it is not below at the last step") +
                             "); not below: " + ", ".join(losers))
    out["curve_below_from_step"] = c1

    # 2. the final mean loss lowest
    key, desc = _final_metric(result, [learned] + present)
    lf = opts[learned].get(key)
    bf = {b: opts[b].get(key) for b in present}
    finite_b = {b: v for b, v in bf.items() if v is not None}
    best_b = min(finite_b, key=finite_b.get) if finite_b else None
    c2: Dict[str, Any] = {"metric": key, "metric_description": desc, "learned": lf, "baselines": bf,
                          "best_baseline": best_b, "best_baseline_value": finite_b.get(best_b)}
    what = "final mean loss" + (" (full data)" if key == "final_loss_full" else "")
    if lf is None:
        c2["met"] = False
        c2["verdict"] = f"NOT met: {LN}'s {what} is not finite"
    else:
        beaten_by = [b for b in present if bf[b] is not None and not lf < bf[b]]
        c2["met"] = not beaten_by
        if best_b is not None:
            c2["margin_to_best_baseline"] = _f(finite_b[best_b] - lf)
            c2["ratio_to_best_baseline"] = _f(lf / finite_b[best_b]) if finite_b[best_b] else None
        if c2["met"]:
            c2["verdict"] = (f"met: {LN}'s {what} {lf:.4g} is the lowest"
                             + (f" (best baseline {best_b}: {finite_b[best_b]:.4g})" if best_b else ""))
        else:
            c2["verdict"] = (f"NOT met: {LN}'s {what} {lf:.4g} is not the lowest: "
                             + ", ".join(f"{b} {bf[b]:.4g}" for b in beaten_by))
    out["final_loss_lowest"] = c2

    # 3. mean queries to first success below the best baseline's
    has_succ = bool(result.get("config", {}).get("has_success")) or any(
        "mean_queries_to_success" in opts[n] for n in [learned] + present)
    c3: Dict[str, Any] = {}
    if not has_succ:
        c3.update(met=None, verdict="not applicable: the task has no success notion")
    else:
        lq = opts[learned].get("mean_queries_to_success")
        bq = {b: opts[b].get("mean_queries_to_success") for b in present}
        rates = {n: opts[n].get("ever_success_rate") for n in [learned] + present}
        finite_q = {b: v for b, v in bq.items() if v is not None}
        best_q = min(finite_q, key=finite_q.get) if finite_q else None
        c3.update(learned=lq, baselines=bq, best_baseline=best_q, best_baseline_value=finite_q.get(best_q),
                  ever_success_rates=rates)

        def rate(n):
            r = rates.get(n)
            return "-" if r is None else f"{100 * r:.0f}%"

        if lq is None and best_q is None:
            c3.update(met=None, verdict="not comparable: no optimizer reached a success")
        elif lq is None:
            c3.update(met=False, verdict=f"NOT met: {LN} never succeeded (best baseline {best_q}: "
                                         f"{finite_q[best_q]:.1f} queries, success {rate(best_q)})")
        elif best_q is None:
            c3.update(met=True, verdict=f"met: {LN} succeeded ({lq:.1f} queries, success {rate(learned)}) where no "
                                        "baseline did")
        else:
            met = lq < finite_q[best_q]
            c3["met"] = bool(met)
            c3["verdict"] = (f"{'met' if met else 'NOT met'}: {LN} needs {lq:.1f} queries to first success on "
                             f"average (ever-success {rate(learned)}), the best baseline {best_q} "
                             f"{finite_q[best_q]:.1f} (ever-success {rate(best_q)}); means over the rows that "
                             "succeeded")
    out["queries_fewer_than_best_baseline"] = c3

    crit = [out[k]["met"] for k in ("curve_below_from_step", "final_loss_lowest", "queries_fewer_than_best_baseline")]
    applicable = [m for m in crit if m is not None]
    out["all_met"] = bool(applicable) and all(applicable)
    out["verdicts"] = [out[k]["verdict"] for k in ("curve_below_from_step", "final_loss_lowest",
                                                   "queries_fewer_than_best_baseline")]
    return out


# ------------------------------------------------------------------------------------------------- output
def _fmt(v, spec: str, scale: float = 1.0) -> str:
    return "-" if v is None else format(v * scale, spec)


def format_table(result: Mapping[str, Any]) -> str:
    """A markdown table: optimizer, lr (source), final mean loss, success, mean queries to 1st success, seconds
    (binary: also the full-data final loss and the accuracy)."""
    opts = result["optimizers"]
    binary = any("final_loss_full" in e for e in opts.values())
    head = ["optimizer", "lr (source)", "final mean loss", "success", "mean queries to 1st success", "seconds"]
    if binary:
        head[3:3] = ["full-data final loss", "accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, e in opts.items():
        lr = "-" if e.get("lr") is None else f"{e['lr']:g}"
        if e.get("kwargs"):
            lr += " " + " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in e["kwargs"].items())
        std = f" ± {e['final_loss_std']:.3g}" if e.get("final_loss_std") is not None else ""
        succ = "-"
        if e.get("success_rate") is not None:
            succ = f"{100 * e['success_rate']:.1f}% (ever {100 * e['ever_success_rate']:.1f}%)"
        row = [name, f"{lr} ({e.get('lr_source')})", _fmt(e.get("final_loss"), ".4g") + std, succ,
               _fmt(e.get("mean_queries_to_success"), ".1f"), _fmt(e.get("wall_seconds"), ".1f")]
        if binary:
            row[3:3] = [_fmt(e.get("final_loss_full"), ".4g"), _fmt(e.get("accuracy"), ".1f", 100.0) + "%"]
        if e.get("failed_rows"):
            row[0] += f" ({e['failed_rows']} rows failed)"
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def format_criteria(criteria: Mapping[str, Any]) -> str:
    if not criteria.get("applicable"):
        return f"- criteria not evaluated: {criteria.get('reason')}"
    titles = {"curve_below_from_step": f"mean loss curve below every baseline's from step {criteria['from_step']}",
              "final_loss_lowest": "final mean loss the lowest",
              "queries_fewer_than_best_baseline": "mean queries to first success fewer than the best baseline's"}
    lines = []
    for k, title in titles.items():
        c = criteria[k]
        lines.append(f"- **{title}**: {c['verdict']}")
    if criteria.get("missing_baselines"):
        lines.append(f"- baselines not in this run: {', '.join(criteria['missing_baselines'])}")
    overall = criteria.get("all_met")
    lines.append("- **overall**: " + ("all applicable criteria met" if overall else
                                      "the learned optimizer does NOT win on every criterion"))
    return "\n".join(lines)


def plot_curves(result: Mapping[str, Any], path: str, from_step: Optional[int] = 50,
                log_y: Optional[bool] = None) -> str:
    """Mean loss per step of every optimizer with a +-1 std band and a vertical line at ``from_step``."""
    from . import plots  # (importing it also selects the Agg backend)
    import matplotlib.pyplot as plt

    cfg = result.get("config", {})
    fig, ax = plt.subplots(figsize=(6.8, 4.4), dpi=110)
    lo, hi = np.inf, 0.0
    positive = True
    for name, e in result["optimizers"].items():
        mean = _curve(e)
        std = np.array([np.nan if v is None else v for v in e["loss_std"]], dtype=float)
        x = np.arange(mean.size)
        (line,) = ax.plot(x, mean, label=name, lw=1.6)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.18, lw=0)
        fin = mean[np.isfinite(mean)]
        if fin.size:
            positive &= bool(fin.min() > 0)
            lo, hi = min(lo, fin.min()), max(hi, fin.max())
    if log_y is None:
        log_y = positive and np.isfinite(lo) and lo > 0 and hi / lo > 20
    if log_y and positive:
        ax.set_yscale("log")
    if from_step is not None and 0 < from_step < (len(next(iter(result["optimizers"].values()))["loss_mean"]) - 1):
        ax.axvline(from_step, color="gray", ls="--", lw=1, label=f"step {from_step}")
    over = next(iter(result["optimizers"].values())).get("loss_std_over", "trials")
    what = (f"{cfg.get('items')} images" if cfg.get("kind") == "attack" else f"{cfg.get('items')} datasets")
    return plots.finish_curve_plot(
        fig, ax, path, "attack loss" if cfg.get("kind") == "attack" else "minibatch loss",
        f"{result.get('task')} ({cfg.get('part')}): {what} x {cfg.get('trials')} trials, q={cfg.get('q')} "
        f"(band: std over {over})")


def write_evaluation(result: Dict[str, Any], out_dir: str, criteria: Optional[Dict[str, Any]] = None,
                     from_step: int = 50, paired: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """results.json (the result with its ``criteria`` and ``paired_criteria``), paired_criteria.json (the paired
    criteria alone, `criteria.paired_criteria`), loss_curves.png and quality.md in ``out_dir``."""
    from .criteria import format_paired, paired_criteria

    os.makedirs(out_dir, exist_ok=True)
    if criteria is None:
        criteria = result.get("criteria") or quality_criteria(result, from_step=from_step)
    if paired is None:
        paired = result.get("paired_criteria") or paired_criteria(result)
    result["criteria"] = criteria
    result["paired_criteria"] = paired
    paths = {"results": os.path.join(out_dir, "results.json"),
             "paired_criteria": os.path.join(out_dir, "paired_criteria.json"),
             "loss_curves": os.path.join(out_dir, "loss_curves.png"),
             "quality": os.path.join(out_dir, "quality.md")}
    atomic_write_json(result, paths["results"])
    atomic_write_json({"task": result.get("task"), "config": result.get("config"), **paired},
                      paths["paired_criteria"])
    plot_curves(result, paths["loss_curves"], from_step=criteria.get("from_step", from_step))
    cfg = result["config"]
    if cfg.get("kind") == "attack":
        what = (f"{cfg['items']} images (positions {cfg['positions'][0]}:{cfg['positions'][1]} of the shuffled "
                f"correct {cfg['dataset']} test images; target {cfg.get('target')})")
    else:
        what = f"{cfg['items']} datasets (seeds {', '.join(map(str, cfg.get('seeds', [])))})"
    space = f", {cfg['space']} space" if cfg.get("space") else ""
    md = [f"# Evaluation of {result['task']} ({cfg['part']} part{space})", "",
          f"{what} x {cfg['trials']} trials, {cfg['steps']} steps, q = {cfg['q']}, mu = {cfg['mu']}, seed "
          f"{cfg['seed']}, device {cfg['device']}; the same initial point and seed for every optimizer.",
          f"Learned optimizer: {cfg.get('learned') or '-'}. Baselines' tuning: {cfg.get('tuned') or 'none'}"
          + (f" ({cfg['tuned_note']})" if cfg.get("tuned_note") else "") + ".", ""]
    if cfg.get("kind") == "binary":
        md += ["Final mean loss: the minibatch loss of the final iterate; full-data final loss: on all n samples "
               "(the final-loss criterion uses it).", ""]
    md += [format_table(result), "",
           "Success: label changed at the final iterate (ever: at any iterate); queries: mean over the rows that "
           "succeeded. ± : std over trials of the item-mean." if cfg.get("has_success") else
           "± : std over trials of the item-mean.", "", "## Criteria", "", format_criteria(criteria), "",
           "## Paired criteria", "", format_paired(paired), "",
           f"({result.get('wall_seconds', 0):.1f} s, {result.get('created', '')})", ""]
    atomic_write_text(paths["quality"], "\n".join(md))
    return paths
