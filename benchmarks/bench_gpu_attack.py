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
import contextlib
import copy
import json
import math
import os
import sys
import time
import traceback
import warnings

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from bench_ops import ROOT, Budget, machine_info  # noqa: E402  (also puts ROOT on sys.path)
from bench_attack_step import (  # noqa: E402
    C_LOSS, CASES as CPU_CASES, MU, _Timer, find_data_root, load_case_data)

from zol2l_ext import ops  # noqa: E402
from zol2l_ext import reference as R  # noqa: E402
from zol2l_ext.zo import AttackProblem, LearnedZO, make_optimizer, step_seeds  # noqa: E402

TARGET_OUTSIDE = 0.05  # issue 6: at most 5% of the step outside the model forward
OPTIMIZERS = ("zo-sgd", "zo-lstm")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CASES = {
    "cifar10": dict(images=100, q=50, hw=32, quick=dict(images=2, q=2, hw=32)),
    "resnet50": dict(images=8, q=20, hw=224, quick=dict(images=2, q=2, hw=32)),
}
N_SEEDS = 8  # the steps' seeds cycle through the keys of steps 1..8

# Samples: round-robin over the implementations of a variant; each CUDA sample is one call (>= 0.2 ms) started
# from an idle GPU. Warm-up calls are never kept (slow_call_s = inf).
FULL = {"cuda": Budget(0.4, 10, 40, 2e-4, math.inf, 4.0), "cpu": Budget(0.5, 3, 20, 2e-3, math.inf, 10.0)}
QUICK = {"cuda": Budget(0.05, 3, 10, 2e-4, math.inf, 1.0), "cpu": Budget(0.02, 3, 3, 1e-3, math.inf, 0.5)}


class _SyncTimer(_Timer):
    """bench_attack_step._Timer whose CUDA samples each start from an idle GPU.

    bench_ops.Timer lets the host run ahead of the GPU between samples (and zeroes an L2-flush buffer before
    each); a step whose kernels were all queued while the GPU was still busy with the previous sample would then
    hide its launch gaps, which are what this benchmark is about. Here every CUDA sample synchronizes first, as a
    runner that reads a stopping criterion every step does, and there is no flush (a step touches far more than
    the L2 anyway). CPU samples are bench_ops.Timer's.
    """

    def __init__(self, device, budget):
        super().__init__(device, budget)
        self._flush = None

    def _sample(self, fwd, bwd, inner):
        if self.device != "cuda":
            return super()._sample(fwd, bwd, inner)
        torch.cuda.synchronize()
        ev = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
        marks = [ev() for _ in range(2 * inner + 1)]
        marks[0].record()
        for k in range(inner):
            outs = fwd()
            marks[2 * k + 1].record()
            marks[2 * k + 2].record()
            del outs
        return marks


# ----------------------------------------------------------------------------------------------------------
# The unfused reference path: the step's fused ops replaced by zol2l_ext.reference
# ----------------------------------------------------------------------------------------------------------
_REF_CALLS = {"lstm_step": 0, "sample_queries": 0, "fd_gradient": 0}


def _lstm_ref(x, h, c, w_ih, w_hh, w_out, bias=None, b_out=None):
    _REF_CALLS["lstm_step"] += 1
    return R.lstm_step_ref(x, h, c, w_ih, w_hh, w_out, bias, b_out)


def _sample_ref(theta, q, mu, scale=None, use_scale=None, seed=None, generator=None):
    _REF_CALLS["sample_queries"] += 1
    if seed is None:
        seed = ops.draw_seeds(theta.shape[0], generator, device=theta.device)
    return R.sample_queries_ref(seed, theta, q, mu, scale, use_scale)


def _fd_ref(f0, fq, u, mu):
    _REF_CALLS["fd_gradient"] += 1
    return R.fd_gradient_ref(f0, fq, u, mu)


@contextlib.contextmanager
def reference_ops():
    """Within the block, zol2l_ext.ops.{lstm_step, sample_queries, fd_gradient} are the pure-PyTorch references.

    The optimizers and the LSTM modules look the ops up as ``ops.<name>`` at call time (zo/estimator.py,
    zo/lstm_optimizer.py), so patching the module's attributes swaps them; `check_reference_patch` verifies it.
    """
    saved = {k: getattr(ops, k) for k in _REF_CALLS}
    ops.lstm_step, ops.sample_queries, ops.fd_gradient = _lstm_ref, _sample_ref, _fd_ref
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(ops, k, v)


def check_reference_patch(opt_name, fn):
    """Run fn() under reference_ops() and raise unless the reference ops were the ones called."""
    before = dict(_REF_CALLS)
    with reference_ops():
        out = fn()
    called = {k: _REF_CALLS[k] - before[k] for k in _REF_CALLS}
    want = ("sample_queries", "fd_gradient") + (("lstm_step",) if opt_name == "zo-lstm" else ())
    missing = [k for k in want if called[k] == 0]
    if missing:
        raise RuntimeError(f"reference path: {', '.join(missing)} not called through zol2l_ext.ops (the patch no "
                           "longer reaches the optimizer; the 'ref' rows would time the fused ops)")
    return out


# ----------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------
class TargetModel(nn.Module):
    """The black box's model call: images [N, C, H, W] in [0, 1] -> float32 scores [N, K].

    ``normalize`` (per-channel mean, std): (x - mean) / std, written in channels_last when ``channels_last``
    (one pass: it is also the layout conversion) and in the autocast dtype when ``amp`` is set (what autocast
    would cast the first convolution's input to). ``amp``: the network runs under
    ``torch.autocast(dtype=amp, cache_enabled=False)`` (no weight-cast cache: CUDA-graph safe; the cache lives
    for one autocast region anyway) and its output is cast back to float32.
    """

    def __init__(self, net, normalize=None, channels_last=False, amp=None):
        super().__init__()
        self.net = net
        self.channels_last = bool(channels_last)
        self.amp = amp
        self.output = getattr(net, "output", "logits")
        self.input_shape = getattr(net, "input_shape", None)
        if normalize is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in normalize)
            self.register_buffer("scale", 1.0 / std, persistent=False)
            self.register_buffer("shift", -mean / std, persistent=False)
        else:
            self.scale = self.shift = None

    def forward(self, x):
        if self.scale is not None:
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            y = torch.empty_like(x, dtype=self.amp or x.dtype, memory_format=fmt)
            x = torch.addcmul(self.shift, x, self.scale, out=y)
        elif self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp is None:
            return self.net(x)
        with torch.autocast(x.device.type, dtype=self.amp, cache_enabled=False):
            out = self.net(x)
        return out.float()


class _Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        cout = 4 * width
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """torchvision's resnet50 (v1.5: stride on the 3x3 convolution) for machines without torchvision.

    Same layers, shapes and state_dict keys as ``torchvision.models.resnet50()``, hence the same FLOPs; used only
    when torchvision cannot be imported (the JSON's source says which one ran).
    """

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, layers = 64, []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            mods = []
            for i in range(blocks):
                mods.append(_Bottleneck(cin, width, stride if i == 0 else 1))
                cin = 4 * width
            layers.append(nn.Sequential(*mods))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(impl="auto"):
    """(model with random weights, description): torchvision's resnet50(weights=None), else the built-in copy."""
    if impl in ("auto", "torchvision"):
        try:
            import torchvision  # noqa: PLC0415
            return torchvision.models.resnet50(weights=None), f"torchvision {torchvision.__version__} resnet50"
        except Exception as e:  # noqa: BLE001  (missing, or built for another torch)
            if impl == "torchvision":
                raise
            why = _err(e)
    else:
        why = "--resnet builtin"
    return ResNet50(), f"the benchmark's built-in copy of torchvision's resnet50 ({why})"


def build_target(case, amp, B, hw, root, device, resnet_impl="auto"):
    """(target callable, images [B, 3, hw, hw], labels [B], output kind, description)."""
    amp_dtype = {"none": None, "bf16": torch.bfloat16}[amp]
    if case == "cifar10":
        model, images, labels, output, source = load_case_data(CPU_CASES["3"], root, B, device)
        target = model if amp_dtype is None else TargetModel(model, amp=amp_dtype).eval()
        return target, images, labels, output, source
    torch.manual_seed(0)
    net, which = resnet50(resnet_impl)
    net = net.eval().requires_grad_(False)
    net = net.to(device=device, memory_format=torch.channels_last)
    target = TargetModel(net, normalize=(IMAGENET_MEAN, IMAGENET_STD), channels_last=True, amp=amp_dtype).eval()
    target = target.to(device)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(B, 3, hw, hw, generator=g)
    labels = torch.randint(0, 1000, (B,), generator=g)
    source = (f"{which}, random weights (weights=None), channels_last, "
              f"ImageNet normalisation in the target; uniform random {hw}x{hw} images, random labels of 1000")
    return target, images.to(device), labels.to(device), "logits", source


# ----------------------------------------------------------------------------------------------------------
# CUDA graphs and checks
# ----------------------------------------------------------------------------------------------------------
def capture(fn, warmup=3):
    """(graph, static outputs) of fn() captured in a torch.cuda.CUDAGraph after warm-up on a side stream."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    torch.cuda.synchronize()
    return g, out


def _maxdiff(a, b):
    return float((a.detach().double() - b.detach().double()).abs().nan_to_num(math.inf).max())


def step_diff(out_a, out_b):
    """Largest differences of theta_new and f0 between two step outputs (theta_new, state, f0)."""
    return {"theta": _maxdiff(out_a[0], out_b[0]), "f0": _maxdiff(out_a[2], out_b[2]),
            "f0_scale": float(out_b[2].detach().abs().max())}


def _clone_out(out):
    th, st, f0 = out
    return th.clone(), {k: (v.clone() if torch.is_tensor(v) else v) for k, v in st.items()}, f0.clone()


def _safe_sync():
    """torch.cuda.synchronize() after a failure, itself never raising (the failure is already reported)."""
    try:
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        print(f"  (synchronize after the failure: {_err(e)})")


def _err(e):
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"


# ----------------------------------------------------------------------------------------------------------
# One variant: case x precision
# ----------------------------------------------------------------------------------------------------------
def setup_variant(case, amp, args, root):
    dev = args.device
    spec = CASES[case]["quick"] if args.quick else CASES[case]
    B, q, hw = spec["images"], spec["q"], spec["hw"]
    target, images, labels, output, source = build_target(case, amp, B, hw, root, dev, args.resnet)
    c = C_LOSS["cifar10"] if case == "cifar10" else 0.1
    problem = AttackProblem(target, images, labels, c=c, norm="l1", output=output)
    torch.manual_seed(0)  # a random LearnedZO: a trained one costs the same
    lz, lz_source = LearnedZO(), "randomly initialised LearnedZO"
    opts = {n: (make_optimizer(n, model=lz, q=q, mu=MU) if n == "zo-lstm" else make_optimizer(n, q=q, mu=MU))
            for n in args.optimizers}
    pids = torch.arange(B, dtype=torch.int64, device=dev)
    bank = [step_seeds(0, pids, t) for t in range(1, N_SEEDS + 1)]
    theta0 = problem.initial_point()
    at = {}
    for name, opt in opts.items():
        st = opt.init_state(theta0)
        th, st, _ = opt.step(problem, theta0, st, step_seeds(0, pids, 0))  # also runs the label check (host sync)
        at[name] = (th, st)
    # the floor's input: the step's own query images (ZO-SGD's points at t = 1), contiguous [B (q + 1), C, H, W]
    th, _ = at[next(iter(opts))]
    with torch.no_grad():
        _, points = ops.sample_queries(th, q, MU, seed=bank[0])
        x_all = problem._x(points).reshape(B * (q + 1), *problem.image_shape).contiguous()
        del points
    if dev == "cuda":
        torch.cuda.synchronize()
    return dict(case=case, amp=amp, B=B, q=q, hw=hw, d=problem.dim, target=target, problem=problem, opts=opts,
                at=at, bank=bank, x_all=x_all, source=source, learned=lz_source)


def _rotating(bank):
    state = {"i": 0}

    def next_seeds():
        s = bank[state["i"] % len(bank)]
        state["i"] += 1
        return s
    return next_seeds


def _nograd(f):
    def run():
        with torch.no_grad():
            return f()
    return run


def graph_step(fn_step, bank, seeds_s):
    """Capture fn_step() (which reads the static seeds tensor seeds_s); returns (replay callable, graph, outputs)."""
    seeds_s.copy_(bank[0])
    g, out = capture(fn_step)
    nxt = _rotating(bank)

    def replay():
        seeds_s.copy_(nxt())
        g.replay()
        return out
    return replay, g, out


def main_phase(v, args, timer_budget, log):
    """Time floor, eager, graph and reference steps of one variant; returns the variant's result dict."""
    dev, cuda = args.device, args.device == "cuda"
    problem, target, x_all, bank = v["problem"], v["target"], v["x_all"], v["bank"]
    impls = {"floor": _nograd(lambda: target(x_all))}
    errors, checks, skipped = {}, {}, {}
    keep = []  # graphs and their outputs stay alive while their replays are timed
    if cuda:
        try:
            replay_floor = _nograd(lambda: target(x_all))
            g, out = capture(replay_floor)
            keep.append((g, out))
            impls["floor/graph"] = g.replay
        except Exception as e:  # noqa: BLE001
            errors["floor/graph"] = _err(e)
            log(f"  CUDA graph capture of the forward failed: {_err(e)}")
            _safe_sync()
    else:
        skipped["graph"] = "CUDA graphs need --device cuda"
    for name, opt in v["opts"].items():
        th, st = v["at"][name]
        nxt = _rotating(bank)
        impls[name] = (lambda opt=opt, th=th, st=st, nxt=nxt: opt.step(problem, th, st, nxt()))
        ref_eager = None
        if not args.no_reference:
            try:
                ref_out = check_reference_patch(name, lambda: opt.step(problem, th, st, bank[0]))
                checks[f"{name}/ref vs eager"] = step_diff(ref_out, opt.step(problem, th, st, bank[0]))
                del ref_out

                def ref_eager(opt=opt, th=th, st=st, nxt=_rotating(bank)):
                    with reference_ops():
                        return opt.step(problem, th, st, nxt())
                impls[f"{name}/ref"] = ref_eager
            except Exception as e:  # noqa: BLE001
                errors[f"{name}/ref"] = _err(e)
        if not cuda:
            continue
        # CUDA graph of the fused step: static theta / state (the t = 1 inputs) and a static seeds tensor
        seeds_s = bank[0].clone()
        try:
            replay, g, out = graph_step(lambda opt=opt, th=th, st=st, s=seeds_s: opt.step(problem, th, st, s),
                                        bank, seeds_s)
            keep.append((g, out))
            for k in (0, 1):  # replay with the seeds of steps 1 and 2 against eager steps with the same seeds
                seeds_s.copy_(bank[k])
                g.replay()
                checks[f"{name}/graph vs eager, seeds {k + 1}"] = step_diff(out, opt.step(problem, th, st, bank[k]))
            impls[f"{name}/graph"] = replay
        except Exception as e:  # noqa: BLE001
            errors[f"{name}/graph"] = _err(e)
            log(f"  {name}: CUDA graph capture failed: {_err(e)}")
            _safe_sync()
        if ref_eager is not None:
            seeds_r = bank[0].clone()

            def ref_step(opt=opt, th=th, st=st, s=seeds_r):
                with reference_ops():
                    return opt.step(problem, th, st, s)
            try:
                replay, g, out = graph_step(ref_step, bank, seeds_r)
                keep.append((g, out))
                impls[f"{name}/ref-graph"] = replay
            except Exception as e:  # noqa: BLE001
                errors[f"{name}/ref-graph"] = _err(e)
                log(f"  {name}: CUDA graph capture of the reference step failed: {_err(e)}")
                _safe_sync()
    t0 = time.perf_counter()
    timer = _SyncTimer(dev, timer_budget)
    res = {k: r["fwd"] for k, r in timer.time({k: (f, None) for k, f in impls.items()}).items()}
    elapsed = time.perf_counter() - t0
    del timer, keep
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    return dict(case=v["case"], amp=v["amp"], images=v["B"], q=v["q"], dim=v["d"], image_hw=v["hw"],
                queries_per_step=v["B"] * (v["q"] + 1), source=v["source"], learned=v["learned"],
                impls=res, errors=errors, checks=checks, skipped=skipped, timing_s=elapsed,
                optimizers=summarize(res, v["B"] * (v["q"] + 1), list(v["opts"])))


def compile_phase(v, r, args, timer_budget, log):
    """torch.compile of each optimizer's step (the target's forward left eager), timed against floor and eager."""
    problem, target, x_all, bank = v["problem"], v["target"], v["x_all"], v["bank"]
    from torch._dynamo.utils import counters  # noqa: PLC0415
    torch._dynamo.reset()  # a fresh cache per variant: the step's frames stay far below the recompile limit
    counters.clear()
    prob_c = copy.copy(problem)
    prob_c.model = torch.compiler.disable(lambda x: target(x))  # a graph break: the forward runs eagerly
    impls = {"floor": _nograd(lambda: target(x_all))}
    out = {}
    for name, opt in v["opts"].items():
        th, st = v["at"][name]
        entry = {"backend": args.compile_backend, "mode": args.compile_mode}
        try:
            step = torch.compile(lambda t, s, sd, opt=opt: opt.step(prob_c, t, s, sd), backend=args.compile_backend,
                                 mode=args.compile_mode, dynamic=False)
            t0 = time.perf_counter()
            for k in range(3):  # compile; reduce-overhead records its CUDA graphs on the following calls
                step(th, st, bank[k])
            if args.device == "cuda":
                torch.cuda.synchronize()
            entry["compile_and_3_calls_s"] = time.perf_counter() - t0
            entry["check vs eager, seeds 2"] = step_diff(_clone_out(step(th, st, bank[1])),
                                                          opt.step(problem, th, st, bank[1]))
            impls[name] = (lambda opt=opt, th=th, st=st, nxt=_rotating(bank): opt.step(problem, th, st, nxt()))
            impls[f"{name}/compile"] = (lambda step=step, th=th, st=st, nxt=_rotating(bank): step(th, st, nxt()))
        except Exception as e:  # noqa: BLE001
            entry["error"] = _err(e)
            log(f"  {name}: torch.compile failed: {_err(e)}")
            if args.device == "cuda":
                _safe_sync()
            if args.verbose:
                traceback.print_exc()
        out[name] = entry
    r["compile_info"] = {
        "graph_breaks": {k.strip().splitlines()[0][:200]: n for k, n in counters["graph_break"].items()},
        "unique_graphs": counters["stats"].get("unique_graphs")}
    if len(impls) > 1:
        timer = _SyncTimer(args.device, timer_budget)
        res = {k: x["fwd"] for k, x in timer.time({k: (f, None) for k, f in impls.items()}).items()}
        nq = v["B"] * (v["q"] + 1)
        for name, entry in out.items():
            if f"{name}/compile" in res:
                c, e, f = res[f"{name}/compile"], res[name], res["floor"]
                entry.update(ms=c["ms"], iqr_ms=c["iqr_ms"], reps=c["reps"], eager_ms=e["ms"], floor_ms=f["ms"],
                             queries_per_s=nq / (c["ms"] / 1e3), outside_frac=1.0 - f["ms"] / c["ms"],
                             eager_over_compiled=e["ms"] / c["ms"], samples_ms=c.get("samples_ms"))
    r["compile"] = out


def summarize(res, nq, opt_names):
    def get(k):
        return res[k]["ms"] if k in res else None

    out = {}
    for name in opt_names:
        e = {}
        for kind, floor_key, step_key in (("eager", "floor", name), ("graph", "floor/graph", f"{name}/graph")):
            fl, st = get(floor_key), get(step_key)
            if st is None:
                continue
            e[kind] = dict(step_ms=st, floor_ms=fl, queries_per_s=nq / (st / 1e3),
                           outside_frac=None if fl is None else 1.0 - fl / st,
                           met=None if fl is None else (1.0 - fl / st) <= TARGET_OUTSIDE)
        for kind, fused_key in (("ref", name), ("ref-graph", f"{name}/graph")):
            ref, fused = get(f"{name}/{kind}"), get(fused_key)
            if ref is not None:
                e[kind] = dict(step_ms=ref, queries_per_s=nq / (ref / 1e3),
                               ref_over_fused=None if fused is None else ref / fused)
        out[name] = e
    return out


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------
def _f(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}"


def table_lines(variants, md=False):
    head = ["case", "amp", "optimizer", "queries", "floor ms", "eager ms", "outside %", "q/s eager", "floor/g ms",
            "graph ms", "outside %", "q/s graph", "ref ms", "ref/eager", "ref-g ms", "ref-g/graph", "compile ms",
            "outside %", "<= 5%"]
    rows = []
    for r in variants:
        for name, e in r["optimizers"].items():
            eg, gr, rf, rg = (e.get(k, {}) for k in ("eager", "graph", "ref", "ref-graph"))
            c = r.get("compile", {}).get(name, {})
            met = [k for k, x in (("eager", eg), ("graph", gr)) if x.get("met")]
            if c.get("outside_frac") is not None and c["outside_frac"] <= TARGET_OUTSIDE:
                met.append("compile")
            cells = [r["case"], r["amp"], name, str(r["queries_per_step"]), _f(eg.get("floor_ms")),
                     _f(eg.get("step_ms")), _pct(eg.get("outside_frac")), _f(eg.get("queries_per_s"), ".0f"),
                     _f(gr.get("floor_ms")), _f(gr.get("step_ms")), _pct(gr.get("outside_frac")),
                     _f(gr.get("queries_per_s"), ".0f"), _f(rf.get("step_ms")), _f(rf.get("ref_over_fused")),
                     _f(rg.get("step_ms")), _f(rg.get("ref_over_fused")),
                     _f(c.get("ms")) if "ms" in c else ("failed" if "error" in c else "-"),
                     _pct(c.get("outside_frac")), ",".join(met) if met else "no"]
            rows.append(cells)
    if md:
        rule = "|" + "|".join("---" if i < 3 else "--:" for i in range(len(head))) + "|"
        return ["| " + " | ".join(head) + " |", rule] + ["| " + " | ".join(x) + " |" for x in rows]
    w = [max(len(head[i]), *(len(x[i]) for x in rows)) if rows else len(head[i]) for i in range(len(head))]
    fmt = lambda x: "  ".join(c.ljust(w[i]) if i < 3 else c.rjust(w[i]) for i, c in enumerate(x))  # noqa: E731
    return [fmt(head), "-" * len(fmt(head))] + [fmt(x) for x in rows]


def notes_lines(variants):
    out = []
    for r in variants:
        tag = f"[{r['case']}/{r['amp']}]"
        for k, v in r.get("skipped", {}).items():
            out.append(f"{tag} {k} skipped: {v}")
        for k, v in r.get("errors", {}).items():
            out.append(f"{tag} {k} FAILED: {v}")
        for k, v in r.get("checks", {}).items():
            out.append(f"{tag} check {k}: max |d theta| {v['theta']:.3g}, max |d f0| {v['f0']:.3g} "
                       f"(|f0| up to {v['f0_scale']:.3g})")
        ci = r.get("compile_info")
        if ci:
            out.append(f"{tag} compile: {ci['unique_graphs']} graphs; graph breaks: "
                       + ("; ".join(f"{n} x {k}" for k, n in ci["graph_breaks"].items()) or "none"))
        for k, c in r.get("compile", {}).items():
            if "error" in c:
                out.append(f"{tag} {k}/compile FAILED: {c['error']}")
            elif "check vs eager, seeds 2" in c:
                d = c["check vs eager, seeds 2"]
                out.append(f"{tag} {k}/compile ({c['backend']}, mode {c['mode']}): compile + 3 calls "
                           f"{c['compile_and_3_calls_s']:.1f} s; vs eager: max |d theta| {d['theta']:.3g}, "
                           f"max |d f0| {d['f0']:.3g}")
    return out


def markdown(path):
    with open(path) as fh:
        d = json.load(fh)
    m = d["machine"]
    head = (f"{m['date_utc']}, torch {m['torch']}, {m.get('cuda_device') or m['cpu_model']}, device {d['device']}, "
            f"git {m['git']}" + (" (quick)" if d["quick"] else ""))
    return "\n".join([head, ""] + table_lines(d["variants"], md=True) + [""]
                     + [f"* {x}" for x in notes_lines(d["variants"])])


def write_json(path, payload):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=1)
    os.replace(tmp, path)


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
                    torchvision=tv, data_root=root, mu=MU, seeds_cycled=N_SEEDS)
    print(f"torch {info['torch']} (cuda {info['torch_cuda']}), {info.get('cuda_device') or info['cpu_model']}, "
          f"torchvision {tv}, git {info['git']}" + (" [quick]" if args.quick else ""))
    print(f"data root: {root or 'none: the cifar10 case runs with RANDOM weights and uniform random images'}")
    if args.device == "cpu":
        print("device cpu: CUDA graphs skipped (CUDA only); "
              + ("torch.compile on (" + args.compile_backend + ")" if args.compile else "torch.compile not requested"))

    def log(msg):
        print(msg, flush=True)

    t_start = time.perf_counter()
    payload = {"machine": info, "device": args.device, "quick": args.quick, "args": {
        k: v for k, v in vars(args).items() if k != "markdown"}, "settings": settings,
        "target_outside_frac": TARGET_OUTSIDE, "variants": [], "not_run": []}

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
                payload["not_run"].append(f"{tag}: {_err(e)}")
                log(f"[{tag}] FAILED: {_err(e)}")
                traceback.print_exc()
                if args.device == "cuda":
                    _safe_sync()
                    torch.cuda.empty_cache()
                continue
            r["wall_s"] = time.perf_counter() - t0
            payload["variants"].append(r)
            contexts.append((v, r))
            eg = {n: e.get("eager", {}).get("step_ms") for n, e in r["optimizers"].items()}
            log(f"[{tag}] floor {r['impls']['floor']['ms']:.3f} ms; eager steps "
                + ", ".join(f"{n} {_f(ms, '.3f')} ms" for n, ms in eg.items()) + f" ({r['wall_s']:.0f} s)")
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
