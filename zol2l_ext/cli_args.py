"""argparse pieces shared by the zol2l subcommands: checked number types and the progress-bar switch.

Number types reject a bad value while the command line is parsed, before any model or data set is loaded, with
argparse's usual one-line error (``zol2l attack: error: argument --q: must be an integer >= 1, got '0'``).
"""
from __future__ import annotations

import argparse
import sys

from .zo.estimator import FD_BASELINES


def _number(kind, low: float, strict: bool, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not (value > low if strict else value >= low):  # also rejects nan
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type by it in other messages
    return parse


positive_int = _number(int, 1, False, "an integer >= 1")
nonnegative_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a number > 0")
nonnegative_float = _number(float, 0.0, False, "a number >= 0")


def add_progress_flags(sub: argparse._SubParsersAction) -> None:
    """Gives every subcommand that has --no-progress the opposite --progress (bars even when stderr is not a
    terminal); `resolve_progress` then decides once for all of them."""
    for parser in sub.choices.values():
        if "--no-progress" in parser._option_string_actions and "--progress" not in parser._option_string_actions:
            parser.add_argument("--progress", action="store_true",
                                help="progress bars even when stderr is not a terminal (default: only on one)")
        action = parser._option_string_actions.get("--no-progress")
        if action is not None and not action.help:
            action.help = "no progress bars, even on a terminal"


def resolve_progress(args: argparse.Namespace, stream=None) -> None:
    """Sets ``args.no_progress``: bars on a terminal, none in a redirected log (where tqdm's carriage returns
    pile up), unless --progress or --no-progress says otherwise."""
    if not hasattr(args, "no_progress"):
        return
    if getattr(args, "progress", False) and args.no_progress:
        print(f"zol2l {args.command}: error: --progress and --no-progress contradict each other", file=sys.stderr)
        raise SystemExit(2)
    if getattr(args, "progress", False):
        args.no_progress = False
    elif not args.no_progress:
        args.no_progress = not (stream or sys.stderr).isatty()


def float_list(text: str, what: str, positive: bool = False) -> tuple:
    """Comma-separated numbers ('0.5', '1e3' or a fraction '1/3'), as an argparse error when one is not."""
    try:
        vals = tuple(_fraction(v) for v in text.split(",") if v.strip())
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{what}: a comma-separated list of numbers, got {text!r}") from None
    if positive and (not vals or any(not v > 0 for v in vals)):
        raise argparse.ArgumentTypeError(f"{what}: numbers > 0 expected, got {text!r}")
    return vals


def _fraction(v: str) -> float:
    v = v.strip()
    if "/" in v:
        a, b = v.split("/", 1)
        return float(a) / float(b)
    return float(v)


def task_baselines() -> str:
    """The tasks' default estimator baselines in a few words, from tasks.TASKS: "f0; mean for cifar-attack"."""
    from .tasks import TASKS  # here, not at import: tasks loads the data layer

    by = {}
    for t in TASKS.values():
        by.setdefault(t.baseline, []).append(t.name)
    common = max(by, key=lambda k: len(by[k]))
    rest = "; ".join(f"{k} for {', '.join(v)}" for k, v in by.items() if k != common)
    return common + (f"; {rest}" if rest else "")


def add_baseline_flag(p: argparse.ArgumentParser, whose: str = "the task's", note: str = "",
                      task_defaults: bool = True) -> None:
    """--baseline: what the estimator differences each direction's value against, for every optimizer. The help
    says the default is ``whose``, followed by the tasks' defaults (`task_baselines`) unless ``task_defaults``
    is False, then ``note``."""
    default_says = (f"{whose} ({task_baselines()})" if task_defaults else whose) + note
    p.add_argument("--baseline", choices=FD_BASELINES, default=None,
                   help="what the gradient estimate differences each direction's value against, for every "
                        "optimizer: f0 = f(theta) (the paper's eq. 1) or mean = the mean of the q direction "
                        "values (a control variate that cancels what all directions share, e.g. the l1 kink of "
                        f"saturated pixels; no extra query); default: {default_says}")
