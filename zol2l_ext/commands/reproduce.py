"""``zol2l reproduce``: run the paper's experiments (zol2l_ext/reproduce/) and write docs/RESULTS.md."""
from __future__ import annotations

import json
import os
import sys
import time

from .. import data as D
from ..attack_setup import resolve_device
from ..malloc_tuning import keep_freed_memory
from ..reproduce import EXPERIMENTS, SCALES
from ..reproduce.core import experiment_module, run_experiment
from ..reproduce.report import write_report
from ..threads import torch_threads


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="reproduce an experiment of the paper (figures, numbers, claims)",
        description="Runs experiments of the paper: " + ", ".join(EXPERIMENTS) + ". Each writes result.json "
                    "(numbers, the paper's claims with verdicts, scale, seed, machine, wall time) and its "
                    "figure(s) as PNG into --out (default runs/reproduce/<experiment>-<scale>). 'all' runs every "
                    "experiment; 'list' lists them with their scales; 'report' writes docs/RESULTS.md from the "
                    "saved results. An interrupted run resumes from its finished sub-runs (<out>/parts/).")
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT",
                   help=f"{', '.join(EXPERIMENTS)}, all, list or report")
    p.add_argument("--scale", choices=SCALES, default="default",
                   help="default: fits a 2-core CPU in under 30 minutes per experiment; full: the paper's scale; "
                        "tiny: seconds (tests)")
    p.add_argument("--full", action="store_true", help="same as --scale full")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override one parameter of the scale, e.g. --set items=20 (value parsed as JSON)")
    p.add_argument("--out", default=None, help="output folder (one experiment; default runs/reproduce/<exp>-<scale>)")
    p.add_argument("--out-root", default=os.path.join("runs", "reproduce"),
                   help="parent of the output folders when several experiments run (default runs/reproduce)")
    p.add_argument("--results", default=os.path.join("results", "reproduce"),
                   help="report: folder of saved results (default results/reproduce)")
    p.add_argument("--report-out", default=os.path.join("docs", "RESULTS.md"), help="report: output file")
    p.add_argument("--replot", action="store_true", help="report: redraw every figure from its saved numbers first")
    p.add_argument("--seed", type=int, default=0, help="seed of the directions and problems (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--data-root", default=None, help=f"data folder for the MNIST/CIFAR tasks (else ${D.ENV_DATA})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's default)")
    p.add_argument("--fresh", action="store_true", help="ignore finished sub-runs in <out>/parts/ and run all again")
    p.add_argument("--no-progress", action="store_true", help="no progress bars, even on a terminal")
    p.set_defaults(func=run)


def format_scale(params: dict) -> str:
    """A scale's parameters for people: "items 10, steps 200, tasks mnist-attack (learned mnist-attack)"."""
    def value(v) -> str:
        if v is None:
            return "default"
        if isinstance(v, dict):
            if "task" in v:  # a task entry: its name, then what it is run with
                rest = [f"{k} {value(x)}" for k, x in sorted(v.items()) if k != "task" and x is not None]
                return str(v["task"]) + (f" ({', '.join(rest)})" if rest else "")
            return "; ".join(f"{k} {value(x)}" for k, x in sorted(v.items()))
        if isinstance(v, (list, tuple)):
            sep = "; " if any(isinstance(x, dict) for x in v) else "/"
            return sep.join(value(x) for x in v)
        return str(v)

    return ", ".join(f"{k} {value(v)}" for k, v in sorted(params.items()))


def _overrides(items) -> dict:
    out = {}
    for s in items:
        if "=" not in s:
            raise ValueError(f"--set takes KEY=VALUE, got {s!r}")
        k, v = s.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def run(args) -> int:
    names = list(args.experiments)
    if names == ["list"]:
        for n in EXPERIMENTS:
            mod = experiment_module(n)
            print(f"{n:8s} {mod.PAPER:28s} {mod.TITLE}")
            for s, ps in mod.SCALES.items():
                print(f"{'':8s}   {s + ':':9s}{format_scale(ps)}")
        return 0
    if names == ["report"]:

        print(f"wrote {write_report(args.results, args.report_out, replot=args.replot)}")
        return 0
    if names == ["all"]:
        names = list(EXPERIMENTS)
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad:
        raise ValueError(f"unknown experiment(s) {', '.join(bad)}; choose from {', '.join(EXPERIMENTS)}, all, list, "
                         "report")
    if args.out and len(names) > 1:
        raise ValueError("--out names one experiment's folder; with several experiments use --out-root")

    with torch_threads(args.threads):
        return _run_experiments(args, names)


def _run_experiments(args, names) -> int:
    keep_freed_memory()
    scale = "full" if args.full else args.scale
    device = str(resolve_device(args.device))
    overrides = _overrides(args.set)
    failed = []
    for n in names:
        out = args.out or os.path.join(args.out_root, f"{n}-{scale}")
        cmd = "zol2l reproduce " + " ".join([n] + [a for a in (getattr(args, "argv", None) or [])
                                                   if a not in names and a != "all"])
        t0 = time.perf_counter()
        try:
            res = run_experiment(n, scale, out_dir=out, data_root=args.data_root, device=device, seed=args.seed,
                                 progress=not args.no_progress, fresh=args.fresh, overrides=overrides or None,
                                 command=cmd)
        except Exception as e:  # one failed experiment must not lose the others of an `all` run
            if len(names) == 1 or os.environ.get("ZOL2L_DEBUG"):
                raise
            failed.append(n)
            print(f"zol2l reproduce {n}: FAILED after {time.perf_counter() - t0:.0f} s: {type(e).__name__}: {e}",
                  file=sys.stderr)
            continue
        print(f"{n} ({res['paper']}, {scale}): {res['wall_seconds']:.0f} s -> {out}")
        for c in res["claims"]:
            print(f"  [{c['verdict']}] {c['claim']}\n      {c['measured']}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
