"""--baseline on the command line: every optimizer of an attack, a tuning, an evaluation and a meta-training runs
with the estimator baseline asked for, the results say so, and trained weights keep it."""
import json

import torch

from test_cli import cache  # noqa: F401 - the module's user cache, where the digits CNN trains once
from zol2l_ext import cli
from zol2l_ext.zo import ZOLSTM, LearnedZO
from zol2l_ext.zo.optimizers import registry


def _record_baselines(monkeypatch):
    """The estimator baseline of every optimizer the command builds."""
    seen = []
    make = registry.make_optimizer

    def spy(name, baseline=None, **kw):
        opt = make(name, baseline=baseline, **kw)
        seen.append((name, opt.baseline))
        return opt

    monkeypatch.setattr(registry, "make_optimizer", spy)
    from zol2l_ext import attack, tune_search
    monkeypatch.setattr(attack, "make_optimizer", spy)
    monkeypatch.setattr(tune_search, "make_optimizer", spy)
    return seen


def test_attack_runs_every_optimizer_with_the_baseline(tmp_path, monkeypatch, capsys):
    seen = _record_baselines(monkeypatch)
    base = ["attack", "--optimizers", "zo-sgd,zo-adam", "--count", "1", "--trials", "1", "--steps", "2",
            "--no-progress"]
    assert cli.main(base + ["--baseline", "mean", "--out", str(tmp_path / "m")]) == 0
    assert "estimator baseline mean" in capsys.readouterr().err
    assert seen == [("zo-sgd", "mean"), ("zo-adam", "mean")]
    cfg = json.loads((tmp_path / "m" / "results.json").read_text())["config"]
    assert all(kw["baseline"] == "mean" for kw in cfg["optimizer_kwargs"].values())
    seen.clear()
    assert cli.main(base + ["--out", str(tmp_path / "d")]) == 0  # the default: eq. 1, recorded as before
    assert seen == [("zo-sgd", "f0"), ("zo-adam", "f0")]
    cfg = json.loads((tmp_path / "d" / "results.json").read_text())["config"]
    assert not any("baseline" in kw for kw in cfg["optimizer_kwargs"].values())


def test_tune_and_evaluate_record_the_baseline(tmp_path, monkeypatch):
    seen = _record_baselines(monkeypatch)
    out = tmp_path / "tune.json"
    assert cli.main(["tune", "binary", "--steps", "2", "--trials", "1", "--grid", "1", "--fine", "",
                     "--optimizers", "zo-sgd", "--baseline", "mean", "--out", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["config"]["baseline"] == "mean" and "--baseline mean" in res["command"]
    assert seen and all(b == "mean" for _, b in seen)
    assert cli.main(["evaluate", "binary", "--optimizers", "zo-sgd", "--items", "1", "--trials", "1", "--steps",
                     "2", "--baseline", "mean", "--tuned", "none", "--out", str(tmp_path / "ev"),
                     "--no-progress"]) == 0
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["config"]["baseline"] == "mean"


def test_training_keeps_the_baseline_with_the_weights(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "binary", "--epochs", "1", "--updates-per-epoch", "1", "--batch", "2", "--horizon",
                     "10", "--unroll", "5", "--val-steps", "5", "--baseline", "mean", "--out", str(out),
                     "--no-progress"]) == 0
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["config"]["baseline"] == "mean"
    model = LearnedZO.load(out / "best.pt")
    assert model.meta["baseline"] == "mean"
    assert ZOLSTM(model).baseline == "mean"  # test time uses the estimator the weights were trained with
