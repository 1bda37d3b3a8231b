#!/usr/bin/env python3
"""Kernel benchmark of the fused zol2l ops against their pure-PyTorch references (and nn.LSTMCell).

The ops: lstm_step, sample_queries and fd_gradient (ops_cases.py), and the CPU-only helpers learned_update_step,
learned_query_step, attack_pixel_images and splitmix64 against the tensor ops they replace (ops_cases_cpu_steps.py).

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
import json
import os
import sys
import time

import torch

from common import ROOT, Budget, Timer, copy_bandwidth_gbs, cpu_model, fmt, machine_info, write_json
from ops_cases import fd_cases, lstm_cases, query_cases
from ops_cases_cpu_steps import (IMAGE_SHAPES, IMAGE_SHAPES_QUICK, KEY_SIZES, KEY_SIZES_QUICK, STEP_SHAPES,
                                 STEP_SHAPES_QUICK, attack_image_cases, learned_step_cases, splitmix64_cases)

# Shapes (the timing budgets below: see common.Budget)
LSTM_N = [("N=784", 784), ("N=3072", 3072), ("N=150528", 150528), ("N=100x3072", 100 * 3072)]
LSTM_N_QUICK = LSTM_N[:2]
QUERY_SHAPES = [(1, 20, 784), (100, 20, 784), (100, 50, 3072), (8, 20, 150528)]
QUERY_SHAPES_QUICK = QUERY_SHAPES[:1]
FD_SHAPES_QUICK = QUERY_SHAPES[:2]

# (--filter name, cases, quick shapes, full shapes), in the order of the table
CASE_GROUPS = [
    ("lstm_step", lstm_cases, LSTM_N_QUICK, LSTM_N),
    ("sample_queries", query_cases, QUERY_SHAPES_QUICK, QUERY_SHAPES),
    ("fd_gradient", fd_cases, FD_SHAPES_QUICK, QUERY_SHAPES),
    ("learned_", learned_step_cases, STEP_SHAPES_QUICK, STEP_SHAPES),
    ("attack_pixel_images", attack_image_cases, IMAGE_SHAPES_QUICK, IMAGE_SHAPES),
    ("splitmix64", splitmix64_cases, KEY_SIZES_QUICK, KEY_SIZES),
]

FULL = {"cpu": Budget(0.5, 5, 200, 2e-3, 1.5, 14.0), "cuda": Budget(0.25, 10, 50, 1e-3, 1.5, 10.0)}
QUICK = {"cpu": Budget(0.06, 3, 30, 1e-3, 0.3, 1.5), "cuda": Budget(0.05, 5, 30, 5e-4, 0.3, 1.5)}


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------
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
    for name, cases, quick, full in CASE_GROUPS:
        if want(name):
            cases(device, timer, quick if args.quick else full, table.log)
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
    f = lambda v, spec=".3f": fmt(v, spec)  # noqa: E731
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

    write_json(out, {"machine": info, "quick": args.quick, "filter": args.filter, "runs": runs,
                     "cpu_targets": targets, "rows": rows})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
