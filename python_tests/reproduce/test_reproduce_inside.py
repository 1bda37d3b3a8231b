"""`zol2l reproduce` fig4d, fig4e and fig9 (inside the learned optimizer) at the tiny scale (digits, no data root)."""
import math
import os

import pytest
import torch

from zol2l_ext.reproduce import core
from zol2l_ext.reproduce import fig4e_trajectory as F4E
from zol2l_ext.reproduce import probe as PR


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = {}
    for name in ("fig4d", "fig4e", "fig9"):
        d = tmp_path_factory.mktemp(name)
        out[name] = (core.run_experiment(name, "tiny", out_dir=str(d), progress=False), str(d))
    return out


@pytest.mark.parametrize("name", ["fig4d", "fig4e", "fig9"])
def test_result_structure(results, name):
    res, d = results[name]
    assert res["format"] == core.FORMAT and res["experiment"] == name and res["scale"] == "tiny"
    assert res["claims"], "every experiment states the paper's claims"
    for c in res["claims"]:
        assert c["verdict"] in core.VERDICTS and c["claim"] and c["measured"]
    assert res["figures"]
    for f in res["figures"]:
        path = os.path.join(d, f)
        assert os.path.getsize(path) > 1000
    assert os.path.exists(os.path.join(d, "result.json"))
    mod = core.experiment_module(name)
    assert isinstance(mod.table(res["data"]), str)


def test_fig4d_cosines(results):
    data = results["fig4d"][0]["data"]
    assert [r["q"] for r in data["runs"]] == core.experiment_module("fig4d").SCALES["tiny"]["qs"]
    for r in data["runs"]:
        for k in ("query", "gaussian"):
            e = r[k]
            assert e["in_range"]
            vals = [v for v in e["per_step"] + e["per_image"] if v is not None]
            assert vals and all(-1.0 <= v <= 1.0 for v in vals)
            assert len(e["per_step"]) == data["steps"]
        # step 0: the QueryRNN sees zero inputs and a zero state, so s = 1 everywhere: the QueryRNN's directions
        # are the standard ones and both estimates coincide
        assert r["query"]["per_step"][0] == pytest.approx(r["gaussian"]["per_step"][0], abs=1e-6)
        assert 0.0 <= r["hinge_inactive_fraction"] <= 1.0
        # each image's mean over its hinge-active steps is a cosine, and their paired difference is recorded beside
        # the overall one (no data only when every step of every image was already adversarial)
        pa = r["paired_hinge_active"]
        active = [v for v in r["query"]["per_image_hinge_active"] if v is not None and math.isfinite(v)]
        if r["hinge_inactive_fraction"] < 1.0:
            assert active and all(-1.0 <= v <= 1.0 for v in active) and pa["mean"] is not None
        else:
            assert pa["status"] == "no data"
        assert r["isotropic_reference"] == pytest.approx(math.sqrt(r["q"] / (r["q"] + 64 + 1)), rel=1e-5)
        assert r["baseline"] == "f0"  # the digits weights' estimator


def test_fig4d_estimates_with_the_weights_baseline(results, tmp_path):
    """Weights trained with the mean-baseline estimator (cifar-attack's) are probed with that estimator: the
    same weights marked "mean" give other cosines than with f0, from the same directions."""
    from zol2l_ext.zo.lstm_optimizer import LearnedZO

    src = LearnedZO.pretrained("digits-attack")
    path = str(tmp_path / "digits-mean.pt")
    src.save(path, meta={**getattr(src, "meta", {}), "baseline": "mean"})
    res = core.run_experiment("fig4d", "tiny", out_dir=str(tmp_path / "out"), progress=False,
                              overrides={"learned": path, "qs": [10]})
    mean_run = res["data"]["runs"][0]
    f0_run = next(r for r in results["fig4d"][0]["data"]["runs"] if r["q"] == 10)
    assert mean_run["baseline"] == "mean"
    assert mean_run["gaussian"]["per_step"][0] != pytest.approx(f0_run["gaussian"]["per_step"][0], abs=1e-6)


def _digits(items=2):
    ctx = core.Context("t", "tiny", {}, "/tmp", device="cpu")
    return PR.attack_setup(ctx, "digits-attack", "digits-attack", items)


def test_predicted_variance_is_the_samplers_scale():
    from zol2l_ext.zo.estimator import gaussian_estimate
    from zol2l_ext.zo.seeding import step_seeds

    spec, problem, model, _ = _digits()
    opt = PR.make_zo_lstm(spec, model)
    theta = problem.initial_point()
    state = opt.init_state(theta)
    ids = torch.arange(problem.batch)
    for t in range(3):  # past step 0, where the scale is trivially 1
        theta, state, _ = opt.step(problem, theta, state, step_seeds(0, ids, t))
    seeds = step_seeds(0, ids, 3)
    s, _ = opt.model.query(state["g_prev"], state["dtheta_prev"], (state["h_query"], state["c_query"]))
    with torch.no_grad():
        u_scaled = gaussian_estimate(problem, theta, opt.q, opt.mu, seeds, scale=s.abs()).u
        u_plain = gaussian_estimate(problem, theta, opt.q, opt.mu, seeds).u
    s_hat = PR.predicted_scale(opt, state)
    assert not torch.allclose(s_hat, torch.ones_like(s_hat))
    torch.testing.assert_close(u_scaled, s_hat.unsqueeze(1) * u_plain, rtol=1e-5, atol=1e-6)
    var = PR.predicted_variance(opt, state)
    torch.testing.assert_close(var.mean(dim=1), torch.ones(problem.batch), rtol=1e-5, atol=1e-6)


def test_adam_updates_match_zo_adam():
    from zol2l_ext.zo.estimator import gaussian_estimate
    from zol2l_ext.zo.optimizers import ZOAdam
    from zol2l_ext.zo.seeding import step_seeds

    _, problem, _, _ = _digits()
    opt = ZOAdam(q=5, mu=0.005, lr=3.0, beta1=0.8, beta2=0.99)
    theta = problem.initial_point()
    state = opt.init_state(theta)
    ids = torch.arange(problem.batch)
    gs, deltas = [], []
    for t in range(5):
        seeds = step_seeds(1, ids, t)
        with torch.no_grad():
            gs.append(gaussian_estimate(problem, theta, opt.q, opt.mu, seeds).g)
        new, state, _ = opt.step(problem, theta, state, seeds)
        deltas.append(new - theta)
        theta = new
    mine = F4E.adam_updates(torch.stack(gs), 3.0, 0.8, 0.99)
    # theta_new - theta in float32 near |theta| ~ 7 carries ~1e-6 of cancellation error; the updates are ~1e-2
    torch.testing.assert_close(mine, torch.stack(deltas), rtol=1e-4, atol=2e-6)


def test_fig4e_trace_follows_the_runner(results):
    from zol2l_ext.zo.runner import minimize

    data = results["fig4e"][0]["data"]
    spec, problem, model, _ = _digits(data["items"])
    res = minimize(PR.make_zo_lstm(spec, model), problem, data["steps"], seed=0, progress=False)
    for b, im in enumerate(data["images"]):
        assert im["loss"] == pytest.approx(res.loss[:, b].tolist(), rel=1e-5)
        assert len(im["g"]) == len(im["zo-lstm"]) == len(im["variance"]) == data["steps"]
        lr = data["baselines"]["zo-sgd"]["lr"]
        assert im["zo-sgd"] == pytest.approx([-lr / data["dim"] * g for g in im["g"]], rel=1e-4, abs=1e-12)
        assert all(v > 0 for v in im["variance"])
        assert im["variance"][0] == pytest.approx(1.0, abs=1e-5)  # zero inputs at step 0: isotropic
    for r in data["summary"]["all"]["roughness"].values():
        assert r is None or r >= 0


def test_fig9_shapes_and_variance(results):
    data = results["fig9"][0]["data"]
    d = data["dim"]
    for name in ("zo-lstm", "zo-lstm-no-query"):
        e = data["optimizers"][name]
        assert len(e["perturbation"]) == data["items"] and all(len(p) == d for p in e["perturbation"])
        assert all(0.0 < s <= 1.0 for s in e["top_share"])
        # the perturbation is x_adv - x0 with x_adv in [0, 1]
        for x0, p in zip(data["x0"], e["perturbation"]):
            assert all(-1e-3 <= x + v <= 1 + 1e-3 for x, v in zip(x0, p))
    for row in data["variance"]:  # s_hat^2 averages to 1 over the pixels at every step, so its step-mean too
        assert sum(row) / d == pytest.approx(1.0, rel=1e-3)
    for v in data["per_image"]["spearman_variance_perturbation"]:
        assert v is None or -1.0 <= v <= 1.0
