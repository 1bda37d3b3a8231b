"""The fade of the QueryRNN's use over a run (`LearnedZO.set_query_decay`): at step t ZO-LSTM uses the learned
scale with probability p exp(-t / decay), and `zol2l boost --query-decays` picks the decay on held-out problems."""
import math

import pytest
import torch

from zol2l_ext.zo import LearnedZO, ZOLSTM
from zol2l_ext.zo.meta_heldout import pick_boost
from zol2l_ext.zo.synthetic import SparseQuadraticProblem


def _model(**kw):
    torch.manual_seed(0)
    m = LearnedZO(scaling="rms", step=0.05, **kw)
    with torch.no_grad():  # a QueryRNN whose scale is far from 1, so that using it or not shows in the estimate
        m.query.lstm.w_out.normal_(0.0, 2.0)
    return m


def _estimate_at(model, step, query_prob=1.0, B=64, d=10):
    """ZO-LSTM's gradient estimate of one step at step counter ``step``, from a fixed state and seeds."""
    pb = SparseQuadraticProblem(list(range(B)), dim=d, active=d)
    opt = ZOLSTM(model, q=4, mu=1e-3, query_prob=query_prob)
    theta = pb.initial_point()
    st = opt.init_state(theta)
    torch.manual_seed(2)
    st["g_prev"], st["dtheta_prev"] = torch.randn(B, d), torch.randn(B, d)
    st["step"] = step
    seeds = torch.arange(B, dtype=torch.int64) * 31 + 5
    with torch.no_grad():
        return opt.differentiable_step(pb, theta, st, seeds).estimate.g


def test_the_fade_turns_the_query_scale_off_late_and_keeps_it_early():
    faded, plain = _model(query_decay=5.0), _model()
    isotropic = _model()
    with torch.no_grad():
        isotropic.query.lstm.w_out.zero_()  # head 0: scale 1 everywhere, the standard directions
    # step 0: p = 1 for both, the learned scale on every row
    assert torch.equal(_estimate_at(faded, 0), _estimate_at(plain, 0))
    assert not torch.allclose(_estimate_at(plain, 0), _estimate_at(isotropic, 0))
    # step 200: p = exp(-40), no row uses it: the standard directions, bit for bit
    assert torch.equal(_estimate_at(faded, 200), _estimate_at(isotropic, 200))
    # in between, about p exp(-t / decay) of the rows use it (each row draws its own choice)
    g_f, g_p, g_i = _estimate_at(faded, 5, B=400), _estimate_at(plain, 5, B=400), _estimate_at(isotropic, 5, B=400)
    used = (g_f == g_p).all(dim=1) & ~(g_f == g_i).all(dim=1)
    assert abs(used.double().mean().item() - math.exp(-1.0)) < 0.08


def test_no_fade_is_the_plain_optimizer_and_the_decay_is_saved(tmp_path):
    m = _model()
    cfg = dict(m.config)
    m.set_query_decay(math.inf)
    assert m.config == cfg and "query_decay" not in cfg
    m.set_query_decay(30.0)
    m.save(tmp_path / "w.pt")
    back = LearnedZO.load(tmp_path / "w.pt")
    assert back.query_decay == 30.0 and back.config["query_decay"] == 30.0
    assert torch.equal(_estimate_at(back, 7, query_prob=0.5), _estimate_at(m, 7, query_prob=0.5))


@pytest.mark.parametrize("bad", [0.0, -3.0, float("nan")])
def test_a_bad_decay_is_refused(bad):
    with pytest.raises(ValueError, match="query_decay"):
        _model(query_decay=bad)


def test_pick_boost_also_picks_the_fade():
    pb = SparseQuadraticProblem(list(range(4)), dim=12, active=12, condition=2.0)
    m = LearnedZO(scaling="rms", step=1e-2)
    best, scores = pick_boost(m, pb, steps=20, q=6, mu=1e-3, boosts=(1.0, 3.0), decays=(10.0,),
                              query_decays=(5.0, math.inf))
    assert set(scores) == {(1.0, 10.0, 5.0), (1.0, 10.0, math.inf), (3.0, 10.0, 5.0), (3.0, 10.0, math.inf)}
    assert best == min(scores, key=scores.get)


def test_the_command_line_grid_takes_inf():
    from zol2l_ext.cli_args import float_list
    assert float_list("10,25,inf", "--query-decays", positive=True) == (10.0, 25.0, math.inf)
