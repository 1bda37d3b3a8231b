"""`zol2l attack` under torchrun (2 gloo processes on the CPU): the rows sharded by problem id, gathered on rank 0.

The gathered result is compared with the one-process run of the same command. Queries, successes and the steps
of first success must be identical; losses and distortions agree to float32 rounding only, because the target's
BLAS picks its kernels by batch size (a shard sends the model fewer images per call; docs/DISTRIBUTED.md).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

from zol2l_ext import cli
from zol2l_ext import data as D
from zol2l_ext import distributed as DI
from zol2l_ext import models as M

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch has no torch.distributed gloo backend")

TINY = ["attack", "digits", "--trials", "1", "--steps", "6", "--q", "4", "--optimizers", "zo-sgd,zo-signsgd",
        "--no-progress"]
EXACT = ("success", "ever_success", "first_success_step", "first_success_queries", "queries")
CLOSE = ("final_loss", "l1", "l2", "loss_mean")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One user cache, with the digits CNN trained once here, so that the ranks only read it."""
    d = tmp_path_factory.mktemp("zol2l_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv(D.ENV_CACHE, str(d))
    M.load_target("digits-cnn", dataset="digits", progress=False)
    yield d
    mp.undo()


def torchrun(args, cwd, nproc=2, env=None):
    # --standalone: a rendezvous on a free local port, so that parallel test runs do not collide
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "zol2l_ext.cli", *args]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **{DI.ENV_TIMEOUT: "60"}, **(env or {}))
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=240, check=False)


TARGET_MODULE = """\
import os
import signal
import time
import torch
from zol2l_ext import models as M


class {cls}(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = M.load_target("digits-cnn", dataset="digits", progress=False).model
        self.calls = 0

    def forward(self, x):
        self.calls += 1
{body}
"""


def write_target(folder, module, cls, body):
    """A target ``module:cls`` in ``folder``: the digits CNN whose forward runs ``body`` (code that may read
    ``self.calls``, ``x`` and ``self.net``, and ends with a return) for the fault a test injects."""
    (folder / f"{module}.py").write_text(TARGET_MODULE.format(cls=cls, body=textwrap.indent(textwrap.dedent(body),
                                                                                           " " * 8)))


def results(folder):
    with open(os.path.join(folder, "results.json")) as f:
        return json.load(f)


def assert_same_rows(one, many):
    assert one["config"]["image_ids"] == many["config"]["image_ids"]
    for name, entry in one["optimizers"].items():
        other = many["optimizers"][name]
        assert other["aggregate"]["rows"] == entry["aggregate"]["rows"]
        for a, b in zip(entry["per_image"], other["per_image"], strict=True):
            for k in EXACT:
                assert a[k] == b[k], (name, k)
            for k in CLOSE:
                assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), (name, k)
        assert other["query_axis"] == entry["query_axis"]


@pytest.mark.parametrize("count", [3, 1], ids=["uneven-shards", "more-ranks-than-rows"])
def test_two_processes_gather_the_one_process_result(cache, tmp_path, count):
    args = TINY + ["--count", str(count), "--seed", "5"]
    assert cli.main(args + ["--out", str(tmp_path / "one")]) == 0
    p = torchrun(args + ["--out", "two"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_rows(results(tmp_path / "one"), results(tmp_path / "two"))
    assert "sharded over 2 processes" in p.stderr
    assert p.stdout.count("wrote ") == 1  # rank 0 alone reports
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))


def test_a_batch_invariant_target_gives_bit_identical_rows(cache, tmp_path):
    # The only thing that differs between a shard and the whole batch is the target's batch size; a target that
    # scores each image alone makes every per-row number identical, losses and distortions included
    write_target(tmp_path, "rowwise_target", "Rowwise",
                 "return torch.cat([self.net(x[i:i + 1]) for i in range(x.shape[0])])")
    args = TINY + ["--count", "3", "--seed", "4", "--optimizers", "zo-sgd,zo-lstm", "--target",
                   "rowwise_target:Rowwise"]
    env = {"PYTHONPATH": str(tmp_path)}
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(tmp_path))
    try:
        assert cli.main(args + ["--out", str(tmp_path / "one")]) == 0
    finally:
        mp.undo()
    p = torchrun(args + ["--out", "two"], cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    one, two = results(tmp_path / "one"), results(tmp_path / "two")
    for name, entry in one["optimizers"].items():
        for a, b in zip(entry["per_image"], two["optimizers"][name]["per_image"], strict=True):
            for k in EXACT + CLOSE:
                assert a[k] == b[k], (name, k)


def test_a_failing_rank_ends_the_run_and_the_rerun_keeps_the_finished_shard(cache, tmp_path):
    # rank 1's black box fails once rank 0 has kept finished rows (FAIL_RANK1 set), so that the rerun of the same
    # command must take those from rank 0's kept shard and redo rank 1's
    write_target(tmp_path, "flaky_target", "FailsOnRank1", """
        if os.environ.get("FAIL_RANK1") and os.environ.get("RANK") == "1" and self.calls > 3:
            for _ in range(600):
                if os.path.exists(os.path.join("out", "shards", "rank0-of-2.pt")):
                    break
                time.sleep(0.1)
            raise RuntimeError("black box of rank 1 broke")
        return self.net(x)
        """)
    args = TINY + ["--count", "4", "--seed", "2"]
    flaky = args + ["--target", "flaky_target:FailsOnRank1", "--out", "out"]
    env = {"PYTHONPATH": str(tmp_path)}
    p = torchrun(flaky, cwd=tmp_path, env=dict(env, FAIL_RANK1="1"))
    assert p.returncode != 0
    assert "black box of rank 1 broke" in p.stderr
    assert not (tmp_path / "out" / "results.json").exists()
    assert os.listdir(tmp_path / "out" / "shards") == ["rank0-of-2.pt"]

    p = torchrun(flaky, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "rank 0 kept its finished rows" in p.stderr and "rank 1 kept" not in p.stderr
    assert not (tmp_path / "out" / "shards").exists()
    assert cli.main(args + ["--out", str(tmp_path / "one")]) == 0
    assert_same_rows(results(tmp_path / "one"), results(tmp_path / "out"))


def test_a_killed_rank_resumes_from_its_checkpoint_to_the_uninterrupted_result(cache, tmp_path):
    # rank 1 is killed (SIGKILL: no handler runs) in the middle of its shard; with --checkpoint-every 2 it had
    # saved its live state, so the same command resumes it there and ends with the one-process run's rows
    write_target(tmp_path, "killed_target", "KilledOnRank1", """
        if os.environ.get("KILL_RANK1") and os.environ.get("RANK") == "1" and self.calls > 7:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.net(x)
        """)
    args = TINY + ["--count", "4", "--seed", "3", "--steps", "12"]
    killed = args + ["--target", "killed_target:KilledOnRank1", "--out", "out", "--checkpoint-every", "2"]
    env = {"PYTHONPATH": str(tmp_path)}
    p = torchrun(killed, cwd=tmp_path, env=dict(env, KILL_RANK1="1"))
    assert p.returncode != 0
    assert not (tmp_path / "out" / "results.json").exists()
    kept = torch.load(tmp_path / "out" / "shards" / "rank1-of-2.pt", weights_only=True)
    assert kept["done"] == {} and kept["partial"]["zo-sgd"]["t"] >= 2  # killed mid-way, after a checkpoint

    p = torchrun(killed, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"rank 1 resumes zo-sgd at step {kept['partial']['zo-sgd']['t']}" in p.stderr
    assert not (tmp_path / "out" / "shards").exists()
    assert cli.main(args + ["--out", str(tmp_path / "one")]) == 0
    assert_same_rows(results(tmp_path / "one"), results(tmp_path / "out"))


def test_rank_0_progress_bar_counts_every_rank_rows(cache, tmp_path):
    # 3 rows x 6 steps x 1 optimizer = 18 row-steps, 12 of them rank 0's: the bar reaches 18 only with rank 1's
    args = [a for a in TINY if a != "--no-progress"] + ["--progress", "--count", "3", "--optimizers", "zo-sgd",
                                                        "--out", "two"]
    p = torchrun(args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "attack, 2 ranks" in p.stderr
    assert "18/18" in p.stderr, p.stderr[-2000:]


def test_shard_rows_cover_every_row_once():
    for n in range(9):
        for world in range(1, 5):
            blocks = [DI.shard_rows(n, r, world) for r in range(world)]
            assert [r for b in blocks for r in b] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_torchrun_training_resumes_to_the_uninterrupted_run(tmp_path):
    """`zol2l train` under torchrun: stopped after epoch 1 and resumed with --resume, it ends where the
    uninterrupted 2-process run ends (rank 0 alone writes the checkpoint; every rank resumes from it)."""
    base = ["train", "binary", "--updates-per-epoch", "1", "--batch", "2", "--horizon", "10", "--unroll", "5",
            "--val-steps", "5", "--no-progress"]
    p = torchrun(base + ["--epochs", "2", "--out", "full"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    p = torchrun(base + ["--epochs", "1", "--out", "part"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    p = torchrun(base + ["--epochs", "2", "--out", "part", "--resume"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "resumed" in p.stderr
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    part = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert full["update_count"] == part["update_count"] == 2
    a, b = full["model"]["state_dict"], part["model"]["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_setup_notes_come_from_rank_0_only(cache, tmp_path):
    p = torchrun(TINY + ["--count", "2", "--out", "two"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    notes = [line for line in p.stderr.splitlines() if line.startswith("zol2l: learning rates from")]
    assert len(notes) == 1, p.stderr[-2000:]  # not once per process


def test_the_backend_is_gloo_with_nccl_added_for_cuda_runs(monkeypatch):
    monkeypatch.delenv(DI.ENV_BACKEND, raising=False)
    assert DI.backend_for(None) == DI.backend_for(torch.device("cpu")) == "gloo"
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    assert DI.backend_for(torch.device("cuda")) == "cpu:gloo,cuda:nccl"  # object collectives stay on gloo
    monkeypatch.setattr(dist, "is_nccl_available", lambda: False)
    assert DI.backend_for(torch.device("cuda")) == "gloo"
    monkeypatch.setenv(DI.ENV_BACKEND, "gloo")
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    assert DI.backend_for(torch.device("cuda")) == "gloo"


def test_a_sharded_attack_keeps_the_callers_callback():
    """The shard's progress callback is added to a caller's minimize callback, not put in its place: the caller's
    sees every step and can still stop the run (in-process, one rank: no process group needed)."""
    from zol2l_ext import attack as A
    from zol2l_ext.digits import load_digits_split

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.LogSoftmax(dim=1)).eval()
    images = load_digits_split()[2][:3].contiguous()
    labels = model(images).argmax(1)
    seen = []

    def stop_after_3(info):
        seen.append(info.step)
        return info.step >= 2

    out = A.run_attack("digits", images, labels, model, ["zo-sgd"], q=3, steps=10, trials=1, lrs={"zo-sgd": 0.3},
                       shard=DI.Dist(0, 1), minimize_kwargs={"callback": stop_after_3}, progress=False)
    assert seen == [0, 1, 2]
    assert out.results["optimizers"]["zo-sgd"]["aggregate"]["mean_queries"] == 3 * (3 + 1)  # stopped after 3 steps
