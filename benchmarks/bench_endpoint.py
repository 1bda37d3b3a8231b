#!/usr/bin/env python3
"""Attack queries per second through `zol2l serve` on 127.0.0.1 against the same attack in-process, side by side.

    python benchmarks/bench_endpoint.py [--dataset mnist|digits] [--count 10] [--trials 2] [--steps 20]
                                        [--optimizer zo-sgd] [--reps 3] [--threads 2] [--json PATH]

The server is ``zol2l serve DATASET`` in a child process (its own interpreter, as a real endpoint would be) with
the dataset's default target (mnist: the authors' CNN, needs $ZOL2L_DATA; digits: the embedded CNN). The attack
is the one ``zol2l attack --endpoint`` runs (remote_attack.run_resumable_attack with its default checkpointing)
against ``attack.run_attack`` on the model loaded in this process; the runs alternate (local, remote, local, ...)
so that load from other processes hits both alike, and each configuration's median is reported. Queries per
second = the attack's queries (B x trials x steps x (q + 1)) / its wall time; the results of the two runs are
also compared (they must be equal). Issue 13's target: remote >= 0.7 x local. A benchmark, not a test: exit
status 0 on a missed target. JSON (default benchmarks/results/endpoint_cpu.json) keeps every run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from common import ROOT, machine_info

from zol2l_ext import attack as A
from zol2l_ext.attack_setup import prepare_attack
from zol2l_ext.remote import RemoteModel
from zol2l_ext.remote_attack import run_resumable_attack

TARGET_RATIO = 0.7


def start_server(dataset: str, threads: int):
    """``zol2l serve`` in a child process on a free port; returns (process, scoring URL)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "zol2l_ext.cli", "serve", dataset, "--port", "0", "--threads", str(threads)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if " at http://" not in line:
        proc.kill()
        raise SystemExit(f"zol2l serve did not start: {line.strip()} {proc.stderr.read().strip()}")
    return proc, line.split(" at ")[1].split()[0]


def same_results(a: dict, b: dict) -> bool:
    def strip(r):
        return {n: {k: v for k, v in e.items() if k != "wall_seconds"} for n, e in r["optimizers"].items()}

    return strip(a) == strip(b)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default=None, choices=("mnist", "digits"),
                   help="default: mnist where $ZOL2L_DATA holds it, else digits")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--optimizer", default="zo-sgd")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads, in this process and in the server")
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "endpoint_cpu.json"))
    args = p.parse_args(argv)
    dataset = args.dataset or ("mnist" if os.environ.get("ZOL2L_DATA") else "digits")
    torch.set_num_threads(args.threads)

    aset = prepare_attack(dataset, count=args.count, progress=False)
    kw = dict(trials=args.trials, steps=args.steps, output=aset.output, progress=False)
    proc, url = start_server(dataset, args.threads)
    runs = {"local": [], "remote": []}
    equal = True
    try:
        for rep in range(args.reps):
            for mode in ("local", "remote"):
                with tempfile.TemporaryDirectory() as tmp:
                    model = RemoteModel(url) if mode == "remote" else aset.target.model
                    t0 = time.perf_counter()
                    if mode == "remote":
                        out = run_resumable_attack(os.path.join(tmp, "resume.pt"), dataset, aset.images,
                                                   aset.labels, model, [args.optimizer], checkpoint_every=20, **kw)
                    else:
                        out = A.run_attack(dataset, aset.images, aset.labels, model, [args.optimizer], **kw)
                    wall = time.perf_counter() - t0
                entry = out.results["optimizers"][args.optimizer]
                queries = sum(sum(im["queries"]) for im in entry["per_image"])
                runs[mode].append({"rep": rep, "wall_s": round(wall, 4), "queries": queries,
                                   "queries_per_s": round(queries / wall, 1),
                                   "endpoint": out.results.get("endpoint")})
                if mode == "remote":
                    model.close()
                    equal &= same_results(out.results, last_local)
                else:
                    last_local = out.results
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    med = {m: statistics.median(r["queries_per_s"] for r in runs[m]) for m in runs}
    ratio = med["remote"] / med["local"]
    cfg = out.results["config"]
    print(f"{dataset}: {cfg['images']} images x {cfg['trials']} trials, {args.optimizer}, q={cfg['q']}, "
          f"{args.steps} steps ({cfg['images'] * cfg['trials'] * (cfg['q'] + 1)} images per step); "
          f"{args.threads} torch threads; server: zol2l serve on 127.0.0.1 in a child process")
    print(f"{'mode':<8} {'queries/s (median)':>20} {'runs':>40}")
    for m in runs:
        print(f"{m:<8} {med[m]:>20.0f} {', '.join(str(r['queries_per_s']) for r in runs[m]):>40}")
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"remote / local = {ratio:.3f} ({verdict} the >= {TARGET_RATIO} target); results equal: {equal}")
    machine = machine_info(["cpu"], args.threads)  # the extension's path relative to the repository
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"benchmark": "endpoint", "dataset": dataset, "optimizer": args.optimizer, "config": cfg,
                   "runs": runs, "median_queries_per_s": med, "ratio_remote_over_local": round(ratio, 4),
                   "target_ratio": TARGET_RATIO, "results_equal": bool(equal),
                   "machine": machine}, f, indent=1)
    print(f"wrote {os.path.relpath(args.json, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
