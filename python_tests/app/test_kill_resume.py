"""kill -9 of a meta-training run mid-way, then `zol2l train --resume`: the same weights and log as a run that was
never interrupted (issue 13). The attack's counterpart is in test_remote_cli.py (--endpoint keeps the progress)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch

from zol2l_ext.zo.lstm_optimizer import LearnedZO

# the binary task at its smallest: a few seconds of training, a checkpoint after every update
TRAIN = ["train", "binary", "--stage", "1", "--epochs", "4", "--updates-per-epoch", "3", "--batch", "2",
         "--horizon", "20", "--unroll", "10", "--threads", "1", "--no-progress"]


def kill_once_written(proc, path, timeout=300):
    """SIGKILL ``proc`` as soon as ``path`` exists (its first checkpoint), while it still runs."""
    try:
        deadline = time.monotonic() + timeout
        while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
        assert path.exists(), f"no {path.name} within {timeout} s"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _train(out, init, *extra):
    # --init: fixed starting weights (a fresh model's are drawn from torch's unseeded generator, so two runs from
    # scratch differ; from the same weights a run is bit-reproducible)
    cmd = [sys.executable, "-m", "zol2l_ext.cli", *TRAIN, "--init", str(init), "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _epochs(out):
    """The per-epoch records of log.json without the wall times."""
    log = json.loads((out / "log.json").read_text())
    rows = log["epochs"] if isinstance(log, dict) and "epochs" in log else log
    drop = ("seconds", "wall", "time")
    return json.loads(json.dumps(rows), object_hook=lambda d: {k: v for k, v in d.items()
                                                                  if not any(w in k for w in drop)})


def test_training_killed_mid_way_resumes_to_the_uninterrupted_weights(tmp_path):
    init = tmp_path / "init.pt"
    torch.manual_seed(0)
    LearnedZO().save(str(init))
    full = tmp_path / "full"
    p = _train(full, init)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    p.stderr.close()

    cut = tmp_path / "cut"
    kill_once_written(_train(cut, init), cut / "checkpoint.pt")
    p = _train(cut, init, "--resume")
    err = p.communicate(timeout=300)[1]
    assert p.returncode == 0 and "resumed from" in err, err

    a, b = LearnedZO.load(str(full / "best.pt")), LearnedZO.load(str(cut / "best.pt"))
    for (k, v), (k2, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, w), k
    assert _epochs(cut) == _epochs(full)


def test_local_attack_killed_mid_run_resumes_to_the_uninterrupted_results(tmp_path, monkeypatch):
    """`zol2l attack --checkpoint-every N` on a local model: SIGKILL after a save, then the same command."""
    from zol2l_ext import data as D
    from zol2l_ext import models as M

    monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))
    M.load_target("digits-cnn", progress=False)  # trained once, into the cache the children read
    args = ["attack", "--steps", "300", "--trials", "2", "--count", "4", "--optimizers", "zo-sgd,zo-adam",
            "--tuned", "none", "--no-progress", "--checkpoint-every", "1"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    runs = []
    for out in (full, cut):
        runs.append(subprocess.Popen([sys.executable, "-m", "zol2l_ext.cli", *args, "--out", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    kill_once_written(runs[1], cut / "resume.pt")
    assert runs[0].wait(timeout=300) == 0, runs[0].stderr.read()
    runs[0].stderr.close()
    assert not (cut / "results.json").exists()
    p = subprocess.run([sys.executable, "-m", "zol2l_ext.cli", *args, "--out", str(cut)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr

    def results(out):
        r = json.loads((out / "results.json").read_text())
        r["config"].pop("wall_seconds_total")
        for e in r["optimizers"].values():
            e.pop("wall_seconds")
        return r

    assert results(cut) == results(full) and not (cut / "resume.pt").exists()
