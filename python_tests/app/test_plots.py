"""The attack figures: success rate against queries, loss curves against iterations or queries on a log axis, and
the adversarial grid with its perturbation maps (drawn from small hand-made results, no attack run)."""
import numpy as np
import pytest
import torch

from zol2l_ext import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_success_rate_curve_counts_first_successes_within_q():
    qs, rate = plots.success_rate_curve([0, 22, 22, -1, 44], max_queries=50)
    assert qs[0] == 0 and qs[-1] == 50 and len(qs) == 51
    assert rate[0] == pytest.approx(0.2)  # already misclassified: success at 0 queries
    assert rate[21] == pytest.approx(0.2) and rate[22] == pytest.approx(0.6)
    assert rate[50] == pytest.approx(0.8)  # the attack that never succeeded stays out
    assert np.all(np.diff(rate) >= 0)


def _results(budget=None):
    def entry(first, loss):
        return {"per_image": [{"first_success_queries": first, "queries": [max(first) if max(first) > 0 else 33] * 2}],
                "aggregate": {"loss_mean": loss, "loss_std": [0.1] * len(loss), "loss_std_over": "trials"},
                "query_axis": [0, 11, 22, 33]}
    return {"config": {"dataset": "toy", "target": "t", "images": 1, "trials": 2, "q": 10, "steps": 3,
                       "budget": budget},
            "optimizers": {"zo-sgd": entry([11, -1], [5.0, 2.0, 1.0, 0.5]),
                           "zo-lstm": entry([22, 22], [5.0, 1.0, 0.2, 0.1])}}


@pytest.mark.parametrize("budget", [None, 30])
def test_success_vs_queries_png(tmp_path, budget):
    path = plots.plot_success_vs_queries(_results(budget), str(tmp_path / "s.png"))
    assert open(path, "rb").read(8) == PNG


@pytest.mark.parametrize("x, log_y", [("iteration", None), ("queries", None), ("queries", False)])
def test_loss_curves_png(tmp_path, x, log_y):
    path = plots.plot_loss_curves(_results(40), str(tmp_path / "l.png"), log_y=log_y, x=x)
    assert open(path, "rb").read(8) == PNG


def test_loss_curves_reject_unknown_axis(tmp_path):
    with pytest.raises(ValueError, match="x must be"):
        plots.plot_loss_curves(_results(), str(tmp_path / "l.png"), x="time")


@pytest.mark.parametrize("channels", [1, 3])
def test_adversarial_grid_png(tmp_path, channels):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, channels, 6, 6, generator=g)
    adv = {"zo-sgd": (images + 0.1 * torch.randn(3, channels, 6, 6, generator=g)).clamp(0, 1)}
    path = plots.plot_adversarial_grid(images, torch.tensor([0, 1, 2]), adv, {"zo-sgd": torch.tensor([1, 1, 2])},
                                       str(tmp_path / "g.png"), trial=0, trials=3)
    assert open(path, "rb").read(8) == PNG


def test_reproduce_success_figure_only_for_attack_runs_that_recorded_queries(tmp_path):
    from zol2l_ext.reproduce.figures import success_figure

    attack = {"config": {"kind": "attack", "steps": 3, "q": 10},
              "optimizers": {"zo-sgd": {"first_success_queries": [11, -1]}}}
    binary = {"config": {"kind": "binary", "steps": 3, "q": 10}, "optimizers": {"zo-sgd": {}}}
    old = {"config": {"kind": "attack", "steps": 3, "q": 10}, "optimizers": {"zo-sgd": {}}}
    assert success_figure([binary], str(tmp_path), "a.png", str) == []
    assert success_figure([old], str(tmp_path), "b.png", str) == []
    (path,) = success_figure([attack, binary], str(tmp_path), "c.png", lambda r: "toy")
    assert open(path, "rb").read(8) == PNG
