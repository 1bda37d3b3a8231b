#!/usr/bin/env python3
"""Speed of ONE meta-training update: `MetaTrainer.train_update` against the authors' algorithm shape.

    python benchmarks/bench_meta_update.py [--threads 2] [--reps 3] [--authors-steps 200] [--quick] [--json PATH]

The update (the issue's setting): stage 1 (UpdateRNN), first-order mode, a trajectory of 200 optimizer steps cut
into windows of 20 (truncated BPTT, one Adam step per window), q = 20 Gaussian directions per step, the MNIST
attack (task "mnist-attack": the authors' MNIST CNN, c = 0.1, L1 distortion). Targets: our update on one image at
least 10x faster than the authors' code on the same machine; 10 images per update in at most 3x the time of one
(issue 7), and in at most 1.3x the time of its own black-box work (issue 17: the problem's call on each step's
query batch plus the differentiable forward and backward of the new iterates, timed alone around the updates).

* **ours**: `zol2l_ext.zo.meta_trainer.MetaTrainer(MetaTrainConfig(task="mnist-attack", stage=1,
  grad_mode="first-order", batch=B, horizon=200, unroll=20, q=20, mu=0.005, epochs=1, updates_per_epoch=1))`
  on `zol2l_ext.tasks.load_task("mnist-attack", "train")`, `trainer.train_update()` timed for B = 1 and B = 10
  (one warm-up update, then the median of ``--reps`` updates). float32; per step one batched no-grad forward of
  the B x 21 query images, the fused sampler / estimator / LSTM ops, one differentiable forward of the B new
  iterates; one backward per window.
* **authors' shape**: the reference code's training loop (github.com/RYoungJ/ZO-L2L: main_attack.py
  ``train_optimizer_attack``, nn_optimizer/zoopt.py ``ZOOptimizer``, nn_optimizer/__init__.py
  ``GradientEstimate``) re-written here from its description, not copied: float64, autograd kept through
  everything (only ``prev_loss`` detached). Per step: f(x) (one forward); for each of q = 20 directions
  u ~ N(0, I_d) two forwards (f at x and at x + mu u, mu = 1e-6) giving (f2 - f1) / mu * u, averaged; the
  UpdateRNN (``nn.LSTM(1, 10, bias=False)`` + ``nn.Linear(10, 1, bias=False)``) on the d = 784 estimates as a
  batch of d length-1 sequences, state carried across steps; x <- x + delta; one more forward f(x) for the
  meta-loss ``sum_t t (f(x_t) - f(x_{t-1}).detach())``; per window of 20 steps zero_grad, backward, gradients
  clamped to [-1, 1], Adam (lr 1e-3), states detached. The optimizee: a perturbation (d = 784, starts at 0) added
  to the image and clamped to [0, 1]; loss ``max(F_t0 - max_{j != t0} F_j, 0) + c ||x - x0||_1`` with F the
  log-probabilities of a float64 copy of the same CNN (frozen weights), c = 0.1. Every forward is one image
  (batch 1): 2q + 2 = 42 sequential forwards per step. ``--authors-steps N`` times only N steps (windows of 20,
  the last one shorter) and scales to 200 linearly (printed as scaled).

Without a data root (``--data-root``, ``$ZOL2L_DATA``, else ``../shared/data`` or ``shared/data``) the CNN gets
random weights and the images are uniform random (same cost; printed). A benchmark, not a test: the exit status
is 0 whether the targets are met or not.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

from common import ROOT, find_data_root, machine_info, nchw_model, repo_relative

from zol2l_ext import data as D
from zol2l_ext import models as M
from zol2l_ext.zo import AttackProblem, LearnedZO
from zol2l_ext.zo.meta_trainer import MetaTrainConfig, MetaTrainer

HORIZON, UNROLL, Q, MU_OURS, C_LOSS = 200, 20, 20, 0.005, 0.1
MU_AUTHORS, LR_AUTHORS, CLIP = 1e-6, 1e-3, 1.0
AUTHORS_QUOTED_S = 11.3  # the issue's figure for the authors' code on this kind of machine (not measured here)
TARGET_SPEEDUP, TARGET_B10_RATIO = 10.0, 3.0
TARGET_OVER_BB = 1.3  # issue 17: the 10-image update in at most 1.3x its own black-box work
DEFAULT_JSON = os.path.join(ROOT, "benchmarks", "results", "meta_update_cpu.json")


# ----------------------------------------------------------------------------------------------------------
# Problems
# ----------------------------------------------------------------------------------------------------------
class RandomProblems:
    """A `ProblemSet` of uniform random images for a random-weight CNN (no data root): same cost as the task."""

    def __init__(self, model, n=100):
        g = torch.Generator().manual_seed(1)
        self.model = model
        self.images = torch.rand(n, 1, 28, 28, generator=g)
        self.labels = torch.randint(0, 10, (n,), generator=g)

    def __len__(self):
        return int(self.labels.shape[0])

    def make(self, rows=None, repeat=1):
        idx = torch.as_tensor(list(range(len(self))) if rows is None else list(rows), dtype=torch.int64)
        return AttackProblem(self.model, self.images[idx].repeat(repeat, 1, 1, 1), self.labels[idx].repeat(repeat),
                             c=C_LOSS, output="logprob", chunk_size=4096)


def load_problems(root):
    """(train ProblemSet, the float32 CNN, images [N,1,28,28], labels [N], description)."""
    if root is not None:
        try:
            from zol2l_ext.tasks import load_task

            td = load_task("mnist-attack", "train", data_root=root)
            return td, td.model, td.images, td.labels, (
                f"task mnist-attack/train from {repo_relative(root)}: target {td.target_name} (staged weights), "
                f"{len(td)} correctly classified MNIST test images")
        except (D.DataRootError, OSError, ValueError) as e:
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
    else:
        why = "no data root"
    torch.manual_seed(0)
    model = M.build_model("authors", "mnist").eval().requires_grad_(False)
    ps = RandomProblems(model)
    return ps, model, ps.images, ps.labels, f"random CNN weights, uniform random images ({why})"


# ----------------------------------------------------------------------------------------------------------
# The authors' algorithm shape (float64, batch-1 forwards, autograd through everything)
# ----------------------------------------------------------------------------------------------------------
class AuthorsShape:
    """The reference code's stage-1 training loop on one image, re-written from its description."""

    def __init__(self, model32, image, label, seed=0):
        torch.manual_seed(seed)
        # frozen weights (requires_grad False), eval mode, in the NCHW format of the authors' plain PyTorch code
        # (the task's target runs channels-last: models.channels_last_on_cpu)
        self.model = nchw_model(model32).double()
        self.x0 = image.reshape(1, 1, 28, 28).double()
        self.t0 = int(label)
        self.d = self.x0.numel()
        self.lstm = nn.LSTM(1, 10, bias=False, batch_first=True).double()
        self.head = nn.Linear(10, 1, bias=False).double()
        with torch.no_grad():
            self.head.weight.mul_(0.1)
        self.lstm.train()
        self.head.train()
        self.params = list(self.lstm.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.Adam(self.params, lr=LR_AUTHORS)

    def f(self, p):
        """The attack loss of the perturbation p [d] (one image, one forward, autograd kept)."""
        x = (self.x0 + p.view(1, 1, 28, 28)).clamp(0.0, 1.0)
        logp = self.model(x)[0]
        other = torch.cat([logp[: self.t0], logp[self.t0 + 1:]]).max()
        return (logp[self.t0] - other).clamp_min(0.0) + C_LOSS * (x - self.x0).abs().sum()

    def gradient_estimate(self, p, u):
        return (self.f(p + MU_AUTHORS * u) - self.f(p)) / MU_AUTHORS  # two forwards

    def update(self, steps=HORIZON, unroll=UNROLL, q=Q):
        """One meta-training update of ``steps`` optimizer steps; returns the meta-losses of its windows."""
        d = self.d
        p = torch.zeros(d, dtype=torch.float64)
        h = torch.zeros(1, d, 10, dtype=torch.float64)
        c = torch.zeros(1, d, 10, dtype=torch.float64)
        losses, t = [], 0
        while t < steps:
            n = min(unroll, steps - t)
            loss_sum = 0.0
            for _ in range(n):
                t += 1
                prev_loss = self.f(p)
                g = torch.zeros(d, dtype=torch.float64)
                for _ in range(q):
                    u = torch.randn(d, dtype=torch.float64)
                    g = g + self.gradient_estimate(p, u) * u
                g = g / q
                out, (h, c) = self.lstm(g.view(d, 1, 1), (h, c))
                p = p + self.head(out).view(d)
                loss = self.f(p)
                loss_sum = loss_sum + t * (loss - prev_loss.detach())
            self.opt.zero_grad()
            loss_sum.backward()
            for w in self.params:
                if w.grad is not None:
                    w.grad.clamp_(-CLIP, CLIP)
            self.opt.step()
            losses.append(loss_sum.item())
            p, h, c = p.detach(), h.detach(), c.detach()
        return losses


# ----------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------
def make_trainer(train, batch, horizon, unroll):
    cfg = MetaTrainConfig(task="mnist-attack", stage=1, grad_mode="first-order", batch=batch, horizon=horizon,
                          unroll=unroll, q=Q, mu=MU_OURS, epochs=1, updates_per_epoch=1)
    torch.manual_seed(0)
    return MetaTrainer(cfg, train, val=None, model=LearnedZO(), progress=False)


def forward_floor(train, batch, reps=7):
    """Median seconds of one no-grad float32 forward of the B x (q + 1) query images of a step: model work that
    every step of ours does (the differentiable forward and backward of the B new iterates come on top)."""
    rows = list(range(min(batch, len(train))))
    prob = train.make(rows)
    x = torch.rand(len(rows) * (Q + 1), *prob.image_shape, generator=torch.Generator().manual_seed(2))
    samples = []
    with torch.no_grad():
        prob.model(x)
        for _ in range(reps):
            t0 = time.perf_counter()
            prob.model(x)
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


class BlackBoxWork:
    """The black-box work of one step of ours, timed alone: the no-grad call of the problem on the step's
    B x (q + 1) query points (forward of the query batch and the loss), plus the differentiable forward of the
    B new iterates and its backward through the model (first-order mode's meta-loss term; in training the
    backward of a window runs once for its 20 steps, the same work). No optimizer, no LSTM, no sampling."""

    def __init__(self, train, batch):
        from zol2l_ext import ops

        rows = list(range(min(batch, len(train))))
        self.prob = train.make(rows)
        B, d = len(rows), self.prob.dim
        theta = 1e-3 * torch.randn(B, d, generator=torch.Generator().manual_seed(3))
        _, self.points = ops.sample_queries(theta, Q, MU_OURS, seed=torch.arange(B, dtype=torch.int64))
        self.theta = theta

    def once(self):
        """Seconds of (query batch, differentiable forward + backward) for one step."""
        t0 = time.perf_counter()
        with torch.no_grad():
            self.prob(self.points)
        t1 = time.perf_counter()
        th = self.theta.clone().requires_grad_(True)
        self.prob.differentiable_values(th.unsqueeze(1)).sum().backward()
        return t1 - t0, time.perf_counter() - t1


def time_ours(train, batch, horizon, unroll, reps, bb_reps=7):
    fwd = forward_floor(train, batch)
    bb = BlackBoxWork(train, batch)
    bb.once()  # warm-up (the first backward of a process is slow)
    tr = make_trainer(train, batch, horizon, unroll)
    t0 = time.perf_counter()
    warm = tr.train_update()
    warm_s = time.perf_counter() - t0
    samples, rows, bb_samples = [], [], []
    # The black-box work is sampled around every timed update (same run, same load) and its median taken.
    for _ in range(reps):
        bb_samples += [bb.once() for _ in range(bb_reps)]
        t0 = time.perf_counter()
        row = tr.train_update()
        samples.append(time.perf_counter() - t0)
        rows.append(row)
    bb_samples += [bb.once() for _ in range(bb_reps)]
    med = statistics.median(samples)
    bb_query = statistics.median(s[0] for s in bb_samples)
    bb_diff = statistics.median(s[1] for s in bb_samples)
    bb_update = (bb_query + bb_diff) * horizon
    return {
        "impl": f"ours B={batch}", "batch": batch, "steps": horizon, "unroll": unroll, "q": Q, "mu": MU_OURS,
        "dtype": "float32", "warmup_s": warm_s, "samples_s": samples, "median_s": med,
        "per_step_ms": 1e3 * med / horizon, "update_200_s": med * HORIZON / horizon, "scaled": horizon != HORIZON,
        "forward_ms": 1e3 * fwd, "forward_share": fwd * horizon / med,
        "bb_query_ms": 1e3 * bb_query, "bb_diff_fwd_bwd_ms": 1e3 * bb_diff, "bb_step_ms": 1e3 * (bb_query + bb_diff),
        "bb_update_s": bb_update, "update_over_bb": med / bb_update, "bb_samples_ms": [
            [1e3 * a, 1e3 * b] for a, b in bb_samples],
        "meta_loss": [r["meta_loss"] for r in [warm] + rows], "loss_ratio": [r["loss_ratio"] for r in [warm] + rows],
        "loadavg_end": list(os.getloadavg()),
    }


def time_authors(model, image, label, steps, unroll):
    a = AuthorsShape(model, image, label)
    t0 = time.perf_counter()
    a.update(steps=2, unroll=2)  # warm-up (one short window)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses = a.update(steps=steps, unroll=unroll)
    s = time.perf_counter() - t0
    return {
        "impl": "authors' shape B=1", "batch": 1, "steps": steps, "unroll": unroll, "q": Q, "mu": MU_AUTHORS,
        "dtype": "float64", "forwards_per_step": 2 * Q + 2, "warmup_s": warm_s, "samples_s": [s], "median_s": s,
        "per_step_ms": 1e3 * s / steps, "update_200_s": s * HORIZON / steps, "scaled": steps != HORIZON,
        "meta_loss": losses, "loadavg_end": list(os.getloadavg()),
    }


def profile_ours(train, batch, horizon, unroll, top=12):
    """One update of ours under torch.profiler: the top ops by self CPU time (printed and returned)."""
    from torch.profiler import ProfilerActivity, profile

    tr = make_trainer(train, batch, horizon, unroll)
    tr.train_update()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tr.train_update()
    ka = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ka) or 1.0
    rows = [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
             "self_pct": 100.0 * e.self_cpu_time_total / total} for e in ka[:top]]
    print(f"\nprofile, ours B={batch}, {horizon} steps (self CPU time; profiler overhead included, "
          f"total {total / 1e3:.0f} ms):")
    for r in rows:
        print(f"  {r['op'][:48]:<48} {r['calls']:>7} calls {r['self_ms']:>10.1f} ms {r['self_pct']:>6.1f} %")
    return {"batch": batch, "steps": horizon, "total_self_ms": total / 1e3, "top": rows}


def verdict(ok):
    return "met" if ok else "NOT met"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--reps", type=int, default=3, help="timed updates of ours per batch, after one warm-up (3)")
    ap.add_argument("--authors-steps", type=int, default=None,
                    help="steps of the authors' shape to time, scaled linearly to 200 (default 200)")
    ap.add_argument("--horizon", type=int, default=None,
                    help="steps of our update (default 200; a multiple of --unroll; other values are scaled to 200)")
    ap.add_argument("--unroll", type=int, default=UNROLL, help="truncated-BPTT window of both (default 20)")
    ap.add_argument("--batches", default="1,10", help="meta-batch sizes of ours (default 1,10; 1 is needed)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 20 steps of ours and of the authors' shape, 1 rep (seconds)")
    ap.add_argument("--profile", action="store_true", help="also profile one update of ours per batch size")
    ap.add_argument("--data-root", default=None, help="data root (default $ZOL2L_DATA, else ../shared/data)")
    ap.add_argument("--json", default=None,
                    help="results file (default benchmarks/results/meta_update_cpu.json; --quick: none unless given)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    horizon = args.horizon or (20 if args.quick else HORIZON)
    a_steps = args.authors_steps or (20 if args.quick else HORIZON)
    reps = 1 if args.quick else args.reps
    batches = [int(b) for b in args.batches.split(",")]
    if horizon % args.unroll:
        ap.error(f"--horizon ({horizon}) must be a multiple of --unroll ({args.unroll})")

    info = machine_info(["cpu"], args.threads)
    root = find_data_root(args.data_root)
    train, model, images, labels, where = load_problems(root)
    info["problems"] = where
    print(f"{info['date_utc']}  torch {info['torch']}  {info['cpu_model']}  {info['cpu_count']} CPUs  "
          f"threads {args.threads}  git {info['git']}  load average {info['loadavg_start']}")
    print(f"problems: {where}")
    print(f"ours: {horizon} steps, unroll {args.unroll}, q {Q}, mu {MU_OURS}, first-order, stage 1, "
          f"1 warm-up + {reps} timed update(s) per B")
    print(f"authors' shape: {a_steps} steps, unroll {args.unroll}, q {Q}, mu {MU_AUTHORS}, float64, 42 batch-1 "
          f"forwards per step" + (f" (SCALED x{HORIZON / a_steps:g} to {HORIZON} steps)" if a_steps != HORIZON
                                  else ""))

    results = []
    t_wall = time.perf_counter()
    # The authors' shape on the first training image (ours at B = 1 draws its images from the same 100).
    results.append(time_authors(model, images[0], labels[0], a_steps, args.unroll))
    print(f"  authors' shape: {results[-1]['median_s']:.2f} s for {a_steps} steps")
    for b in batches:
        results.append(time_ours(train, b, horizon, args.unroll, reps))
        r = results[-1]
        print(f"  ours B={b}: median {r['median_s']:.3f} s for {horizon} steps (samples "
              f"{', '.join(f'{s:.3f}' for s in r['samples_s'])}; warm-up {r['warmup_s']:.3f} s)")
    profiles = [profile_ours(train, b, horizon, args.unroll) for b in batches] if args.profile else []

    by = {r["impl"]: r for r in results}
    auth, b1, b10 = by["authors' shape B=1"], by.get("ours B=1"), by.get("ours B=10")
    ratios = {}
    if b1 is not None:
        sp = auth["update_200_s"] / b1["update_200_s"]
        ratios["authors_over_ours_B1"] = {"value": sp, "target": f">= {TARGET_SPEEDUP:g}", "met": sp >= TARGET_SPEEDUP}
        q = AUTHORS_QUOTED_S / b1["update_200_s"]
        ratios["quoted_authors_11.3s_over_ours_B1"] = {"value": q, "target": f">= {TARGET_SPEEDUP:g}",
                                                       "met": q >= TARGET_SPEEDUP, "note": "quoted, not measured"}
        if b10 is not None:
            r10 = b10["update_200_s"] / b1["update_200_s"]
            ratios["ours_B10_over_B1"] = {"value": r10, "target": f"<= {TARGET_B10_RATIO:g}",
                                          "met": r10 <= TARGET_B10_RATIO, "note": "issue 7's target"}
    for r in results:
        if "update_over_bb" in r:
            ok = r["update_over_bb"] <= TARGET_OVER_BB
            ratios[f"ours_B{r['batch']}_over_its_black_box_work"] = {
                "value": r["update_over_bb"], "target": f"<= {TARGET_OVER_BB:g}",
                "met": ok if r["batch"] == 10 else None, "note": "issue 17's target (B = 10)" if r["batch"] == 10
                else "no target at this B"}
    info["loadavg_end"] = list(os.getloadavg())
    info["wall_s"] = time.perf_counter() - t_wall

    print()
    head = (f"{'implementation':<22} {'dtype':<8} {'steps':>5} {'timed s':>9} {'ms/step':>8} "
            f"{'s / update (200 steps)':>24} {'fwd ms':>7} {'fwd %':>6} {'bb ms':>7} {'upd/bb':>6}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['impl']:<22} {r['dtype']:<8} {r['steps']:>5} {r['median_s']:>9.3f} {r['per_step_ms']:>8.1f} "
              f"{r['update_200_s']:>16.3f}{' (scaled)' if r['scaled'] else '':>8}"
              + (f" {r['forward_ms']:>7.2f} {100 * r['forward_share']:>6.1f} {r['bb_step_ms']:>7.2f} "
                 f"{r['update_over_bb']:>6.2f}" if "forward_ms" in r else ""))
    print("fwd ms: one no-grad forward of the step's B x 21 query images; fwd %: 200 of them / the update;\n"
          "bb ms: a step's black-box work (the problem on the B x 21 query points + the differentiable forward and "
          "backward of the B iterates), median of samples taken around the timed updates; upd/bb: the update / "
          "(steps x bb ms)")
    print()
    for k, v in ratios.items():
        print(f"{k:<44} {v['value']:>8.2f}x  target {v['target']:<6} "
              f"{'-' if v['met'] is None else verdict(v['met'])}" + (f"  ({v['note']})" if "note" in v else ""))
    print(f"\nload average {info['loadavg_start']} -> {info['loadavg_end']}, wall {info['wall_s']:.1f} s"
          + ("  [QUICK smoke run: not the issue's measurement]" if args.quick else ""))

    out = {"benchmark": "meta_update", "quick": bool(args.quick), "machine": info,
           "settings": {"horizon": horizon, "authors_steps": a_steps, "unroll": args.unroll, "q": Q, "reps": reps,
                        "batches": batches, "mu_ours": MU_OURS, "mu_authors": MU_AUTHORS, "c": C_LOSS,
                        "authors_quoted_s": AUTHORS_QUOTED_S},
           "results": results, "ratios": ratios, "profiles": profiles}
    path = args.json or (None if args.quick else DEFAULT_JSON)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(out, fh, indent=1)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
