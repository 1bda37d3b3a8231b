"""Learning-rate tuning of the baseline ZO optimizers on a task's "tune" part (DESIGN.md's protocol).

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
and a row-wise optimizer holding each row's delta (and betas). This is the same update as make_optimizer's
(up to float rounding of the step-size product); ``batch=False`` runs every candidate alone through
make_optimizer instead.

Results are JSON-able (`save_tuning` / `load_tuned` / `tuned_kwargs`); files shipped with the package are
``zol2l_ext/tuned/<task>.json`` (`shipped_tuning`), which ``zol2l attack`` uses by default.

Spaces: an attack is tuned in its task's parameterisation (``TaskSpec.space``; `tasks.task_with` for the other
one, ``zol2l tune TASK --space S``) and the result records it as ``config.space``. Learning rates do not carry
over between the spaces (tanh-space steps are ~100x larger), so `check_tuning_space` refuses to apply a tuning
to a run in another space; attack tunings without ``config.space`` predate the choice and are tanh-space.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

from .tasks import DATASET_TASKS  # the attack dataset -> its task (whose shipped tuning attack uses)
from .zo.estimator import gaussian_estimate
from .zo.optimizers import ZOOptimizer, make_optimizer

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = [
    "TUNABLE", "DEFAULT_GRID", "DEFAULT_FINE", "ADAM_BETAS", "TUNED_DIR", "DATASET_TASKS", "FORMAT",
    "tune_baselines", "save_tuning", "load_tuned", "tuned_kwargs", "shipped_tuning", "shipped_path",
    "resolve_tuning", "task_dataset", "format_tuning", "tuning_space", "check_tuning_space",
]

FORMAT = "zol2l-tuning/1"
TUNABLE = ("zo-sgd", "zo-signsgd", "zo-adam")
DEFAULT_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
DEFAULT_FINE = (1 / 3, 1 / 2, 2.0, 3.0)
ADAM_BETAS = tuple((b1, b2) for b1 in (0.9, 0.99) for b2 in (0.99, 0.996, 0.999))
ADAM_DEFAULT_BETAS = (0.9, 0.996)  # make_optimizer("zo-adam")'s defaults, used by the coarse stage
TUNED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuned")


# ------------------------------------------------------------------------------------ row-wise optimizer
class _RowwiseBaseline(ZOOptimizer):
    """ZO-SGD / ZO-signSGD / ZO-ADAM with one delta (and ZO-ADAM betas) per row: K candidates in one run.

    The same updates as optimizers.ZOSGD / ZOSignSGD / ZOAdam (Gaussian estimate, coordinate step delta / d);
    the per-row hyper-parameters live in the state (first dimension B), so the runner's row selection keeps
    them with their rows when a row stops."""

    def __init__(self, kind: str, q: int, mu: float, lrs: Sequence[float], beta1: Sequence[float] | None = None,
                 beta2: Sequence[float] | None = None, eps: float = 1e-8):
        if kind not in TUNABLE:
            raise ValueError(f"row-wise tuning supports {TUNABLE}, not {kind!r}")
        self.name = kind
        self.kind = kind
        self.lrs = [float(v) for v in lrs]
        self.beta1 = [float(v) for v in (beta1 if beta1 is not None else [ADAM_DEFAULT_BETAS[0]] * len(self.lrs))]
        self.beta2 = [float(v) for v in (beta2 if beta2 is not None else [ADAM_DEFAULT_BETAS[1]] * len(self.lrs))]
        self.eps = float(eps)
        super().__init__(q, mu, 1.0, True)

    def init_state(self, theta0: Tensor) -> Dict[str, Any]:
        state = super().init_state(theta0)
        B, d = theta0.shape
        if B != len(self.lrs):
            raise ValueError(f"row-wise optimizer built for {len(self.lrs)} rows, theta0 has {B}")
        dev, dt = theta0.device, theta0.dtype
        state["lr_row"] = torch.tensor([v / d for v in self.lrs], dtype=dt, device=dev).unsqueeze(1)
        if self.kind == "zo-adam":
            state["m"] = torch.zeros_like(theta0)
            state["v"] = torch.zeros_like(theta0)
            state["b1"] = torch.tensor(self.beta1, dtype=torch.float64, device=dev).unsqueeze(1)
            state["b2"] = torch.tensor(self.beta2, dtype=torch.float64, device=dev).unsqueeze(1)
        return state

    def step(self, problem, theta, state, seeds):
        with torch.no_grad():
            est = gaussian_estimate(problem, theta, self.q, self.mu, seeds)
            g, lr = est.g, state["lr_row"]
            new = dict(state)
            new["step"] = state["step"] + 1
            if self.kind == "zo-sgd":
                theta_new = theta - lr * g
            elif self.kind == "zo-signsgd":
                theta_new = theta - lr * g.sign()
            else:
                t = new["step"]
                b1, b2 = state["b1"], state["b2"]
                dt = theta.dtype
                m = state["m"] * b1.to(dt) + g * (1.0 - b1).to(dt)
                v = state["v"] * b2.to(dt) + g * g * (1.0 - b2).to(dt)
                bc1 = (1.0 - b1 ** t).to(dt)
                bc2 = (1.0 - b2 ** t).to(dt)
                denom = (v / bc2).sqrt() + self.eps
                theta_new = theta - (lr / bc1) * (m / denom)
                new["m"], new["v"] = m, v
        return theta_new, new, est.f0


# ------------------------------------------------------------------------------------------ helpers
def _round(x: float) -> float:
    """A candidate delta with 4 significant digits (100 / 3 -> 33.33), so files and tables stay readable."""
    return float(f"{float(x):.4g}")


def _json_num(x: float, nd: int = 6) -> Optional[float]:
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


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
def tune_baselines(task, optimizers: Sequence[str] = TUNABLE, trials: int = 2, steps: Optional[int] = None,
                   seed: int = 0, grid: Sequence[float] = DEFAULT_GRID, fine: Sequence[float] = DEFAULT_FINE,
                   device: Union[str, torch.device] = "cpu", data_root: Optional[str] = None,
                   progress: bool = True, batch: bool = True, adam_betas: Sequence[tuple] = ADAM_BETAS,
                   max_batch_rows: Optional[int] = None) -> Dict[str, Any]:
    """Tunes delta (and ZO-ADAM's betas) of each optimizer on ``task``'s "tune" part; returns a JSON-able dict.

    ``task``: a task name or `tasks.TaskSpec`. ``trials``: copies of every tune item (extra rows with other
    directions). ``grid``: the coarse deltas; ``fine``: the factors applied to the best coarse delta (empty:
    no fine stage). ``batch``: run a stage's candidates as one problem of K x R rows (see the module
    docstring); ``max_batch_rows`` caps K x R (default: no cap). Result keys: ``task``, ``config``,
    ``optimizers`` (per name: ``lr`` (and ``beta1``/``beta2`` for zo-adam) of the choice, its ``score``, every
    ``candidates`` entry with stage, lr, betas, score, final loss, success rate, failed rows), ``wall_seconds``.
    """
    from . import tasks as T
    from .zo.runner import minimize

    spec = T.get_task(task) if isinstance(task, str) else task
    optimizers = [str(n).lower().replace("_", "-") for n in optimizers]
    bad = [n for n in optimizers if n not in TUNABLE]
    if bad:
        raise ValueError(f"tuning supports {', '.join(TUNABLE)}; got {', '.join(bad)}")
    if not optimizers:
        raise ValueError("no optimizer to tune")
    trials, seed = int(trials), int(seed)
    steps = int(spec.horizon if steps is None else steps)
    if trials < 1 or steps < 1:
        raise ValueError(f"trials and steps must be >= 1 (got trials={trials}, steps={steps})")
    grid = [_round(v) for v in grid]
    if not grid or any(not (v > 0 and math.isfinite(v)) for v in grid):
        raise ValueError(f"grid must hold finite deltas > 0, got {grid}")
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
        "kind": spec.kind, "dataset": spec.dataset, "part": "tune", "q": spec.q, "mu": spec.mu, "steps": steps,
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

    n_total = sum(len(grid) + (len(fine) if fine else 0) + (len(adam_betas) - 1 if n == "zo-adam" else 0)
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
                lrs = [c["lr"] for c in group for _ in range(R)]
                b1 = [c.get("beta1", ADAM_DEFAULT_BETAS[0]) for c in group for _ in range(R)]
                b2 = [c.get("beta2", ADAM_DEFAULT_BETAS[1]) for c in group for _ in range(R)]
                opt = _RowwiseBaseline(name, spec.q, spec.mu, lrs, b1, b2)
                res = minimize(opt, prob, steps, theta0=theta0.repeat(K, 1), seed=seed, progress=progress,
                               problem_ids=rows.to(dev), desc=desc)
                blocks = [slice(k * R, (k + 1) * R) for k in range(K)]
            else:
                c = group[0]
                kw = {"q": spec.q, "mu": spec.mu, "lr": c["lr"]}
                if name == "zo-adam":
                    kw.update(beta1=c["beta1"], beta2=c["beta2"])
                opt = make_optimizer(name, **kw)
                res = minimize(opt, base, steps, theta0=theta0.clone(), seed=seed, progress=progress, desc=desc)
                blocks = [slice(0, R)]
            wall = time.perf_counter() - t0
            final = res.final_loss.double()
            for c, blk in zip(group, blocks):
                failed = res.failed[blk]
                fl = _score_rows(final[blk], failed)
                c["final_loss"] = _json_num(fl.mean())
                if binary:
                    with torch.no_grad():
                        full = base.full_loss(res.theta[blk].to(dev)).double().cpu()
                    fr = _score_rows(full, failed)
                    c["full_loss"] = _json_num(fr.mean())
                    c["score"] = c["full_loss"]
                else:
                    c["score"] = c["final_loss"]
                c["failed_rows"] = int(failed.sum())
                if attack and res.has_success:
                    c["success_rate"] = _json_num(res.success[blk].double().mean(), 4)
                    c["ever_success_rate"] = _json_num(res.ever_success[blk].double().mean(), 4)
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
            adam = name == "zo-adam"
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
                c: Dict[str, Any] = {"stage": stage, "lr": _round(lr)}
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


# ------------------------------------------------------------------------------------------ files
def save_tuning(result: Dict[str, Any], path: Union[str, os.PathLike]) -> str:
    """Writes ``result`` as JSON (atomically: a temporary file, then os.replace); returns the path."""
    from .fileio import atomic_write_json

    return atomic_write_json(result, path)


def _chosen(result: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    if not isinstance(result, dict) or "optimizers" not in result:
        raise ValueError("not a tuning result (no 'optimizers')")
    out: Dict[str, Dict[str, float]] = {}
    for name, entry in result["optimizers"].items():
        if entry.get("lr") is None:
            continue  # nothing usable was found for this optimizer
        kw = {"lr": float(entry["lr"])}
        if entry.get("beta1") is not None:
            kw["beta1"] = float(entry["beta1"])
        if entry.get("beta2") is not None:
            kw["beta2"] = float(entry["beta2"])
        out[name] = kw
    return out


def _read(path) -> Dict[str, Any]:
    try:
        with open(os.fspath(path), encoding="utf-8") as f:
            result = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{os.fspath(path)}: not a zol2l tuning file (unreadable JSON: {e})") from None
    if not isinstance(result, dict) or "optimizers" not in result:
        raise ValueError(f"{os.fspath(path)}: not a zol2l tuning file (no 'optimizers')")
    return result


def load_tuned(path: Union[str, os.PathLike]) -> Dict[str, Dict[str, float]]:
    """{optimizer: {"lr": delta, "beta1": ..., "beta2": ...}} of a tuning file (betas for zo-adam only;
    optimizers whose tuning found nothing are left out)."""
    return _chosen(_read(path))


def tuned_kwargs(source: Union[str, os.PathLike, Dict[str, Any]], name: str) -> Dict[str, float]:
    """make_optimizer keyword arguments (lr, and beta1/beta2 for zo-adam) of ``name`` from a tuning file path,
    a tuning result dict, or a `load_tuned` dict. KeyError when ``name`` was not tuned there."""
    if isinstance(source, dict):
        table = _chosen(source) if "optimizers" in source else source
    else:
        table = load_tuned(source)
    key = str(name).lower().replace("_", "-")
    if key not in table:
        raise KeyError(f"no tuned values for {name!r} (tuned: {', '.join(table) or 'none'})")
    return dict(table[key])


def shipped_path(task: str) -> str:
    return os.path.join(TUNED_DIR, f"{task}.json")


def shipped_tuning(task: str) -> Optional[Dict[str, Any]]:
    """The tuning result shipped with the package for ``task`` (zol2l_ext/tuned/<task>.json), or None."""
    path = shipped_path(task)
    if not os.path.isfile(path):
        return None
    return _read(path)


def task_dataset(task: Optional[str]) -> Optional[str]:
    """The dataset of a task name (None for an unknown task or None)."""
    from .tasks import TASKS

    return TASKS[task].dataset if task in TASKS else None


def tuning_space(result: Dict[str, Any]) -> Optional[str]:
    """The attack space a tuning result was made in: its ``config.space``; "tanh" for an attack tuning without
    one (written before the space was selectable, all tanh-space); None for a tuning of a non-attack task."""
    cfg = result.get("config") or {}
    if cfg.get("space"):
        return str(cfg["space"])
    kind = cfg.get("kind")
    if kind is None:
        from .tasks import TASKS

        task = result.get("task")
        kind = TASKS[task].kind if task in TASKS else None
    if kind is not None and kind != "attack":
        return None
    return "tanh"


def check_tuning_space(tuned_space: Optional[str], run_space: Optional[str], source: Optional[str],
                       task: Optional[str], run_task: Optional[str] = None) -> None:
    """ValueError (one line) when a tuning made in ``tuned_space`` would drive a run in ``run_space``; nothing
    when either is None (not an attack) or they agree."""
    if tuned_space is None or run_space is None or tuned_space == run_space:
        return
    fix_task = task or run_task or "TASK"
    raise ValueError(f"{source or 'the tuning'} (task {task or '?'}) was made in {tuned_space} space, this run is "
                     f"in {run_space} space, and learning rates do not carry over: re-tune with `zol2l tune "
                     f"{fix_task} --space {run_space}` (--ship: the new default) or pass --tuned none (or --space "
                     f"{tuned_space})")


def resolve_tuning(spec: Optional[str], dataset: Optional[str] = None, space: Optional[str] = None,
                   run_task: Optional[str] = None):
    """(table, source, task) for ``zol2l attack --tuned``.

    ``spec``: a tuning file path, a task name (its shipped tuning), "none" (no tuning), or None (the shipped
    tuning of ``dataset``'s task if there is one, else no tuning). ``table`` is a `load_tuned` dict (None
    without tuning), ``source`` says where it came from and ``task`` is the task it was tuned on. ``space``: the
    run's attack space (None: not checked); a tuning made in another space raises ValueError
    (`check_tuning_space`, whose message names ``run_task``, default ``dataset``'s task, where the tuning has
    no task)."""
    table, source, task, result = _resolve_tuning(spec, dataset)
    if result is not None:
        check_tuning_space(tuning_space(result), space, source, task,
                           run_task or DATASET_TASKS.get(dataset or ""))
    return table, source, task


def _resolve_tuning(spec: Optional[str], dataset: Optional[str]):
    """`resolve_tuning`'s (table, source, task) and the tuning result itself (None without tuning)."""
    if spec is not None and str(spec).lower() in ("none", "off", "default"):
        return None, None, None, None
    if spec is None:
        task = DATASET_TASKS.get(dataset or "")
        result = None if task is None else shipped_tuning(task)
        if result is None:
            return None, None, None, None
        return _chosen(result), f"shipped tuning zol2l_ext/tuned/{task}.json", result.get("task", task), result
    spec = str(spec)
    if os.path.isfile(spec):
        result = _read(spec)
        return _chosen(result), f"tuning file {spec}", result.get("task"), result
    if spec.endswith(".json") or os.sep in spec:
        raise FileNotFoundError(f"--tuned {spec!r}: no such file")
    from .tasks import TASKS

    if spec not in TASKS:
        raise ValueError(f"--tuned {spec!r}: neither a file nor a task ({', '.join(TASKS)})")
    result = shipped_tuning(spec)
    if result is None:
        raise FileNotFoundError(f"--tuned {spec}: no shipped tuning for task {spec} (zol2l_ext/tuned/{spec}.json; "
                                f"make one with `zol2l tune {spec} --ship`)")
    return _chosen(result), f"shipped tuning zol2l_ext/tuned/{spec}.json", result.get("task", spec), result


def format_tuning(result: Dict[str, Any]) -> str:
    """A table of every candidate (chosen one marked *) and a summary line per optimizer."""
    def num(v, spec):
        width = int(spec.split(".")[0])
        return "inf".rjust(width) if v is None else format(v, spec)

    cfg = result["config"]
    attack = cfg.get("kind") == "attack"
    head = f"  {'optimizer':<11} {'stage':<7} {'lr (delta)':>10} {'betas':>12} {'score':>10}"
    if attack:
        head += f" {'success':>8}"
    head += f" {'failed':>6}"
    lines = [head, "  " + "-" * (len(head) - 2)]
    for name, entry in result["optimizers"].items():
        for c in entry["candidates"]:
            betas = f"{c['beta1']:g}/{c['beta2']:g}" if "beta1" in c else "-"
            mark = "*" if c.get("chosen") else " "
            line = f"{mark} {name:<11} {c['stage']:<7} {c['lr']:>10g} {betas:>12} {num(c['score'], '10.4f')}"
            if attack:
                sr = c.get("success_rate")
                line += f" {'-':>8}" if sr is None else f" {100 * sr:7.1f}%"
            line += f" {c['failed_rows']:>6d}"
            lines.append(line)
    lines.append("")
    for name, entry in result["optimizers"].items():
        if entry.get("lr") is None:
            lines.append(f"{name}: no finite candidate ({entry.get('note', '')})")
            continue
        extra = f", beta1 {entry['beta1']:g}, beta2 {entry['beta2']:g}" if "beta1" in entry else ""
        sr = f", success {100 * entry['success_rate']:.1f}%" if entry.get("success_rate") is not None else ""
        lines.append(f"{name}: lr (delta) {entry['lr']:g}{extra}  (score {entry['score']:.4f}{sr}; "
                     f"{len(entry['candidates'])} candidates, {entry['wall_seconds']:.1f} s)")
    what = (f"{cfg['items']} images (positions {cfg['positions'][0]}..{cfg['positions'][-1]}, "
            f"{cfg.get('space', 'tanh')} space)" if attack else
            f"{cfg['items']} datasets")
    lines.append(f"({result['task']}: {what} x {cfg['trials']} trials, {cfg['steps']} steps, q={cfg['q']}, "
                 f"mu={cfg['mu']}, seed {cfg['seed']}; score = {cfg['score']}; {result['wall_seconds']:.1f} s)")
    return "\n".join(lines)
