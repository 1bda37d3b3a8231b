"""The paired criteria (zol2l_ext.criteria) on hand-made evaluate results whose answers are known, and the fields
evaluate_task records for them on a tiny binary run."""
import json

import pytest
import torch

from zol2l_ext import criteria as C
from zol2l_ext import evaluate as E
from zol2l_ext.zo.lstm_optimizer import LearnedZO

BASE = [1.0, 1.2, 0.8, 1.5, 0.9, 1.1]  # per-item losses of a baseline (items differ a lot)
NOISE = [0.01, -0.01, 0.02, 0.0, -0.02, 0.01]


def _result(losses, queries=None, success=None, items=6, trials=2, has_success=None):
    """losses: {name: {step: [per-item]}}; queries: {name: per-row first-success queries (-1: none)}."""
    opts = {}
    for name, at in losses.items():
        e = {"per_item_loss_at": {str(s): list(v) for s, v in at.items()}}
        if queries is not None and name in queries:
            rows = queries[name]
            ok = [q for q in rows if q >= 0]
            e["first_success_queries"] = list(rows)
            e["mean_queries_to_success"] = sum(ok) / len(ok) if ok else None
            e["success_rate"] = (success or {}).get(name, len(ok) / len(rows))
        opts[name] = e
    hs = queries is not None if has_success is None else has_success
    return {"config": {"items": items, "trials": trials, "has_success": hs}, "optimizers": opts}


def _shift(values, by, noise=NOISE):
    return [v + by + n for v, n in zip(values, noise)]


def test_paired_difference_numbers():
    p = C.paired_difference([1, 2, 3], [2, 3, 5])  # diffs -1, -1, -2
    assert p["n"] == 3 and p["mean_diff"] == pytest.approx(-4 / 3, rel=1e-5)
    assert p["se"] == pytest.approx(0.57735027 / 3 ** 0.5, rel=1e-5) and p["verdict"] == "lower"
    assert C.paired_difference([3, 2], [1, 1])["verdict"] == "higher"
    assert C.paired_difference([1, 2, 0], [1.1, 1.9, 0.05])["verdict"] == "within noise"
    assert C.paired_difference([1, None, 2], [2, 3, None]) == {"mean_diff": -1.0, "se": None, "n": 1,
                                                               "verdict": "within noise"}
    assert C.paired_difference([None], [1])["verdict"] == "no pairs"
    assert C.per_item_queries({"first_success_queries": [10, -1, 30, 20]}, items=2, trials=2) == [20.0, 20.0]
    assert C.per_item_queries({"first_success_queries": [-1, 5, -1, 7]}, items=2, trials=2) == [None, 6.0]
    assert C.per_item_queries({}, items=2, trials=2) is None


def test_loss_significantly_lower_at_every_step():
    steps = {10: BASE, 25: BASE, 50: BASE, 60: BASE}  # 60: the final step; 10 is not a checked step
    losses = {"zo-lstm": {s: _shift(v, -0.1) for s, v in steps.items()}}
    for b, off in (("zo-sgd", 0.0), ("zo-signsgd", 0.3), ("zo-adam", 0.05)):
        losses[b] = {s: _shift(v, off, [0.0] * 6) for s, v in steps.items()}
    c = C.paired_criteria(_result(losses))
    a = c["loss_lower_at_steps"]
    assert a["steps"] == [25, 50, 60] and a["final_step"] == 60 and list(a["per_step"]) == ["25", "50", "60"]
    assert a["met"] is True and a["verdict"].startswith("met")
    p = a["per_step"]["25"]["zo-sgd"]
    assert p["n"] == 6 and p["mean_diff"] == pytest.approx(-0.1 + sum(NOISE) / 6, rel=1e-5) and p["verdict"] == "lower"
    assert c["queries_fewer"]["met"] is None and c["success_rate_not_lower"]["met"] is None  # no success notion
    assert c["query_rnn_helps"]["met"] is None  # zo-lstm-no-query was not run
    assert c["all_met"] is True and c["missing_baselines"] == []
    assert "| 25 |" in C.format_paired(c) and "(a)" in C.format_paired(c)


def test_loss_within_noise_and_higher():
    wobble = [0.1, -0.1, 0.05, -0.04, 0.08, -0.1]
    losses = {"zo-lstm": {25: _shift(BASE, 0.0, wobble), 50: _shift(BASE, -0.1)},
              "zo-sgd": {25: BASE, 50: BASE}, "zo-adam": {25: BASE, 50: _shift(BASE, -0.3, [0.0] * 6)}}
    c = C.paired_criteria(_result(losses))
    a = c["loss_lower_at_steps"]
    assert a["met"] is False and a["verdict"].startswith("NOT met")
    assert a["per_step"]["25"]["zo-sgd"]["verdict"] == "within noise"
    assert a["per_step"]["50"]["zo-sgd"]["verdict"] == "lower"
    assert a["per_step"]["50"]["zo-adam"]["verdict"] == "higher"
    assert "step 25 vs zo-sgd: within noise" in a["verdict"] and "step 50 vs zo-adam: higher" in a["verdict"]
    assert c["missing_baselines"] == ["zo-signsgd"] and c["baselines"] == ["zo-sgd", "zo-adam"]
    assert c["all_met"] is False


def _queries(per_item, trials=2):
    """Per-row queries (row = trial * items + item) with the same value in every trial."""
    return list(per_item) * trials


def test_queries_ratio_at_exactly_0_8():
    items = 6
    lossy = {n: {5: BASE} for n in ("zo-lstm", "zo-sgd", "zo-adam")}
    base_q = [100, 90, 110, 120, 80, 100]  # mean 100
    learned_q = [80, 72, 88, 96, 64, 80]  # 0.8 x per item: mean exactly 80
    q = {"zo-lstm": _queries(learned_q), "zo-sgd": _queries(base_q), "zo-adam": _queries([200] * items)}
    c = C.paired_criteria(_result(lossy, q))
    b = c["queries_fewer"]
    assert b["best_baseline"] == "zo-sgd" and b["ratio"] == pytest.approx(0.8)
    assert b["ratio_met"] is True and b["paired_met"] is True and b["met"] is True
    assert b["paired"]["zo-sgd"]["verdict"] == "lower" and b["paired"]["zo-sgd"]["n"] == items
    assert b["verdict"].startswith("met")
    # just above 0.8: not met
    q["zo-lstm"] = _queries([81, 72, 88, 96, 64, 80])
    b = C.paired_criteria(_result(lossy, q))["queries_fewer"]
    assert b["ratio_met"] is False and b["met"] is False and b["verdict"].startswith("NOT met")
    # ratio met on the means, but the items both solved say otherwise (learned solved only the cheap ones)
    q["zo-lstm"] = _queries([-1, -1, -1, 120, 10, -1])  # mean 65 <= 80, paired on items 3, 4: +0, -70
    b = C.paired_criteria(_result(lossy, q))["queries_fewer"]
    assert b["ratio_met"] is True and b["paired"]["zo-sgd"]["n"] == 2
    assert b["paired"]["zo-sgd"]["verdict"] == "within noise" and b["met"] is False
    # no item that both solved: the ratio alone decides, and the verdict says so
    q = {"zo-lstm": _queries([50, -1, -1, -1, -1, -1]), "zo-sgd": _queries([-1, 90, 110, 120, 80, 100])}
    b = C.paired_criteria(_result({n: {5: BASE} for n in q}, q))["queries_fewer"]
    assert b["paired"]["zo-sgd"]["verdict"] == "no pairs" and b["paired_met"] is None and b["met"] is True
    assert "no paired comparison" in b["verdict"]
    # nobody succeeded / only the learned one / only a baseline
    none = _queries([-1] * items)
    for lq, bq, met in ((none, none, None), (_queries(learned_q), none, True), (none, _queries(base_q), False)):
        r = _result({n: {5: BASE} for n in ("zo-lstm", "zo-sgd")}, {"zo-lstm": lq, "zo-sgd": bq})
        assert C.paired_criteria(r)["queries_fewer"]["met"] is met


def test_success_rate_criterion():
    q = {n: _queries([10] * 6) for n in ("zo-lstm", "zo-sgd", "zo-adam")}
    losses = {n: {5: BASE} for n in q}
    r = _result(losses, q, success={"zo-lstm": 0.9, "zo-sgd": 0.9, "zo-adam": 0.5})
    s = C.paired_criteria(r)["success_rate_not_lower"]
    assert s["met"] is True and s["best_baseline"] == "zo-sgd"  # equal is enough
    r = _result(losses, q, success={"zo-lstm": 0.85, "zo-sgd": 0.9, "zo-adam": 0.5})
    s = C.paired_criteria(r)["success_rate_not_lower"]
    assert s["met"] is False and "zo-sgd" in s["verdict"]


def test_missing_baselines_and_learned():
    r = _result({"zo-lstm": {5: _shift(BASE, -0.1)}, "zo-sgd": {5: BASE}})
    c = C.paired_criteria(r)
    assert c["baselines"] == ["zo-sgd"] and c["missing_baselines"] == ["zo-signsgd", "zo-adam"]
    assert c["loss_lower_at_steps"]["met"] is True  # over the baselines present
    assert "baselines not in this run: zo-signsgd, zo-adam" in C.format_paired(c)
    c = C.paired_criteria(_result({"zo-lstm": {5: BASE}}))
    assert c["loss_lower_at_steps"]["met"] is None and c["all_met"] is None
    c = C.paired_criteria(_result({"zo-sgd": {5: BASE}}))
    assert c["applicable"] is False and c["all_met"] is None and "not evaluated" in C.format_paired(c)
    # results written before the per-item fields: not applicable, with the reason
    old = {"config": {"items": 2, "trials": 1}, "optimizers": {"zo-lstm": {"final_loss": 1.0},
                                                               "zo-sgd": {"final_loss": 2.0}}}
    c = C.paired_criteria(old)
    assert c["loss_lower_at_steps"]["met"] is None and "per_item_loss_at" in c["loss_lower_at_steps"]["verdict"]


def test_query_rnn_criterion():
    losses = {"zo-lstm": {50: _shift(BASE, -0.1)}, "zo-lstm-no-query": {50: BASE}, "zo-sgd": {50: BASE}}
    d = C.paired_criteria(_result(losses))["query_rnn_helps"]
    assert d["met"] is True and d["loss_lower"] is True and d["queries_fewer"] is None
    assert d["final_loss_paired"]["verdict"] == "lower"
    # loss within noise, but exactly 10% fewer queries: met
    losses["zo-lstm"] = {50: _shift(BASE, 0.0)}
    q = {"zo-lstm": _queries([90] * 6), "zo-lstm-no-query": _queries([100] * 6), "zo-sgd": _queries([100] * 6)}
    d = C.paired_criteria(_result(losses, q))["query_rnn_helps"]
    assert d["loss_lower"] is False and d["queries_fewer"] is True and d["met"] is True
    assert d["queries_ratio"] == pytest.approx(0.9)
    q["zo-lstm"] = _queries([95] * 6)
    d = C.paired_criteria(_result(losses, q))["query_rnn_helps"]
    assert d["met"] is False and d["verdict"].startswith("NOT met")


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("learned") / "fresh.pt"
    LearnedZO().save(path)
    return E.evaluate_task("binary", optimizers=["zo-sgd", "zo-adam", "zo-lstm", "zo-lstm-no-query"],
                           learned=str(path), items=3, trials=2, steps=6, item_steps=(2, 4, 25), progress=False)


def test_evaluate_records_per_item_fields(binary_run):
    for name, e in binary_run["optimizers"].items():
        at = e["per_item_loss_at"]
        assert list(at) == ["2", "4", "6"] and all(len(v) == 3 for v in at.values())  # 25 > 6 steps: left out
        assert sum(at["6"]) / 3 == pytest.approx(e["final_loss"], rel=1e-6)
        assert at["6"] == e["per_item_final_loss"]
        assert "first_success_queries" not in e  # binary: no success notion
    c = C.paired_criteria(binary_run, steps=(2, 4))
    a = c["loss_lower_at_steps"]
    assert a["steps"] == [2, 4, 6] and a["final_metric"] == "full-data loss" and a["met"] in (True, False)
    assert set(a["per_step"]["2"]) == {"zo-sgd", "zo-adam"} and a["per_step"]["2"]["zo-sgd"]["n"] == 3
    assert c["missing_baselines"] == ["zo-signsgd"]
    assert c["query_rnn_helps"]["met"] in (True, False) and c["query_rnn_helps"]["final_step"] == 6
    assert c["queries_fewer"]["met"] is None and c["success_rate_not_lower"]["met"] is None
    json.dumps(c, allow_nan=False)


def test_write_evaluation_writes_paired_criteria(binary_run, tmp_path):
    res = json.loads(json.dumps(binary_run))
    paths = E.write_evaluation(res, str(tmp_path / "out"), from_step=2)
    pc = json.load(open(paths["paired_criteria"]))
    assert pc["learned"] == "zo-lstm" and pc["task"] == "binary" and len(pc["verdicts"]) == 4
    assert json.load(open(paths["results"]))["paired_criteria"]["verdicts"] == pc["verdicts"]
    assert "## Paired criteria" in open(paths["quality"]).read()
