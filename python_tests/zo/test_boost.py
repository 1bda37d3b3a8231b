"""The learned optimizer's early-step boost (`LearnedZO.set_boost`) and its held-out pick (`zol2l boost`)."""
import argparse
import math

import pytest
import torch

from zol2l_ext.cli_args import float_list
from zol2l_ext.zo.meta_heldout import pick_boost
from zol2l_ext.zo import LearnedZO, ZOLSTM, minimize
from zol2l_ext.zo.meta_trainer import init_meta_state, meta_step
from zol2l_ext.zo.synthetic import SparseQuadraticProblem


def _model(**kw):
    torch.manual_seed(0)
    return LearnedZO(scaling="rms", step=0.05, **kw)


def _updates(model, steps=6, B=3, d=8):
    """The updates of `steps` steps on a fixed sequence of estimates (the state carried as the optimizer does)."""
    torch.manual_seed(1)
    gs = [torch.randn(B, d) for _ in range(steps)]
    st = model.init_update_state(B, d)
    out = []
    with torch.no_grad():
        for g in gs:
            delta, new = model.update_step(g, st)
            st = dict(st, **new)
            out.append(delta)
    return out


def test_boost_multiplies_step_t_by_the_decaying_factor():
    plain = _updates(_model())
    boosted = _updates(_model(boost=3.0, boost_decay=2.0))
    for t, (a, b) in enumerate(zip(plain, boosted)):
        factor = 1.0 + 2.0 * math.exp(-t / 2.0)
        torch.testing.assert_close(b, a * factor, rtol=1e-6, atol=0)
    assert not torch.allclose(boosted[0], plain[0])


def test_boost_one_is_the_unboosted_optimizer_bit_for_bit():
    m = _model()
    cfg = dict(m.config)
    m.set_boost(1.0, 7.0)
    assert m.config == cfg and "n_update" not in m.init_update_state(2, 3)
    for a, b in zip(_updates(_model()), _updates(m)):
        assert torch.equal(a, b)


def test_boost_is_saved_and_loaded(tmp_path):
    m = _model(boost=2.5, boost_decay=40.0)
    m.save(tmp_path / "w.pt")
    back = LearnedZO.load(tmp_path / "w.pt")
    assert (back.boost, back.boost_decay) == (2.5, 40.0)
    for a, b in zip(_updates(m), _updates(back)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kw", [{"boost": 0.0}, {"boost": float("nan")}, {"boost_decay": 0.0}])
def test_bad_boost_is_refused(kw):
    with pytest.raises(ValueError, match="boost"):
        _model(**kw)


def test_the_meta_trainer_steps_with_the_boost_too():
    """meta_step and ZOLSTM share update_step: the first step's update of a boosted model is boost x larger."""
    pb = SparseQuadraticProblem([1, 2], dim=10, active=3)
    theta = pb.initial_point()
    seeds = torch.tensor([11, 12], dtype=torch.int64)
    deltas = []
    for boost in (1.0, 4.0):
        m = _model(boost=boost, boost_decay=10.0)
        st = init_meta_state(m, theta, use_query=False)
        theta_new, _, _, _, _ = meta_step(m, pb, theta, st, seeds, q=4, mu=1e-3, use_query=False)
        deltas.append((theta_new - theta).detach())
    torch.testing.assert_close(deltas[1], 4.0 * deltas[0], rtol=1e-5, atol=1e-7)


def test_pick_boost_prefers_the_boost_that_helps_a_too_timid_optimizer():
    """A learned step 100x too small on a quadratic: a boost of the first steps lowers the held-out curve, and the
    pick is the argmin of the scores it reports."""
    pb = SparseQuadraticProblem(list(range(6)), dim=20, active=20, condition=2.0)
    m = LearnedZO(scaling="rms", step=1e-3)
    best, scores = pick_boost(m, pb, steps=30, q=10, mu=1e-3, boosts=(1.0, 30.0), decays=(20.0,))
    assert set(scores) == {(1.0, 20.0), (30.0, 20.0)}
    assert best == (30.0, 20.0) == min(scores, key=scores.get)
    assert scores[(30.0, 20.0)] < 0.9 * scores[(1.0, 20.0)]
    # and the picked boost is what the optimizer then runs with
    m.set_boost(*best)
    res = minimize(ZOLSTM(m, q=10, mu=1e-3, use_query=False), pb, 30, seed=0, progress=False)
    assert float(res.final_loss.mean()) < float(pb(pb.initial_point().unsqueeze(1)).mean())


@pytest.mark.parametrize("text", ["0", "a,b", "", "-1,2"])
def test_boost_grid_arguments_are_checked(text):
    with pytest.raises(argparse.ArgumentTypeError):
        float_list(text, "--boosts", positive=True)


def test_boost_command_says_where_the_weights_go(capsys):
    from zol2l_ext import cli
    assert cli.main(["boost", "sparse-quadratic", "--weights", "sparse-quadratic"]) == 2
    assert "--out PATH and/or --export NAME" in capsys.readouterr().err
