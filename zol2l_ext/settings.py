"""Settings resolved once per command: a dataset's attack defaults, the parameterisation, the learning rates
(--lr > tuning > fallback table) and the learned optimizer's weights.

Every command (the CLI's, `api.ZOAttack`, `evaluate`) resolves through here and passes plain values down; the
modules below (`attack`, `zo`) do not read settings back. The defaults of q, c, mu, the space and the horizon
are the dataset's task's (`tasks.TASKS`): this module derives the attack's view of them, it holds no second
table of them.
"""
from __future__ import annotations

from dataclasses import dataclass
import os
from typing import Any, Mapping, Optional, Sequence

from . import data as D
from . import distributed as DI
from . import tasks as T
from . import tune as TU
from .attack_setup import AttackSetupError
from .fileio import portable_path
from .zo.estimator import check_baseline
from .zo.lstm_optimizer import LearnedZO
from .zo.optimizers import optimizer_names, optimizer_traits
from .zo.problems import SPACES

#: the optimizers `zol2l attack` compares when none are named (plus zo-lstm where its weights load): the
#: hand-designed ones whose learning rate is tuned (their traits say so, zo.optimizers.registry)
BASELINES = optimizer_names(tunable=True)

# Independent runs per image (extra batch rows) of `zol2l attack`: the paper's 10; 3 for the embedded demo.
ATTACK_TRIALS = {"digits": 3, "mnist": 10, "cifar10": 10}


def attack_defaults(dataset: str) -> dict[str, Any]:
    """q, c, steps, trials, space and mu of an attack on ``dataset``: its task's, plus the attack's trials."""
    if dataset not in T.DATASET_TASKS:
        raise AttackSetupError(f"unknown attack dataset {dataset!r}; choose one of {', '.join(T.DATASET_TASKS)}")
    task = T.TASKS[T.DATASET_TASKS[dataset]]
    return dict(q=task.q, c=task.c, steps=task.horizon, trials=ATTACK_TRIALS[dataset], space=task.space,
                mu=task.mu, baseline=task.baseline)


#: dataset -> `attack_defaults` (a view derived from tasks.TASKS, for help texts and tests)
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {ds: attack_defaults(ds) for ds in T.DATASET_TASKS}


def dataset_space(dataset: str, space: str | None = None) -> str:
    """``space`` checked, or (None) the default space of ``dataset`` (its task's)."""
    if space is None:
        return DATASET_DEFAULTS.get(dataset, DATASET_DEFAULTS["mnist"])["space"]
    if space not in SPACES:
        raise AttackSetupError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    return space


# ------------------------------------------------------------------------------------------ learning rates
# Learning rates per (dataset, space) and optimizer, as passed to make_optimizer(lr=...): delta, with the
# coordinate step delta / d (the reference code's convention; DESIGN.md's "ZO-SGD lr = delta / d").
# FALLBACKS, not the tuned values: DESIGN.md's protocol (delta over {0.01, 0.1, 1, 10, 100, 1000}, then finer;
# ZO-ADAM betas) is run by `zol2l tune TASK [--space S] --ship` (zol2l_ext/tune.py) on the task's "tune" images,
# and `zol2l attack` takes the baselines' lr (and ZO-ADAM betas) from the shipped zol2l_ext/tuned/<task>.json of
# the dataset's task when one exists (--tuned PATH|TASK|none; results.json config.lr_source says which; a tuning
# made in another space is an error, tune.check_tuning_space). This table applies with --tuned none, to the
# optimizers a tuning does not cover, and to attack.run_attack called without lrs (use tune.tuned_kwargs there).
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
FALLBACK_SOURCE = "settings.DEFAULT_LRS (untuned)"
OWN_DEFAULT_SOURCE = "optimizer default (untuned)"
LEARNED_SOURCE = "unused (learned update)"


def default_lrs(dataset: str, space: str | None = None) -> dict[str, float]:
    """The fallback lr table (DEFAULT_LRS) of ``dataset`` in ``space`` (None: the dataset's default space);
    empty for a dataset without one (the binary task)."""
    if dataset not in DATASET_DEFAULTS:
        return {}
    return DEFAULT_LRS.get((dataset, dataset_space(dataset, space)), {})


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


def lr_for(name: str, dataset: str, space: str | None, table: Optional[Mapping[str, Mapping[str, float]]] = None,
           source: Optional[str] = None, override: Optional[float] = None):
    """(lr or None, extra make_optimizer kwargs, where the lr came from) of optimizer ``name``: the one order of
    every command. ``override`` (--lr) wins, then the tuning ``table`` (a tuning result, or name -> {lr, beta1,
    beta2} from `tune.resolve_tuning`; its ZO-ADAM betas apply even under --lr), then the fallback table of
    (dataset, space), then the optimizer's own default; a learned update takes no lr."""
    try:  # a tuning result, a `tune.load_tuned` table or None
        tuned = TU.tuned_kwargs(table, name) if table is not None else {}
    except KeyError:  # not tuned there
        tuned = {}
    betas = {k: float(v) for k, v in tuned.items() if k in ("beta1", "beta2")}
    if override is not None:
        return float(override), betas, "--lr"
    if "lr" in tuned:
        return float(tuned["lr"]), betas, source
    if not uses_lr(name):
        return None, {}, LEARNED_SOURCE
    lr = default_lrs(dataset, space).get(name)
    if lr is not None:
        return float(lr), {}, FALLBACK_SOURCE
    return None, {}, OWN_DEFAULT_SOURCE


def learning_rates(dataset: str, optimizers: Sequence[str], lrs: dict[str, float] | float | None = None,
                   space: str | None = None) -> dict[str, float | None]:
    """The lr of every optimizer without a tuning: ``lrs`` (one value or per name), else the fallback table,
    else None (the optimizer's own default, or a learned update)."""
    out: dict[str, float | None] = {}
    for name in optimizers:
        override = float(lrs) if isinstance(lrs, (int, float)) else (lrs or {}).get(name)
        lr, _, _ = lr_for(name, dataset, space, override=override)
        out[name] = lr
    return out


def resolve_lrs(dataset: str, space: str, optimizers: Sequence[str], lr_args: Sequence[str] | None = None,
                tuned: Optional[str] = None, announce: bool = True):
    """(lrs, optimizer_kwargs, lr_source) of a command line: --lr values ``lr_args`` over the tuning ``tuned``
    (a file, a task, "none", or None: the dataset's task's shipped tuning) over the fallbacks. ``lrs`` holds the
    --lr and tuned values only; ``lr_source`` says for every optimizer where its lr comes from."""
    common, per = parse_lr_overrides(lr_args)
    unknown = sorted(set(per) - set(optimizers))
    if unknown:
        raise AttackSetupError(f"--lr for {', '.join(unknown)}, which does not run (running: "
                               f"{', '.join(optimizers)})")
    table, source, tuned_task = TU.resolve_tuning(tuned, dataset, space=space)
    if table is not None and TU.task_dataset(tuned_task) not in (None, dataset):
        DI.note(f"zol2l: note: the tuning {source} was made on task {tuned_task}, not on {dataset}")
    lrs: dict[str, float] = {}
    kwargs: dict[str, dict[str, float]] = {}
    lr_source: dict[str, str] = {}
    for name in optimizers:
        lr, extra, lr_source[name] = lr_for(name, dataset, space, table, source, per.get(name, common))
        if lr_source[name] in ("--lr", source):
            lrs[name] = lr
        if extra:
            kwargs[name] = extra
    if table is not None and announce:
        _announce_tuning(optimizers, lrs, kwargs, lr_source, source)
    return lrs, kwargs, lr_source


def _announce_tuning(optimizers, lrs, kwargs, lr_source, source) -> None:
    parts = []
    for n in optimizers:
        bits = [f"lr {lrs[n]:g}"] if lr_source[n] == source else []
        if n in kwargs:  # tuned betas apply even under an explicit --lr
            bits.append(f"betas {kwargs[n].get('beta1', '-')}/{kwargs[n].get('beta2', '-')}")
        if bits:
            parts.append(f"{n} {' '.join(bits)}")
    DI.note(f"zol2l: learning rates from {source}: " + ("; ".join(parts) or "none of the running optimizers is "
                                                                           "tuned there"))


# ------------------------------------------------------------------------------------------ optimizers
def is_learned(name: str) -> bool:
    """Whether optimizer ``name`` runs a learned optimizer's networks (it needs a LearnedZO)."""
    return optimizer_traits(name).learned


def uses_lr(name: str) -> bool:
    """Whether optimizer ``name`` takes a learning rate (False for a learned update; True for an unknown name,
    whose error comes where it is built)."""
    try:
        return optimizer_traits(name).uses_lr
    except ValueError:
        return True


def parse_optimizers(spec: str | Sequence[str]) -> list[str]:
    """Optimizer names from "a,b,c" or a list, checked against the registry, duplicates dropped."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise AttackSetupError("no optimizer given")
    known = optimizer_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise AttackSetupError(f"unknown optimizer(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return list(dict.fromkeys(names))


# Checkpoints of the learned optimizer tried per dataset (zol2l_ext/pretrained/<name>.pt), first found wins.
LEARNED_CANDIDATES: dict[str, tuple[str, ...]] = {
    "digits": ("digits-attack", "mnist-attack"),
    "mnist": ("mnist-attack",),
    "cifar10": ("cifar-attack", "cifar-attack-finetune", "mnist-attack"),
}


def user_pretrained_path(name: str) -> str:
    """Where `zol2l train/boost --export NAME` writes: the user folder (data.user_file), not the package."""
    return D.user_file("pretrained", f"{name}.pt")


def pretrained(name: str) -> LearnedZO:
    """The learned optimizer called ``name``: your export (`user_pretrained_path`) when there is one, else the
    package's zol2l_ext/pretrained/<name>.pt (FileNotFoundError listing the shipped names when neither)."""
    path = user_pretrained_path(name)
    return LearnedZO.load(path) if os.path.isfile(path) else LearnedZO.pretrained(name)


def pretrained_source(name: str) -> str:
    """Where `pretrained` ``name`` comes from, for results and messages."""
    path = user_pretrained_path(name)
    if os.path.isfile(path):
        return f"your export {name} ({portable_path(path)})"
    return f"pretrained {name} (zol2l_ext/pretrained/{name}.pt)"


def find_learned(dataset: str, names: Sequence[str] | None = None):
    """(LearnedZO, name) of the first shipped checkpoint that loads, or (None, the reasons none did)."""
    reasons = []
    for name in names or LEARNED_CANDIDATES.get(dataset, ("mnist-attack",)):
        try:
            return pretrained(name), name
        except FileNotFoundError as e:
            reasons.append(str(e))
    return None, "; ".join(reasons)


def load_learned(spec, dataset: Optional[str] = None):
    """(LearnedZO, what it is) from ``spec``: a LearnedZO, a .pt path, a shipped name (a missing one raises
    FileNotFoundError), or None: the first of ``dataset``'s candidates that loads (`LEARNED_CANDIDATES`)."""
    if isinstance(spec, LearnedZO):
        return spec, "LearnedZO object"
    if spec is None:
        learned, name = find_learned(dataset)
        if learned is None:
            raise AttackSetupError(f"zo-lstm* needs a pretrained learned optimizer: {name}")
        return learned, name
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"learned must be a LearnedZO, a shipped name or a .pt path, got {type(spec).__name__}")
    spec = os.fspath(spec)
    if LearnedZO.is_path(spec):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"learned optimizer {spec!r}: no such file")
        return LearnedZO.load(spec), portable_path(spec)  # a damaged file: a one-line ValueError naming it
    return pretrained(spec), spec


@dataclass
class AttackSettings:
    """Everything `zol2l attack` runs with, resolved before any data or model is loaded."""

    q: int
    mu: float
    c: float
    steps: int
    trials: int
    space: str
    optimizers: list[str]
    lrs: dict[str, Optional[float]]  # every optimizer's (None: its own default, or a learned update)
    optimizer_kwargs: dict[str, dict[str, float]]
    lr_source: dict[str, str]
    learned: Optional[LearnedZO] = None
    learned_name: Optional[str] = None
    baseline: str = "f0"  # the estimator's, for every optimizer


def resolve_attack(dataset: str, *, q=None, mu=None, c=None, steps=None, trials=None, space=None,
                   optimizers: Optional[str] = None, learned: Optional[str] = None, lr_args=None, tuned=None,
                   budget: Optional[int] = None, baseline: Optional[str] = None) -> AttackSettings:
    """The settings of an attack on ``dataset`` from the command line's values (None: the default)."""
    dflt = attack_defaults(dataset)
    space = dataset_space(dataset, space)
    q = dflt["q"] if q is None else q
    if budget is not None and budget < q + 1:
        raise AttackSetupError(f"--budget {budget} is below one step's q + 1 = {q + 1} queries")
    names = parse_optimizers(optimizers) if optimizers else list(BASELINES)
    model, model_name = None, None
    if optimizers:
        if any(is_learned(n) for n in names):
            model, model_name = load_learned(learned, dataset)
    elif learned:
        model, model_name = load_learned(learned, dataset)
    else:
        model, model_name = find_learned(dataset)
        if model is None:
            model_name = None
            tried = ", ".join(f"{n}.pt" for n in LEARNED_CANDIDATES.get(dataset, ()))
            DI.note(f"zol2l: zo-lstm skipped: no pretrained learned optimizer for {dataset} (looked for {tried} in "
                    "zol2l_ext/pretrained/)")
    if model is not None and not optimizers:
        names.append("zo-lstm")
    lrs, kwargs, lr_source = resolve_lrs(dataset, space, names, lr_args, tuned)
    lrs = {**learning_rates(dataset, names, None, space), **lrs}  # every optimizer's, fallbacks included
    baseline = check_baseline(dflt["baseline"] if baseline is None else baseline)
    if baseline != "f0":  # recorded with the optimizers' other keyword arguments (results.json config)
        kwargs = {n: {**kwargs.get(n, {}), "baseline": baseline} for n in names}
    return AttackSettings(q=q, mu=T.SPACE_MU[space] if mu is None else mu, c=dflt["c"] if c is None else c,
                          steps=dflt["steps"] if steps is None else steps,
                          trials=dflt["trials"] if trials is None else trials, space=space, optimizers=names,
                          lrs=lrs, optimizer_kwargs=kwargs, lr_source=lr_source, learned=model,
                          learned_name=model_name, baseline=baseline)
