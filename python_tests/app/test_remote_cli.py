"""`zol2l attack --endpoint` and `zol2l serve` on 127.0.0.1: the same results as a local attack under 10%
injected errors, a clean stop with saved progress when the endpoint goes down, and the same command resuming."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

# `zol2l attack digits` runs the model with 1 torch thread; the servers below too, so that their forwards round
# the same way and the results compare bit for bit

from zol2l_ext import cli
from zol2l_ext import data as D
from zol2l_ext import models as M
from zol2l_ext.remote import RemoteModel
from zol2l_ext.serve import Faults, ScoringServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the shared helpers, under any import mode
from test_kill_resume import kill_once_written  # noqa: E402
from test_remote import FailsAfter  # noqa: E402

ARGS = ["--steps", "6", "--trials", "2", "--count", "3", "--optimizers", "zo-sgd,zo-adam", "--tuned", "none",
        "--no-progress"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits target, trained once into a module cache ($ZOL2L_CACHE)."""
    d = tmp_path_factory.mktemp("zol2l_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv(D.ENV_CACHE, str(d))
    yield M.load_target("digits-cnn", progress=False).model
    mp.undo()


def _run(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _results(path):
    r = json.loads((path / "results.json").read_text())
    r["config"] = {k: v for k, v in r["config"].items() if k not in ("target", "target_source", "wall_seconds_total")}
    for e in r["optimizers"].values():
        e.pop("wall_seconds")
    return r


def test_attack_endpoint_equals_local_attack_under_injected_errors(digits, tmp_path, capsys):
    rc, _, err = _run(["attack", *ARGS, "--out", str(tmp_path / "local")], capsys)
    assert rc == 0, err
    with ScoringServer(digits, faults=Faults(error_rate=0.1, latency=0.005, seed=1), input_shape=(1, 8, 8),
                       threads=1) as srv:
        rc, out, err = _run(["attack", *ARGS, "--out", str(tmp_path / "remote"), "--endpoint", srv.url,
                             "--endpoint-batch", "4096"], capsys)  # one forward per step, as local
        served = srv.stats()
    assert rc == 0, err
    remote = _results(tmp_path / "remote")
    ep = remote.pop("endpoint")
    assert remote == _results(tmp_path / "local")
    assert ep["failed_requests"] == 0 and ep["retried_requests"] > 0
    assert ep["answered_evaluations"] == served["answered_evaluations"]
    assert ep["attack_queries"] == 2 * 6 * 6 * 11 and "endpoint: url" in out
    assert not (tmp_path / "remote" / "resume.pt").exists()


def test_attack_endpoint_down_stops_cleanly_and_the_same_command_resumes(digits, tmp_path, capsys):
    rc, _, err = _run(["attack", *ARGS, "--out", str(tmp_path / "local")], capsys)
    assert rc == 0, err
    out_dir = tmp_path / "remote"
    with ScoringServer(FailsAfter(digits, 12), threads=1) as srv:
        url = srv.url
        argv = ["attack", *ARGS, "--out", str(out_dir), "--endpoint", url, "--endpoint-retries", "1",
                "--checkpoint-every", "2"]
        rc, _, err = _run(argv, capsys)
    assert rc == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("zol2l attack: error: endpoint ") and "not scored after 1 retries" in line
    assert f"progress saved in {out_dir / 'resume.pt'}" in line and "Traceback" not in err
    assert (out_dir / "resume.pt").exists() and not (out_dir / "results.json").exists()
    port = int(url.split(":")[2].split("/")[0])
    with ScoringServer(digits, port=port, threads=1):  # back up on the same address: the same command resumes
        rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    remote = _results(out_dir)
    assert remote.pop("endpoint")["failed_requests"] == 1
    assert remote == _results(tmp_path / "local")
    assert not (out_dir / "resume.pt").exists()


def test_endpoint_and_target_together_is_an_error(digits, capsys):
    rc, _, err = _run(["attack", "--endpoint", "http://127.0.0.1:9/predict", "--target", "digits-cnn"], capsys)
    assert rc == 2 and "give one" in err


def test_serve_command_serves_and_injects_faults(digits, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "zol2l_ext.cli", "serve", "--port", "0", "--error-rate", "0.3", "--fault-seed", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert " at http://127.0.0.1:" in line and "30% errors" in line, (line, proc.stderr.read()
                                                                          if proc.poll() is not None else "")
        url = line.split(" at ")[1].split()[0]
        remote = RemoteModel(url, batch_size=10, retries=10, backoff=0.001)
        x = torch.rand(50, 1, 8, 8)
        with torch.no_grad():
            assert torch.allclose(remote(x), digits(x), atol=1e-6)
        assert remote.stats()["retried_requests"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("argv, message", [
    (["--error-rate", "1.5"], "argument --error-rate: must be a probability in [0, 1)"),
    (["--latency", "-1"], "argument --latency: must be a number >= 0"),
])
def test_serve_rejects_bad_fault_options(argv, message, capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", *argv])
    assert message in capsys.readouterr().err


def test_attack_killed_mid_run_resumes_to_the_uninterrupted_results(digits, tmp_path, capsys):
    args = ["--steps", "30", *ARGS[2:]]
    rc, _, err = _run(["attack", *args, "--out", str(tmp_path / "local")], capsys)
    assert rc == 0, err
    out_dir = tmp_path / "remote"
    state = out_dir / "resume.pt"
    # latency: slow enough to be caught mid-run
    with ScoringServer(digits, faults=Faults(latency=0.03, seed=0), threads=1) as srv:
        argv = ["attack", *args, "--out", str(out_dir), "--endpoint", srv.url, "--checkpoint-every", "2"]
        proc = subprocess.Popen([sys.executable, "-m", "zol2l_ext.cli", *argv], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        kill_once_written(proc, state)
        assert not (out_dir / "results.json").exists()
        rc, _, err = _run(argv, capsys)  # the same command
    assert rc == 0, err
    remote = _results(out_dir)
    remote.pop("endpoint")
    assert remote == _results(tmp_path / "local") and not state.exists()
