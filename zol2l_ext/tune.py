"""Tuned learning rates: the result files of `tune_search.tune_baselines`, their resolution for a run, and the
tuning table (`zol2l tune`, `zol2l attack --tuned`).

Results are JSON-able (`save_tuning` / `load_tuned` / `tuned_kwargs`); files shipped with the package are
``zol2l_ext/tuned/<task>.json`` (`shipped_tuning`), which ``zol2l attack`` uses by default. The search itself is
`tune_search` (re-exported here: ``tune.tune_baselines``).

Spaces: an attack is tuned in its task's parameterisation (``TaskSpec.space``; `tasks.task_with` for the other
one, ``zol2l tune TASK --space S``) and the result records it as ``config.space``. Learning rates do not carry
over between the spaces (tanh-space steps are ~100x larger), so `check_tuning_space` refuses to apply a tuning
to a run in another space; attack tunings without ``config.space`` predate the choice and are tanh-space.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Union

from . import data as D
from . import tasks as T
from .fileio import atomic_write_json, portable_path
from .tasks import DATASET_TASKS  # the attack dataset -> its task (whose shipped tuning attack uses)

# the search's names, re-exported: `from zol2l_ext import tune as TU` reaches the whole tuning
from .tune_search import (  # noqa: F401
    ADAM_BETAS,
    ADAM_DEFAULT_BETAS,
    DEFAULT_FINE,
    DEFAULT_GRID,
    FORMAT,
    TUNABLE,
    tune_baselines,
    tunes_betas,
)
from .zo.optimizers import canonical_name

__all__ = [
    "TUNABLE", "DEFAULT_GRID", "DEFAULT_FINE", "ADAM_BETAS", "TUNED_DIR", "DATASET_TASKS", "FORMAT",
    "tune_baselines", "save_tuning", "load_tuned", "tuned_kwargs", "shipped_tuning", "shipped_path",
    "resolve_tuning", "task_dataset", "format_tuning", "tuning_space", "check_tuning_space",
]

TUNED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuned")


# ------------------------------------------------------------------------------------------ files
def save_tuning(result: Dict[str, Any], path: Union[str, os.PathLike]) -> str:
    """Writes ``result`` as JSON (atomically: a temporary file, then os.replace); returns the path."""
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
    key = canonical_name(name)
    if key not in table:
        raise KeyError(f"no tuned values for {name!r} (tuned: {', '.join(table) or 'none'})")
    return dict(table[key])


def shipped_path(task: str) -> str:
    return os.path.join(TUNED_DIR, f"{task}.json")


def user_tuning_path(task: str) -> str:
    """Where `zol2l tune TASK --ship` writes: the user folder (data.user_file), not the installed package."""
    return D.user_file("tuned", f"{task}.json")


def tuning_file(task: str) -> Optional[str]:
    """The tuning file used by default for ``task``: the user's (`user_tuning_path`) when there is one, else the
    package's (zol2l_ext/tuned/<task>.json), else None."""
    return next((p for p in (user_tuning_path(task), shipped_path(task)) if os.path.isfile(p)), None)


def tuning_source(task: str) -> str:
    """How results name `tuning_file` ``task``: "shipped tuning zol2l_ext/tuned/<task>.json" or "your tuning
    <path>"."""
    path = tuning_file(task)
    if path is not None and path == user_tuning_path(task):
        return f"your tuning {portable_path(path)}"
    return f"shipped tuning zol2l_ext/tuned/{task}.json"


def shipped_tuning(task: str) -> Optional[Dict[str, Any]]:
    """The tuning result used by default for ``task`` (`tuning_file`: yours, else the package's), or None."""
    path = tuning_file(task)
    return None if path is None else _read(path)


def task_dataset(task: Optional[str]) -> Optional[str]:
    """The dataset of a task name (None for an unknown task or None)."""
    return T.TASKS[task].dataset if task in T.TASKS else None


def tuning_space(result: Dict[str, Any]) -> Optional[str]:
    """The attack space a tuning result was made in: its ``config.space``; "tanh" for an attack tuning without
    one (written before the space was selectable, all tanh-space); None for a tuning of a non-attack task."""
    cfg = result.get("config") or {}
    if cfg.get("space"):
        return str(cfg["space"])
    kind = cfg.get("kind")
    if kind is None:
        task = result.get("task")
        kind = T.TASKS[task].kind if task in T.TASKS else None
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
        return _chosen(result), tuning_source(task), result.get("task", task), result
    spec = str(spec)
    if os.path.isfile(spec):
        result = _read(spec)
        return _chosen(result), f"tuning file {spec}", result.get("task"), result
    if spec.endswith(".json") or os.sep in spec:
        raise FileNotFoundError(f"--tuned {spec!r}: no such file")
    if spec not in T.TASKS:
        raise ValueError(f"--tuned {spec!r}: neither a file nor a task ({', '.join(T.TASKS)})")
    result = shipped_tuning(spec)
    if result is None:
        raise FileNotFoundError(f"--tuned {spec}: no tuning for task {spec} (neither "
                                f"{portable_path(user_tuning_path(spec))} nor zol2l_ext/tuned/{spec}.json; make one "
                                f"with `zol2l tune {spec} --ship`)")
    return _chosen(result), tuning_source(spec), result.get("task", spec), result


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
