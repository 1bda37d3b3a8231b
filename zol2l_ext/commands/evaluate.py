"""``zol2l evaluate``: the learned optimizer against the tuned baselines on a task's test problems (evaluate.py)."""
from __future__ import annotations

import os
import sys
import time

from .. import data as D
from .. import evaluate as E
from .. import tasks as T
from ..attack_setup import resolve_device
from ..cli_args import add_baseline_flag
from ..criteria import format_paired, paired_criteria
from ..evaluate import DEFAULT_OPTIMIZERS
from ..fileio import portable_argv
from ..tasks import TASK_NAMES, TASKS
from ..threads import torch_threads
from ..zo.problems import SPACES


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="quality check: ZO-LSTM vs the tuned baselines on a task's test problems",
                       description="Runs every optimizer on the task's part (default: test) from the same initial "
                                   "points with the same seed, items x trials rows at once, and checks the quality "
                                   "criteria: ZO-LSTM's mean loss curve below every baseline's from --from-step on, "
                                   "its final mean loss the lowest, its mean queries to first success fewer than "
                                   "the best baseline's (attacks); then the paired criteria (criteria.py): "
                                   "significantly lower per-item loss than every baseline at steps 25, 50, 100, "
                                   "200 and the last, <= 0.8 x the best baseline's queries to first success, a "
                                   "success rate not below it, and the QueryRNN's gain over zo-lstm-no-query. "
                                   "Writes results.json, paired_criteria.json, loss_curves.png and quality.md "
                                   "into --out and prints the table and the verdicts.")
    p.add_argument("task", choices=TASK_NAMES, help="the task whose problems are evaluated")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--part", default="test", help="the task's part: test (default), val, train, tune")
    where.add_argument("--range", default=None, metavar="A:B",
                       help="items A..B-1 instead of a part (image positions of attack tasks, dataset or problem "
                            "seeds of binary and sparse-quadratic): a replication on problems that no part "
                            "holds, where nothing was trained, tuned or picked")
    p.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS),
                   help=f"comma-separated (default {','.join(DEFAULT_OPTIMIZERS)})")
    p.add_argument("--trials", type=int, default=10, help="runs per item with other directions (default 10)")
    p.add_argument("--steps", type=int, default=None, help="steps (default: the task's horizon)")
    p.add_argument("--items", type=int, default=None, help="the first N items of the part (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query directions (default 0)")
    p.add_argument("--learned", default=None, metavar="NAME|PATH",
                   help="the ZO-LSTM weights: a pretrained name (zol2l_ext/pretrained/NAME.pt) or a .pt file "
                        "(default: the task's name)")
    p.add_argument("--tuned", default=None, metavar="PATH|TASK|none",
                   help="the baselines' tuned lr (and ZO-ADAM betas): a `zol2l tune` JSON file or a task's shipped "
                        "tuning (default: the task's own, zol2l_ext/tuned/TASK.json, where it exists; else "
                        "the built-in fallback rates or the optimizer defaults, marked untuned); 'none': no tuning")
    p.add_argument("--from-step", type=int, default=50, help="the curve criterion's first step (default 50)")
    p.add_argument("--space", choices=SPACES, default=None,
                   help="attack tasks: the attack's parameterisation, pixel or tanh (default: the task's, "
                        + ", ".join(f"{t.name} {t.space}" for t in _attack_tasks()) + "); the baselines' tuning "
                        "must have been made in it")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--data-root", default=None, help=f"data folder for mnist/cifar tasks (else ${D.ENV_DATA})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's default)")
    p.add_argument("--out", default=None, help="output folder (default runs/eval-<task>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars, even on a terminal")
    add_baseline_flag(p)
    p.set_defaults(func=run)


def _attack_tasks() -> list:
    return [t for t in TASKS.values() if t.kind == "attack"]


def run(args) -> int:
    with torch_threads(args.threads):
        return _evaluate(args)


def _evaluate(args) -> int:
    t_start = time.perf_counter()
    device = resolve_device(args.device)
    optimizers = [s.strip() for s in args.optimizers.split(",") if s.strip()]
    items = getattr(args, "range", None)
    print(f"zol2l evaluate {args.task} ({f'items {items}' if items else args.part}): {', '.join(optimizers)}, "
          f"trials {args.trials}, device {device}", file=sys.stderr)
    task = T.task_with(args.task, getattr(args, "space", None), getattr(args, "baseline", None))
    part = args.part
    if items:
        task, part = T.task_with_range(task, items), T.RANGE_PART
    result = E.evaluate_task(task, part=part, optimizers=optimizers, trials=args.trials, steps=args.steps,
                             items=args.items, seed=args.seed, learned=args.learned, tuned=args.tuned,
                             device=device, data_root=args.data_root, progress=not args.no_progress)
    result["command"] = "zol2l evaluate " + " ".join(portable_argv(getattr(args, "argv", []) or [args.task]))
    criteria = E.quality_criteria(result, from_step=args.from_step)
    paired = paired_criteria(result)
    out = args.out or os.path.join("runs", f"eval-{args.task}")
    paths = E.write_evaluation(result, out, criteria=criteria, paired=paired)
    cfg = result["config"]
    print(f"learned: {cfg.get('learned') or '-'}; tuning: {cfg.get('tuned') or 'none'}"
          + (f" ({cfg['tuned_note']})" if cfg.get("tuned_note") else "")
          + (f"; {cfg['space']} space" if cfg.get("space") else ""))
    print(E.format_table(result))
    print()
    print(E.format_criteria(criteria))
    print()
    print(format_paired(paired))
    print(f"wrote {', '.join(paths.values())} ({time.perf_counter() - t_start:.1f} s)")
    return 0
