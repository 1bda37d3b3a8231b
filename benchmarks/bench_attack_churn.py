#!/usr/bin/env python3
"""User and system CPU time of an attack run: does the process page-fault its per-step buffers in every step?

    python benchmarks/bench_attack_churn.py [--reps 2] [--configs library,glibc,env] [-- ATTACK ARGS...]

Runs ``zol2l attack`` (by default ``mnist --count 50 --trials 2 --steps 50 --optimizers zo-lstm --threads 2``,
the command of issue 17) in fresh child processes and reads each child's own resource usage (``os.wait4``):
user and system CPU seconds, wall seconds, peak resident memory. Configurations, run round-robin (library,
glibc, env, library, ...) so that load from other processes hits them alike:

* ``library``: the plain command, no allocator variable: what a user gets (the library keeps freed memory in
  the process at its first black-box call, `zol2l_ext.malloc_tuning.keep_freed_memory_once`);
* ``glibc``: ``ZOL2L_KEEP_FREED_MEMORY=0``: glibc's defaults, i.e. the library before it tuned the allocator;
* ``env``: ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483648`` (the environment setting
  quoted in the issue; the library then leaves glibc alone).

Target (issue 17): system time under 8 % of user + system for ``library``. A benchmark, not a test: exit
status 0 on a missed target. The JSON (default benchmarks/results/attack_churn_cpu.json) keeps every run.
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

from common import ROOT, machine_info

DEFAULT_ATTACK = ["mnist", "--count", "50", "--trials", "2", "--steps", "50", "--optimizers", "zo-lstm",
                  "--threads", "2"]
ALLOCATOR_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                  "GLIBC_TUNABLES", "ZOL2L_KEEP_FREED_MEMORY")
CONFIGS = {
    "library": {},
    "glibc": {"ZOL2L_KEEP_FREED_MEMORY": "0"},
    "env": {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "2147483648"},
}
MAX_SYS_FRAC = 0.08


def run_once(attack_args, extra_env, out_dir):
    """One ``zol2l attack`` child: its rusage (user, sys, maxrss) and wall time; raises on a failed run."""
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARS}
    env.update(extra_env)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "zol2l_ext.cli", "attack", *attack_args, "--no-progress", "--out", out_dir]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    user, sys_ = ru.ru_utime, ru.ru_stime
    return dict(user_s=user, sys_s=sys_, wall_s=wall, sys_frac=sys_ / (user + sys_), maxrss_mib=ru.ru_maxrss / 1024,
                minor_faults=ru.ru_minflt, major_faults=ru.ru_majflt)


def summarize(runs):
    keys = ("user_s", "sys_s", "wall_s", "sys_frac", "maxrss_mib", "minor_faults")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def table(summary, names):
    head = f"{'config':<8} {'runs':>4} {'user s':>7} {'sys s':>7} {'sys %':>6} {'wall s':>7} {'max RSS MiB':>11} " \
           f"{'minor faults':>12}"
    lines = [head, "-" * len(head)]
    for n in names:
        s = summary[n]
        lines.append(f"{n:<8} {s['runs']:>4} {s['user_s']:>7.1f} {s['sys_s']:>7.1f} {100 * s['sys_frac']:>6.1f} "
                     f"{s['wall_s']:>7.1f} {s['maxrss_mib']:>11.0f} {s['minor_faults']:>12.0f}")
    return lines


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    attack = None
    if "--" in argv:
        i = argv.index("--")
        argv, attack = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=2, help="runs per configuration (default 2; medians reported)")
    ap.add_argument("--configs", default="library,glibc,env", help=f"comma-separated from {', '.join(CONFIGS)}")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "attack_churn_cpu.json"))
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in names if c not in CONFIGS]
    if bad:
        ap.error(f"unknown config(s) {bad}; choose from {', '.join(CONFIGS)}")
    attack = attack or DEFAULT_ATTACK
    info = machine_info(["cpu"], None)
    print(f"{info['cpu_model']}, {info['cpu_count']} CPUs, torch {info['torch']}, git {info['git']}, "
          f"load average {info['loadavg_start']}")
    print(f"command: zol2l attack {' '.join(attack)} --no-progress --out <tmp>")
    runs = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="zol2l-churn-") as tmp:
        for rep in range(args.reps):
            for n in names:
                r = run_once(attack, CONFIGS[n], os.path.join(tmp, f"{n}-{rep}"))
                r["loadavg_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
                runs[n].append(r)
                print(f"  [{rep + 1}/{args.reps}] {n:<8} user {r['user_s']:6.1f} s, sys {r['sys_s']:6.1f} s "
                      f"({100 * r['sys_frac']:.1f} %), wall {r['wall_s']:6.1f} s, max RSS {r['maxrss_mib']:.0f} MiB",
                      flush=True)
    summary = {n: dict(summarize(runs[n]), runs=len(runs[n])) for n in names}
    print()
    print("\n".join(table(summary, names)))
    met = None
    if "library" in summary:
        frac = summary["library"]["sys_frac"]
        met = frac < MAX_SYS_FRAC
        print(f"\nTarget: system time of 'library' < {100 * MAX_SYS_FRAC:.0f} % of user + system: "
              f"{100 * frac:.1f} % -> {'MET' if met else 'NOT MET'}")
    info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"machine": info, "attack_args": attack, "configs": {n: CONFIGS[n] for n in names}, "runs": runs,
                   "summary": summary, "max_sys_frac": MAX_SYS_FRAC, "met": met}, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
