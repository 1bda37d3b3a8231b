#!/usr/bin/env python3
"""What channels-last convolutions buy an attack on the CPU: NCHW against channels-last, side by side in one run.

    python benchmarks/bench_channels_last.py [--threads 1] [--clock cpu] [--quick] [--json PATH]

Every target the attack loads runs its CPU convolutions in channels-last memory format
(`zol2l_ext.models.channels_last_on_cpu`). For each built-in target with weights here (the authors' MNIST CNN and
the staged CIFAR-10 CNN need the data root, the digits CNN is embedded) and the batches of an attack step (one
image and 100 images x (q + 1) queries), this times, round-robin (common.SampleTimer):
  forward   the model on the step's query images, under torch.no_grad(), in both formats;
  zo-sgd    one ZO-SGD step of `zol2l attack` (`AttackProblem`, the dataset's space, mu and c) in both formats.
It prints milliseconds and the speed-up NCHW / channels-last, and checks that the two formats give the same
scores to float32 rounding. A benchmark, not a test: it never fails on a slow number.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from common import CLOCKS, ROOT, Budget, SampleTimer, find_data_root, fmt, machine_info, nchw_model, table

from zol2l_ext import attack_setup
from zol2l_ext import settings as S
from zol2l_ext.tasks import DATASET_TASKS, SPACE_MU, get_task
from zol2l_ext.zo import AttackProblem, make_optimizer, step_seeds

# dataset -> q of its task; the cases: (images per step) x (q + 1) queries
CASES = [("digits", 1), ("digits", 100), ("mnist", 1), ("mnist", 100), ("cifar10", 1), ("cifar10", 100)]
FULL = Budget(2.0, 7, 100, 5e-3, float("inf"), 40.0)
QUICK = Budget(0.2, 3, 10, 2e-3, float("inf"), 3.0)


def run_case(dataset, images, args, root):
    aset = attack_setup.prepare_attack(dataset, count=images, data_root=root, progress=False)
    spec = get_task(DATASET_TASKS[dataset])
    cl = aset.target.model
    formats = {"channels_last": cl, "nchw": nchw_model(cl)}
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) for p in cl.parameters())
    space = S.dataset_space(dataset)
    q, B = spec.q, aset.images.shape[0]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B * (q + 1), *aset.images.shape[1:], generator=g)
    with torch.no_grad():
        diff = (formats["channels_last"](x) - formats["nchw"](x)).abs().max().item()
    impls = {}
    for name, model in formats.items():
        problem = AttackProblem(model, aset.images, aset.labels, c=spec.c, norm="l1", output=aset.output,
                                space=space)
        opt = make_optimizer("zo-sgd", q=q, mu=SPACE_MU[space], baseline=spec.baseline)
        theta = problem.initial_point()
        state = opt.init_state(theta)
        seeds = step_seeds(0, torch.arange(B), 0)

        def forward(m=model):
            with torch.no_grad():
                return m(x)

        def step(opt=opt, args=(problem, theta, state, seeds)):
            return opt.step(*args)

        impls[f"forward/{name}"] = (forward, None)
        impls[f"zo-sgd/{name}"] = (step, None)
    timer = SampleTimer("cpu", QUICK if args.quick else FULL, clock=CLOCKS[args.clock])
    res = {k: v["fwd"] for k, v in timer.time(impls).items()}
    out = dict(dataset=dataset, target=aset.target.name, images=B, q=q, query_images=B * (q + 1),
               max_abs_score_diff=diff, ms={k: v["ms"] for k, v in res.items()},
               iqr_ms={k: v["iqr_ms"] for k, v in res.items()})
    out["speedup"] = {w: res[f"{w}/nchw"]["ms"] / res[f"{w}/channels_last"]["ms"] for w in ("forward", "zo-sgd")}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="cpu",
                    help="cpu (default: process CPU time, robust to other load with one thread) or wall")
    ap.add_argument("--quick", action="store_true", help="few samples, small batches (smoke run)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "channels_last_cpu.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = find_data_root(args.data_root)
    results = []
    for dataset, images in CASES:
        if dataset != "digits" and root is None:
            print(f"[{dataset}] skipped: no data root")
            continue
        if args.quick:
            images = min(images, 4)
        t0 = time.perf_counter()
        r = run_case(dataset, images, args, root)
        print(f"[{dataset} x {r['images']}] {time.perf_counter() - t0:.0f} s")
        results.append(r)
    head = ["target", "images", "query images", "forward NCHW ms", "channels-last ms", "speed-up",
            "ZO-SGD step NCHW ms", "channels-last ms", "speed-up", "max |score diff|"]
    rows = [[r["target"], str(r["images"]), str(r["query_images"]), fmt(r["ms"]["forward/nchw"]),
             fmt(r["ms"]["forward/channels_last"]), fmt(r["speedup"]["forward"], ".2f"),
             fmt(r["ms"]["zo-sgd/nchw"]), fmt(r["ms"]["zo-sgd/channels_last"]), fmt(r["speedup"]["zo-sgd"], ".2f"),
             f"{r['max_abs_score_diff']:.1e}"] for r in results]
    print("\n".join(table(head, rows)))
    if not args.quick:
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"benchmark": "channels_last", "clock": args.clock,
                       "machine": machine_info(["cpu"], args.threads), "cases": results}, f, indent=1)
        print(f"wrote {os.path.relpath(args.json, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
