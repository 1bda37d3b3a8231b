#!/usr/bin/env python3
"""What bounds the CPU sampler: the normals' arithmetic or the memory their outputs go to.

    python benchmarks/bench_sample_floor.py [--batch 100] [--q 50] [--dim 3072] [--threads 1] [--reps 21]

`ops.sample_queries(out=...)` draws the same directions twice, alternating, on the process's CPU clock:

* **one call**: all B problems into [B, q, d] / [B, q + 1, d] buffers (the attack step's call; at the
  CIFAR-10 shape 100 x 50 x 3072, 61 + 63 MB: main memory),
* **B calls**: one problem at a time into [1, q, d] / [1, q + 1, d] buffers reused by every call (1.2 MB at that
  shape: cache-sized), each problem with its own seed as in the one call, so the same 15.4 M normals are drawn.

The second is the first without (most of) its memory traffic, plus B - 1 more dispatches (the `dispatch` entry
times one, on a 1-element problem: ~5 us here). If the two are close, the sampler is bound by the
generator (Philox4x32-10 and Box-Muller, csrc/common/philox_normal.h), and no fusion that only saves memory
traffic (writing the images instead of the points) can take much off it. The issue-17 analysis in
benchmarks/README.md uses it. This is a benchmark, not a test: it reports, it never fails on numbers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from common import ROOT, machine_info, write_json
from zol2l_ext import ops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--q", type=int, default=50)
    ap.add_argument("--dim", type=int, default=3072)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: the CPU clock "
                                                           "then measures the work, not the waiting)")
    ap.add_argument("--reps", type=int, default=21, help="timed repetitions of each (after 2 warm-ups)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "sample_floor_cpu.json"))
    args = ap.parse_args(argv)
    for name in ("batch", "q", "dim", "threads", "reps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    B, q, d = args.batch, args.q, args.dim
    theta = torch.rand(B, d, generator=torch.Generator().manual_seed(0))
    seeds = torch.arange(B, dtype=torch.int64) * 7919 + 1
    u, points = torch.empty(B, q, d), torch.empty(B, q + 1, d)
    u1, points1 = torch.empty(1, q, d), torch.empty(1, q + 1, d)
    tiny = (torch.zeros(1, 1), torch.empty(1, 1, 1), torch.empty(1, 2, 1))

    def one_call():
        ops.sample_queries(theta, q, 1e-3, seed=seeds, out=(u, points))

    def per_problem():
        for b in range(B):
            ops.sample_queries(theta[b:b + 1], q, 1e-3, seed=seeds[b:b + 1], out=(u1, points1))

    def dispatch():
        ops.sample_queries(tiny[0], 1, 1e-3, seed=seeds[:1], out=tiny[1:])

    impls = {"one_call": one_call, "per_problem": per_problem, "dispatch": dispatch}
    calls = {"dispatch": 100}  # calls per sample: a dispatch alone is too short for the clock
    samples = {k: [] for k in impls}
    with torch.no_grad():
        for r in range(args.reps + 2):
            for name, fn in impls.items():  # round-robin: a burst of load hits all alike
                n = calls.get(name, 1)
                t0 = time.process_time()
                for _ in range(n):
                    fn()
                dt = (time.process_time() - t0) / n
                if r >= 2:
                    samples[name].append(dt * 1e3)
        # the last problem's directions of both ways agree (same seed, same kernel)
        same = torch.equal(u[B - 1], u1[0])
    med = {k: statistics.median(v) for k, v in samples.items()}
    out_mb = (B * q * d + B * (q + 1) * d) * 4 / 1e6
    print(f"sample_queries B={B} q={q} d={d} ({B * q * d / 1e6:.1f} M normals, outputs {out_mb:.0f} MB), "
          f"threads {args.threads}, CPU clock, median of {args.reps}:")
    print(f"  one call (outputs in main memory)    {med['one_call']:8.2f} ms")
    print(f"  {B} calls (outputs cache-sized)       {med['per_problem']:8.2f} ms "
          f"(incl. {B} dispatches of ~{med['dispatch'] * 1e3:.1f} us)")
    print(f"  cache-sized / one call               {med['per_problem'] / med['one_call']:8.3f}"
          f"   (same directions: {same})")
    write_json(args.out, {"machine": machine_info(["cpu"], args.threads), "batch": B, "q": q, "dim": d,
                          "clock": "cpu", "median_ms": med, "samples_ms": samples, "same_directions": same,
                          "ratio_cache_sized_over_one_call": med["per_problem"] / med["one_call"]})
    print(f"wrote {os.path.relpath(args.out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
