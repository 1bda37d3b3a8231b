"""The `zol2l` command line, run in-process (cli.main) on the embedded digits default with tiny settings."""
import json

import pytest
import torch

from zol2l_ext import attack as A
from zol2l_ext import cli
from zol2l_ext import data as D
from zol2l_ext import models as M
from zol2l_ext import settings as S
from zol2l_ext import attack_setup as AS

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One user cache for the module (the digits CNN trains once), set through $ZOL2L_CACHE."""
    d = tmp_path_factory.mktemp("zol2l_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv(D.ENV_CACHE, str(d))
    yield d
    mp.undo()


def _run(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_attack_embedded_default_end_to_end(cache, tmp_path, capsys, monkeypatch):
    # no shipped tuning (the shipped digits-attack.json may be of another space than the default, which is an
    # error: test_space.py): the run takes the default space's fallback lrs
    from zol2l_ext import tune as TU

    monkeypatch.setattr(TU, "TUNED_DIR", str(tmp_path / "no-shipped-tunings"))
    out = tmp_path / "run"
    rc, stdout, stderr = _run(["attack", "--steps", "4", "--trials", "2", "--count", "3", "--out", str(out),
                               "--no-progress"], capsys)
    assert rc == 0, stderr
    for name in ("results.json", "loss_curves.png", "adversarial_grid.png"):
        assert (out / name).is_file(), name
    for name in ("loss_curves.png", "adversarial_grid.png"):
        assert (out / name).read_bytes()[:8] == PNG
    res = json.loads((out / "results.json").read_text())
    cfg = res["config"]
    assert cfg["dataset"] == "digits" and cfg["target"] == "digits-cnn" and cfg["images"] == 3
    assert cfg["trials"] == 2 and cfg["steps"] == 4 and cfg["dim"] == 64 and len(cfg["image_ids"]) == 3
    assert cfg["space"] == S.DATASET_DEFAULTS["digits"]["space"]
    assert cfg["lrs"]["zo-sgd"] == S.default_lrs("digits")["zo-sgd"]
    assert {"zo-sgd", "zo-signsgd", "zo-adam"} <= set(res["optimizers"])
    for name, entry in res["optimizers"].items():
        assert len(entry["per_image"]) == 3
        img = entry["per_image"][0]
        assert len(img["loss_mean"]) == 5 and len(img["loss_std"]) == 5
        assert len(img["success"]) == 2 and len(img["first_success_step"]) == 2
        assert len(img["l1"]) == 2 and len(img["l2"]) == 2
        assert all(q == 4 * (cfg["q"] + 1) for q in img["queries"])  # no early stop: every step paid
        agg = entry["aggregate"]
        assert len(agg["loss_mean"]) == 5 and agg["rows"] == 6
        assert 0.0 <= agg["success_rate"] <= 1.0 and agg["mean_final_loss"] is not None
    for word in ("optimizer", "success", "zo-sgd", "zo-adam"):
        assert word in stdout


def test_run_attack_same_start_and_seed(cache):
    aset = AS.prepare_attack("digits", count=2, progress=False)
    kw = dict(output=aset.output, steps=3, trials=2, q=4, progress=False)
    o1 = A.run_attack("digits", aset.images, aset.labels, aset.target.model, ["zo-sgd", "zo-adam"], **kw)
    o2 = A.run_attack("digits", aset.images, aset.labels, aset.target.model, ["zo-sgd"], **kw)
    r1, r2 = o1.results["optimizers"], o2.results["optimizers"]
    assert r1["zo-sgd"]["per_image"] == r2["zo-sgd"]["per_image"]  # reproducible
    # the same initial point for every optimizer: identical loss at step 0
    assert r1["zo-sgd"]["aggregate"]["loss_mean"][0] == r1["zo-adam"]["aggregate"]["loss_mean"][0]
    # trials are different rows: they draw different directions
    img = r1["zo-sgd"]["per_image"][0]
    assert img["loss_std"][-1] is not None and img["loss_std"][-1] > 0
    assert o1.adversarial["zo-sgd"].shape == aset.images.shape


def test_summary_forward_fills_stopped_rows():
    loss = torch.tensor([[3.0, 2.0], [1.0, float("nan")], [0.5, float("nan")]])
    assert A.forward_fill(loss)[:, 1].tolist() == [2.0, 2.0, 2.0]


def test_missing_data_root_error(monkeypatch, capsys):
    monkeypatch.delenv(D.ENV_DATA, raising=False)
    rc, _, err = _run(["attack", "mnist", "--count", "1", "--no-progress"], capsys)
    assert rc == 2 and "--data-root" in err and D.ENV_DATA in err
    rc, _, err = _run(["attack", "cifar10", "--data-root", "/nonexistent/zol2l", "--no-progress"], capsys)
    assert rc == 2 and "--data-root" in err and D.ENV_DATA in err


def test_bad_target_model_errors(cache, tmp_path, capsys):
    # a state_dict that fits no architecture
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(3)}, bad)
    rc, _, err = _run(["attack", "--target", str(bad), "--steps", "1", "--no-progress"], capsys)
    assert rc == 2 and "fits none" in err
    # a target checkpoint for another dataset
    other = tmp_path / "cw.pt"
    M.save_checkpoint(M.build_model("cw", "mnist"), str(other), {"arch": "cw", "dataset": "mnist"})
    rc, _, err = _run(["attack", "digits", "--target", str(other), "--steps", "1", "--no-progress"], capsys)
    assert rc == 2 and "mnist" in err
    # a model whose outputs are probabilities is refused before any query
    with pytest.raises(M.ModelOutputError, match="probabilities"):
        M.check_model_outputs(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10),
                                                  torch.nn.Softmax(dim=1)), torch.rand(4, 1, 8, 8))


def test_unknown_optimizer_and_bad_lr(cache, capsys):
    rc, _, err = _run(["attack", "--optimizers", "zo-sgd,nope", "--steps", "1", "--no-progress"], capsys)
    assert rc == 2 and "nope" in err
    rc, _, err = _run(["attack", "--optimizers", "zo-sgd", "--lr", "zo-adam=1", "--steps", "1", "--no-progress"],
                      capsys)
    assert rc == 2 and "zo-adam" in err
    assert S.parse_lr_overrides(["0.5", "zo-sgd=2,zo-adam=3"]) == (0.5, {"zo-sgd": 2.0, "zo-adam": 3.0})
    with pytest.raises(AS.AttackSetupError):
        S.parse_lr_overrides(["zo-sgd=abc"])


def test_learned_optimizer_needs_a_checkpoint(cache, capsys, monkeypatch):
    from zol2l_ext.zo.lstm_optimizer import LearnedZO

    def absent(name, map_location="cpu"):
        raise FileNotFoundError(f"no pretrained ZO-LSTM named {name!r}")

    monkeypatch.setattr(LearnedZO, "pretrained", classmethod(lambda cls, name, map_location="cpu": absent(name)))
    rc, _, err = _run(["attack", "--optimizers", "zo-lstm", "--steps", "1", "--no-progress"], capsys)
    assert rc == 2 and "pretrained" in err


def test_train_target_digits(cache, tmp_path, capsys):
    path = tmp_path / "digits.pt"
    rc, out, err = _run(["train-target", "digits", "digits", "--epochs", "1", "--out", str(path), "--no-progress"],
                        capsys)
    assert rc == 0, err
    assert path.is_file() and "test accuracy" in out
    t = M.load_target(str(path))
    assert t.dataset == "digits" and isinstance(t.model, M.DigitsCNN) and t.meta["epochs"] == 1
    obj = torch.load(path, map_location="cpu", weights_only=True)
    assert set(obj) == {"format", "state_dict", "meta"} and obj["meta"]["arch"] == "digits"


def test_targets_listing(cache, capsys):
    rc, out, _ = _run(["targets"], capsys)
    assert rc == 0
    for name in M.TARGETS:
        assert name in out


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "attack" in out and "train-target" in out
