"""Attack throughput of `zol2l attack` sharded by torchrun against one process, side by side in one run.

Three runs of the same attack (same images, trials, steps, seed): 1 process x 1 thread, 1 process x 2 threads,
2 processes (torchrun, gloo) x 1 thread each. Throughput = the black-box queries of every row / the attack's
wall time (results.json: the optimizers' wall_seconds, the slowest rank's under torchrun; process start, model
loading and the gather are left out and reported apart as the total wall time). Prints a table with the ratios
and writes JSON.

    python benchmarks/bench_distributed.py [--dataset digits] [--count 32] [--trials 4] [--steps 100]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch


def run(label: str, procs: int, threads: int, attack_args: list[str], workdir: str) -> dict:
    out = os.path.join(workdir, label.replace(" ", ""))
    cli = ["-m", "zol2l_ext.cli", *attack_args, "--threads", str(threads), "--out", out, "--no-progress"]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", *cli]
    else:
        cmd = [sys.executable, *cli]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    total = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"bench_distributed: {label} failed:\n{p.stderr[-2000:]}")
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    queries = sum(q for e in res["optimizers"].values() for img in e["per_image"] for q in img["queries"])
    attack_s = sum(e["wall_seconds"] for e in res["optimizers"].values())
    return {"label": label, "processes": procs, "threads": threads, "queries": queries,
            "attack_seconds": round(attack_s, 3), "total_seconds": round(total, 2),
            "queries_per_second": round(queries / attack_s, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits", help="digits (default; no data root) or mnist/cifar10")
    ap.add_argument("--count", type=int, default=32, help="images (default 32)")
    ap.add_argument("--trials", type=int, default=4, help="trials per image (default 4)")
    ap.add_argument("--steps", type=int, default=100, help="steps (default 100)")
    ap.add_argument("--optimizers", default="zo-sgd,zo-adam", help="optimizers (default zo-sgd,zo-adam)")
    ap.add_argument("--json", default=None, help="output JSON (default benchmarks/results/distributed_cpu.json)")
    args = ap.parse_args(argv)
    attack_args = ["attack", args.dataset, "--count", str(args.count), "--trials", str(args.trials), "--steps",
                   str(args.steps), "--optimizers", args.optimizers, "--seed", "0"]
    load_before = os.getloadavg()[0]  # other jobs on the machine take cores from the 2-process run first
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(*cfg, attack_args, tmp) for cfg in (("1 proc x 1 thread", 1, 1), ("1 proc x 2 threads", 1, 2),
                                                         ("2 procs x 1 thread", 2, 1))]
    base, two_threads, two_procs = (r["queries_per_second"] for r in rows)
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(f"attack {' '.join(attack_args[1:])}; {os.cpu_count()} CPUs, load average {load[0]} before, {load[1]} "
          f"after; torch {torch.__version__}")
    print(f"{'run':<20} {'queries':>9} {'attack s':>9} {'total s':>8} {'queries/s':>10}")
    for r in rows:
        print(f"{r['label']:<20} {r['queries']:>9} {r['attack_seconds']:>9.2f} {r['total_seconds']:>8.1f} "
              f"{r['queries_per_second']:>10.1f}")
    ratios = {"2procs_over_1proc1thread": round(two_procs / base, 2),
              "2procs_over_1proc2threads": round(two_procs / two_threads, 2),
              "1proc2threads_over_1proc1thread": round(two_threads / base, 2)}
    print("ratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "distributed_cpu.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"command": " ".join(attack_args), "cpus": os.cpu_count(), "torch": torch.__version__,
                   "load_average": load,
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": rows, "ratios": ratios},
                  f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
