"""`zol2l train` from fresh weights starts from weights drawn from --seed (the same command, the same start)."""
import pytest

from zol2l_ext import cli
from zol2l_ext.zo import meta_trainer


class _Stop(Exception):
    pass


def _start_weights(monkeypatch, tmp_path, seed):
    seen = {}

    class Recorder:
        def __init__(self, cfg, train, val, model=None, **kw):
            seen.update({k: v.clone() for k, v in model.state_dict().items()})
            raise _Stop

    monkeypatch.setattr(meta_trainer, "MetaTrainer", Recorder)
    with pytest.raises(_Stop):
        cli.main(["train", "sparse-quadratic", "--step", "0.1", "--seed", str(seed), "--no-progress",
                  "--out", str(tmp_path / f"s{seed}")])
    return seen


def test_same_seed_same_start_other_seed_other_start(monkeypatch, tmp_path):
    import torch

    torch.manual_seed(123)  # whatever the global generator holds before, the start depends on --seed only
    a = _start_weights(monkeypatch, tmp_path, 0)
    torch.rand(7)
    b = _start_weights(monkeypatch, tmp_path, 0)
    c = _start_weights(monkeypatch, tmp_path, 1)
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].numel() > 1)
