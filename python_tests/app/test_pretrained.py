"""The learned optimizers shipped in zol2l_ext/pretrained/: they load, say how they were made, and descend."""
import pytest
import torch

from zol2l_ext import tasks as T
from zol2l_ext.zo import LearnedZO, ZOLSTM, minimize

SHIPPED = ("digits-attack", "mnist-attack", "binary", "cifar-attack", "cifar-attack-finetune", "sparse-quadratic")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_loads_with_its_regeneration_commands(name):
    assert name in LearnedZO.available_pretrained()
    model = LearnedZO.pretrained(name)  # torch.load(weights_only=True) inside
    cmds = model.meta["commands"]
    assert cmds and cmds[0].startswith("zol2l train ")
    assert all(c.startswith(("zol2l train ", "zol2l boost ")) for c in cmds)
    assert f"--export {name}" in cmds[-1]
    if model.boost != 1.0:  # a boosted file says how its boost was picked (a transfer: its init's boost)
        assert any(c.startswith("zol2l boost ") for c in cmds) and model.meta["boost_scores"]
    assert model.meta["task"] in T.TASK_NAMES
    for c in cmds:
        assert "/tmp/" not in c and "/work/" not in c  # relative paths only


def _final_loss(opt, problem, steps):
    res = minimize(opt, problem, steps, seed=3, progress=False)
    return float(res.final_loss.mean())


def test_pretrained_digits_beats_an_untrained_optimizer():
    td = T.load_task("digits-attack", "val")
    problem = td.make(list(range(6)))
    torch.manual_seed(0)
    trained = _final_loss(ZOLSTM.pretrained("digits-attack", q=10), problem, 40)
    with pytest.warns(UserWarning, match="untrained"):
        untrained = ZOLSTM(q=10)
    start = float(problem(problem.initial_point().unsqueeze(1)).mean())
    assert trained < 0.5 * start
    assert trained < _final_loss(untrained, problem, 40)


def test_pretrained_binary_descends():
    td = T.load_task("binary", "test")
    problem = td.make([0, 1])
    start = float(problem.full_loss(problem.initial_point()).mean())
    res = minimize(ZOLSTM.pretrained("binary", q=20), problem, 100, seed=0, progress=False)
    assert float(problem.full_loss(res.theta).mean()) < 0.5 * start
