#!/usr/bin/env python3
"""Kernel benchmark of the fused zol2l ops against their pure-PyTorch references (and nn.LSTMCell).

    python benchmarks/bench_ops.py [--device cpu|cuda|all] [--threads 2] [--out PATH] [--quick] [--filter S]

This is a benchmark, not a test: it never fails on slow numbers, it reports them (exit status 0 unless
something crashes). See benchmarks/README.md for what is measured and how.

Modes of a row:
  fwd        forward with autograd recording (inputs that are trained require grad)
  bwd        the backward alone (torch.autograd.grad on the outputs of that forward)
  fwd+bwd    forward then backward, per iteration
  inference  forward under torch.no_grad() (LSTM) / forward of an op with nothing to differentiate
fwd, bwd and fwd+bwd come from the same timed loop (each iteration is timed in two parts).

Timing: CPU with time.perf_counter around each call (torch.set_num_threads(--threads)); CUDA with
torch.cuda.Event pairs on the current stream, read after torch.cuda.synchronize(), never a wall clock. Both
warm up, group fast calls so that one sample lasts at least a millisecond or two, and report the median and
the interquartile range of the per-call time over the samples; the number of samples adapts to the call
time (a per-loop time target and a cap), so that the full CPU run stays within about five minutes on two
cores. On CUDA the L2 cache is flushed before each sample (so a sample of one call runs on a cold L2), and
the fused forward is also timed kernel-only (calls queued behind torch.cuda._sleep so that host overhead is
hidden) for the achieved bandwidth, printed with its fraction of a measured device-to-device copy.

    python benchmarks/bench_ops.py --markdown benchmarks/results/ops_cpu.json   # a results file as markdown
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # run from a checkout without installing

import zol2l_ext  # noqa: E402
from zol2l_ext import reference as R  # noqa: E402

MU = 0.005
H, O = 10, 1

# ----------------------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------------------
LSTM_N = [("N=784", 784), ("N=3072", 3072), ("N=150528", 150528), ("N=100x3072", 100 * 3072)]
LSTM_N_QUICK = LSTM_N[:2]
QUERY_SHAPES = [(1, 20, 784), (100, 20, 784), (100, 50, 3072), (8, 20, 150528)]
QUERY_SHAPES_QUICK = QUERY_SHAPES[:1]
FD_SHAPES_QUICK = QUERY_SHAPES[:2]


@dataclass
class Budget:
    target_s: float  # sampling time aimed at for one timed loop
    min_reps: int  # samples wanted at least (unless the cap stops the loop first)
    max_reps: int
    min_sample_s: float  # fast calls are grouped so that one sample lasts at least this long
    slow_call_s: float  # warm-up calls at least this long are kept as samples
    cap_s: float  # no new sample is started once the loop would run past this (a longer call: one sample)


FULL = {"cpu": Budget(0.5, 5, 200, 2e-3, 1.5, 14.0), "cuda": Budget(0.25, 10, 50, 1e-3, 1.5, 10.0)}
QUICK = {"cpu": Budget(0.06, 3, 30, 1e-3, 0.3, 1.5), "cuda": Budget(0.05, 5, 30, 5e-4, 0.3, 1.5)}


# ----------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------
def _summary(samples: list[float]) -> dict:
    """Median and IQR in ms of per-call times in seconds."""
    xs = sorted(samples)
    med = statistics.median(xs)
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        iqr = q3 - q1
    else:
        iqr = None
    return {"ms": med * 1e3, "iqr_ms": None if iqr is None else iqr * 1e3, "min_ms": xs[0] * 1e3,
            "reps": len(xs)}


class Timer:
    """time({name: (fwd, bwd)}) -> {name: {"fwd": summary, "bwd": ..., "fwd+bwd": ...}}.

    fwd() returns the outputs, bwd(outputs) runs the backward (None: forward only). The implementations of
    one case are sampled round-robin (fused, ref, cell, fused, ...) so that a burst of load from other
    processes on a shared machine hits all of them alike rather than one.
    """

    def __init__(self, device: str, budget: Budget, clock: Callable[[], float] = time.perf_counter):
        self.device = device
        self.b = budget
        # CPU only: time.process_time counts the CPU time this process got, not the time it waited for a core
        # (bench_attack_step --clock cpu, for single-threaded runs on a loaded machine).
        self.clock = clock
        self._flush = None
        if device == "cuda":
            # Larger than any L2 so far (50 MiB on H100, 60 MiB on H200...): 256 MiB.
            self._flush = torch.empty(64 * 1024 * 1024, dtype=torch.float32, device="cuda")

    def time(self, impls: dict) -> dict:
        gc.collect()
        st = {name: self._warm(fwd, bwd) for name, (fwd, bwd) in impls.items()}
        active = list(impls)
        while active:
            for name in list(active):
                s = st[name]
                over_cap = s["samples"] and s["spent"] + s["est"] * s["inner"] > self.b.cap_s
                if len(s["samples"]) >= s["reps"] or over_cap:
                    active.remove(name)
                    continue
                fwd, bwd = impls[name]
                s["samples"].append(self._sample(fwd, bwd, s["inner"]))
                s["spent"] += s["est"] * s["inner"]
        if self.device == "cuda":
            torch.cuda.synchronize()
        return {name: self._result(st[name], impls[name][1] is not None) for name in impls}

    def kernel_ms(self, fn: Callable, reps: int = 15) -> Optional[dict]:
        """CUDA: GPU time per call of fn's kernels alone, host overhead hidden.

        The calls of a sample are queued behind torch.cuda._sleep (a spin kernel), long enough for the host to
        issue them all before the GPU reaches the start event; the events then time the kernels back to back.
        A sample whose start event had already completed when the last call was issued (sleep too short) is
        discarded and the sleep doubled. None off CUDA or if torch.cuda._sleep is missing.
        """
        if self.device != "cuda" or not hasattr(torch.cuda, "_sleep"):
            return None
        try:
            return self._kernel_ms(fn, reps)
        except Exception as e:  # noqa: BLE001  (an extra column must not end the run)
            torch.cuda.synchronize()
            print(f"  (kernel-only timing failed: {type(e).__name__}: {str(e).splitlines()[0][:120]})")
            return None

    def _kernel_ms(self, fn: Callable, reps: int) -> Optional[dict]:
        ev = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
        if getattr(self, "_cycles_per_s", None) is None:
            a, b = ev(), ev()
            torch.cuda._sleep(1000)
            a.record()
            torch.cuda._sleep(10_000_000)
            b.record()
            torch.cuda.synchronize()
            self._cycles_per_s = 10_000_000 / (a.elapsed_time(b) / 1e3)
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        host = (time.perf_counter() - t0) / 10  # host issue time per call (sizes the sleep only)
        torch.cuda.synchronize()
        sleep_s = 10 * host * 2 + 1e-3

        def sample(inner):
            nonlocal sleep_s
            for _ in range(6):
                self._flush.zero_()
                torch.cuda._sleep(int(min(sleep_s, 0.2) * self._cycles_per_s))
                a, b = ev(), ev()
                a.record()
                for _ in range(inner):
                    fn()
                b.record()
                early = a.query()  # the GPU reached the start before the host had issued every call
                if not early:
                    return a, b
                torch.cuda.synchronize()
                sleep_s *= 2
            return None

        first = sample(10)
        torch.cuda.synchronize()
        if first is None:
            return None
        est = first[0].elapsed_time(first[1]) / 1e3 / 10
        inner = max(1, min(200, math.ceil(2e-4 / max(est, 1e-7))))
        sleep_s = inner * host * 2 + 2e-4
        pairs = [p for p in (sample(inner) for _ in range(reps)) if p is not None]
        torch.cuda.synchronize()
        if not pairs:
            return None
        res = _summary([a.elapsed_time(b) / 1e3 / inner for a, b in pairs])
        res["inner"] = inner
        return res

    def _plan(self, est: float) -> tuple[int, int]:
        est = max(est, 1e-7)
        inner = max(1, min(1000, math.ceil(self.b.min_sample_s / est)))
        reps = max(self.b.min_reps, min(self.b.max_reps, int(self.b.target_s / (est * inner))))
        return inner, reps

    def _warm(self, fwd, bwd) -> dict:
        """Warm-up calls, the per-call estimate and the plan (calls per sample, samples)."""
        if self.device == "cuda":
            first = self._resolve(self._sample(fwd, bwd, 1), 1)
            first = first[0] + first[1]
            n = 1 if first >= self.b.slow_call_s else max(2, min(20, int(0.05 / max(first, 1e-6))))
            est = self._resolve(self._sample(fwd, bwd, n), n)
            est = est[0] + est[1]
            samples = []
        else:
            f1, b1 = self._sample(fwd, bwd, 1)
            samples = []
            if f1 + b1 >= self.b.cap_s:
                # A call past the cap: one-time costs are negligible against it, it is the only sample.
                samples.append((f1, b1))
                est = f1 + b1
            else:
                f2, b2 = self._sample(fwd, bwd, 1)  # second warm-up call: the estimate
                est = min(f1 + b1, f2 + b2)
                if est >= self.b.slow_call_s:
                    # Both calls slow (not a one-off stall of the first): keep them as samples.
                    samples += [(f1, b1), (f2, b2)]
        inner, reps = self._plan(est)
        return {"est": est, "inner": inner, "reps": reps, "samples": samples, "spent": est * len(samples)}

    def _sample(self, fwd, bwd, inner):
        """CPU: (fwd s, bwd s) per call over `inner` calls. CUDA: the recorded events (see _resolve)."""
        if self.device == "cuda":
            ev = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
            self._flush.zero_()  # outside the timed window: cold L2 for the first call of the sample
            marks = [ev() for _ in range(2 * inner + 1)]
            marks[0].record()
            for k in range(inner):
                outs = fwd()
                marks[2 * k + 1].record()
                if bwd is not None:
                    bwd(outs)
                marks[2 * k + 2].record()
                del outs
            return marks
        pc = self.clock
        sf = sb = 0.0
        for _ in range(inner):
            t0 = pc()
            outs = fwd()
            t1 = pc()
            if bwd is not None:
                bwd(outs)
            t2 = pc()
            del outs
            sf += t1 - t0
            sb += t2 - t1
        return sf / inner, sb / inner

    @staticmethod
    def _resolve(marks, inner):
        if not isinstance(marks, list):
            return marks
        marks[-1].synchronize()
        f = sum(marks[2 * k].elapsed_time(marks[2 * k + 1]) for k in range(inner)) / 1e3 / inner
        b = sum(marks[2 * k + 1].elapsed_time(marks[2 * k + 2]) for k in range(inner)) / 1e3 / inner
        return f, b

    def _result(self, s: dict, two_phase: bool) -> dict:
        pairs = [self._resolve(m, s["inner"]) for m in s["samples"]]
        fs = [p[0] for p in pairs]
        bs = [p[1] for p in pairs]
        out = {"fwd": _summary(fs)}
        if two_phase:
            out["bwd"] = _summary(bs)
            out["fwd+bwd"] = _summary([a + b for a, b in zip(fs, bs)])
        for v in out.values():
            v["inner"] = s["inner"]
        return out


def copy_bandwidth_gbs(n_bytes: int = 1 << 30, reps: int = 20) -> float:
    """Device-to-device dst.copy_(src) of n_bytes: (bytes read + bytes written) / median time, in GB/s."""
    n = n_bytes // 4
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    pairs = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        pairs.append((a, b))
    torch.cuda.synchronize()
    t = statistics.median(a.elapsed_time(b) for a, b in pairs) / 1e3
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n * 4 / t / 1e9


# ----------------------------------------------------------------------------------------------------------
# Cases: each yields rows {op, shape, mode, impls: {name: summary}, bytes, err}
# ----------------------------------------------------------------------------------------------------------
def _nbytes(*ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


def _maxerr(a, b) -> float:
    return max(float((x.detach().double() - y.detach().double()).abs().max()) if x.numel() else 0.0
               for x, y in zip(a, b))


def _fused_available(fn) -> tuple[bool, str]:
    try:
        fn()
        return True, ""
    except NotImplementedError as e:  # no kernel registered for this device (yet)
        return False, str(e).splitlines()[0][:160]
    except RuntimeError as e:
        msg = str(e)
        if "Could not run" in msg or "not implemented" in msg.lower():
            return False, msg.splitlines()[0][:160]
        raise


def _grads(outs, inputs, grad_outs):
    return torch.autograd.grad(outs, inputs, grad_outs)


def lstm_cases(device, timer, n_list, log):
    for I, role in ((1, "UpdateRNN"), (2, "QueryRNN")):
        for label, N in n_list:
            torch.manual_seed(1234 + N + I)
            cell = torch.nn.LSTMCell(I, H, bias=False).to(device)
            head = torch.nn.Linear(H, O).to(device)
            w_ih = cell.weight_ih.detach().clone().requires_grad_()
            w_hh = cell.weight_hh.detach().clone().requires_grad_()
            w_out = head.weight.detach().clone().requires_grad_()
            b_out = head.bias.detach().clone().requires_grad_()
            x = torch.randn(N, I, device=device).requires_grad_()
            h = (0.5 * torch.randn(N, H, device=device)).requires_grad_()
            c = torch.randn(N, H, device=device).requires_grad_()
            gy = torch.randn(N, O, device=device)
            gh = torch.randn(N, H, device=device)
            gc_ = torch.randn(N, H, device=device)
            gouts = (gy, gh, gc_)

            def fused():
                return zol2l_ext.lstm_step(x, h, c, w_ih, w_hh, w_out, None, b_out)

            def ref():
                return R.lstm_step_ref(x, h, c, w_ih, w_hh, w_out, None, b_out)

            def lstmcell():
                h1, c1 = cell(x, (h, c))
                return head(h1), h1, c1

            fused_in = [x, h, c, w_ih, w_hh, w_out, b_out]
            cell_in = [x, h, c, cell.weight_ih, cell.weight_hh, head.weight, head.bias]
            impls = {
                "fused": (fused, lambda o: _grads(o, fused_in, gouts)),
                "ref": (ref, lambda o: _grads(o, fused_in, gouts)),
                "cell": (lstmcell, lambda o: _grads(o, cell_in, gouts)),
            }
            ok, why = _fused_available(fused)
            with torch.no_grad():
                r_out = ref()
                err = {"ref": _maxerr(fused(), r_out) if ok else None, "cell": _maxerr(lstmcell(), r_out)}
            n_bytes = _nbytes(x, h, c, w_ih, w_hh, w_out, b_out) + (N * O + 2 * N * H) * x.element_size()
            op = f"lstm_step I={I} ({role})"
            if not ok:
                del impls["fused"]
            train = timer.time(impls)

            def no_grad(f):
                def run():
                    with torch.no_grad():
                        return f()
                return run

            infer = {k: v["fwd"] for k, v in timer.time({k: (no_grad(f), None) for k, (f, _) in impls.items()}).items()}
            kern = timer.kernel_ms(no_grad(fused)) if ok else None
            for mode in ("fwd", "bwd", "fwd+bwd"):
                log(dict(op=op, shape=label, dims=dict(N=N, I=I, H=H, O=O), mode=mode,
                         impls={k: v[mode] for k, v in train.items()}, bytes=n_bytes if mode == "fwd" else None,
                         kernel=kern if mode == "fwd" else None, err=err, note=None if ok else why))
            log(dict(op=op, shape=label, dims=dict(N=N, I=I, H=H, O=O), mode="inference", impls=infer,
                     bytes=n_bytes, kernel=kern, err=err, note=None if ok else why))
            del cell, head, x, h, c, gy, gh, gc_, impls, train, infer


def query_cases(device, timer, shapes, log):
    for B, q, d in shapes:
        torch.manual_seed(B * 7 + q + d)
        theta = torch.randn(B, d, device=device)
        scale = (torch.rand(B, d, device=device) + 0.5).requires_grad_()
        use_scale = torch.rand(B, device=device) < 0.5
        use_scale[0] = True
        seed = zol2l_ext.draw_seeds(B, device=device)
        gu = torch.randn(B, q, d, device=device)
        gp = torch.randn(B, q + 1, d, device=device)
        shape = f"B={B},q={q},d={d}"
        dims = dict(B=B, q=q, d=d)
        for with_scale in (False, True):
            sc = scale if with_scale else None
            us = use_scale if with_scale else None

            def fused(sc=sc, us=us):
                return zol2l_ext.sample_queries(theta, q, MU, scale=sc, use_scale=us, seed=seed)

            def ref(sc=sc, us=us):
                return R.sample_queries_ref(seed, theta, q, MU, scale=sc, use_scale=us)

            ok, why = _fused_available(fused)
            with torch.no_grad():
                err = {"ref": _maxerr(fused(), ref()) if ok else None}
            n_bytes = _nbytes(seed, theta, sc, us) + (B * q * d + B * (q + 1) * d) * theta.element_size()
            bwd = (lambda o: _grads(o, [scale], (gu, gp))) if with_scale else None
            impls = {"fused": (fused, bwd), "ref": (ref, bwd)} if ok else {"ref": (ref, bwd)}
            res = timer.time(impls)
            kern = timer.kernel_ms(lambda: fused(sc.detach() if sc is not None else None, us)) if ok else None
            op = "sample_queries+scale" if with_scale else "sample_queries"
            modes = ("fwd", "bwd", "fwd+bwd") if with_scale else ("fwd",)
            for mode in modes:
                log(dict(op=op, shape=shape, dims=dims, mode=mode, impls={k: v[mode] for k, v in res.items()},
                         bytes=n_bytes if mode == "fwd" else None, kernel=kern if mode == "fwd" else None, err=err,
                         note=None if ok else why))
            del res
        del theta, scale, gu, gp


def fd_cases(device, timer, shapes, log):
    for B, q, d in shapes:
        torch.manual_seed(B * 11 + q + d)
        f0 = torch.randn(B, device=device).requires_grad_()
        fq = torch.randn(B, q, device=device).requires_grad_()
        u = torch.randn(B, q, d, device=device).requires_grad_()
        gg = torch.randn(B, d, device=device)

        def fused():
            return zol2l_ext.fd_gradient(f0, fq, u, MU)

        def ref():
            return R.fd_gradient_ref(f0, fq, u, MU)

        def bwd(o):
            return _grads([o], [f0, fq, u], [gg])

        ok, why = _fused_available(fused)
        with torch.no_grad():
            err = {"ref": _maxerr([fused()], [ref()]) if ok else None}
        n_bytes = _nbytes(f0, fq, u) + B * d * u.element_size()
        impls = {"fused": (fused, bwd), "ref": (ref, bwd)} if ok else {"ref": (ref, bwd)}
        res = timer.time(impls)

        def fused_nograd():
            with torch.no_grad():
                return fused()

        kern = timer.kernel_ms(fused_nograd) if ok else None
        for mode in ("fwd", "bwd", "fwd+bwd"):
            log(dict(op="fd_gradient", shape=f"B={B},q={q},d={d}", dims=dict(B=B, q=q, d=d), mode=mode,
                     impls={k: v[mode] for k, v in res.items()}, bytes=n_bytes if mode == "fwd" else None,
                     kernel=kern if mode == "fwd" else None, err=err, note=None if ok else why))
        del f0, fq, u, gg, res


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_rev() -> Optional[str]:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) if rev else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(devices, threads) -> dict:
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "git": git_rev(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "extension": zol2l_ext._C.__file__,
        "extension_mtime_utc": datetime.datetime.fromtimestamp(
            os.path.getmtime(zol2l_ext._C.__file__), datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if "cuda" in devices:
        p = torch.cuda.get_device_properties(0)
        info.update(cuda_device=torch.cuda.get_device_name(0), cuda_capability=f"{p.major}.{p.minor}",
                    cuda_mem_gib=round(p.total_memory / 2**30, 1))
    return info


def _fmt(v, spec="8.3f", width=8):
    return " " * (width - 1) + "-" if v is None else format(v, spec)


class Table:
    HEAD = (f"{'op':<28} {'shape':<22} {'mode':<9} {'fused ms':>9} {'iqr':>7} {'ref ms':>9} {'iqr':>7} "
            f"{'ref/fus':>7} {'cell ms':>8} {'cell/fus':>8}")

    def __init__(self, device, copy_gbs):
        self.device = device
        self.copy_gbs = copy_gbs
        self.rows = []
        head = self.HEAD + (f" {'kern ms':>8} {'GB/s':>7} {'%copy':>6}" if device == "cuda" else "") + "  check"
        print(head)
        print("-" * len(head))

    def log(self, row):
        row["device"] = self.device
        im = row["impls"]
        fused = im.get("fused")
        ref, cell = im.get("ref"), im.get("cell")
        row["ratio_ref"] = ref["ms"] / fused["ms"] if fused and ref else None
        row["ratio_cell"] = cell["ms"] / fused["ms"] if fused and cell else None
        row["gbs"] = row["frac_copy"] = row["gbs_eager"] = None
        kern = row.get("kernel")
        if self.device == "cuda" and fused and row.get("bytes") and row["mode"] in ("fwd", "inference"):
            # Bandwidth of the fused forward: from the kernel-only time where measured, else the eager time.
            row["gbs_eager"] = row["bytes"] / (fused["ms"] / 1e3) / 1e9
            row["gbs"] = row["bytes"] / (kern["ms"] / 1e3) / 1e9 if kern else row["gbs_eager"]
            row["frac_copy"] = row["gbs"] / self.copy_gbs if self.copy_gbs else None
        errs = [e for e in (row.get("err") or {}).values() if e is not None]
        check = "n/a: " + row["note"] if row.get("note") else (
            "ok" if errs and max(errs) < 1e-3 else f"MISMATCH max|diff|={max(errs):.2e}" if errs else "-")
        row["check"] = check
        g = lambda d, k: d[k] if d else None  # noqa: E731
        line = (f"{row['op']:<28} {row['shape']:<22} {row['mode']:<9} {_fmt(g(fused, 'ms'), '9.3f', 9)} "
                f"{_fmt(g(fused, 'iqr_ms'), '7.3f', 7)} {_fmt(g(ref, 'ms'), '9.3f', 9)} "
                f"{_fmt(g(ref, 'iqr_ms'), '7.3f', 7)} {_fmt(row['ratio_ref'], '7.2f', 7)} "
                f"{_fmt(g(cell, 'ms'), '8.3f', 8)} {_fmt(row['ratio_cell'], '8.2f', 8)}")
        if self.device == "cuda":
            pct = None if row["frac_copy"] is None else 100 * row["frac_copy"]
            line += f" {_fmt(g(kern, 'ms'), '8.4f', 8)} {_fmt(row['gbs'], '7.1f', 7)} {_fmt(pct, '6.1f', 6)}"
        print(line + "  " + check, flush=True)
        self.rows.append(row)


def cpu_targets(rows) -> dict:
    """Fused LSTM fwd+bwd >= 3x the reference at N >= 3072; fused inference >= 3x nn.LSTMCell + head."""
    items = []
    for r in rows:
        if r["device"] != "cpu" or not r["op"].startswith("lstm_step"):
            continue
        if r["mode"] == "fwd+bwd" and r["dims"]["N"] >= 3072 and r["ratio_ref"] is not None:
            items.append(dict(target="fwd+bwd ref/fused >= 3 (N >= 3072)", op=r["op"], shape=r["shape"],
                              ratio=r["ratio_ref"], met=r["ratio_ref"] >= 3.0))
        if r["mode"] == "inference" and r["ratio_cell"] is not None:
            items.append(dict(target="inference LSTMCell+head/fused >= 3", op=r["op"], shape=r["shape"],
                              ratio=r["ratio_cell"], met=r["ratio_cell"] >= 3.0))
    return {"items": items, "all_met": bool(items) and all(i["met"] for i in items)}


def print_targets(t):
    print("\nCPU targets:")
    for tgt in ("fwd+bwd ref/fused >= 3 (N >= 3072)", "inference LSTMCell+head/fused >= 3"):
        its = [i for i in t["items"] if i["target"] == tgt]
        if not its:
            print(f"  {tgt}: not measured")
            continue
        met = all(i["met"] for i in its)
        print(f"  {tgt}: {'MET' if met else 'NOT MET'}")
        for i in its:
            print(f"    {i['op']:<26} {i['shape']:<12} {i['ratio']:6.2f}x  {'met' if i['met'] else 'NOT met'}")
    print(f"  overall: {'MET' if t['all_met'] else 'NOT MET'}")


def run_device(device, args, log_rows):
    budget = (QUICK if args.quick else FULL)[device]
    copy_gbs = None
    if device == "cuda":
        torch.cuda.init()
        copy_gbs = copy_bandwidth_gbs()
        print(f"\n== cuda: {torch.cuda.get_device_name(0)}; device-to-device copy_ {copy_gbs:.1f} GB/s "
              f"(bytes read + written, 1 GiB)")
    else:
        print(f"\n== cpu: {cpu_model()}, torch.set_num_threads({args.threads})")
    timer = Timer(device, budget)
    table = Table(device, copy_gbs)
    flt = args.filter

    def want(name):
        return flt is None or flt in name

    t0 = time.perf_counter()
    if want("lstm_step"):
        lstm_cases(device, timer, LSTM_N_QUICK if args.quick else LSTM_N, table.log)
    if want("sample_queries"):
        query_cases(device, timer, QUERY_SHAPES_QUICK if args.quick else QUERY_SHAPES, table.log)
    if want("fd_gradient"):
        fd_cases(device, timer, FD_SHAPES_QUICK if args.quick else QUERY_SHAPES, table.log)
    elapsed = time.perf_counter() - t0
    print(f"({device}: {elapsed:.0f} s)")
    log_rows.extend(table.rows)
    del timer
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"device": device, "copy_gbs": copy_gbs, "elapsed_s": elapsed, "budget": budget.__dict__}


def markdown(path: str) -> str:
    """A results JSON as a markdown table (for benchmarks/README.md)."""
    with open(path) as fh:
        d = json.load(fh)
    m = d["machine"]
    f = lambda v, spec=".3f": "-" if v is None else format(v, spec)  # noqa: E731
    cuda = any(r["device"] == "cuda" for r in d["rows"])
    lines = [f"{m['date_utc']}, torch {m['torch']}, {m.get('cuda_device') or m['cpu_model']}, "
             f"{m['cpu_count']} CPUs, threads {m['threads']}, git {m['git']}, load average at start "
             f"{f(m['loadavg_start'][0], '.1f') if m.get('loadavg_start') else '-'}, at end "
             f"{f(m['loadavg_end'][0], '.1f') if m.get('loadavg_end') else '-'}" + (" (quick)" if d["quick"] else "")
             + "".join(f", device-to-device copy {r['copy_gbs']:.0f} GB/s" for r in d["runs"] if r.get("copy_gbs")),
             "",
             "| op | shape | mode | fused ms | iqr | ref ms | iqr | ref/fused | cell ms | cell/fused |"
             + (" kern ms | GB/s | %copy |" if cuda else ""),
             "|---|---|---|--:|--:|--:|--:|--:|--:|--:|" + ("--:|--:|--:|" if cuda else "")]
    for r in d["rows"]:
        im = r["impls"]
        g = lambda k, key: im[k][key] if k in im else None  # noqa: E731
        line = (f"| {r['op']} | {r['shape']} | {r['mode']} | {f(g('fused', 'ms'))} | {f(g('fused', 'iqr_ms'))} | "
                f"{f(g('ref', 'ms'))} | {f(g('ref', 'iqr_ms'))} | {f(r['ratio_ref'], '.2f')} | {f(g('cell', 'ms'))} | "
                f"{f(r['ratio_cell'], '.2f')} |")
        if cuda:
            k = r.get("kernel")
            line += (f" {f(k['ms'] if k else None, '.4f')} | {f(r['gbs'], '.0f')} | "
                     f"{f(None if r['frac_copy'] is None else 100 * r['frac_copy'], '.1f')} |")
        lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda", "all"), default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU timing)")
    ap.add_argument("--out", default=None, help="JSON output (default benchmarks/results/ops_<device>.json)")
    ap.add_argument("--quick", action="store_true", help="small shapes, few repetitions (CI smoke run)")
    ap.add_argument("--filter", default=None, help="only ops whose name contains this (lstm_step, ...)")
    ap.add_argument("--markdown", metavar="JSON", default=None, help="print a results file as a markdown table")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            sys.exit("bench_ops: --device cuda but torch.cuda.is_available() is False")
        print("bench_ops: CUDA not available, running the CPU part only")
        devices = ["cpu"]
    torch.set_num_threads(args.threads)
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"ops_{args.device}.json")

    info = machine_info(devices, args.threads)
    print(f"torch {info['torch']} (cuda {info['torch_cuda']}), {info['cpu_model']}, {info['cpu_count']} CPUs, "
          f"threads {args.threads}, git {info['git']}, load average {info['loadavg_start']}"
          + (" [quick]" if args.quick else ""))
    load = info["loadavg_start"]
    if load and "cpu" in devices and load[0] > 0.5 * (os.cpu_count() or 1):
        print(f"WARNING: 1-minute load average {load[0]:.1f} on {os.cpu_count()} CPUs before the run: other "
              "processes compete for the cores, CPU timings will be inflated and noisy")
    rows, runs = [], []
    for dev in devices:
        runs.append(run_device(dev, args, rows))
    info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    targets = None
    if "cpu" in devices and (args.filter is None or "lstm_step" in args.filter):
        targets = cpu_targets(rows)
        print_targets(targets)

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump({"machine": info, "quick": args.quick, "filter": args.filter, "runs": runs,
                   "cpu_targets": targets, "rows": rows}, fh, indent=1)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
