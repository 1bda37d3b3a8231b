"""Baseline learning-rate tuning (zol2l_ext.tune, `zol2l tune`, `zol2l attack --tuned`), on tiny settings of the
binary task (d = 100, 10 datasets, no data root) and, for the attack, the embedded digits default."""
import json
import math

import pytest

from zol2l_ext import attack as A
from zol2l_ext import cli
from zol2l_ext import data as D
from zol2l_ext import tune as TU
from zol2l_ext import settings as S

TINY = dict(steps=3, trials=1, progress=False)


def _score(c):
    return math.inf if c["score"] is None else c["score"]


@pytest.fixture(scope="module")
def tiny():
    """One small tuning of the three baselines: coarse {1, 10}, fine x2, ZO-ADAM's 6 betas."""
    return TU.tune_baselines("binary", grid=(1, 10), fine=(2,), **TINY)


def test_choice_is_argmin_of_recorded_scores(tiny):
    assert tiny["task"] == "binary" and tiny["format"] == TU.FORMAT
    cfg = tiny["config"]
    assert cfg["steps"] == 3 and cfg["trials"] == 1 and cfg["rows"] == 10 and cfg["seeds"] == list(range(10))
    assert cfg["q"] == 20 and cfg["mu"] == 0.005
    assert set(tiny["optimizers"]) == {"zo-sgd", "zo-signsgd", "zo-adam"}
    for name, entry in tiny["optimizers"].items():
        cands = entry["candidates"]
        best = min(cands, key=_score)
        assert entry["lr"] == best["lr"] and entry["score"] == best["score"]
        assert [c for c in cands if c.get("chosen")] == [best]
        assert all(_score(c) >= entry["score"] for c in cands)
        coarse = [c for c in cands if c["stage"] == "coarse"]
        assert [c["lr"] for c in coarse] == [1.0, 10.0]
        best_coarse = min(coarse, key=_score)
        fine = [c for c in cands if c["stage"] == "fine"]
        assert [c["lr"] for c in fine] == [2 * best_coarse["lr"]]
        for c in cands:
            assert c["failed_rows"] == 0 and c["full_loss"] is not None and c["final_loss"] is not None
            assert c["score"] == c["full_loss"]  # binary: the full-dataset loss of the final iterate
        if name == "zo-adam":
            betas = [c for c in cands if c["stage"] == "betas"]
            # the 6 pairs at the best coarse delta, (0.9, 0.996) already run by the coarse stage
            assert len(betas) == 5 and all(c["lr"] == best_coarse["lr"] for c in betas)
            pairs = {(c["beta1"], c["beta2"]) for c in betas + [best_coarse]}
            assert pairs == set(TU.ADAM_BETAS)
            best_b = min(betas + [best_coarse], key=_score)
            assert (fine[0]["beta1"], fine[0]["beta2"]) == (best_b["beta1"], best_b["beta2"])
            assert (entry["beta1"], entry["beta2"]) == (best["beta1"], best["beta2"])
        else:
            assert "beta1" not in entry
    json.dumps(tiny, allow_nan=False)


def test_batched_equals_one_at_a_time():
    kw = dict(optimizers=("zo-adam",), grid=(1, 100), fine=(), adam_betas=((0.99, 0.99),), **TINY)
    a = TU.tune_baselines("binary", batch=True, **kw)
    b = TU.tune_baselines("binary", batch=False, **kw)
    for name in kw["optimizers"]:
        ca, cb = a["optimizers"][name]["candidates"], b["optimizers"][name]["candidates"]
        assert [(c["lr"], c.get("beta1"), c.get("beta2")) for c in ca] == \
               [(c["lr"], c.get("beta1"), c.get("beta2")) for c in cb]
        for x, y in zip(ca, cb):
            assert x["score"] == pytest.approx(y["score"], rel=1e-4, abs=1e-6)


def test_diverging_candidate_never_chosen():
    res = TU.tune_baselines("binary", optimizers=("zo-sgd",), grid=(1, 1e300), fine=(), **TINY)
    entry = res["optimizers"]["zo-sgd"]
    huge = [c for c in entry["candidates"] if c["lr"] == 1e300][0]
    assert huge["score"] is None and huge["failed_rows"] == 10  # +inf: every row's iterate overflowed
    assert entry["lr"] == 1.0 and not huge.get("chosen")
    json.dumps(res, allow_nan=False)
    # nothing finite at all: no choice, and load_tuned leaves the optimizer out
    res = TU.tune_baselines("binary", optimizers=("zo-sgd",), grid=(1e300,), fine=(2,), **TINY)
    assert res["optimizers"]["zo-sgd"]["lr"] is None
    assert TU._chosen(res) == {}


def test_save_load_round_trip(tiny, tmp_path):
    path = tmp_path / "sub" / "tune.json"
    assert TU.save_tuning(tiny, path) == str(path)
    assert [p.name for p in path.parent.iterdir()] == ["tune.json"]  # no temporary left behind
    assert json.loads(path.read_text()) == json.loads(json.dumps(tiny))
    table = TU.load_tuned(path)
    assert set(table) == {"zo-sgd", "zo-signsgd", "zo-adam"}
    adam = tiny["optimizers"]["zo-adam"]
    assert table["zo-adam"] == {"lr": adam["lr"], "beta1": adam["beta1"], "beta2": adam["beta2"]}
    assert table["zo-sgd"] == {"lr": tiny["optimizers"]["zo-sgd"]["lr"]}
    for src in (path, str(path), tiny, table):
        kw = TU.tuned_kwargs(src, "zo-adam")
        assert set(kw) == {"lr", "beta1", "beta2"} and kw["beta1"] in (0.9, 0.99)
        assert TU.tuned_kwargs(src, "zo_sgd") == {"lr": tiny["optimizers"]["zo-sgd"]["lr"]}
    with pytest.raises(KeyError):
        TU.tuned_kwargs(table, "zo-szvr-g")
    opt = A.build_optimizer("zo-adam", 20, 0.005, **TU.tuned_kwargs(path, "zo-adam"))
    assert (opt.lr, opt.beta1, opt.beta2) == (adam["lr"], adam["beta1"], adam["beta2"])


def test_shipped_and_resolve(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(TU, "TUNED_DIR", str(tmp_path))
    assert TU.shipped_tuning("digits-attack") is None
    assert TU.resolve_tuning(None, "digits") == (None, None, None)
    with pytest.raises(FileNotFoundError):
        TU.resolve_tuning("digits-attack", "digits")
    with pytest.raises(ValueError):
        TU.resolve_tuning("no-such-task", "digits")
    fake = dict(tiny, task="digits-attack")
    TU.save_tuning(fake, TU.shipped_path("digits-attack"))
    assert TU.shipped_tuning("digits-attack")["task"] == "digits-attack"
    table, source, task = TU.resolve_tuning(None, "digits")
    assert table == TU._chosen(fake) and task == "digits-attack" and "digits-attack.json" in source
    assert TU.resolve_tuning("none", "digits") == (None, None, None)
    assert TU.resolve_tuning(None, "mnist") == (None, None, None)  # nothing shipped for mnist-attack here


def test_attack_lr_resolution(tiny, tmp_path, monkeypatch, capsys):
    """--lr wins over --tuned; tuned betas go to zo-adam; the shipped tuning is the default; 'none' disables."""
    monkeypatch.setattr(TU, "TUNED_DIR", str(tmp_path / "shipped"))
    path = tmp_path / "t.json"
    TU.save_tuning(tiny, path)
    ch = tiny["optimizers"]
    opts = ["zo-sgd", "zo-signsgd", "zo-adam", "zo-szvr-g"]

    def resolve(tuned, lr=None):
        return S.resolve_lrs("digits", S.dataset_space("digits"), opts, lr, tuned)

    lrs, kw, src = resolve(str(path), ["zo-sgd=7"])
    assert lrs["zo-sgd"] == 7.0 and src["zo-sgd"] == "--lr"
    assert lrs["zo-signsgd"] == ch["zo-signsgd"]["lr"] and lrs["zo-adam"] == ch["zo-adam"]["lr"]
    assert "zo-szvr-g" not in lrs and src["zo-szvr-g"] == "settings.DEFAULT_LRS (untuned)"
    assert kw == {"zo-adam": {"beta1": ch["zo-adam"]["beta1"], "beta2": ch["zo-adam"]["beta2"]}}
    assert src["zo-adam"] == f"tuning file {path}"
    assert "learning rates from" in capsys.readouterr().err
    lrs, kw, src = resolve(None)  # nothing shipped (TUNED_DIR is empty): DEFAULT_LRS
    assert lrs == {} and kw == {} and set(src.values()) == {"settings.DEFAULT_LRS (untuned)"}
    TU.save_tuning(dict(tiny, task="digits-attack"), TU.shipped_path("digits-attack"))
    lrs, kw, src = resolve(None)
    assert lrs["zo-sgd"] == ch["zo-sgd"]["lr"] and "digits-attack.json" in src["zo-sgd"]
    lrs, kw, src = resolve("none")
    assert lrs == {} and kw == {}


def test_cli_tune_writes_json_and_ships(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(TU, "TUNED_DIR", str(tmp_path / "shipped"))
    out = tmp_path / "tune-binary.json"
    rc = cli.main(["tune", "binary", "--steps", "2", "--trials", "1", "--grid", "1,10", "--fine", "1/2,2",
                   "--optimizers", "zo-sgd", "--out", str(out), "--ship", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads(out.read_text())
    assert res["config"]["steps"] == 2 and set(res["optimizers"]) == {"zo-sgd"}
    assert res["config"]["fine"] == [0.5, 2.0] and res["command"].startswith("zol2l tune binary")
    # --ship writes your folder (never the installed package), which the attack's resolution reads first
    assert not (tmp_path / "shipped" / "binary.json").exists()
    assert json.loads(open(TU.user_tuning_path("binary")).read()) == res
    assert TU.shipped_tuning("binary") == res and TU.tuning_source("binary").startswith("your tuning ")
    assert "--into-package" in cap.err
    rc = cli.main(["tune", "binary", "--steps", "2", "--trials", "1", "--grid", "1,10", "--fine", "1/2,2",
                   "--optimizers", "zo-sgd", "--out", str(out), "--ship", "--into-package", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    shipped = json.loads((tmp_path / "shipped" / "binary.json").read_text())["optimizers"]["zo-sgd"]
    assert (shipped["lr"], shipped["score"]) == (res["optimizers"]["zo-sgd"]["lr"], res["optimizers"]["zo-sgd"]["score"])
    for word in ("zo-sgd", "coarse", "fine", "lr (delta)", "score"):
        assert word in cap.out
    assert "*" in cap.out and str(out) in cap.out
    rc = cli.main(["tune", "binary", "--optimizers", "zo-szvr-g", "--steps", "1", "--out", str(out)])
    assert rc == 2 and "tuning supports" in capsys.readouterr().err


def test_cli_attack_with_tuned_file(tiny, tmp_path, monkeypatch, capsys):
    """End to end on the embedded digits default (trains the small digits CNN into a temporary cache)."""
    monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))
    path = tmp_path / "t.json"
    TU.save_tuning(tiny, path)
    out = tmp_path / "run"
    rc = cli.main(["attack", "--optimizers", "zo-sgd,zo-adam", "--steps", "2", "--trials", "1", "--count", "1",
                   "--tuned", str(path), "--lr", "zo-sgd=5", "--out", str(out), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    cfg = json.loads((out / "results.json").read_text())["config"]
    adam = tiny["optimizers"]["zo-adam"]
    assert cfg["lrs"] == {"zo-sgd": 5.0, "zo-adam": adam["lr"]}
    assert cfg["lr_source"] == {"zo-sgd": "--lr", "zo-adam": f"tuning file {path}"}
    assert cfg["optimizer_kwargs"] == {"zo-adam": {"beta1": adam["beta1"], "beta2": adam["beta2"]}}
    assert "learning rates from tuning file" in cap.err
