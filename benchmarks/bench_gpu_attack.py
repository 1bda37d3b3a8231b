#!/usr/bin/env python3
"""The black-box attack step on the GPU: queries per second and the share of the step outside the model forward.

    python benchmarks/bench_gpu_attack.py [--device cuda] [--amp none|bf16|both] [--compile] [--json PATH]
    python benchmarks/bench_gpu_attack.py --device cpu --quick        # smoke run (seconds; CUDA parts skipped)

Cases (issue 6):

  cifar10   the staged CIFAR-10 CNN ("cifar10-staged"; its checkpoint and test images 0.. when a data root is
            found, else random weights and uniform random images), 100 images, q = 50, d = 3072:
            5100 query images per step
  resnet50  torchvision's ResNet-50 (weights=None: random weights serve for throughput), eval, channels_last,
            8 uniform random 3x224x224 images, q = 20, d = 150528: 168 query images per step

For each case (and model precision: float32, or the forward under bf16 autocast with --amp) and each optimizer
(zo-sgd; zo-lstm with a randomly initialised LearnedZO, which costs what a trained one costs), it times, with
CUDA events and round-robin samples (bench_attack_step's timer; each sample starts from an idle GPU):

  floor        the target's forward alone, under torch.no_grad(), on the step's own B x (q + 1) query images
  floor/graph  the same forward captured in a CUDA graph (the floor of the graphed step)
  OPT          the eager step: optimizer.step(problem, theta, state, seeds) on an AttackProblem, as the runner
               calls it (every timed call repeats step t = 1 from the same inputs, with another step's seeds)
  OPT/graph    that step captured in one CUDA graph (torch.cuda.CUDAGraph): static theta, state and seeds; the
               seeds tensor is updated in place (copy_) before every replay, inside the timed window
  OPT/ref      the same step with the fused ops (lstm_step, sample_queries, fd_gradient) replaced by their
               pure-PyTorch references (zol2l_ext.reference), eager; OPT/ref-graph: that step in a CUDA graph
  OPT/compile  (--compile) torch.compile of the step with the target's forward left eager (a graph break)

and reports queries/s = B (q + 1) / step time, the fraction outside the forward = 1 - floor / step (eager step
vs eager floor, graphed step vs graphed floor; target: at most 5%), and reference / fused time ratios. Outputs
are checked: the graph replay against the eager step for two sets of seeds (the in-place seeds update works),
the reference step against the fused one, the compiled step against the eager one (largest differences in the
JSON; reported, never fatal). Failures of a capture or of torch.compile are reported in the table and the JSON,
and the run goes on. A benchmark, not a test: it never fails on a slow number.

On a CPU (--device cpu) the CUDA graphs are skipped with a message; --quick shrinks the cases to 2 images,
q = 2 and a 32x32 ResNet input, so that the whole run takes seconds.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
import warnings

import torch

from common import ROOT, Budget, error_line, find_data_root, fmt, machine_info, repo_relative, write_json
from gpu_attack_cases import CASES, MU, N_SEEDS, OPTIMIZERS, TARGET_OUTSIDE
from gpu_attack_report import markdown, notes_lines, table_lines
from gpu_attack_steps import compile_phase, main_phase, safe_sync, setup_variant

from zol2l_ext import ops

# Samples: round-robin over the implementations of a variant; each CUDA sample is one call (>= 0.2 ms) started
# from an idle GPU. Warm-up calls are never kept (slow_call_s = inf).
FULL = {"cuda": Budget(0.4, 10, 40, 2e-4, math.inf, 4.0), "cpu": Budget(0.5, 3, 20, 2e-3, math.inf, 10.0)}
QUICK = {"cuda": Budget(0.05, 3, 10, 2e-4, math.inf, 1.0), "cpu": Budget(0.02, 3, 3, 1e-3, math.inf, 0.5)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--cases", default="cifar10,resnet50", help="comma-separated: cifar10, resnet50")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated: zo-sgd, zo-lstm")
    ap.add_argument("--amp", choices=("none", "bf16", "both"), default="none",
                    help="the target's forward in float32 (none), under bf16 autocast, or both (two variants)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 images, q = 2, ResNet at 32x32, few samples")
    ap.add_argument("--compile", action="store_true",
                    help="also torch.compile each step (the target's forward left eager), after all other timings")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode (default: torch's; e.g. reduce-overhead for CUDA graphs)")
    ap.add_argument("--resnet", choices=("auto", "torchvision", "builtin"), default="auto",
                    help="ResNet-50 from torchvision (auto: the built-in copy when torchvision is missing)")
    ap.add_argument("--no-reference", action="store_true", help="skip the unfused reference path")
    ap.add_argument("--no-cudnn-benchmark", action="store_true", help="leave torch.backends.cudnn.benchmark off")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds: start no new variant or compile after this (the JSON is written as it goes)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--data-root", default=None, help="data root (default $ZOL2L_DATA, else ../shared/data)")
    ap.add_argument("--json", default=None,
                    help="output (default benchmarks/results/gpu_attack.json; gpu_attack_cpu.json on the CPU)")
    ap.add_argument("--markdown", metavar="JSON", default=None, help="print a results file as markdown and exit")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return 0
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}: use {', '.join(CASES)}")
    args.optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    for o in args.optimizers:
        if o not in OPTIMIZERS:
            ap.error(f"unknown optimizer {o!r}: use {', '.join(OPTIMIZERS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu_attack: --device cuda but torch.cuda.is_available() is False (use --device cpu)")
    if args.device == "cuda" and not ops.has_cuda_kernels():
        sys.exit("bench_gpu_attack: this build of zol2l_ext has no CUDA kernels (build with nvcc first)")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*randomly initialised LearnedZO.*")
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    out_path = args.json or os.path.join(ROOT, "benchmarks", "results",
                                         "gpu_attack.json" if args.device == "cuda" else "gpu_attack_cpu.json")
    amps = {"none": ["none"], "bf16": ["bf16"], "both": ["none", "bf16"]}[args.amp]
    root = find_data_root(args.data_root)
    budget = (QUICK if args.quick else FULL)[args.device]

    info = machine_info([args.device], args.threads)
    try:
        import torchvision
        tv = torchvision.__version__
    except Exception:  # noqa: BLE001
        tv = None
    settings = dict(cudnn_benchmark=torch.backends.cudnn.benchmark, cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                    cudnn_version=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                    torchvision=tv, data_root=repo_relative(root), mu=MU, seeds_cycled=N_SEEDS)
    print(f"torch {info['torch']} (cuda {info['torch_cuda']}), {info.get('cuda_device') or info['cpu_model']}, "
          f"torchvision {tv}, git {info['git']}" + (" [quick]" if args.quick else ""))
    print(f"data root: {root or 'none: the cifar10 case runs with RANDOM weights and uniform random images'}")
    if args.device == "cpu":
        print("device cpu: CUDA graphs skipped (CUDA only); "
              + ("torch.compile on (" + args.compile_backend + ")" if args.compile else "torch.compile not requested"))

    def log(msg):
        print(msg, flush=True)

    t_start = time.perf_counter()
    recorded_args = {k: repo_relative(v) if k in ("json", "data_root") else v  # no machine's folders
                     for k, v in vars(args).items() if k != "markdown"}
    payload = {"machine": info, "device": args.device, "quick": args.quick, "args": recorded_args,
               "settings": settings, "target_outside_frac": TARGET_OUTSIDE, "variants": [], "not_run": []}

    def over_budget():
        return args.time_budget is not None and time.perf_counter() - t_start > args.time_budget

    contexts = []
    for case in cases:
        for amp in amps:
            tag = f"{case}/{amp}"
            if over_budget():
                payload["not_run"].append(f"{tag}: time budget ({args.time_budget:.0f} s) spent")
                log(f"[{tag}] not run: time budget spent")
                continue
            t0 = time.perf_counter()
            try:
                v = setup_variant(case, amp, args, root)
                log(f"[{tag}] B={v['B']}, q={v['q']}, d={v['d']} ({v['B'] * (v['q'] + 1)} query images of "
                    f"{v['hw']}x{v['hw']}); {v['source']}; ZO-LSTM: {v['learned']}")
                r = main_phase(v, args, budget, log)
            except Exception as e:  # noqa: BLE001
                payload["not_run"].append(f"{tag}: {error_line(e)}")
                log(f"[{tag}] FAILED: {error_line(e)}")
                traceback.print_exc()
                if args.device == "cuda":
                    safe_sync()
                    torch.cuda.empty_cache()
                continue
            r["wall_s"] = time.perf_counter() - t0
            payload["variants"].append(r)
            contexts.append((v, r))
            eg = {n: e.get("eager", {}).get("step_ms") for n, e in r["optimizers"].items()}
            log(f"[{tag}] floor {r['impls']['floor']['ms']:.3f} ms; eager steps "
                + ", ".join(f"{n} {fmt(ms, '.3f')} ms" for n, ms in eg.items()) + f" ({r['wall_s']:.0f} s)")
            write_json(out_path, payload)
    if args.compile:
        for v, r in contexts:
            tag = f"{v['case']}/{v['amp']}"
            if over_budget():
                r["compile"] = {n: {"error": "not run: time budget spent"} for n in v["opts"]}
                log(f"[{tag}] compile not run: time budget spent")
                continue
            t0 = time.perf_counter()
            compile_phase(v, r, args, budget, log)
            log(f"[{tag}] compile phase {time.perf_counter() - t0:.0f} s")
            write_json(out_path, payload)
    contexts.clear()
    info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    payload["wall_s"] = time.perf_counter() - t_start
    print()
    print("\n".join(table_lines(payload["variants"])))
    print("\n".join(notes_lines(payload["variants"])))
    for x in payload["not_run"]:
        print(f"not run: {x}")
    print(f"(queries = B (q + 1) per step; outside % = 1 - floor / step, eager step vs eager floor and graphed step "
          f"vs graphed floor; target <= {100 * TARGET_OUTSIDE:.0f}%; {payload['wall_s']:.0f} s)")
    if args.quick or args.device == "cpu":
        print("(a " + ("--quick smoke run" if args.quick else "CPU run")
              + ": not the issue's GPU measurement; the target column means nothing here)")
    write_json(out_path, payload)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
