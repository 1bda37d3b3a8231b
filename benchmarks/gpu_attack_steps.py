"""How bench_gpu_attack.py measures one variant (case x precision): the step eager, in a CUDA graph, on the
reference ops and under torch.compile, each against the target's forward alone (the floor), with the checks
that the graphed, reference and compiled steps compute what the eager step computes.
"""
from __future__ import annotations

import copy
import math
import time
import traceback

import torch

from bench_attack_step import C_LOSS
from common import SampleTimer, error_line, no_grad_fn
from gpu_attack_cases import CASES, MU, N_SEEDS, TARGET_OUTSIDE, build_target
from reference_ops import check_reference_patch, reference_ops

from zol2l_ext import ops
from zol2l_ext.zo import AttackProblem, LearnedZO, make_optimizer, step_seeds


class SyncTimer(SampleTimer):
    """`common.SampleTimer` whose CUDA samples each start from an idle GPU.

    common.Timer lets the host run ahead of the GPU between samples (and zeroes an L2-flush buffer before
    each); a step whose kernels were all queued while the GPU was still busy with the previous sample would then
    hide its launch gaps, which are what this benchmark is about. Here every CUDA sample synchronizes first, as a
    runner that reads a stopping criterion every step does, and there is no flush (a step touches far more than
    the L2 anyway). CPU samples are common.Timer's.
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


def safe_sync():
    """torch.cuda.synchronize() after a failure, itself never raising (the failure is already reported)."""
    try:
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        print(f"  (synchronize after the failure: {error_line(e)})")



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
    impls = {"floor": no_grad_fn(lambda: target(x_all))}
    errors, checks, skipped = {}, {}, {}
    keep = []  # graphs and their outputs stay alive while their replays are timed
    if cuda:
        try:
            replay_floor = no_grad_fn(lambda: target(x_all))
            g, out = capture(replay_floor)
            keep.append((g, out))
            impls["floor/graph"] = g.replay
        except Exception as e:  # noqa: BLE001
            errors["floor/graph"] = error_line(e)
            log(f"  CUDA graph capture of the forward failed: {error_line(e)}")
            safe_sync()
    else:
        skipped["graph"] = "CUDA graphs need --device cuda"
    for name, opt in v["opts"].items():
        th, st = v["at"][name]
        nxt = _rotating(bank)
        impls[name] = (lambda opt=opt, th=th, st=st, nxt=nxt: opt.step(problem, th, st, nxt()))
        has_ref = False  # the reference ops ran eagerly: graph them too
        if not args.no_reference:
            try:
                ref_out = check_reference_patch(name, lambda: opt.step(problem, th, st, bank[0]))
                checks[f"{name}/ref vs eager"] = step_diff(ref_out, opt.step(problem, th, st, bank[0]))
                del ref_out

                def ref_eager(opt=opt, th=th, st=st, nxt=_rotating(bank)):
                    with reference_ops():
                        return opt.step(problem, th, st, nxt())
                impls[f"{name}/ref"] = ref_eager
                has_ref = True
            except Exception as e:  # noqa: BLE001
                errors[f"{name}/ref"] = error_line(e)
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
            errors[f"{name}/graph"] = error_line(e)
            log(f"  {name}: CUDA graph capture failed: {error_line(e)}")
            safe_sync()
        if has_ref:
            seeds_r = bank[0].clone()

            def ref_step(opt=opt, th=th, st=st, s=seeds_r):
                with reference_ops():
                    return opt.step(problem, th, st, s)
            try:
                replay, g, out = graph_step(ref_step, bank, seeds_r)
                keep.append((g, out))
                impls[f"{name}/ref-graph"] = replay
            except Exception as e:  # noqa: BLE001
                errors[f"{name}/ref-graph"] = error_line(e)
                log(f"  {name}: CUDA graph capture of the reference step failed: {error_line(e)}")
                safe_sync()
    t0 = time.perf_counter()
    timer = SyncTimer(dev, timer_budget)
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
    impls = {"floor": no_grad_fn(lambda: target(x_all))}
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
            entry["error"] = error_line(e)
            log(f"  {name}: torch.compile failed: {error_line(e)}")
            if args.device == "cuda":
                safe_sync()
            if args.verbose:
                traceback.print_exc()
        out[name] = entry
    r["compile_info"] = {
        "graph_breaks": {k.strip().splitlines()[0][:200]: n for k, n in counters["graph_break"].items()},
        "unique_graphs": counters["stats"].get("unique_graphs")}
    if len(impls) > 1:
        timer = SyncTimer(args.device, timer_budget)
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

