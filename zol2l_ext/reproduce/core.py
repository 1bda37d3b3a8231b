"""The machinery every `zol2l reproduce` experiment shares: scales, the run context, cached sub-runs, the result file.

An experiment is a module of this package with

* ``TITLE`` (one line) and ``PAPER`` (where in the paper: "Fig. 2 and App. A.3");
* ``SCALES``: ``{"tiny": {...}, "default": {...}, "full": {...}}``, the parameters of each scale. "full" is the
  paper's scale, "default" what finishes on a 2-core CPU in under 30 minutes, "tiny" what the tests run;
* ``run(ctx) -> dict``: the measured numbers (JSON-able), from ``ctx.params``;
* ``plot(data, out_dir) -> list[str]``: the PNG files of the figure(s), written into ``out_dir``;
* ``claims(data) -> list[dict]``: the paper's claims next to what was measured, each ``{"claim": paper's words or
  a paraphrase, "measured": the numbers, "verdict": "supported" | "not supported" | "partly" | "not tested"}``.

`run_experiment` times the run, writes ``result.json`` (format ``zol2l-reproduce/1``: the experiment, scale,
parameters, seed, device, machine, git commit, wall time, command, data, claims and figure names) and the PNGs
into the output folder. Sub-runs go through `Context.cached`, which keeps each finished sub-run's numbers in
``<out>/parts/`` keyed by its parameters: an interrupted experiment resumes where it stopped, and nothing
finished is lost.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import torch

from ..evaluate import evaluate_task
from ..fileio import atomic_write_json
from ..zo.optimizers import optimizer_names

__all__ = ["FORMAT", "EXPERIMENTS", "SCALES", "VERDICTS", "BASELINES", "Context", "run_experiment", "machine_info",
           "claim", "load_result"]

FORMAT = "zol2l-reproduce/1"
#: command name -> module of this package, in the paper's order
EXPERIMENTS = {
    "fig2": "fig2_attack",
    "fig3": "fig3_binary",
    "fig4abc": "fig4abc_ablation",
    "fig4d": "fig4d_cosine",
    "fig4e": "fig4e_trajectory",
    "fig8": "fig8_dimension",
    "fig9": "fig9_perturbation",
    "fig10": "fig10_bernoulli",
    "fig11": "fig11_szvrg",
    "table1": "table1_examples",
}
SCALES = ("tiny", "default", "full")
VERDICTS = ("supported", "partly", "inconclusive", "not supported", "not tested")
#: the baselines the learned optimizer is compared with: the registry's tunable optimizers (ZO-SGD, ZO-signSGD,
#: ZO-ADAM), in its order
BASELINES = list(optimizer_names(tunable=True))


def claim(text: str, measured: str, verdict: str) -> Dict[str, str]:
    """One row of an experiment's claims table (``verdict`` one of `VERDICTS`)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return {"claim": text, "measured": measured, "verdict": verdict}


def _json_key(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Context:
    """What an experiment's ``run`` gets: its parameters and where and how to run."""

    name: str
    scale: str
    params: Dict[str, Any]
    out_dir: str
    data_root: Optional[str] = None
    device: str = "cpu"
    seed: int = 0
    progress: bool = True
    fresh: bool = False
    log_lines: list = field(default_factory=list)
    reused_seconds: float = 0.0  # the recorded wall time of sub-runs loaded from <out>/parts/ instead of run
    _ran: set = field(default_factory=set)

    def log(self, msg: str) -> None:
        line = f"[{self.name} {self.scale}] {msg}"
        self.log_lines.append(line)
        print(line, file=sys.stderr, flush=True)

    def cached(self, key: str, spec: Dict[str, Any], fn: Callable[[], Any]) -> Any:
        """``fn()``'s JSON-able result, kept in ``<out>/parts/<key>.json`` with ``spec`` (the sub-run's parameters).

        A rerun with the same ``spec`` (and device, seed) loads it instead of running again; ``fresh`` ignores it."""
        spec = {**spec, "device": self.device, "seed": self.seed}
        path = os.path.join(self.out_dir, "parts", f"{key}.json")
        if not self.fresh and os.path.exists(path):
            try:
                with open(path) as f:
                    saved = json.load(f)
                if saved.get("spec_key") == _json_key(spec):
                    self.log(f"{key}: reusing the finished sub-run in {path}")
                    if key not in self._ran:  # a sub-run shared within this run costs once
                        self.reused_seconds += float(saved.get("wall_seconds", 0.0))
                        self._ran.add(key)
                    return saved["value"]
            except (OSError, ValueError, KeyError):
                pass  # unreadable or older: run again
        t0 = time.perf_counter()
        self._ran.add(key)
        value = fn()
        atomic_write_json({"spec": spec, "spec_key": _json_key(spec), "value": value,
                           "wall_seconds": round(time.perf_counter() - t0, 2)}, path)
        self.log(f"{key}: done in {time.perf_counter() - t0:.1f} s")
        return value

    def evaluate(self, task, optimizers, items: int, trials: int, steps: Optional[int] = None, part: str = "test",
                 learned=None, tuned=None, optimizer_kwargs=None, rename: Optional[Dict[str, str]] = None,
                 seed: Optional[int] = None) -> Dict[str, Any]:
        """`evaluate.evaluate_task` on this context's device and data root; ``rename`` maps optimizer names of the
        result (e.g. {"zo-lstm": "zo-lstm-finetune"})."""

        res = evaluate_task(task, part=part, optimizers=optimizers, trials=trials, steps=steps, items=items,
                            seed=self.seed if seed is None else seed, learned=learned, tuned=tuned,
                            device=self.device, data_root=self.data_root, progress=self.progress,
                            optimizer_kwargs=optimizer_kwargs)
        if rename:
            res["optimizers"] = {rename.get(k, k): v for k, v in res["optimizers"].items()}
        return res


def machine_info(device: str) -> Dict[str, Any]:
    """The machine a result was measured on: CPU model and count, torch, and the GPU where one was used."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _git_commit() -> Optional[str]:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def experiment_module(name: str):
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"{__package__}.{EXPERIMENTS[name]}")


def run_experiment(name: str, scale: str = "default", out_dir: Optional[str] = None, data_root: Optional[str] = None,
                   device: str = "cpu", seed: int = 0, progress: bool = True, fresh: bool = False,
                   overrides: Optional[Dict[str, Any]] = None, command: Optional[str] = None) -> Dict[str, Any]:
    """Runs experiment ``name`` at ``scale``, writes result.json and the figure(s) into ``out_dir`` (default
    runs/reproduce/<name>-<scale>) and returns the result dict. ``overrides`` replace parameters of the scale."""
    mod = experiment_module(name)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    params = dict(mod.SCALES[scale])
    for k, v in (overrides or {}).items():
        if k not in params:
            raise ValueError(f"{name}: unknown parameter {k!r}; parameters: {', '.join(params)}")
        params[k] = v
    out_dir = out_dir or os.path.join("runs", "reproduce", f"{name}-{scale}")
    os.makedirs(out_dir, exist_ok=True)
    ctx = Context(name, scale, params, out_dir, data_root=data_root, device=str(device), seed=int(seed),
                  progress=progress, fresh=fresh)
    ctx.log(f"{mod.TITLE} ({mod.PAPER}); parameters {params}; device {device}; output {out_dir}")
    t0 = time.perf_counter()
    data = mod.run(ctx)
    # a resumed run counts the time its reused sub-runs took when they ran, so the wall time stays the cost
    wall = time.perf_counter() - t0 + ctx.reused_seconds
    figures = [os.path.basename(p) for p in mod.plot(data, out_dir)]
    result = {
        "format": FORMAT, "experiment": name, "title": mod.TITLE, "paper": mod.PAPER, "scale": scale,
        "params": params, "seed": int(seed), "device": str(device), "machine": machine_info(str(device)),
        "git": _git_commit(), "wall_seconds": round(wall, 1), "reused_seconds": round(ctx.reused_seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command or f"zol2l reproduce {name}" + ("" if scale == "default" else f" --scale {scale}"),
        "claims": mod.claims(data), "figures": figures, "data": data,
    }
    atomic_write_json(result, os.path.join(out_dir, "result.json"))
    ctx.log(f"finished in {wall:.1f} s; wrote result.json and {', '.join(figures)} into {out_dir}")
    return result


def load_result(path: str) -> Dict[str, Any]:
    with open(path) as f:
        res = json.load(f)
    if res.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} result (format {res.get('format')!r})")
    return res
