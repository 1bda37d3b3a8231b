"""Bad files and folders give one line that names the file, and no traceback (issue 13's reliability suite).

Each case writes its own broken file (no data root needed): a corrupt or truncated pretrained optimizer, tuning
JSON, MNIST IDX file, CIFAR-10 npz and attack progress file, progress of another attack, and an output folder
that cannot be written (refused before any work).
"""
from __future__ import annotations

import os
import struct
import sys

import numpy as np
import pytest

from zol2l_ext import cli
from zol2l_ext import data as D

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the shared helpers, under any import mode
from test_cli import cache  # noqa: E402,F401  (the module's user cache, where the digits CNN trains once)

QUICK = ["--steps", "2", "--count", "1", "--trials", "1", "--no-progress"]


def _one_line_error(argv, capsys, *needles):
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err, err
    line = err[-1]
    assert line.startswith(f"zol2l {argv[0]}: error: "), err
    assert not any("Traceback" in e for e in err)
    for n in needles:
        assert str(n) in line, (n, line)
    return line


def _truncated(src, dst, keep=300):
    with open(src, "rb") as f:
        dst.write_bytes(f.read()[:keep])
    return dst


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_bad_pretrained_optimizer_file(kind, cache, tmp_path, capsys):
    from zol2l_ext.zo import lstm_optimizer as L

    path = tmp_path / f"{kind}.pt"
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    else:
        _truncated(os.path.join(os.path.dirname(L.__file__), "..", "pretrained", "digits-attack.pt"), path)
    _one_line_error(["attack", *QUICK, "--optimizers", "zo-lstm", "--learned", str(path)], capsys, path)


@pytest.mark.parametrize("text", ['{"optimizers": {"zo-sgd": {"lr": ', "\x00\xff not json", "[1, 2]"])
def test_bad_tuning_json(text, cache, tmp_path, capsys):
    path = tmp_path / "tuning.json"
    path.write_bytes(text.encode("latin-1"))
    _one_line_error(["attack", *QUICK, "--optimizers", "zo-sgd", "--tuned", str(path)], capsys, path)


def _idx(path, dims, payload_bytes):
    """An IDX file (MNIST's format) whose header promises ``dims`` but holds only ``payload_bytes`` of data."""
    magic = (0x08 << 8) | len(dims)
    path.write_bytes(struct.pack(f">I{len(dims)}I", magic, *dims) + bytes(payload_bytes))


def test_truncated_mnist_idx_file(tmp_path):
    pytest.importorskip("torchvision")
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _idx(raw / "t10k-images-idx3-ubyte", (10000, 28, 28), 1000)
    _idx(raw / "t10k-labels-idx1-ubyte", (10000,), 10000)
    with pytest.raises(D.DataRootError) as e:
        D.load_mnist(str(tmp_path), train=False)
    msg = str(e.value)
    assert "\n" not in msg and str(raw / "t10k-images-idx3-ubyte") in msg and "truncated" in msg


@pytest.mark.parametrize("kind", ["truncated", "not-npz", "no-x"])
def test_bad_cifar_npz_file(kind, cache, tmp_path, capsys):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    path = folder / "cifar10_test.npz"
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((4, 32, 32, 3), np.uint8), y=np.zeros(4, np.int64))
    if kind == "truncated":
        _truncated(good, path, keep=200)
    elif kind == "not-npz":
        path.write_text("x,y\n1,2\n")
    else:
        np.savez(path, images=np.zeros(3))
    # a target that needs no file, so that the data set is the first file read
    _one_line_error(["attack", "cifar10", *QUICK, "--data-root", str(tmp_path), "--target", "torch.nn:Flatten",
                     "--optimizers", "zo-sgd"], capsys, path)


def test_bad_attack_progress_file(cache, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "resume.pt").write_bytes(b"half a checkpoint")
    _one_line_error(["attack", *QUICK, "--optimizers", "zo-sgd", "--out", str(out), "--endpoint",
                     "http://127.0.0.1:9/predict"], capsys, out / "resume.pt", "delete it to start over")


def test_unwritable_output_folder_is_refused_before_any_work(cache, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = _one_line_error(["attack", *QUICK, "--optimizers", "zo-sgd", "--out", str(blocker / "run")], capsys,
                           blocker / "run")
    assert "cannot write" in line
    if os.geteuid() != 0:  # root writes anywhere: a read-only folder only stops other users
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        _one_line_error(["attack", *QUICK, "--optimizers", "zo-sgd", "--out", str(ro / "run")], capsys, ro)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "other"])
def test_bad_run_checkpoint(kind, tmp_path):
    import torch

    from zol2l_ext import zo

    prob = zo.CallableProblem(lambda p: p.square().sum(-1), 3, 2, x0=torch.ones(3))
    states = []
    zo.minimize(zo.make_optimizer("zo-sgd", q=2), prob, 4, checkpoint_every=2, on_checkpoint=states.append,
                progress=False)
    path = tmp_path / "run.pt"
    states[0].save(path)
    if kind == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif kind == "truncated":
        _truncated(path, path, keep=100)
    else:  # a checkpoint of another optimizer
        with pytest.raises(ValueError, match="state_dict is for optimizer 'zo-sgd', not 'zo-adam'"):
            zo.minimize(zo.make_optimizer("zo-adam", q=2), prob, 4, resume_from=path, progress=False)
        return
    with pytest.raises(ValueError) as e:
        zo.minimize(zo.make_optimizer("zo-sgd", q=2), prob, 4, resume_from=path, progress=False)
    assert str(e.value).startswith(f"{path}: not a readable run checkpoint") and "\n" not in str(e.value)


@pytest.mark.parametrize("limit", [1000, 20000])  # results.json itself cannot be written / the first figure cannot
def test_a_full_disk_stops_cleanly_with_nothing_half_written(limit, cache, tmp_path):
    """The output folder fills up (a per-process file-size limit stands for a full disk): one line, and every file
    left there is whole."""
    import json
    import signal
    import subprocess
    import sys

    resource = pytest.importorskip("resource")
    from zol2l_ext import models as M

    M.load_target("digits-cnn", progress=False)  # the target trained and cached first: only the outputs are limited

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "zol2l_ext.cli", "attack", *QUICK, "--optimizers", "zo-sgd", "--out", str(out)]
    p = subprocess.run(cmd, preexec_fn=limited, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith(f"zol2l attack: error: cannot write {out}{os.sep}") and "Traceback" not in p.stderr
    left = sorted(f.name for f in out.iterdir())
    assert not [n for n in left if ".tmp" in n], left
    if "results.json" in left:
        json.loads((out / "results.json").read_text())
    assert ("results.json" in left) == (limit > 5000), left


@pytest.mark.parametrize("kind", ["garbage", "truncated", "another task"])
def test_bad_meta_training_checkpoint_on_resume(kind, tmp_path, capsys):
    """`zol2l train --resume` over a damaged checkpoint.pt, or one of another task: one line naming it."""
    import torch

    from zol2l_ext.zo import lstm_optimizer as L

    out = tmp_path / "run"
    out.mkdir()
    ck = out / "checkpoint.pt"
    if kind == "garbage":
        ck.write_bytes(b"not a checkpoint at all")
    elif kind == "truncated":
        _truncated(os.path.join(os.path.dirname(L.__file__), "..", "pretrained", "digits-attack.pt"), ck)
    else:
        from zol2l_ext.zo.meta_trainer import CHECKPOINT_FORMAT
        torch.save({"format": CHECKPOINT_FORMAT, "config": {"task": "binary"}}, ck)
    argv = ["train", "sparse-quadratic", "--step", "0.1", "--resume", "--out", str(out), "--no-progress"]
    line = _one_line_error(argv, capsys, ck)
    assert ("checkpoint was trained with task='binary'" in line if kind == "another task"
            else "not a" in line)


def test_a_full_disk_while_caching_the_digits_cnn_only_loses_the_cache(tmp_path, monkeypatch):
    """The embedded target is trained, then cached: a cache that cannot be written (full disk, read-only
    folder) costs the cache, with a warning, not the run."""
    import errno

    from zol2l_ext import data as D
    from zol2l_ext.models import digits_cnn

    monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(digits_cnn, "save_checkpoint", full)
    with pytest.warns(UserWarning, match="could not cache the digits CNN at .*No space left on device"):
        model, meta = digits_cnn.get_digits_model(progress=False)
    assert meta["cached"] is False and meta["test_accuracy"] > 0.9
    assert not os.path.exists(digits_cnn.digits_cache_path())
