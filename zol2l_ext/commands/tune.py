"""`zol2l tune`: tune the baselines' learning rates (and ZO-ADAM betas) on a task's tune part."""
from __future__ import annotations

import argparse
import os
import sys
import time

from .. import data as D
from .. import tasks as T
from .. import tune as TU
from ..attack_setup import resolve_device
from ..cli_args import add_baseline_flag, float_list, positive_int
from ..threads import torch_threads
from ..zo.optimizers import optimizer_names
from ..zo.problems import SPACES


def _floats(spec: str, what: str) -> tuple:
    try:
        return float_list(spec, what)
    except argparse.ArgumentTypeError as e:  # parsed after argparse: the CLI's one-line ValueError instead
        raise ValueError(f"bad {what} {spec!r}: use comma-separated numbers") from e


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="tune the baselines' learning rates (and ZO-ADAM betas) on a task",
                       description="DESIGN.md's protocol on the task's 'tune' part: delta over a coarse grid "
                                   "{0.01, 0.1, 1, 10, 100, 1000}, ZO-ADAM's (beta1, beta2) pairs at the best coarse "
                                   "delta, then the best delta times {1/3, 1/2, 2, 3}; the lowest mean final loss "
                                   "wins (a diverging candidate scores +inf). Same start point and seed for every "
                                   "candidate. Writes a JSON file and prints every candidate.")
    p.add_argument("task", help="a task of zol2l_ext.tasks: digits-attack, mnist-attack, cifar-attack, binary")
    tunable = ",".join(optimizer_names(tunable=True))
    p.add_argument("--optimizers", default=tunable,
                   help=f"comma-separated subset of the tunable optimizers {tunable} (default all)")
    p.add_argument("--trials", type=positive_int, default=2,
                   help="copies of every tune item with other directions (default 2)")
    p.add_argument("--steps", type=positive_int, default=None, help="steps per run (default: the task's horizon)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query directions (default 0)")
    p.add_argument("--grid", default=None, help="coarse deltas, comma-separated (default 0.01,0.1,1,10,100,1000)")
    p.add_argument("--fine", default=None,
                   help="factors of the best coarse delta, comma-separated, e.g. 0.3333,0.5,2,3 (default); '' for none")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--data-root", default=None, help=f"data folder for mnist/cifar tasks (else ${D.ENV_DATA})")
    p.add_argument("--out", default=None, help="output JSON (default runs/tune-<task>.json)")
    p.add_argument("--ship", action="store_true",
                   help="also write the tuning into your folder ($ZOL2L_USER_DIR/tuned/<task>.json, default "
                        "~/.cache/zol2l/...): `zol2l attack` and `zol2l evaluate` then use it by default for the "
                        "task, before the package's zol2l_ext/tuned/<task>.json")
    p.add_argument("--into-package", action="store_true",
                   help="with --ship: write the package's zol2l_ext/tuned/<task>.json instead (to ship it)")
    p.add_argument("--space", choices=SPACES, default=None,
                   help="attack tasks: tune in this parameterisation (default: the task's; recorded in the tuning "
                        "file, and a run in another space refuses the tuning)")
    p.add_argument("--no-batch", action="store_true",
                   help="run every candidate alone (default: a stage's candidates as one batched problem)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars, even on a terminal")
    add_baseline_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    with torch_threads(args.threads):
        return _tune(args)


def _tune(args) -> int:
    t_start = time.perf_counter()
    device = resolve_device(args.device)
    optimizers = [s.strip() for s in args.optimizers.split(",") if s.strip()]
    grid = None if args.grid is None else list(_floats(args.grid, "--grid"))
    fine = None if args.fine is None else list(_floats(args.fine, "--fine"))
    kw = {}
    if grid is not None:
        kw["grid"] = grid
    if fine is not None:
        kw["fine"] = fine
    print(f"zol2l tune {args.task}: optimizers {', '.join(optimizers)}, trials {args.trials}, device {device}"
          + (f", {args.space} space" if getattr(args, "space", None) else ""), file=sys.stderr)
    task = T.task_with(args.task, getattr(args, "space", None), getattr(args, "baseline", None))
    result = TU.tune_baselines(task, optimizers=optimizers, trials=args.trials, steps=args.steps,
                               seed=args.seed, device=device, data_root=args.data_root,
                               progress=not args.no_progress, batch=not args.no_batch, **kw)
    argv = ["zol2l", "tune", args.task, "--optimizers", ",".join(optimizers), "--trials", str(args.trials)]
    for flag, val in (("--steps", args.steps), ("--seed", args.seed), ("--grid", args.grid), ("--fine", args.fine),
                      ("--space", getattr(args, "space", None)), ("--baseline", getattr(args, "baseline", None))):
        if val is not None:
            argv += [flag, str(val)]
    result["command"] = " ".join(argv)
    out = args.out or os.path.join("runs", f"tune-{args.task}.json")
    TU.save_tuning(result, out)
    print(TU.format_tuning(result))
    print(f"wrote {out}", end="")
    if args.ship:
        shipped = TU.save_tuning(result, TU.shipped_path(args.task) if args.into_package
                                 else TU.user_tuning_path(args.task))
        print(f" and {shipped}", end="")
    print(f" ({time.perf_counter() - t_start:.1f} s)")
    if args.ship and not args.into_package:
        print(f"zol2l tune: `zol2l attack`/`zol2l evaluate` now use {shipped} for {args.task}; to ship it with the "
              f"package, run again with --ship --into-package (or copy it to zol2l_ext/tuned/)", file=sys.stderr)
    return 0
