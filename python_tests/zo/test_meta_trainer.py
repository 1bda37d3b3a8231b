"""Meta-training (zo.meta_trainer): learning on a tiny problem, gradient modes, checkpoints, stages."""
import math
import os

import pytest
import torch

from zol2l_ext import settings as S
from zol2l_ext.zo import CallableProblem, LearnedZO
from zol2l_ext.zo.meta_trainer import (MetaTrainConfig, MetaTrainer, evaluate_learned, init_meta_state,
                                       meta_step)
from zol2l_ext.zo.seeding import step_seeds

D = 8


class Quadratics:
    """A ProblemSet of ill-conditioned quadratics f(x) = sum_j a_j (x_j - c_j)^2, one per item."""

    def __init__(self, n, seed, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        self.a = (torch.rand(n, D, generator=g) * 2 + 0.2).to(dtype)
        self.c = torch.randn(n, D, generator=g).to(dtype)
        self.dtype = dtype

    def __len__(self):
        return self.a.shape[0]

    def make(self, rows=None, repeat=1):
        idx = torch.arange(len(self)) if rows is None else torch.as_tensor(list(rows))
        a, c = self.a[idx].repeat(repeat, 1), self.c[idx].repeat(repeat, 1)
        fn = lambda pts: (a.unsqueeze(1) * (pts - c.unsqueeze(1)).square()).sum(-1)  # noqa: E731
        return CallableProblem(fn, D, a.shape[0], dtype=self.dtype)


def _cfg(**kw):
    base = dict(task="quadratics", batch=4, epochs=1, updates_per_epoch=1, horizon=20, unroll=5, q=4, mu=0.01,
                lr_update=1e-2, lr_query=1e-2, val_trials=1)
    base.update(kw)
    return MetaTrainConfig(**base)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_short_training_lowers_the_loss():
    torch.manual_seed(0)
    train, val = Quadratics(16, 1), Quadratics(4, 2)
    cfg = _cfg(epochs=6, updates_per_epoch=5, lr_update=3e-2)
    tr = MetaTrainer(cfg, train, val, model=LearnedZO(), progress=False)
    before = tr.validate()["final_loss"]
    tr.fit()
    after = evaluate_learned(tr.best_model(), val.make(), cfg.horizon, cfg.q, cfg.mu, use_query=False)["final_loss"]
    metas = [r["meta_loss"] for r in tr.history["updates"]]
    assert after < 0.5 * before, (before, after)
    assert sum(metas[-5:]) < sum(metas[:5]), metas
    assert tr.best["epoch"] >= 1 and math.isfinite(tr.best["val_final_loss"])


@pytest.mark.parametrize("use_query", [False, True])
def test_zeroth_order_mode_matches_first_order_on_a_smooth_function(use_query):
    """Eq. 5's central differences as the optimizee gradient give the meta-gradient that autograd gives."""
    torch.manual_seed(3)
    ps = Quadratics(3, 4, dtype=torch.float64)
    grads = {}
    for mode in ("first-order", "zeroth-order"):
        model = LearnedZO().double()
        torch.manual_seed(5)
        model.update.lstm.reset_parameters()
        model.query.lstm.reset_parameters()
        prob = ps.make()
        theta = prob.initial_point()
        st = init_meta_state(model, theta, use_query)
        pids = torch.arange(theta.shape[0])
        loss = 0.0
        for t in range(4):
            theta, st, f_new, reg, _ = meta_step(model, prob, theta, st, step_seeds(1, pids, t), q=3, mu=0.01,
                                                 use_query=use_query, grad_mode=mode, zo_mu=1e-5, zo_chunk=3)
            loss = loss + (t + 1) * f_new.sum() + (reg.sum() if reg is not None else 0.0)
        net = model.query if use_query else model.update
        grads[mode] = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
    for a, b in zip(grads["first-order"], grads["zeroth-order"]):
        if a is None:
            assert b is None
            continue
        if use_query:
            # zeroth-order mode treats the query values as constants: only the u factor of the estimate carries
            # the meta-gradient to s, so the QueryRNN's gradients differ; they must still be finite and non-zero
            assert torch.isfinite(b).all() and b.abs().sum() > 0
        else:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_checkpoint_resume_gives_the_same_next_update(tmp_path):
    train, val = Quadratics(16, 1), Quadratics(4, 2)
    cfg = _cfg(epochs=3, updates_per_epoch=1)
    torch.manual_seed(0)
    a = MetaTrainer(cfg, train, val, model=LearnedZO(), out_dir=str(tmp_path / "a"), progress=False)
    init = _weights(a.model)
    a.train_update()
    a.save_checkpoint()
    rows_a = a.train_update()["rows"]
    w_a = _weights(a.model)

    b_model = LearnedZO()
    b_model.load_state_dict(init)
    b = MetaTrainer(cfg, train, val, model=b_model, progress=False)
    b.load_checkpoint(str(tmp_path / "a" / "checkpoint.pt"))
    assert b.update_count == 1
    rows_b = b.train_update()["rows"]
    assert rows_a == rows_b
    for k in w_a:
        torch.testing.assert_close(_weights(b.model)[k], w_a[k], rtol=0, atol=0)


def test_checkpoint_rejects_other_settings(tmp_path):
    train = Quadratics(8, 1)
    a = MetaTrainer(_cfg(), train, None, model=LearnedZO(), out_dir=str(tmp_path), progress=False)
    a.train_update()
    path = a.save_checkpoint()
    b = MetaTrainer(_cfg(stage=2), train, None, model=LearnedZO(), progress=False)
    with pytest.raises(ValueError, match="stage"):
        b.load_checkpoint(path)


def test_stage2_freezes_the_update_rnn_and_trains_the_query_rnn():
    torch.manual_seed(1)
    train = Quadratics(8, 1)
    tr = MetaTrainer(_cfg(stage=2, updates_per_epoch=2), train, None, model=LearnedZO(), progress=False)
    up0 = {k: v.clone() for k, v in tr.model.update.state_dict().items()}
    q0 = {k: v.clone() for k, v in tr.model.query.state_dict().items()}
    tr.fit()
    for k, v in tr.model.update.state_dict().items():
        assert torch.equal(v, up0[k]), k
    assert any(not torch.equal(v, q0[k]) for k, v in tr.model.query.state_dict().items())


def test_stage1_leaves_the_query_rnn_alone():
    train = Quadratics(8, 1)
    tr = MetaTrainer(_cfg(), train, None, model=LearnedZO(), progress=False)
    q0 = {k: v.clone() for k, v in tr.model.query.state_dict().items()}
    up0 = {k: v.clone() for k, v in tr.model.update.state_dict().items()}
    tr.train_update()
    assert all(torch.equal(v, q0[k]) for k, v in tr.model.query.state_dict().items())
    assert any(not torch.equal(v, up0[k]) for k, v in tr.model.update.state_dict().items())


def test_outputs_and_best_weights_load(tmp_path):
    train, val = Quadratics(8, 1), Quadratics(2, 2)
    tr = MetaTrainer(_cfg(epochs=2), train, val, model=LearnedZO(), out_dir=str(tmp_path), progress=False,
                     meta={"commands": ["zol2l train x"]})
    tr.fit()
    for name in ("checkpoint.pt", "best.pt", "log.json", "log.csv", "curves.png"):
        assert (tmp_path / name).is_file(), name
    best = LearnedZO.load(tmp_path / "best.pt")
    assert best.meta["commands"] == ["zol2l train x"] and best.meta["stage"] == 1
    lines = (tmp_path / "log.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 2 and lines[0].startswith("update,epoch,meta_loss")


def test_non_finite_meta_loss_skips_the_window():
    class Bad(Quadratics):
        def make(self, rows=None, repeat=1):
            p = super().make(rows, repeat)
            inner = p.fn
            p.fn = lambda pts: inner(pts) * float("nan")
            return p

    tr = MetaTrainer(_cfg(), Bad(4, 1), None, model=LearnedZO(), progress=False)
    w0 = _weights(tr.model)
    row = tr.train_update()
    assert row["skipped_windows"] >= 1
    for k, v in _weights(tr.model).items():
        assert torch.equal(v, w0[k])


@pytest.mark.parametrize("bad, match", [
    (dict(stage=3), "stage"), (dict(horizon=21, unroll=5), "multiple"), (dict(grad_mode="x"), "grad_mode"),
    (dict(objective="x"), "objective"), (dict(batch=0), "batch"), (dict(mu=0.0), "mu"),
])
def test_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**bad).validate()


def test_reference_objective_trains():
    tr = MetaTrainer(_cfg(objective="reference"), Quadratics(8, 1), None, model=LearnedZO(), progress=False)
    row = tr.train_update()
    assert math.isfinite(row["meta_loss"])


def test_cli_train_binary_then_resume_and_export(tmp_path, monkeypatch, capsys):
    from zol2l_ext import cli
    from zol2l_ext.zo import lstm_optimizer

    monkeypatch.setattr(lstm_optimizer, "PRETRAINED_DIR", tmp_path / "pretrained")
    out = tmp_path / "run"
    args = ["train", "binary", "--epochs", "1", "--updates-per-epoch", "1", "--batch", "2", "--horizon", "10",
            "--unroll", "5", "--val-steps", "5", "--out", str(out), "--no-progress"]
    assert cli.main(args) == 0
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["update_count"] == 1
    # more epochs on the same run: --resume continues at update 1
    assert cli.main(args[:2] + ["--epochs", "2"] + args[4:] + ["--resume", "--export", "tiny"]) == 0
    err = capsys.readouterr().err
    assert "resumed" in err
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["update_count"] == 2 and [r["epoch"] for r in ck["history"]["epochs"]] == [0, 1, 2]
    # --export writes your folder, never the package; the name then loads before the package's of that name
    assert not (tmp_path / "pretrained" / "tiny.pt").exists()
    model = LearnedZO.load(os.path.join(os.environ["ZOL2L_USER_DIR"], "pretrained", "tiny.pt"))
    assert model.meta["commands"][-1].startswith("zol2l train binary") and "--resume" in model.meta["commands"][-1]
    assert model.meta["name"] == "tiny"
    assert "--into-package" in err and "your export tiny" in S.pretrained_source("tiny")
    assert torch.equal(S.load_learned("tiny")[0].update.lstm.w_out, model.update.lstm.w_out)
    # --into-package: the package's folder (redirected here)
    assert cli.main(args[:2] + ["--epochs", "2"] + args[4:] + ["--resume", "--export", "tiny2", "--into-package"]) == 0
    assert LearnedZO.load(tmp_path / "pretrained" / "tiny2.pt").meta["name"] == "tiny2"


def test_zolstm_pretrained_by_name(tmp_path, monkeypatch):
    from zol2l_ext.zo import ZOLSTM, lstm_optimizer

    monkeypatch.setattr(lstm_optimizer, "PRETRAINED_DIR", tmp_path)
    LearnedZO().save(tmp_path / "mine.pt")
    opt = ZOLSTM.pretrained("mine", q=5)
    assert opt.q == 5 and isinstance(opt.model, LearnedZO)
    with pytest.raises(FileNotFoundError, match="mine2"):
        ZOLSTM.pretrained("mine2")


def test_pick_update_scale_returns_the_best_alpha():
    from zol2l_ext.zo.meta_heldout import pick_update_scale

    torch.manual_seed(0)
    model = LearnedZO()
    w_out = model.update.lstm.w_out.detach().clone()
    alpha, scores = pick_update_scale(model, Quadratics(3, 2), _cfg(), grid=(0.1, 1.0, 10.0), progress=False)
    assert set(scores) == {0.1, 1.0, 10.0}
    assert scores[alpha] == min(scores.values())
    assert torch.equal(model.update.lstm.w_out, w_out)  # candidates are scaled copies


def test_meta_loss_reads_a_fresh_minibatch_on_stochastic_problems():
    """f(theta_t) of the meta-loss is evaluated on a minibatch independent of the step's queries: on the same
    minibatch a step that fits it looks better than it generalises."""
    from zol2l_ext.zo import BinaryClassificationProblem, LearnedZO
    from zol2l_ext.zo.estimator import evaluate
    from zol2l_ext.zo.meta_trainer import init_meta_state, meta_step
    from zol2l_ext.zo.seeding import SALT_META, derive, step_seeds

    torch.manual_seed(0)
    problem = BinaryClassificationProblem(num_datasets=3, dim=10, n=200, minibatch=16, seeds=0)
    model = LearnedZO(scaling="rms", step=0.1)
    theta = problem.initial_point()
    seeds = step_seeds(5, torch.arange(3), 0)
    st = init_meta_state(model, theta, False)
    theta_new, _, f_new, _, _ = meta_step(model, problem, theta, st, seeds, q=4, mu=0.01, use_query=False)
    with torch.no_grad():
        fresh = evaluate(problem, theta_new.unsqueeze(1), derive(seeds, SALT_META)).squeeze(1)
        same = evaluate(problem, theta_new.unsqueeze(1), seeds).squeeze(1)
    torch.testing.assert_close(f_new.detach(), fresh)
    assert not torch.allclose(f_new.detach(), same)


def test_train_cli_picks_a_fresh_scaled_models_step_even_with_resume(tmp_path):
    """A fresh scaled model gets its starting step from the grid (--step auto), also under --resume when there
    is no checkpoint yet; the pick and the held-out scores are saved with the weights."""
    from zol2l_ext.cli import main

    out = tmp_path / "run"
    rc = main(["train", "sparse-quadratic", "--stage", "1", "--epochs", "1", "--updates-per-epoch", "1",
               "--batch", "2", "--horizon", "20", "--unroll", "10", "--val-steps", "20", "--resume",
               "--out", str(out), "--no-progress", "--threads", "1"])
    assert rc == 0
    best = LearnedZO.load(out / "best.pt")
    assert best.config["scaling"] == "rms"
    assert len(best.meta["alpha_scores"]) == 9  # every step of the grid was scored on the held-out problems
    picked = best.meta["update_scale_applied"]
    scores = {float(k): v for k, v in best.meta["alpha_scores"].items()}
    assert picked == min(scores, key=scores.get)
