"""Learning-rate tuning of the baseline ZO optimizers on a task's "tune" part (DESIGN.md's protocol): the search.

DESIGN.md: "Baseline learning rates are tuned per task: delta over {0.01, 0.1, 1, 10, 100, 1000}, then finer";
ZO-ADAM's beta1 in {0.9, 0.99} and beta2 in {0.99, 0.996, 0.999}. `tune_baselines` runs, per optimizer:

1. coarse: every delta of ``grid`` (ZO-ADAM with its default betas (0.9, 0.996));
2. ZO-ADAM only: the 6 (beta1, beta2) pairs at the best coarse delta;
3. fine: the best coarse delta times each factor of ``fine`` (1/3, 1/2, 2, 3; ZO-ADAM with the best betas).

The choice is the candidate of lowest score over all stages. ``lr`` is delta as make_optimizer takes it (the
coordinate step is delta / d). Every candidate runs ``steps`` steps (default: the task's horizon) from the same
initial point with the same seed, on the rows of ``tasks.make_problem(td, repeat=trials)`` (trial-major), so
all candidates see the same directions (and, for the binary task, the same minibatches): the runner keys the
directions of a row by (seed, row, step).

Score: the mean over rows of the loss of the final iterate, a row that failed (non-finite values or iterate;
the runner freezes it) or whose final loss is not finite counting as +inf, so a diverging delta loses. For
attacks it is ``RunResult.final_loss`` (the attack loss of the final iterate; the success rate is recorded
too); for the binary task, whose per-step loss is a 64-sample minibatch, it is the loss of the final iterate on
all n samples (``full_loss``: the same objective without the minibatch noise; the minibatch final loss is
recorded as ``final_loss``).

Batching: the candidates of a stage run as ONE problem of K x R rows (K candidates, R rows each; rows of
candidate k are copies of the R rows, with problem ids 0..R-1 so that every copy draws the same directions)
and the optimizer of make_optimizer given one delta (and betas) per row (per-row learning rates, see
`zo.optimizers.base`). This is the same update as with scalar hyper-parameters (up to float rounding of the
step-size product); ``batch=False`` runs every candidate alone with scalar ones instead.

Which optimizers are tuned: those whose traits say ``tunable`` (`zo.optimizers.optimizer_names`); the
(beta1, beta2) stage applies to those with betas among their hyper-parameters (ZO-ADAM).

The result files, their resolution and the tuning table are `tune` (which re-exports this module).
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

from . import tasks as T
from .fileio import json_number
from .zo.optimizers import canonical_name, make_optimizer, optimizer_class, optimizer_names
from .zo.runner import minimize

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = ["TUNABLE", "DEFAULT_GRID", "DEFAULT_FINE", "ADAM_BETAS", "ADAM_DEFAULT_BETAS", "FORMAT", "tune_baselines",
           "tunes_betas"]

FORMAT = "zol2l-tuning/1"
#: the tunable optimizers registered when this module was imported (`tune_baselines` reads the live registry)
TUNABLE = optimizer_names(tunable=True)
DEFAULT_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
DEFAULT_FINE = (1 / 3, 1 / 2, 2.0, 3.0)
ADAM_BETAS = tuple((b1, b2) for b1 in (0.9, 0.99) for b2 in (0.99, 0.996, 0.999))
ADAM_DEFAULT_BETAS = (0.9, 0.996)  # make_optimizer("zo-adam")'s defaults, used by the coarse stage


def tunes_betas(name: str) -> bool:
    """Whether the (beta1, beta2) stage applies to optimizer ``name`` (it has both among its hyper-parameters)."""
    return {"beta1", "beta2"} <= set(optimizer_class(name)._config_keys)


# ------------------------------------------------------------------------------------------ helpers
def _key(c: Dict[str, Any]) -> tuple:
    return (c["lr"], c.get("beta1"), c.get("beta2"))


def _score_rows(metric: Tensor, failed: Tensor) -> Tensor:
    m = metric.double().clone()
    bad = failed.bool() | ~torch.isfinite(m)
    m[bad] = float("inf")
    return m


def _candidate_score(c: Dict[str, Any]) -> float:
    s = c.get("score")
    return float("inf") if s is None else float(s)


def _best(cands: Iterable[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The candidate of lowest score (ties: the first tried); None when every score is +inf."""
    best, best_s = None, float("inf")
    for c in cands:
        s = _candidate_score(c)
        if s < best_s:
            best, best_s = c, s
    return best


# ------------------------------------------------------------------------------------------ tuning
def _per_row(group: Sequence[Dict[str, Any]], key: str, default: Optional[float], rows: int) -> Tensor:
    """``key`` of each candidate of ``group``, repeated for its ``rows`` rows: a float64 tensor [K * rows]."""
    return torch.tensor([float(c.get(key, default)) for c in group for _ in range(rows)], dtype=torch.float64)


def tune_baselines(task, optimizers: Optional[Sequence[str]] = None, trials: int = 2, steps: Optional[int] = None,
                   seed: int = 0, grid: Sequence[float] = DEFAULT_GRID, fine: Sequence[float] = DEFAULT_FINE,
                   device: Union[str, torch.device] = "cpu", data_root: Optional[str] = None,
                   progress: bool = True, batch: bool = True, adam_betas: Sequence[tuple] = ADAM_BETAS,
                   max_batch_rows: Optional[int] = None) -> Dict[str, Any]:
    """Tunes delta (and ZO-ADAM's betas) of each optimizer on ``task``'s "tune" part; returns a JSON-able dict.

    ``task``: a task name or `tasks.TaskSpec`. ``optimizers``: names of tunable optimizers (None: all of
    them). ``trials``: copies of every tune item (extra rows with other
    directions). ``grid``: the coarse deltas; ``fine``: the factors applied to the best coarse delta (empty:
    no fine stage). ``batch``: run a stage's candidates as one problem of K x R rows (see the module
    docstring); ``max_batch_rows`` caps K x R (default: no cap). Result keys: ``task``, ``config``,
    ``optimizers`` (per name: ``lr`` (and ``beta1``/``beta2`` for zo-adam) of the choice, its ``score``, every
    ``candidates`` entry with stage, lr, betas, score, final loss, success rate, failed rows), ``wall_seconds``.
    """
    spec = T.get_task(task) if isinstance(task, str) else task
    tunable = optimizer_names(tunable=True)
    optimizers = tunable if optimizers is None else [canonical_name(n) for n in optimizers]
    bad = [n for n in optimizers if n not in tunable]
    if bad:
        raise ValueError(f"tuning supports {', '.join(tunable)}; got {', '.join(bad)}")
    if not optimizers:
        raise ValueError("no optimizer to tune")
    trials, seed = int(trials), int(seed)
    steps = int(spec.horizon if steps is None else steps)
    if trials < 1 or steps < 1:
        raise ValueError(f"trials and steps must be >= 1 (got trials={trials}, steps={steps})")
    grid = [float(v) for v in grid]
    if not grid or any(not (v > 0 and math.isfinite(v)) for v in grid):
        raise ValueError(f"grid must hold finite deltas > 0, got {grid}")
    grid = [json_number(v, sig=4) for v in grid]  # 100 / 3 -> 33.33: files and tables stay readable
    fine = [float(f) for f in fine]
    if any(not (f > 0 and math.isfinite(f)) for f in fine):
        raise ValueError(f"fine factors must be finite and > 0, got {fine}")
    dev = torch.device(device)
    t_all = time.perf_counter()

    td = T.load_task(spec, "tune", data_root=data_root, device=dev)
    base = T.make_problem(td, repeat=trials, device=dev)
    R, d = int(base.batch), int(base.dim)
    theta0 = base.initial_point().to(dev)
    binary = spec.kind == "binary"
    attack = spec.kind == "attack"
    n_items = len(td)
    cap = max_batch_rows if max_batch_rows is not None else None

    config: Dict[str, Any] = {
        "kind": spec.kind, "dataset": spec.dataset, "part": "tune", "q": spec.q, "mu": spec.mu,
        "baseline": spec.baseline, "steps": steps,
        "trials": trials, "seed": seed, "items": n_items, "rows": R, "dim": d,
        "row_order": "row = trial * items + item",
        "grid": grid, "fine": [round(f, 6) for f in fine],
        "adam_betas": [list(p) for p in adam_betas], "adam_coarse_betas": list(ADAM_DEFAULT_BETAS),
        "score": ("mean over rows of the full-dataset loss (all n samples) of the final iterate" if binary else
                  "mean over rows of the loss of the final iterate") + "; failed / non-finite rows count as +inf",
        "device": str(dev), "batched": bool(batch), "torch": str(torch.__version__),
    }
    if attack:
        config.update(space=spec.space, c=spec.c, positions=spec.positions("tune"), target=td.target_name,
                      output=td.output)
    else:
        config.update(seeds=list(td.seeds), n=spec.n, minibatch=spec.minibatch)

    n_total = sum(len(grid) + (len(fine) if fine else 0) + (len(adam_betas) - 1 if tunes_betas(n) else 0)
                  for n in optimizers)
    bar = tqdm(total=n_total, desc=f"tune {spec.name}", unit="cand") if (progress and tqdm is not None) else None

    def run_block(name: str, cands: list, stage: str) -> None:
        """Runs ``cands`` (dicts with lr and betas) and fills in their scores."""
        groups = [cands]
        if not batch:
            groups = [[c] for c in cands]
        elif cap is not None:
            per = max(1, int(cap) // R)
            groups = [cands[i:i + per] for i in range(0, len(cands), per)]
        for group in groups:
            K = len(group)
            t0 = time.perf_counter()
            desc = f"{name} {stage}" + (f" x{K}" if K > 1 else f" lr={group[0]['lr']:g}")
            if batch:
                rows = torch.arange(R, dtype=torch.int64).repeat(K)
                prob = base if K == 1 else base.select(rows.to(dev))
                kw = {"q": spec.q, "mu": spec.mu, "lr": _per_row(group, "lr", None, R), "baseline": spec.baseline}
                if tunes_betas(name):
                    kw.update(beta1=_per_row(group, "beta1", ADAM_DEFAULT_BETAS[0], R),
                              beta2=_per_row(group, "beta2", ADAM_DEFAULT_BETAS[1], R))
                opt = make_optimizer(name, **kw)
                res = minimize(opt, prob, steps, theta0=theta0.repeat(K, 1), seed=seed, progress=progress,
                               problem_ids=rows.to(dev), desc=desc)
                blocks = [slice(k * R, (k + 1) * R) for k in range(K)]
            else:
                c = group[0]
                kw = {"q": spec.q, "mu": spec.mu, "lr": c["lr"], "baseline": spec.baseline}
                if tunes_betas(name):
                    kw.update(beta1=c["beta1"], beta2=c["beta2"])
                opt = make_optimizer(name, **kw)
                res = minimize(opt, base, steps, theta0=theta0.clone(), seed=seed, progress=progress, desc=desc)
                blocks = [slice(0, R)]
            wall = time.perf_counter() - t0
            final = res.final_loss.double()
            for c, blk in zip(group, blocks):
                failed = res.failed[blk]
                fl = _score_rows(final[blk], failed)
                c["final_loss"] = json_number(fl.mean(), 6)
                if binary:
                    with torch.no_grad():
                        full = base.full_loss(res.theta[blk].to(dev)).double().cpu()
                    fr = _score_rows(full, failed)
                    c["full_loss"] = json_number(fr.mean(), 6)
                    c["score"] = c["full_loss"]
                else:
                    c["score"] = c["final_loss"]
                c["failed_rows"] = int(failed.sum())
                if attack and res.has_success:
                    c["success_rate"] = json_number(res.success[blk].double().mean(), 4)
                    c["ever_success_rate"] = json_number(res.ever_success[blk].double().mean(), 4)
                c["seconds"] = round(wall / K, 3)
            if bar is not None:
                bar.update(K)
                best = _best(cands)
                if best is not None:
                    bar.set_postfix(opt=name, best=f"{best['lr']:g}", refresh=False)

    out_opts: Dict[str, Any] = {}
    try:
        for name in optimizers:
            t_opt = time.perf_counter()
            adam = tunes_betas(name)
            tried: list = []
            seen: set = set()

            def new(cands: list) -> list:
                fresh = []
                for c in cands:
                    if _key(c) not in seen:
                        seen.add(_key(c))
                        fresh.append(c)
                return fresh

            def cand(lr: float, stage: str, betas=None) -> Dict[str, Any]:
                c: Dict[str, Any] = {"stage": stage, "lr": json_number(lr, sig=4)}
                if adam:
                    b = betas or ADAM_DEFAULT_BETAS
                    c["beta1"], c["beta2"] = float(b[0]), float(b[1])
                return c

            coarse = new([cand(v, "coarse") for v in grid])
            run_block(name, coarse, "coarse")
            tried += coarse
            best = _best(tried)
            if best is not None and adam and adam_betas:
                bc = new([cand(best["lr"], "betas", p) for p in adam_betas])
                if bc:
                    run_block(name, bc, "betas")
                    tried += bc
                best = _best(tried)
            if best is not None and fine:
                betas = (best["beta1"], best["beta2"]) if adam else None
                fc = new([cand(best["lr"] * f, "fine", betas) for f in fine])
                if fc:
                    run_block(name, fc, "fine")
                    tried += fc
                best = _best(tried)
            entry: Dict[str, Any] = {}
            if best is None:
                entry.update(lr=None, score=None, note="every candidate diverged (score +inf)")
            else:
                entry.update(lr=best["lr"], score=best["score"])
                if adam:
                    entry.update(beta1=best["beta1"], beta2=best["beta2"])
                if "success_rate" in best:
                    entry["success_rate"] = best["success_rate"]
                best["chosen"] = True
            entry["candidates"] = tried
            entry["wall_seconds"] = round(time.perf_counter() - t_opt, 2)
            out_opts[name] = entry
    finally:
        if bar is not None:
            bar.close()

    return {"format": FORMAT, "task": spec.name, "config": config, "optimizers": out_opts,
            "wall_seconds": round(time.perf_counter() - t_all, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
