"""``zol2l boost``: pick a learned optimizer's early-step boost on a task's held-out problems.

The boost (`LearnedZO.set_boost`) multiplies the update of step t by ``1 + (boost - 1) * exp(-t / decay)``. It is
a schedule over the trained weights, chosen like the transfer factor alpha: every (boost, decay) of a grid is run
on the task's held-out ("val") part and the one with the lowest mean loss curve (weighted as ``--weighting``)
wins. Nothing is read from the test part.
"""
from __future__ import annotations

import math
import shlex
import sys

from .. import data as D
from .. import settings as S
from .. import tasks as T
from ..cli_args import add_baseline_flag, float_list, positive_int
from ..fileio import portable_argv
from ..tasks import TASK_NAMES
from ..threads import torch_threads
from ..zo.meta_heldout import BOOST_GRID, DECAY_GRID, apply_boost_key, pick_boost
from ..zo.problems import SPACES
from ._export import add_export_args, export_learned


def add_parser(sub) -> None:
    p = sub.add_parser("boost", help="pick a learned optimizer's early-step boost on a task's held-out part",
                       description="Runs the learned optimizer with each (boost, decay) of a grid on the task's "
                                   "held-out problems (the update of step t multiplied by "
                                   "1 + (boost - 1) exp(-t / decay)) and writes the weights with the best one "
                                   "(lowest mean loss curve weighted as --weighting).")
    p.add_argument("task", choices=TASK_NAMES, help="the task whose held-out part picks the boost")
    p.add_argument("--weights", required=True, help="the learned optimizer: a pretrained name or a .pt path")
    p.add_argument("--boosts", type=lambda s: float_list(s, "--boosts", positive=True), default=BOOST_GRID,
                   help="boosts to try, comma-separated (default %(default)s; 1 = no boost)")
    p.add_argument("--decays", type=lambda s: float_list(s, "--decays", positive=True), default=DECAY_GRID,
                   help="decay time constants in steps, comma-separated (default %(default)s)")
    p.add_argument("--query-decays", type=lambda s: float_list(s, "--query-decays", positive=True), default=None,
                   help="also try fading the QueryRNN's use: at step t its scale is used with probability "
                        "p exp(-t / decay); comma-separated decays in steps, 'inf' for none (default: keep the "
                        "weights' own)")
    p.add_argument("--weighting", choices=("uniform", "linear"), default="uniform",
                   help="weights of the held-out loss curve: 1 (the area under the curve, default) or t")
    p.add_argument("--trials", type=positive_int, default=3, help="trials per held-out problem (default 3)")
    p.add_argument("--steps", type=positive_int, default=None, help="steps per run (default: the task's horizon)")
    p.add_argument("--space", choices=SPACES, default=None,
                   help="attack tasks: the variable's parameterisation (default: the task's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out runs' directions (default 0)")
    p.add_argument("--out", default=None, help="write the boosted weights to this .pt path")
    add_export_args(p, "boosted")
    p.add_argument("--data-root", default=None, help=f"data folder (else ${D.ENV_DATA})")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    add_baseline_flag(p, "the one the weights were trained with", task_defaults=False)
    p.set_defaults(func=run)


def run(args) -> int:
    with torch_threads(args.threads):
        return _boost(args)


def _boost(args) -> int:
    if not (args.out or args.export):
        raise ValueError("zol2l boost: say where the boosted weights go (--out PATH and/or --export NAME)")
    spec = T.task_with(args.task, args.space, args.baseline)
    model = S.load_learned(args.weights)[0]
    val = T.load_task(spec, "val", data_root=args.data_root)
    problem = val.make(None, repeat=args.trials)
    steps = args.steps or spec.horizon
    print(f"zol2l boost: {spec.name} held-out part ({len(val)} problems x {args.trials} trials, {steps} steps), "
          f"weights {args.weights}", file=sys.stderr)
    best, scores = pick_boost(model, problem, steps, spec.q, spec.mu, args.boosts, args.decays, args.weighting,
                              seed=args.seed + 7919, log=lambda s: print("zol2l boost: " + s, file=sys.stderr),
                              baseline=args.baseline, query_decays=args.query_decays)
    apply_boost_key(model, best)
    meta = dict(getattr(model, "meta", {}))
    command = "zol2l boost " + " ".join(shlex.quote(a) for a in portable_argv(args.argv))
    meta["commands"] = list(meta.get("commands", [])) + [command]
    meta["boost_scores"] = {"/".join(f"{v:g}" for v in key): score for key, score in scores.items()}
    fade = f", query decay {best[2]:g}" if len(best) == 3 else ""
    unboosted = next((v for k, v in scores.items() if k[0] == 1.0 and (len(k) == 2 or k[2] == math.inf)),
                     float("nan"))
    print(f"zol2l boost: picked boost {best[0]:g}, decay {best[1]:g}{fade} (held-out objective {scores[best]:.4g}; "
          f"no boost{', no fade' if fade else ''}: {unboosted:.4g})")
    if args.out:
        model.save(args.out, meta=meta)
        print(f"zol2l boost: wrote {args.out}")
    if args.export:
        export_learned(model, dict(meta, name=args.export), args.export, args.into_package, "zol2l boost")
    return 0
