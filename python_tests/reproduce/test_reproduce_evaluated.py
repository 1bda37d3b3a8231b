"""`zol2l reproduce` fig3 (binary classification), fig10 (Bernoulli p) and fig11 (ZO-SZVR-G) at the tiny scale
(binary and digits tasks: no data root needed), and the comparisons their claims rest on."""
import json
import os

import numpy as np
import pytest
import torch

from zol2l_ext.evaluate import baseline_settings, evaluate_task
from zol2l_ext.reproduce import core
from zol2l_ext.reproduce import fig10_bernoulli as F10
from zol2l_ext.reproduce import fig11_szvrg as F11
from zol2l_ext.reproduce import fig3_binary as F3


def _run(name, tmp_path_factory):
    out = str(tmp_path_factory.mktemp(name))
    torch.set_num_threads(1)
    return core.run_experiment(name, "tiny", out_dir=out, progress=False), out


@pytest.fixture(scope="module")
def fig3_tiny(tmp_path_factory):
    return _run("fig3", tmp_path_factory)


@pytest.fixture(scope="module")
def fig10_tiny(tmp_path_factory):
    return _run("fig10", tmp_path_factory)


@pytest.fixture(scope="module")
def fig11_tiny(tmp_path_factory):
    return _run("fig11", tmp_path_factory)


def _check_common(res, out, n_claims):
    assert res["format"] == core.FORMAT and res["scale"] == "tiny"
    with open(os.path.join(out, "result.json")) as f:
        saved = json.load(f)
    assert saved["claims"] == res["claims"] and saved["params"] == res["params"]
    assert res["figures"]
    for fig in res["figures"]:
        assert os.path.getsize(os.path.join(out, fig)) > 10_000
    assert len(res["claims"]) == n_claims
    for c in res["claims"]:
        assert c["verdict"] in core.VERDICTS and c["claim"] and c["measured"]


# ------------------------------------------------------------------------------------------------------ fig3
def test_fig3_tiny_structure(fig3_tiny):
    res, out = fig3_tiny
    _check_common(res, out, 2 + 3 + 2)  # (a) x 2, one per sweep, q and d trends
    data, p = res["data"], res["params"]
    curves = data["curves"]["optimizers"]
    assert set(curves) == {"zo-sgd", "zo-signsgd", "zo-adam", "zo-lstm", "zo-lstm-finetune"}
    assert all(len(e["loss_mean"]) == p["steps"] + 1 for e in curves.values())
    for name, field in F3.FIELDS.items():
        sweep = data["sweeps"][name]
        assert sweep["values"] == p[f"{name}_values"] and sweep["field"] == field
        for v in sweep["values"]:
            run = sweep["runs"][str(v)]
            assert run["config"][field] == v  # the replaced TaskSpec reached the problem
            assert run["config"]["rows"] == p["sweep_items"] * p["sweep_trials"]
            assert set(run["optimizers"]) == set(F3.OPTIMIZERS)


def test_fig3_same_start_and_reused_lrs(fig3_tiny):
    res, _ = fig3_tiny
    data = res["data"]
    curves = data["curves"]["optimizers"]
    # every optimizer starts from the same point on the same first minibatch
    assert len({e["loss_mean"][0] for e in curves.values()}) == 1
    assert len({e["initial_loss_full"] for e in curves.values()}) == 1
    # the transferred optimizer is another optimizer, not a copy of the binary one
    assert curves["zo-lstm-finetune"]["loss_mean"] != curves["zo-lstm"]["loss_mean"]
    tuned = {n: curves[n]["lr"] for n in F3.BASELINES}
    for name, sweep in data["sweeps"].items():
        for v in sweep["values"]:
            opts = sweep["runs"][str(v)]["optimizers"]
            assert len({e["initial_loss_full"] for e in opts.values()}) == 1
            assert len({e["initial_loss"] for e in opts.values()}) == 1
            for n in F3.BASELINES:  # the d=100, q=20, b=64 tuning, reused for every variant
                assert opts[n]["lr"] == tuned[n] and "binary" in opts[n]["lr_source"]
            for e in opts.values():
                assert e["final_loss_full"] is not None and 0.0 <= e["final_loss_full"] <= 1.0
    # the base configuration (q=20, b=64, d=100) is one cached run shared by the three sweeps
    base = [sweep["runs"][str(data["base"][name])]["optimizers"]["zo-lstm"]["final_loss_full"]
            for name, sweep in data["sweeps"].items() if data["base"][name] in sweep["values"]]
    assert len(base) == 3 and len(set(base)) == 1
    # theta0 = 0 predicts 0.5 for every sample: the initial full-data loss is 0.25 whatever q, b and d
    for sweep in data["sweeps"].values():
        for run in sweep["runs"].values():
            assert run["optimizers"]["zo-sgd"]["initial_loss_full"] == pytest.approx(0.25)
    d = data["sweeps"]["d"]  # another d is another problem
    assert len({d["runs"][str(v)]["optimizers"]["zo-sgd"]["final_loss_full"] for v in d["values"]}) == 2


def test_fig3_monotone_claim():
    sweep = {"values": [1, 2, 3], "runs": {str(v): {"optimizers": {n: {"final_loss_full": 1.0 / v + i}
                                                                  for i, n in enumerate(F3.OPTIMIZERS)}}
                                           for v in (1, 2, 3)}}
    assert F3._monotone_claim(sweep, decreasing=True)["verdict"] == "supported"
    assert F3._monotone_claim(sweep, decreasing=False)["verdict"] == "not supported"
    sweep["runs"]["2"]["optimizers"]["zo-sgd"]["final_loss_full"] = 5.0  # one optimizer not monotone
    assert F3._monotone_claim(sweep, decreasing=True)["verdict"] == "partly"


# ----------------------------------------------------------------------------------------------------- fig10
def test_fig10_tiny(fig10_tiny):
    res, out = fig10_tiny
    _check_common(res, out, 2)
    data, p = res["data"], res["params"]
    assert data["p_values"] == p["p_values"]
    for v in p["p_values"]:
        e = data["runs"][f"{v:g}"]
        assert e["query_prob"] == v  # the probability reached the optimizer
        assert len(e["loss_mean"]) == p["steps"] + 1
        assert 0.0 <= e["ever_success_rate"] <= 1.0
    assert len({data["runs"][f"{v:g}"]["loss_mean"][0] for v in p["p_values"]}) == 1
    assert data["runs"]["0"]["loss_mean"] != data["runs"]["1"]["loss_mean"]


def test_fig10_p0_is_the_no_query_ablation(fig10_tiny):
    """p = 0 never uses the QueryRNN: the same run as ZO-LSTM-no-query (standard Gaussian directions)."""
    res, _ = fig10_tiny
    p = res["params"]
    ref = evaluate_task(p["task"], optimizers=["zo-lstm-no-query"], trials=p["trials"], steps=p["steps"],
                        items=p["items"], learned=p["learned"], progress=False)["optimizers"]["zo-lstm-no-query"]
    np.testing.assert_allclose(res["data"]["runs"]["0"]["loss_mean"], ref["loss_mean"], rtol=1e-6, atol=1e-7)


def test_fig10_claim_logic():
    def data(fs, fl):
        ps = [0.0, 0.5, 1.0]
        return {"p_values": ps, "config": {"items": 1, "trials": 1}, "task": "t",
                "runs": {f"{v:g}": {"mean_first_success_step": a, "final_loss": b, "ever_success_rate": 1.0}
                         for v, a, b in zip(ps, fs, fl)}}

    c = F10.claims(data([10, 5, 12], [1.0, 0.7, 0.5]))
    assert [x["verdict"] for x in c] == ["supported", "partly"]
    c = F10.claims(data([4, 5, 3], [1.0, 0.5, 0.7]))
    assert [x["verdict"] for x in c] == ["not supported", "supported"]
    c = F10.claims({**data([1, 1, 1], [1, 1, 1]), "p_values": [0.0, 1.0]})
    assert all(x["verdict"] == "not tested" for x in c)


# ----------------------------------------------------------------------------------------------------- fig11
def test_fig11_tiny(fig11_tiny):
    res, out = fig11_tiny
    _check_common(res, out, 4)
    data, p = res["data"], res["params"]
    ents = data["optimizers"]
    assert set(ents) == set(F11.OPTIMIZERS)
    assert len({e["loss_mean"][0] for e in ents.values()}) == 1
    # ZO-SZVR-G and ZO-LSTM-no-update run with the tuned ZO-SGD lr
    lr, _, _ = baseline_settings("zo-sgd", p["task"])
    assert data["sgd_lr"] == lr == ents["zo-sgd"]["lr"] == ents["zo-szvr-g"]["lr"] == ents["zo-lstm-no-update"]["lr"]
    assert ents["zo-szvr-g"]["lr_source"] == ents["zo-lstm-no-update"]["lr_source"] == "optimizer_kwargs"
    # the query axis is what the runner counted, step by step
    q = data["config"]["q"]
    for name, e in ents.items():
        xs = data["queries"][name]
        assert len(xs) == p["steps"] + 1 and xs[0] == 0
        assert xs[-1] == pytest.approx(e["mean_queries"])
    sz = np.diff(data["queries"]["zo-szvr-g"])
    assert sz[0] == sz[10] == 101 and sz[1] == sz[9] == 2 * (q + 1)
    assert set(np.diff(data["queries"]["zo-sgd"])) == set(np.diff(data["queries"]["zo-lstm-no-update"])) == {q + 1}


def test_fig11_per_query():
    data = {"queries": {"a": [0, 10, 20], "b": [0, 20, 40]},
            "optimizers": {"a": {"loss_mean": [4.0, 2.0, 1.0]}, "b": {"loss_mean": [4.0, 1.0, 0.1]}}}
    pq = F11.per_query(data, "a", ["b"], points=11)
    assert pq["budget"] == 20
    # at 20 queries a has done 2 steps (1.0), b one step (1.0); before that a is below b
    assert pq["loss_at_budget[a]"] == pytest.approx(1.0) and pq["loss_at_budget[b]"] == pytest.approx(1.0)
    assert pq["fraction_below"] == pytest.approx(10 / 11)
