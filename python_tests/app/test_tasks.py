"""Task splits (zol2l_ext.tasks): disjoint parts, problems of the right shape."""
import pytest

from zol2l_ext import tasks as T


@pytest.mark.parametrize("name", T.TASK_NAMES)
def test_parts_are_disjoint_where_they_must_be(name):
    spec = T.get_task(name)
    train, val, test, tune = (set(spec.positions(p)) for p in ("train", "val", "test", "tune"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert tune <= train  # baselines are tuned on training problems, like the learned optimizer
    assert spec.horizon % spec.unroll == 0


def test_binary_problems():
    td = T.load_task("binary", "test")
    assert len(td) == 10 and td.seeds == list(range(90, 100))
    p = td.make([0, 3], repeat=2)
    assert (p.batch, p.dim) == (4, 100) and p.seeds == [90, 93, 90, 93]


def test_digits_problems_need_no_data_root():
    td = T.load_task("digits-attack", "val")
    assert len(td) == 20
    p = td.make(None, repeat=1)
    assert (p.batch, p.dim) == (20, 64)
    assert not p.success(p.initial_point()).any()  # correctly classified clean images


def test_unknown_task_and_part():
    with pytest.raises(ValueError, match="unknown task"):
        T.get_task("imagenet-attack")
    with pytest.raises(ValueError, match="no part"):
        T.get_task("binary").positions("holdout")
