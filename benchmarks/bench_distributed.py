"""Attack and meta-training throughput sharded by torchrun against one process, side by side in one run.

Three runs of the same attack (same images, trials, steps, seed): 1 process x 1 thread, 1 process x 2 threads,
2 processes (torchrun, gloo) x 1 thread each. Throughput = the black-box queries of every row / the attack's
wall time (results.json: the optimizers' wall_seconds, the slowest rank's under torchrun; process start, model
loading and the gather are left out and reported apart as the total wall time). Prints a table with the ratios
and writes JSON. Then the same three ways for `zol2l train binary` (meta-training updates per second).

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


def launch(label: str, procs: int, threads: int, args: list[str], out: str) -> float:
    """Runs ``zol2l ARGS`` in ``procs`` processes (torchrun above 1) of ``threads`` threads; its wall time."""
    cli = ["-m", "zol2l_ext.cli", *args, "--threads", str(threads), "--out", out, "--no-progress"]
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
    return total


def run(label: str, procs: int, threads: int, attack_args: list[str], workdir: str) -> dict:
    out = os.path.join(workdir, label.replace(" ", ""))
    total = launch(label, procs, threads, attack_args, out)
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    queries = sum(q for e in res["optimizers"].values() for img in e["per_image"] for q in img["queries"])
    attack_s = sum(e["wall_seconds"] for e in res["optimizers"].values())
    return {"label": label, "processes": procs, "threads": threads, "queries": queries,
            "attack_seconds": round(attack_s, 3), "total_seconds": round(total, 2),
            "queries_per_second": round(queries / attack_s, 1)}


def run_meta(label: str, procs: int, threads: int, train_args: list[str], workdir: str) -> dict:
    """Meta-training updates per second: rank 0's update times (log.json; all-reduce waits included, the held-out
    evaluation and process start left out)."""
    out = os.path.join(workdir, "meta" + label.replace(" ", ""))
    total = launch(label, procs, threads, train_args, out)
    with open(os.path.join(out, "log.json")) as f:
        updates = json.load(f)["updates"]
    seconds = sum(u["seconds"] for u in updates)
    return {"label": label, "processes": procs, "threads": threads, "updates": len(updates),
            "update_seconds": round(seconds, 3), "total_seconds": round(total, 2),
            "updates_per_second": round(len(updates) / seconds, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits", help="digits (default; no data root) or mnist/cifar10")
    ap.add_argument("--count", type=int, default=32, help="images (default 32)")
    ap.add_argument("--trials", type=int, default=4, help="trials per image (default 4)")
    ap.add_argument("--steps", type=int, default=100, help="steps (default 100)")
    ap.add_argument("--optimizers", default="zo-sgd,zo-adam", help="optimizers (default zo-sgd,zo-adam)")
    ap.add_argument("--json", default=None, help="output JSON (default benchmarks/results/distributed_cpu.json)")
    ap.add_argument("--meta-batch", type=int, default=64,
                    help="meta-training part: problems per meta-batch of `zol2l train binary` (default 64)")
    ap.add_argument("--meta-updates", type=int, default=3, help="meta-training updates per run (default 3)")
    args = ap.parse_args(argv)
    attack_args = ["attack", args.dataset, "--count", str(args.count), "--trials", str(args.trials), "--steps",
                   str(args.steps), "--optimizers", args.optimizers, "--seed", "0"]
    load_before = os.getloadavg()[0]  # other jobs on the machine take cores from the 2-process run first
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(*cfg, attack_args, tmp) for cfg in (("1 proc x 1 thread", 1, 1), ("1 proc x 2 threads", 1, 2),
                                                         ("2 procs x 1 thread", 2, 1))]
    base, two_threads, two_procs = (r["queries_per_second"] for r in rows)
    train_args = ["train", "binary", "--epochs", "1", "--updates-per-epoch", str(args.meta_updates), "--batch",
                  str(args.meta_batch), "--horizon", "20", "--unroll", "5", "--val-steps", "5", "--val-trials", "1",
                  "--update-scale", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        meta = [run_meta(*cfg, train_args, tmp) for cfg in (("1 proc x 1 thread", 1, 1),
                                                             ("1 proc x 2 threads", 1, 2),
                                                             ("2 procs x 1 thread", 2, 1))]
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
    print(f"\nmeta-training {' '.join(train_args)}")
    print(f"{'run':<20} {'updates':>9} {'update s':>9} {'total s':>8} {'updates/s':>10}")
    for r in meta:
        print(f"{r['label']:<20} {r['updates']:>9} {r['update_seconds']:>9.2f} {r['total_seconds']:>8.1f} "
              f"{r['updates_per_second']:>10.3f}")
    m_base, m_threads, m_procs = (r["updates_per_second"] for r in meta)
    meta_ratios = {"2procs_over_1proc1thread": round(m_procs / m_base, 2),
                   "2procs_over_1proc2threads": round(m_procs / m_threads, 2),
                   "1proc2threads_over_1proc1thread": round(m_threads / m_base, 2)}
    print("ratios: " + ", ".join(f"{k} {v}" for k, v in meta_ratios.items()))
    path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "distributed_cpu.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"command": " ".join(attack_args), "cpus": os.cpu_count(), "torch": torch.__version__,
                   "load_average": load,
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": rows, "ratios": ratios,
                   "meta_command": " ".join(train_args), "meta_runs": meta, "meta_ratios": meta_ratios},
                  f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
