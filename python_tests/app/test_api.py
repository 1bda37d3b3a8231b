"""zol2l_ext.ZOAttack, the one-call attack API, on a model defined here (no data, no checkpoint)."""
import pytest
import torch
from torch import nn

from zol2l_ext import ZOAttack
from zol2l_ext.api import AttackResult


class SumModel(nn.Module):
    """A linear classifier written as a product and a sum over pixels: its rounding does not depend on the
    batch size (a matmul's may), so batched and unbatched attacks must agree bit for bit."""

    def __init__(self, d=64, k=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(d, k, generator=g))

    def forward(self, x):
        return (x.flatten(1).unsqueeze(2) * self.w).sum(1)


@pytest.fixture(scope="module")
def setup():
    model = SumModel().eval()
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = model(images).argmax(1)
    return model, images, labels


@pytest.mark.parametrize("name", ["zo-sgd", "zo-adam", "zo-lstm"])
def test_attack_returns_images_and_result(setup, name):
    model, images, labels = setup
    adv, res = ZOAttack(model, name, q=10, steps=60)(images, labels)
    assert isinstance(res, AttackResult) and adv.shape == images.shape and adv.dtype == images.dtype
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert torch.equal(res.predicted, model(adv).argmax(1))
    assert torch.equal(res.success, res.predicted != labels)
    assert res.loss.shape == (61, 6) and res.query_axis.tolist()[:3] == [0, 11, 22]
    # early stop at success: an image that succeeded spent exactly the queries to its first success
    ok = res.success
    assert ok.any(), f"{name} fooled no image of a 3-class linear model in 60 steps"
    assert torch.equal(res.queries[ok], res.first_success_queries[ok])
    assert all(r == "success" for r, s in zip(res.stop_reason, ok.tolist()) if s)
    l1 = (adv - images).abs().flatten(1).sum(1)
    torch.testing.assert_close(res.l1, l1)
    assert 0 < res.success_rate <= 1 and res.summary()["images"] == 6


def test_batching_does_not_change_the_result(setup):
    model, images, labels = setup
    adv, res = ZOAttack(model, "zo-sgd", q=10, steps=40, stop_at_success=False)(images, labels)
    adv2, res2 = ZOAttack(model, "zo-sgd", q=10, steps=40, stop_at_success=False, batch_size=4)(images, labels)
    assert torch.equal(adv, adv2) and torch.equal(res.queries, res2.queries)
    torch.testing.assert_close(res.loss, res2.loss, rtol=0, atol=0, equal_nan=True)


def test_budget_caps_queries(setup):
    model, images, labels = setup
    _, res = ZOAttack(model, "zo-sgd", q=10, steps=100, budget=50, stop_at_success=False)(images, labels)
    assert res.queries.tolist() == [44] * 6  # 4 steps of 11; a fifth would exceed 50
    assert set(res.stop_reason) == {"budget"}


def test_plain_function_log_probabilities_and_no_labels(setup):
    model, images, _ = setup
    fn = lambda x: torch.log_softmax(model(x), dim=1)  # noqa: E731 - a callable black box, no nn.Module
    atk = ZOAttack(fn, "zo-adam", q=10, steps=30)
    adv = atk.generate(images)  # ART spelling; labels default to the model's own
    assert adv.shape == images.shape
    assert atk.output is None  # detected per call, never stored


def test_training_mode_is_restored(setup):
    model, images, labels = setup
    model.train()
    try:
        ZOAttack(model, "zo-sgd", q=5, steps=3)(images, labels)
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize("kwargs, match", [
    (dict(q=0), "q must be an integer >= 1"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(mu=-1.0), "mu must be > 0"),
    (dict(budget=5), "budget 5 is below one step"),
    (dict(space="rgb"), "space must be one of"),
    (dict(optimizer="adam"), "unknown optimizer 'adam'"),
])
def test_bad_arguments(setup, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ZOAttack(setup[0], **kwargs)


def test_bad_inputs(setup):
    model, images, labels = setup
    atk = ZOAttack(model, "zo-sgd", q=5, steps=2)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        atk(images * 255, labels)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        atk(images[0], labels)
    with pytest.raises(ValueError, match="integer class indices"):
        atk(images, labels.float())
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        atk(images, labels + 3)
    with pytest.raises(ValueError, match="probabilities"):
        ZOAttack(lambda x: torch.softmax(model(x), 1), "zo-sgd", q=5, steps=2)(images, labels)


def test_readme_example_runs(capsys):
    """The README's 'Attacking your own model' example, run as written."""
    import os
    import re

    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md"), encoding="utf-8").read()
    section = readme.split("## Attacking your own model", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert re.match(r"success \d+%, \d+ queries to success, mean L2 [\d.]+", out), out


def test_tanh_space_has_no_shipped_task(setup):
    """cifar-attack moved to pixel space, so tanh space ships nothing: the baselines take MNIST's tanh-space
    fallback lr, and zo-lstm refuses to guess weights trained in another space."""
    from zol2l_ext import settings as S
    from zol2l_ext.api import SPACE_TASKS

    assert SPACE_TASKS["tanh"] is None
    atk = ZOAttack(setup[0], "zo-sgd", q=5, steps=2, space="tanh")
    assert float(atk.optimizer.lr) == S.DEFAULT_LRS[("mnist", "tanh")]["zo-sgd"]
    assert float(ZOAttack(setup[0], "zo-sgd", q=5, steps=2, space="tanh", lr=3.0).optimizer.lr) == 3.0
    with pytest.raises(ValueError, match="learned="):
        ZOAttack(setup[0], "zo-lstm", q=5, steps=2, space="tanh")
    atk = ZOAttack(setup[0], "zo-lstm", q=5, steps=2, space="tanh", learned="mnist-attack")
    adv, res = atk(*setup[1:])
    assert adv.shape == setup[1].shape and res.loss.shape == (3, 6)
