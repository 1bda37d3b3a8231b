"""`zol2l evaluate` (zol2l_ext.evaluate): tiny runs on the binary task (no data root) with an untrained LearnedZO
saved to a file, the criteria logic on hand-made results, the files written, and the CLI in-process."""
import json

import pytest
import torch

from zol2l_ext import cli
from zol2l_ext import evaluate as E
from zol2l_ext.zo.lstm_optimizer import LearnedZO

TINY = dict(items=2, trials=2, steps=5, progress=False)


@pytest.fixture(scope="module")
def learned_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("learned") / "fresh.pt"
    LearnedZO().save(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny(learned_path):
    return E.evaluate_task("binary", learned=learned_path, **TINY)


def test_result_shapes_and_keys(tiny, learned_path):
    assert tiny["format"] == E.FORMAT and tiny["task"] == "binary"
    cfg = tiny["config"]
    assert cfg["items"] == 2 and cfg["trials"] == 2 and cfg["rows"] == 4 and cfg["steps"] == 5
    assert cfg["seeds"] == [90, 91] and cfg["part"] == "test" and cfg["q"] == 20 and cfg["dim"] == 100
    assert cfg["has_success"] is False and learned_path in cfg["learned"]
    assert list(tiny["optimizers"]) == list(E.DEFAULT_OPTIMIZERS)
    for name, e in tiny["optimizers"].items():
        assert len(e["loss_mean"]) == 6 and len(e["loss_std"]) == 6 and e["loss_std_over"] == "trials"
        assert all(v is not None for v in e["loss_mean"])
        assert e["final_loss"] == pytest.approx(e["loss_mean"][-1])
        for k in ("final_loss_full", "accuracy", "initial_loss_full", "wall_seconds", "lr_source"):
            assert e[k] is not None, (name, k)
        assert 0.0 <= e["accuracy"] <= 1.0 and len(e["per_item_final_loss_full"]) == 2
        assert "success_rate" not in e and "mean_queries_to_success" not in e
    assert tiny["optimizers"]["zo-lstm"]["lr_source"] == "unused (learned update)"
    assert tiny["optimizers"]["zo-lstm"]["lr"] is None
    assert tiny["optimizers"]["zo-sgd"]["lr"] is not None


def test_same_start_for_all_optimizers(tiny):
    starts = {n: e["loss_mean"][0] for n, e in tiny["optimizers"].items()}
    assert len(set(starts.values())) == 1, starts  # same theta0, same minibatch keys at step 0
    fulls = {e["initial_loss_full"] for e in tiny["optimizers"].values()}
    assert len(fulls) == 1 and next(iter(fulls)) == pytest.approx(0.25)  # zeros: sigmoid(0) = 1/2


def _fake(curves, queries=None, finals=None, has_success=True):
    opts = {}
    for name, c in curves.items():
        e = {"loss_mean": list(c), "loss_std": [0.0] * len(c), "final_loss": (finals or {}).get(name, c[-1])}
        if has_success:
            e["mean_queries_to_success"] = (queries or {}).get(name)
            e["ever_success_rate"] = 1.0 if e["mean_queries_to_success"] is not None else 0.0
        opts[name] = e
    return {"config": {"has_success": has_success}, "optimizers": opts}


def test_criteria_learned_below():
    T = 101
    base = [1.0 - 0.004 * t for t in range(T)]
    curves = {"zo-sgd": base, "zo-signsgd": [v + 0.1 for v in base], "zo-adam": [v + 0.05 for v in base],
              "zo-lstm": [1.0] * 10 + [base[t] - 0.01 for t in range(10, T)]}
    q = {"zo-sgd": 300.0, "zo-signsgd": None, "zo-adam": 200.0, "zo-lstm": 150.0}
    c = E.quality_criteria(_fake(curves, q))
    assert c["applicable"] and c["all_met"] is True
    cb = c["curve_below_from_step"]
    assert cb["met"] is True and cb["fraction_below"] == 1.0 and cb["stays_below_from"] == 10
    assert cb["steps_compared"] == T - 50
    assert c["final_loss_lowest"]["met"] is True and c["final_loss_lowest"]["best_baseline"] == "zo-sgd"
    cq = c["queries_fewer_than_best_baseline"]
    assert cq["met"] is True and cq["best_baseline"] == "zo-adam" and cq["best_baseline_value"] == 200.0
    assert all(v.startswith("met") for v in c["verdicts"])


def test_criteria_learned_above():
    T = 101
    base = [1.0 - 0.004 * t for t in range(T)]
    lstm = [v - 0.01 for v in base]
    lstm[70] = base[70] + 0.2  # one step above zo-sgd's curve
    lstm[-1] = base[-1] + 0.01  # and the last step
    curves = {"zo-sgd": base, "zo-signsgd": [v + 0.1 for v in base], "zo-adam": [v + 0.05 for v in base],
              "zo-lstm": lstm}
    c = E.quality_criteria(_fake(curves, {"zo-sgd": 100.0, "zo-adam": 200.0, "zo-lstm": 150.0}))
    cb = c["curve_below_from_step"]
    assert cb["met"] is False and cb["stays_below_from"] is None
    assert cb["fraction_below"] == pytest.approx(49 / 51, abs=1e-4)
    assert cb["per_baseline"]["zo-sgd"]["steps_not_below"] == 2
    assert cb["per_baseline"]["zo-signsgd"]["steps_not_below"] == 1  # only step 70 is above signSGD's curve
    assert "first failure at step 70" in cb["verdict"] and cb["verdict"].startswith("NOT met")
    fl = c["final_loss_lowest"]
    assert fl["met"] is False and "zo-sgd" in fl["verdict"] and "zo-adam" not in fl["verdict"].split("lowest:")[1]
    cq = c["queries_fewer_than_best_baseline"]
    assert cq["met"] is False and cq["best_baseline"] == "zo-sgd"
    assert c["all_met"] is False
    # equal is not below
    c2 = E.quality_criteria(_fake({"zo-sgd": base, "zo-lstm": list(base)}, {"zo-sgd": 5.0, "zo-lstm": 5.0}))
    assert c2["curve_below_from_step"]["met"] is False and c2["final_loss_lowest"]["met"] is False
    assert c2["queries_fewer_than_best_baseline"]["met"] is False
    assert c2["missing_baselines"] == ["zo-signsgd", "zo-adam"]


def test_criteria_no_success_and_edge_cases():
    base = [1.0, 0.5, 0.4]
    lstm = [1.0, 0.3, 0.2]
    curves = {"zo-sgd": base, "zo-adam": base, "zo-lstm": lstm}
    # binary: no success notion -> None; the curve criterion has no step >= 50 -> None
    c = E.quality_criteria(_fake(curves, has_success=False))
    assert c["queries_fewer_than_best_baseline"]["met"] is None
    assert c["curve_below_from_step"]["met"] is None and c["curve_below_from_step"]["stays_below_from"] == 1
    assert c["final_loss_lowest"]["met"] is True and c["all_met"] is True
    c = E.quality_criteria(_fake(curves, has_success=False), from_step=1)
    assert c["curve_below_from_step"]["met"] is True
    # attacks where nobody succeeded -> None; only the learned one succeeded -> met; learned never -> not met
    assert E.quality_criteria(_fake(curves, {}))["queries_fewer_than_best_baseline"]["met"] is None
    assert E.quality_criteria(_fake(curves, {"zo-lstm": 40.0}))["queries_fewer_than_best_baseline"]["met"] is True
    assert E.quality_criteria(_fake(curves, {"zo-sgd": 40.0}))["queries_fewer_than_best_baseline"]["met"] is False
    # binary: the full-data final loss decides where every optimizer has it
    r = _fake(curves, has_success=False)
    r["optimizers"]["zo-lstm"]["final_loss_full"] = 0.3
    r["optimizers"]["zo-sgd"]["final_loss_full"] = 0.25
    r["optimizers"]["zo-adam"]["final_loss_full"] = 0.35
    fl = E.quality_criteria(r)["final_loss_lowest"]
    assert fl["metric"] == "final_loss_full" and fl["met"] is False and fl["best_baseline"] == "zo-sgd"
    # no learned optimizer in the run
    c = E.quality_criteria(_fake({"zo-sgd": base}))
    assert c["applicable"] is False and c["all_met"] is None


def test_write_evaluation(tiny, tmp_path):
    res = json.loads(json.dumps(tiny))  # a copy
    paths = E.write_evaluation(res, str(tmp_path / "out"), from_step=2)
    loaded = json.load(open(paths["results"]))
    assert loaded["task"] == "binary" and set(loaded["optimizers"]) == set(E.DEFAULT_OPTIMIZERS)
    assert loaded["criteria"]["from_step"] == 2 and loaded["criteria"]["applicable"] is True
    assert loaded["criteria"]["final_loss_lowest"]["metric"] == "final_loss_full"
    assert open(paths["loss_curves"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    md = open(paths["quality"]).read()
    assert "| optimizer | lr (source) |" in md and "## Criteria" in md and "zo-lstm" in md
    assert not list((tmp_path / "out").glob("*.tmp*"))


def test_cli(learned_path, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = cli.main(["evaluate", "binary", "--items", "2", "--trials", "2", "--steps", "5", "--threads", "1",
                   "--learned", learned_path, "--out", str(out), "--no-progress", "--from-step", "3"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "| zo-lstm |" in captured.out and "final mean loss" in captured.out
    assert "(a) significantly lower loss" in captured.out and "(d) the QueryRNN helps" in captured.out
    assert (out / "paired_criteria.json").is_file()
    res = json.load(open(out / "results.json"))
    assert res["config"]["steps"] == 5 and res["criteria"]["from_step"] == 3
    assert res["command"].startswith("zol2l evaluate binary")
    assert (out / "loss_curves.png").is_file() and (out / "quality.md").is_file()
    # baselines only: no learned weights needed, the criteria say why they were not evaluated
    rc = cli.main(["evaluate", "binary", "--items", "1", "--trials", "1", "--steps", "3", "--threads", "1",
                   "--optimizers", "zo-sgd", "--out", str(tmp_path / "b"), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "criteria not evaluated" in captured.out
    # a missing learned file is an error (exit code 2), not a traceback
    rc = cli.main(["evaluate", "binary", "--items", "1", "--trials", "1", "--steps", "3", "--learned",
                   str(tmp_path / "nope.pt"), "--out", str(tmp_path / "c"), "--no-progress"])
    assert rc == 2 and "no such file" in capsys.readouterr().err


def test_cli_range_replicates_on_items_no_part_holds(tmp_path, capsys):
    # --range A:B evaluates items A..B-1 (here dataset seeds) instead of a named part
    out = tmp_path / "r"
    rc = cli.main(["evaluate", "binary", "--range", "200:202", "--trials", "1", "--steps", "3", "--threads", "1",
                   "--optimizers", "zo-sgd", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    cfg = json.load(open(out / "results.json"))["config"]
    assert cfg["part"] == "range" and cfg["seeds"] == [200, 201]
    for bad in ("5:5", "7:3", "x:9", "12"):
        rc = cli.main(["evaluate", "binary", "--range", bad, "--out", str(tmp_path / "bad"), "--no-progress"])
        assert rc == 2 and "give A:B" in capsys.readouterr().err
