"""Code the benchmarks share: the timing library, the machine record, paths as results record them, formatting.

Every benchmark is a script (``python benchmarks/bench_X.py``), so its own folder is on sys.path and
``from common import ...`` finds this file; importing it also puts the repository root on sys.path, so that a
checkout runs without installing the package.

Timing (`Timer`): CPU with time.perf_counter (or another clock) around each call; CUDA with torch.cuda.Event
pairs on the current stream, read after torch.cuda.synchronize(), never a wall clock. Both warm up, group fast
calls so that one sample lasts at least `Budget.min_sample_s`, and report the median and the interquartile range
of the per-call time over the samples; the number of samples adapts to the call time (`Budget`).

Results files name paths relative to the repository root (`repo_relative`), never a machine's absolute folders.
"""
from __future__ import annotations

import copy
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
from zol2l_ext import data as D  # noqa: E402
from zol2l_ext.fileio import portable_path  # noqa: E402


def nchw_model(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with every parameter in the default (NCHW) memory format: what the library's targets ran
    before `zol2l_ext.models.channels_last_on_cpu`, and what a plain PyTorch program runs. A clone, not
    .contiguous(): a weight with one input channel is contiguous in both formats, and .contiguous() would keep its
    channels-last strides, which make the convolution's output (and so every later layer) channels-last again."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.data = p.data.clone(memory_format=torch.contiguous_format)
    return m


# ----------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------
def no_grad_fn(f: Callable) -> Callable:
    """f as a timed implementation without autograd: a function that calls it under torch.no_grad()."""
    def run():
        with torch.no_grad():
            return f()
    return run


@dataclass
class Budget:
    target_s: float  # sampling time aimed at for one timed loop
    min_reps: int  # samples wanted at least (unless the cap stops the loop first)
    max_reps: int
    min_sample_s: float  # fast calls are grouped so that one sample lasts at least this long
    slow_call_s: float  # warm-up calls at least this long are kept as samples
    cap_s: float  # no new sample is started once the loop would run past this (a longer call: one sample)


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


# Clocks a benchmark may sample with (--clock). wall: what a user waits; cpu: the CPU time the process got
# (time.process_time, all its threads), which a loaded machine does not inflate by descheduling: meaningful with
# one thread, where no thread waits for another.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


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


class SampleTimer(Timer):
    """`Timer` that also keeps the per-call time of every sample (for paired step / floor ratios)."""

    def _result(self, s, two_phase):
        out = super()._result(s, two_phase)
        out["fwd"]["samples_ms"] = [self._resolve(m, s["inner"])[0] * 1e3 for m in s["samples"]]
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
# The machine, the data root and paths as results record them
# ----------------------------------------------------------------------------------------------------------
def repo_relative(path: Optional[str]) -> Optional[str]:
    """``path`` as a results file records it: `zol2l_ext.fileio.portable_path` relative to the repository root
    (a data root next to the checkout becomes ../shared/data; a far folder its last component only)."""
    return portable_path(path, ROOT, far="name")


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
    """Date, versions, CPU, threads, git revision, load average and the extension (its repository path)."""
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
        "extension": repo_relative(zol2l_ext._C.__file__),
        "cpu_isa": zol2l_ext._C.cpu_isa(),  # the build of the CPU kernels in use (ZOL2L_CPU_ISA caps it)
        "extension_mtime_utc": datetime.datetime.fromtimestamp(
            os.path.getmtime(zol2l_ext._C.__file__), datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if "cuda" in devices:
        p = torch.cuda.get_device_properties(0)
        info.update(cuda_device=torch.cuda.get_device_name(0), cuda_capability=f"{p.major}.{p.minor}",
                    cuda_mem_gib=round(p.total_memory / 2**30, 1))
    return info


def find_data_root(arg):
    """--data-root, else $ZOL2L_DATA, else <repo>/../shared/data or <repo>/shared/data; None if none exists."""
    cands = [arg] if arg else ([os.environ[D.ENV_DATA]] if os.environ.get(D.ENV_DATA) else [])
    if not cands:
        cands = [os.path.join(ROOT, "..", "shared", "data"), os.path.join(ROOT, "shared", "data")]
    for c in cands:
        if c and os.path.isdir(c):
            return os.path.abspath(c)
    return None


# ----------------------------------------------------------------------------------------------------------
# Formatting and writing
# ----------------------------------------------------------------------------------------------------------
def fmt(v, spec=".2f"):
    """A number for a table cell: "-" for a missing value."""
    return "-" if v is None else format(v, spec)


def table(head, rows, md=False, text_columns=3):
    """Lines of a table of string cells: markdown, or plain text in aligned columns (the first ``text_columns``
    left-aligned, the numbers after them right-aligned) under a rule."""
    if md:
        rule = "|" + "|".join("---" if i < text_columns else "--:" for i in range(len(head))) + "|"
        return ["| " + " | ".join(head) + " |", rule] + ["| " + " | ".join(x) + " |" for x in rows]
    w = [max(len(head[i]), *(len(x[i]) for x in rows)) if rows else len(head[i]) for i in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w[i]) if i < text_columns else c.rjust(w[i]) for i, c in enumerate(cells))
    return [line(head), "-" * len(line(head))] + [line(x) for x in rows]


def error_line(e: BaseException) -> str:
    """An exception as one line for a table note or a JSON field: its type and the first line of its message."""
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"


def write_json(path, payload):
    """Writes ``payload`` to ``path`` atomically (a temporary file, then a rename), creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=1)
    os.replace(tmp, path)
