"""`zol2l reproduce`: the shared machinery (registry, cached sub-runs, claims, report, CLI) and fig2 / fig4abc at the
tiny scale (digits and binary tasks: no data root needed)."""
import json
import os

import pytest

from zol2l_ext import cli
from zol2l_ext.reproduce import EXPERIMENTS, SCALES
from zol2l_ext.reproduce import compare as C
from zol2l_ext.reproduce import core
from zol2l_ext.reproduce.report import write_report


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_has_the_contract(name):
    mod = core.experiment_module(name)
    assert mod.TITLE and mod.PAPER
    assert set(mod.SCALES) == set(SCALES)
    for f in ("run", "plot", "claims"):
        assert callable(getattr(mod, f))
    doc = (mod.__doc__ or "").strip().split("\n\n")
    assert len(doc) >= 2, f"{name}: the module docstring's second paragraph describes the experiment (RESULTS.md)"


@pytest.fixture(scope="module")
def fig2_tiny(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fig2"))
    return core.run_experiment("fig2", "tiny", out_dir=out, progress=False), out


def test_fig2_tiny_result(fig2_tiny):
    res, out = fig2_tiny
    assert res["format"] == core.FORMAT and res["scale"] == "tiny"
    with open(os.path.join(out, "result.json")) as f:
        assert json.load(f)["claims"] == res["claims"]
    for fig in res["figures"]:
        assert os.path.getsize(os.path.join(out, fig)) > 10_000
    runs = res["data"]["runs"]
    assert [r["which"] for r in runs] == ["single", "average"]
    for r in runs:
        assert set(r["optimizers"]) == {"zo-sgd", "zo-signsgd", "zo-adam", "zo-lstm", "zo-lstm-finetune"}
        starts = {n: e["loss_mean"][0] for n, e in r["optimizers"].items()}
        assert len(set(starts.values())) == 1, f"all optimizers start from the same point: {starts}"
        assert all(len(e["loss_mean"]) == 9 for e in r["optimizers"].values())  # 8 steps + the start
    assert len(res["claims"]) == 4
    assert all(c["verdict"] in core.VERDICTS for c in res["claims"])
    assert res["machine"]["cpu_count"] >= 1 and res["wall_seconds"] >= 0


def test_cached_subruns_resume(tmp_path):
    calls = []
    ctx = core.Context("x", "tiny", {}, str(tmp_path), progress=False)
    assert ctx.cached("a", {"k": 1}, lambda: calls.append(1) or {"v": 1}) == {"v": 1}
    assert ctx.cached("a", {"k": 1}, lambda: calls.append(1) or {"v": 2}) == {"v": 1}  # reused
    assert ctx.cached("a", {"k": 2}, lambda: calls.append(1) or {"v": 3}) == {"v": 3}  # other parameters: rerun
    ctx.fresh = True
    assert ctx.cached("a", {"k": 2}, lambda: calls.append(1) or {"v": 4}) == {"v": 4}
    assert len(calls) == 3


def test_rerun_reuses_parts_and_gives_the_same_numbers(fig2_tiny):
    res, out = fig2_tiny
    again = core.run_experiment("fig2", "tiny", out_dir=out, progress=False)
    assert again["data"] == res["data"]


def test_claim_and_override_errors(tmp_path):
    with pytest.raises(ValueError, match="verdict"):
        core.claim("x", "y", "maybe")
    with pytest.raises(ValueError, match="unknown parameter"):
        core.run_experiment("fig2", "tiny", out_dir=str(tmp_path), overrides={"nope": 1})
    with pytest.raises(ValueError, match="unknown experiment"):
        core.run_experiment("fig99", "tiny", out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="scale"):
        core.run_experiment("fig2", "huge", out_dir=str(tmp_path))


def _entry(per_item, per_trial=None):
    e = {"final_loss": sum(per_item) / len(per_item), "per_item_final_loss": per_item,
         "loss_mean": [1.0, sum(per_item) / len(per_item)]}
    if per_trial is not None:
        e["per_trial_final_loss"] = per_trial
    return e


def test_paired_lower_verdicts():
    ents = {"a": _entry([1.0, 2.0, 3.0, 4.0]), "b": _entry([1.5, 2.5, 3.4, 4.6])}
    assert C.paired_lower(ents, "a", "b")["verdict"] == "supported"
    assert C.paired_lower(ents, "b", "a")["verdict"] == "not supported"
    noisy = {"a": _entry([1.0, 2.0, 3.0, 4.0]), "b": _entry([1.5, 1.6, 3.4, 3.7])}
    assert C.paired_lower(noisy, "a", "b")["verdict"] == "inconclusive"
    # one item: the trials are the pairs
    one = {"a": _entry([1.0], [0.9, 1.0, 1.1]), "b": _entry([2.0], [1.9, 2.1, 2.0])}
    r = C.paired_lower(one, "a", "b")
    assert r["verdict"] == "supported" and "3 trials" in r["measured"]


def test_lowest_final_claim():
    ents = {"l": {"final_loss": 1.0, "loss_mean": [5, 3, 2, 1]}, "b": {"final_loss": 2.0, "loss_mean": [5, 4, 3, 2]}}
    assert C.lowest_final_claim(ents, "l", ["b"], from_step=1)["verdict"] == "supported"
    ents["b"]["loss_mean"] = [5, 2, 1.5, 2]
    assert C.lowest_final_claim(ents, "l", ["b"], from_step=1)["verdict"] == "partly"


def test_fig4abc_tiny(tmp_path):
    res = core.run_experiment("fig4abc", "tiny", out_dir=str(tmp_path), progress=False)
    runs = {r["task"]: r for r in res["data"]["runs"]}
    assert set(runs) == {"digits-attack", "binary"}
    for r in runs.values():
        ents = r["optimizers"]
        assert set(ents) == {"zo-sgd", "zo-lstm", "zo-lstm-no-query", "zo-lstm-no-update", "zo-lstm-guided-es"}
        # the no-update ablation is ZO-SGD at ZO-SGD's lr, with other directions
        assert ents["zo-lstm-no-update"]["lr"] == ents["zo-sgd"]["lr"] == r["sgd_lr"]
    assert runs["binary"]["optimizers"]["zo-lstm"]["final_loss_full"] is not None
    assert len(res["claims"]) == 8 and all(c["verdict"] in core.VERDICTS for c in res["claims"])


def test_cli_list_run_report(tmp_path, capsys):
    assert cli.main(["reproduce", "list"]) == 0
    assert "fig2" in capsys.readouterr().out
    root = tmp_path / "results"
    assert cli.main(["reproduce", "fig2", "--scale", "tiny", "--set", "steps=4", "--out", str(root / "fig2-tiny"),
                     "--no-progress", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "fig2 (Fig. 2" in printed and "[" in printed
    res = core.load_result(str(root / "fig2-tiny" / "result.json"))
    assert res["params"]["steps"] == 4 and res["command"].startswith("zol2l reproduce fig2")
    report = tmp_path / "RESULTS.md"
    assert cli.main(["reproduce", "report", "--results", str(root), "--report-out", str(report)]) == 0
    text = report.read_text()
    assert "## fig2" in text and "results/fig2-tiny/fig2_attack_loss.png" in text
    assert "Not run yet" in text  # the other experiments have no result in this folder
    for c in res["claims"]:
        assert c["measured"] in text


def test_cli_errors(tmp_path, capsys):
    assert cli.main(["reproduce", "fig99"]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert cli.main(["reproduce", "fig2", "fig4abc", "--out", str(tmp_path)]) == 2
    assert cli.main(["reproduce", "report", "--results", str(tmp_path / "none")]) == 2
    with pytest.raises(FileNotFoundError):
        write_report(str(tmp_path / "none"), str(tmp_path / "R.md"))
