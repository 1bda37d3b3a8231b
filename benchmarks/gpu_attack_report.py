"""bench_gpu_attack.py's table (plain text or markdown), its notes (skips, failures, checks) and --markdown."""
from __future__ import annotations

import json

from common import fmt, table
from gpu_attack_cases import TARGET_OUTSIDE


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
            cells = [r["case"], r["amp"], name, str(r["queries_per_step"]), fmt(eg.get("floor_ms")),
                     fmt(eg.get("step_ms")), _pct(eg.get("outside_frac")), fmt(eg.get("queries_per_s"), ".0f"),
                     fmt(gr.get("floor_ms")), fmt(gr.get("step_ms")), _pct(gr.get("outside_frac")),
                     fmt(gr.get("queries_per_s"), ".0f"), fmt(rf.get("step_ms")), fmt(rf.get("ref_over_fused")),
                     fmt(rg.get("step_ms")), fmt(rg.get("ref_over_fused")),
                     fmt(c.get("ms")) if "ms" in c else ("failed" if "error" in c else "-"),
                     _pct(c.get("outside_frac")), ",".join(met) if met else "no"]
            rows.append(cells)
    return table(head, rows, md)


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

