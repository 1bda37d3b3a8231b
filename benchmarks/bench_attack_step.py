#!/usr/bin/env python3
"""End-to-end speed of one attack step of the ZO optimizers against its floor, the target model's forward.

    python benchmarks/bench_attack_step.py [--device cpu|cuda] [--threads 2] [--cases 1,2,3] [--quick] [--out PATH]

The floor of a step is one batched float32 forward of the target model, under torch.no_grad(), over all the
B x (q + 1) query images of the step: no optimizer can spend less on a score-based black-box attack. The step
is ``optimizer.step(problem, theta, state, seeds)`` exactly as the runner (`zol2l_ext.zo.runner.minimize`)
calls it on an `AttackProblem`: sampling the directions and building the points, the one black-box call (the
x = (tanh(w) + 1) / 2 transform, the forward, the hinge + distance loss), the gradient estimate and the update
(for ZO-LSTM also the QueryRNN, the per-problem Bernoulli draw and the UpdateRNN). Cases:

  1  MNIST, the authors' target ("mnist-authors"), 1 image, q = 20: floor = forward of 21 images; target <= 1.3x
  2  MNIST, 100 images, q = 20: forward of 2100 images; target <= 1.1x (issue 17; 1.15x before)
  3  CIFAR-10 ("cifar10-staged"), 100 images, q = 50: forward of 5100 images; target <= 1.1x (issue 17; 1.15x before)

The floor, the ZO-LSTM step, the ZO-SGD step and the overhead pieces (sampling, QueryRNN, Bernoulli draw,
fd_gradient, UpdateRNN, the black box without the forward) are sampled round-robin (common.Timer) so that
load from other processes hits them alike; the table gives medians, IQRs, step / floor, the time outside the
forward (step - floor) and where it goes. A benchmark, not a test: it never fails on a slow number.

    python benchmarks/bench_attack_step.py --markdown benchmarks/results/attack_step_cpu.json   # README table
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
import warnings

import torch

from common import (CLOCKS, ROOT, Budget, SampleTimer, find_data_root, fmt, machine_info, no_grad_fn, repo_relative,
                    table)

from zol2l_ext import data as D
from zol2l_ext import models as M
from zol2l_ext import ops
from zol2l_ext import settings as S
from zol2l_ext.tasks import DATASET_TASKS, SPACE_MU, get_task
from zol2l_ext.zo import AttackProblem, LearnedZO, make_optimizer, step_seeds
from zol2l_ext.zo.estimator import fd_base
from zol2l_ext.zo.seeding import SALT_BERNOULLI, derive, uniform01

C_LOSS = {"mnist": 0.1, "cifar10": 0.25}  # the attack's c per dataset (zol2l_ext.attack.DATASET_DEFAULTS)

# id -> case; "quick_images": the batch of the --quick smoke run (small shapes, like bench_ops --quick)
CASES = {
    "1": dict(name="mnist-1", dataset="mnist", target="mnist-authors", images=1, q=20, max_ratio=1.3,
              quick_images=1),
    "2": dict(name="mnist-100", dataset="mnist", target="mnist-authors", images=100, q=20, max_ratio=1.1,
              quick_images=10),
    "3": dict(name="cifar10-100", dataset="cifar10", target="cifar10-staged", images=100, q=50, max_ratio=1.1,
              quick_images=4),
}
ALIASES = {c["name"]: k for k, c in CASES.items()}

# The authors' code (github.com/RYoungJ/ZO-L2L) on this kind of machine, as quoted in the task: NOT measured here.
AUTHORS_QUOTED = {"case": "1", "zo-lstm_ms": 48.0, "zo-sgd_ms": 42.0, "floor_ms": 3.2,
                  "note": "quoted, not measured by this benchmark"}

# Samples: step and floor take 0.1 s .. 5 s per call on 2 cores, the overhead pieces microseconds to ms.
# Warm-up calls are never kept as samples (slow_call_s = inf), so the samples of a round are adjacent in time.
FULL = {"cpu": Budget(3.0, 11, 200, 5e-3, math.inf, 90.0), "cuda": Budget(0.5, 20, 200, 1e-3, math.inf, 20.0)}
QUICK = {"cpu": Budget(0.2, 3, 20, 2e-3, math.inf, 3.0), "cuda": Budget(0.05, 5, 20, 5e-4, math.inf, 2.0)}

MAIN = ("floor", "zo-lstm", "zo-sgd")
PIECES = {  # overhead pieces of each step (timed apart); the rest of step - floor is "other"
    "zo-lstm": ("query_rnn", "bernoulli", "sample_scaled", "bb_no_forward", "fd_gradient", "update_rnn"),
    "zo-sgd": ("sample", "bb_no_forward", "fd_gradient"),
}
PIECE_DOC = {
    "query_rnn": "QueryRNN: model.query_step(state) (input scaling where the model has it, fused lstm_step, I=2, "
                 "N=B*d)",
    "bernoulli": "per-problem Bernoulli draw uniform01(derive(seeds)) < query_prob",
    "sample_scaled": "s.abs() + ops.sample_queries with scale and use_scale (u and the points)",
    "sample": "ops.sample_queries without scale (u and the points)",
    "bb_no_forward": "the black-box call with the model replaced by a replay of its output: the images "
                     "(to_image), (log_softmax for logits), hinge margin, L1 distance over B x (q+1) x d",
    "to_image": "part of bb_no_forward: the images of all points as the black box forms them "
                "(AttackProblem._query_images): (tanh(w) + 1) / 2 in tanh space, in pixel space "
                "ops.attack_pixel_images (clamp(x0 + delta, 0, 1) and the distances in one pass) where the "
                "device has it",
    "fd_gradient": "ops.fd_gradient(base, fq, u, mu), base = f0 or the mean of the values (the task's estimator)",
    "update_rnn": "UpdateRNN: model.update_step(g, state) (input scaling and step where the model has them, fused "
                  "lstm_step, I=1, N=B*d)",
}


class _Replay:
    """Stands in for the target model: returns its precomputed output (the black box minus the forward)."""

    def __init__(self, out):
        self.out = out

    def __call__(self, x):
        return self.out[: x.shape[0]]


# ----------------------------------------------------------------------------------------------------------
# Setup: target, images
# ----------------------------------------------------------------------------------------------------------
def load_case_data(case, root, n_images, device):
    """(model, images [B, C, H, W], labels [B], output kind, description of weights and images)."""
    spec = M.TARGETS[case["target"]]
    staged = root is not None and os.path.isfile(os.path.join(root, spec.staged_file))
    if staged:
        tgt = M.load_target(case["target"], data_root=root, device=device, progress=False)
        model, weights = tgt.model, f"staged checkpoint {repo_relative(tgt.source)}"
    else:
        torch.manual_seed(0)
        model = M.build_model(spec.arch, spec.dataset).eval().requires_grad_(False).to(device)
        weights = "random initialisation (no data root with the staged checkpoint)"
    try:
        if root is None:
            raise D.DataRootError("no data root")
        if case["dataset"] == "mnist":
            x, y = D.load_mnist(root, train=False)
            ids = D.mnist_split(root)["test"][:n_images]  # the authors' test positions 5000.. (shuffled correct)
            where = "MNIST test images at positions 5000.. of the authors' shuffled correct list"
        else:
            x, y = D.load_cifar10(root, train=False)
            ids = list(range(n_images))
            where = "CIFAR-10 test images 0.."
        images, labels = x[ids].contiguous(), y[ids].clone()
    except (D.DataRootError, OSError, ValueError) as e:
        g = torch.Generator().manual_seed(1)
        images = torch.rand(n_images, *model.input_shape, generator=g)
        labels = torch.randint(0, 10, (n_images,), generator=g)
        where = f"uniform random images ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
    return model, images.to(device), labels.to(device), spec.output, f"{weights}; {where}"


def learned_model(dataset):
    """The dataset's task's shipped LearnedZO (mnist-attack, cifar-attack: what `zol2l attack` runs, with its
    input scaling and estimator baseline), else a random one. The form matters for the time: a "rms" model
    normalises its inputs every step, an old "none" one does not."""
    name = DATASET_TASKS[dataset]
    if name in LearnedZO.available_pretrained():
        return LearnedZO.pretrained(name), f"pretrained {name}"
    torch.manual_seed(0)
    return LearnedZO(), "randomly initialised LearnedZO (no pretrained file)"


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------------------
def run_case(cid, args, root):
    case = CASES[cid]
    dev = args.device
    B = case["quick_images"] if args.quick else case["images"]
    q = case["q"]
    model, images, labels, output, source = load_case_data(case, root, B, dev)
    # the attack's parameterisation: the dataset's default (what `zol2l attack` runs) unless --space says
    space = S.dataset_space(case["dataset"]) if args.space == "default" else args.space
    mu = SPACE_MU[space]
    problem = AttackProblem(model, images, labels, c=C_LOSS[case["dataset"]], norm="l1", output=output,
                            chunk_size=args.chunk_size, space=space)
    d = problem.dim
    lz, lz_source = learned_model(case["dataset"])
    baseline = get_task(DATASET_TASKS[case["dataset"]]).baseline  # the estimator `zol2l attack` uses there
    opts = {"zo-lstm": make_optimizer("zo-lstm", model=lz, q=q, mu=mu, baseline=baseline),
            "zo-sgd": make_optimizer("zo-sgd", q=q, mu=mu, baseline=baseline)}
    pids = torch.arange(B, dtype=torch.int64, device=dev)

    # The step is timed at step t = 1 (after one real step from the clean image), so that the ZO-LSTM states,
    # g_prev and dtheta_prev are not all zeros; every timed call repeats that same step from the same inputs.
    theta0 = problem.initial_point()
    at = {}
    for name, opt in opts.items():
        st = opt.init_state(theta0)
        th, st, _ = opt.step(problem, theta0, st, step_seeds(0, pids, 0))
        at[name] = (th, st, step_seeds(0, pids, 1))
    sync(dev)

    # Inputs of the overhead pieces: the intermediate tensors of ZO-LSTM's step t = 1.
    th, st, seeds = at["zo-lstm"]
    zl = opts["zo-lstm"]
    with torch.no_grad():
        s, _ = zl.model.query_step(st)
        use = uniform01(derive(seeds, SALT_BERNOULLI)) < zl.query_prob
        u, points = ops.sample_queries(th, q, mu, scale=s.abs(), use_scale=use, seed=seeds)
        x_all = problem._x(points).reshape(B * (q + 1), *problem.image_shape).contiguous()
        scores = model(x_all)
        values = problem(points)
        base, fq = fd_base(values, baseline).contiguous(), values[:, 1:].contiguous()
        g = ops.fd_gradient(base, fq, u, mu)
    stub = copy.copy(problem)  # the black box with the forward replaced by a replay of its output
    stub.model, stub.chunk_size = _Replay(scores), None
    th_sgd, st_sgd, seeds_sgd = at["zo-sgd"]

    impls = {
        "floor": no_grad_fn(lambda: model(x_all)),
        "zo-lstm": lambda: zl.step(problem, th, st, seeds),
        "zo-sgd": lambda: opts["zo-sgd"].step(problem, th_sgd, st_sgd, seeds_sgd),
    }
    if not args.no_breakdown:
        impls.update({
            "query_rnn": no_grad_fn(lambda: zl.model.query_step(st)),
            "bernoulli": no_grad_fn(lambda: uniform01(derive(seeds, SALT_BERNOULLI)) < zl.query_prob),
            "sample_scaled": no_grad_fn(
                lambda: ops.sample_queries(th, q, mu, scale=s.abs(), use_scale=use, seed=seeds)),
            "sample": no_grad_fn(lambda: ops.sample_queries(th_sgd, q, mu, seed=seeds_sgd)),
            "bb_no_forward": no_grad_fn(lambda: stub(points)),
            "to_image": no_grad_fn(lambda: problem._query_images(points, no_grad=True)),
            "fd_gradient": no_grad_fn(lambda: ops.fd_gradient(base, fq, u, mu)),
            "update_rnn": no_grad_fn(lambda: zl.model.update_step(g, st)),
        })
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    timer = SampleTimer(dev, (QUICK if args.quick else FULL)[dev], clock=CLOCKS[args.clock])
    res = {k: v["fwd"] for k, v in timer.time({k: (f, None) for k, f in impls.items()}).items()}
    elapsed = time.perf_counter() - t0
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    del timer

    floor = res["floor"]["ms"]
    per_opt = {}
    for name in ("zo-lstm", "zo-sgd"):
        step = res[name]["ms"]
        outside = step - floor
        pairs = [a / b for a, b in zip(res[name]["samples_ms"], res["floor"]["samples_ms"])]
        pq = statistics.quantiles(pairs, n=4, method="inclusive") if len(pairs) >= 2 else None
        entry = dict(step_ms=step, step_iqr_ms=res[name]["iqr_ms"], ratio=step / floor,
                     paired_ratio=statistics.median(pairs) if pairs else None,
                     paired_ratio_iqr=(pq[2] - pq[0]) if pq else None, pairs=len(pairs),
                     min_ratio=res[name]["min_ms"] / res["floor"]["min_ms"],
                     outside_ms=outside, outside_frac=outside / step, max_ratio=case["max_ratio"],
                     met=step / floor <= case["max_ratio"])
        if not args.no_breakdown:
            parts = {p: res[p]["ms"] for p in PIECES[name]}
            parts["other"] = outside - sum(parts.values())
            entry["breakdown_ms"] = parts
            entry["to_image_ms"] = res["to_image"]["ms"]
        per_opt[name] = entry
    return dict(case=cid, name=case["name"], dataset=case["dataset"], target=case["target"], images=B, q=q,
                clock=args.clock, space=space, mu=mu,
                dim=d, forward_images=B * (q + 1), chunk_size=args.chunk_size, output=output, source=source,
                learned=lz_source, loadavg_start=load0, loadavg_end=load1, elapsed_s=elapsed,
                impls=res, optimizers=per_opt)


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------
def _shape(r):
    space = f", {r['space']}" if "space" in r else ""  # files written before --space were all tanh
    return f"B={r['images']},q={r['q']},d={r['dim']} ({r['forward_images']} img{space})"


def table_lines(results, md=False):
    """The main table and the breakdown table (markdown or plain text)."""
    head = ["case", "shape", "optimizer", "step ms", "iqr", "floor ms", "iqr", "step/floor", "paired", "min/min",
            "outside ms", "outside %", "target", "met"]
    bhead = ["case", "optimizer", "outside ms", "sample", "query RNN", "bernoulli", "update RNN", "fd_gradient",
             "bb - fwd", "(to_image)", "other"]
    rows, brows = [], []
    for r in results:
        fl = r["impls"]["floor"]
        for name, e in r["optimizers"].items():
            rows.append([r["name"], _shape(r), name, fmt(e["step_ms"], ".1f" if e["step_ms"] >= 100 else ".2f"),
                         fmt(e["step_iqr_ms"], ".1f" if e["step_ms"] >= 100 else ".2f"),
                         fmt(fl["ms"], ".1f" if fl["ms"] >= 100 else ".2f"),
                         fmt(fl["iqr_ms"], ".1f" if fl["ms"] >= 100 else ".2f"), fmt(e["ratio"], ".3f"),
                         fmt(e["paired_ratio"], ".3f"), fmt(e["min_ratio"], ".3f"), fmt(e["outside_ms"]),
                         fmt(100 * e["outside_frac"], ".1f"),
                         f"<= {e['max_ratio']}", "met" if e["met"] else "NOT met"])
            b = e.get("breakdown_ms")
            if b:
                smp = b.get("sample", b.get("sample_scaled"))
                brows.append([r["name"], name, fmt(e["outside_ms"]), fmt(smp, ".3f"),
                              fmt(b.get("query_rnn"), ".3f"), fmt(b.get("bernoulli"), ".3f"),
                              fmt(b.get("update_rnn"), ".3f"), fmt(b["fd_gradient"], ".3f"),
                              fmt(b["bb_no_forward"], ".3f"), fmt(e.get("to_image_ms"), ".3f"), fmt(b["other"], ".3f")])
        if r["case"] == AUTHORS_QUOTED["case"]:
            a = AUTHORS_QUOTED
            for name in ("zo-lstm", "zo-sgd"):
                st = a[f"{name}_ms"]
                rows.append([r["name"], "authors' code, QUOTED", name, fmt(st, ".1f"), "-", fmt(a["floor_ms"], ".1f"),
                             "-", fmt(st / a["floor_ms"], ".1f"), "-", "-", fmt(st - a["floor_ms"], ".1f"),
                             fmt(100 * (st - a["floor_ms"]) / st, ".1f"), "(not measured)", "-"])

    out = table(head, rows, md)
    if brows:
        out += [""] + ([] if md else ["Where the time outside the forward goes (ms, medians of each piece timed "
                                      "alone):"]) + table(bhead, brows, md)
    return out


def print_targets(results):
    print("\nTargets (step median / floor median):")
    for r in results:
        for name, e in r["optimizers"].items():
            print(f"  {r['name']:<12} {name:<8} {e['ratio']:6.3f}x  <= {e['max_ratio']}: "
                  f"{'MET' if e['met'] else 'NOT MET'}")
    allm = all(e["met"] for r in results for e in r["optimizers"].values())
    print(f"  overall: {'MET' if allm else 'NOT MET'}")
    a = AUTHORS_QUOTED
    print(f"  for reference, the authors' code ({a['note']}): ZO-LSTM {a['zo-lstm_ms']} ms, ZO-SGD "
          f"{a['zo-sgd_ms']} ms, floor {a['floor_ms']} ms per step of case 1 "
          f"({a['zo-lstm_ms'] / a['floor_ms']:.1f}x and {a['zo-sgd_ms'] / a['floor_ms']:.1f}x the floor)")
    return allm


def markdown(path):
    with open(path) as fh:
        d = json.load(fh)
    m = d["machine"]
    la = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    head = (f"{m['date_utc']}, torch {m['torch']}, {m.get('cuda_device') or m['cpu_model']}, {m['cpu_count']} CPUs, "
            f"threads {m['threads']}, device {d['device']}, clock {d['cases'][0].get('clock', 'wall')}, git {m['git']}"
            + (" (quick)" if d["quick"] else "")
            + "; load average per case: " + ", ".join(f"{r['name']} {la(r['loadavg_start'])} -> {la(r['loadavg_end'])}"
                                                       for r in d["cases"]))
    return "\n".join([head, ""] + table_lines(d["cases"], md=True))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--cases", default="1,2,3", help="comma-separated: 1,2,3 or mnist-1,mnist-100,cifar10-100")
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke run: few repetitions and small batches (10 MNIST, 4 CIFAR-10 images)")
    ap.add_argument("--out", default=None, help="JSON output (default benchmarks/results/attack_step_<device>.json)")
    ap.add_argument("--data-root", default=None, help="data root (default $ZOL2L_DATA, else ../shared/data)")
    ap.add_argument("--chunk-size", type=int, default=None,
                    help="AttackProblem chunk_size (default None: one forward per call, like the floor; "
                         "the attack CLI uses 4096 on CPU)")
    ap.add_argument("--no-breakdown", action="store_true", help="time step and floor only")
    ap.add_argument("--space", choices=("default", "tanh", "pixel"), default="default",
                    help="the attack's parameterisation: each dataset's default (zol2l attack's: pixel since issue 11, "
                         "CIFAR-10 included; the default) or one for all cases; mu follows it (tasks.SPACE_MU)")
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                    help="wall (default; the targets) or cpu: the process's CPU time per call, which load from "
                         "other processes does not inflate (use with --threads 1)")
    ap.add_argument("--markdown", metavar="JSON", default=None, help="print a results file as markdown and exit")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return
    cases = []
    for c in args.cases.split(","):
        c = c.strip()
        if not c:
            continue
        c = ALIASES.get(c, c)
        if c not in CASES:
            ap.error(f"unknown case {c!r}: use {', '.join(CASES)} or {', '.join(ALIASES)}")
        cases.append(c)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_attack_step: --device cuda but torch.cuda.is_available() is False")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*randomly initialised LearnedZO.*")
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"attack_step_{args.device}.json")
    root = find_data_root(args.data_root)

    info = machine_info([args.device], args.threads)
    # allocator / threading settings change these timings (see benchmarks/README.md): keep them with the results
    info["env"] = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "OMP_", "MKL_", "KMP_"))}
    print(f"torch {info['torch']} (cuda {info['torch_cuda']}), {info.get('cuda_device') or info['cpu_model']}, "
          f"{info['cpu_count']} CPUs, threads {args.threads}, git {info['git']}, load average {info['loadavg_start']}"
          + (" [quick]" if args.quick else ""))
    print(f"data root: {root or 'none (random weights and images)'}")
    load = info["loadavg_start"]
    if load and args.device == "cpu" and load[0] > 0.5 * (os.cpu_count() or 1):
        print(f"WARNING: 1-minute load average {load[0]:.1f} on {os.cpu_count()} CPUs before the run: other "
              "processes compete for the cores, CPU timings will be inflated and noisy")
    results = []
    t0 = time.perf_counter()
    for cid in cases:
        r = run_case(cid, args, root)
        results.append(r)
        e = r["optimizers"]
        print(f"[{r['name']}] {_shape(r)}: floor {r['impls']['floor']['ms']:.2f} ms, ZO-LSTM "
              f"{e['zo-lstm']['step_ms']:.2f} ms, ZO-SGD {e['zo-sgd']['step_ms']:.2f} ms ({r['elapsed_s']:.0f} s; "
              f"{r['source']}; ZO-LSTM: {r['learned']})", flush=True)
    info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print()
    print("\n".join(table_lines(results)))
    allm = print_targets(results)
    print(f"({time.perf_counter() - t0:.0f} s)")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump({"machine": info, "device": args.device, "quick": args.quick, "cases": results,
                   "all_met": allm, "authors_quoted": AUTHORS_QUOTED, "pieces": PIECE_DOC,
                   "budget": {k: (v if math.isfinite(v) else None)
                              for k, v in (QUICK if args.quick else FULL)[args.device].__dict__.items()}},
                  fh, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
