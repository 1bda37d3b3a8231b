"""Data root, splits, target models and output checks (data.py, models.py, digits.py).

Tests that need the staged data read $ZOL2L_DATA, else ../shared/data next to the repository, and skip with
the reason when neither exists; with ZOL2L_REQUIRE_DATA=1 (CI, which is given the data) they fail instead, so
that a wrong data root cannot pass as skips.
"""
import os
import random

import numpy as np
import pytest
import torch

from zol2l_ext import data as D
from zol2l_ext import models as M

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _staged_root():
    env = os.environ.get(D.ENV_DATA)
    if env:
        return env if os.path.isdir(env) else None
    cand = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
    return cand if os.path.isdir(cand) else None


def _absent(reason):
    if os.environ.get("ZOL2L_REQUIRE_DATA") == "1":
        pytest.fail(f"ZOL2L_REQUIRE_DATA=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def data_root():
    root = _staged_root()
    if root is None:
        _absent(f"staged data absent: set {D.ENV_DATA} or provide ../shared/data next to the repository")
    return root


def _need(root, *parts):
    path = os.path.join(root, *parts)
    if not os.path.exists(path):
        _absent(f"{path} absent from the staged data")
    return path


# ---------------------------------------------------------------------------------------------- data root
def test_missing_data_root_names_flag_and_env(monkeypatch):
    monkeypatch.delenv(D.ENV_DATA, raising=False)
    with pytest.raises(D.DataRootError) as e:
        D.resolve_data_root(None)
    assert "--data-root" in str(e.value) and D.ENV_DATA in str(e.value)


def test_nonexistent_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv(D.ENV_DATA, raising=False)
    with pytest.raises(D.DataRootError) as e:
        D.resolve_data_root(str(tmp_path / "nope"))
    assert "--data-root" in str(e.value) and D.ENV_DATA in str(e.value)
    monkeypatch.setenv(D.ENV_DATA, str(tmp_path / "nope"))
    with pytest.raises(D.DataRootError, match=D.ENV_DATA):
        D.resolve_data_root(None)


def test_flag_beats_env(monkeypatch, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv(D.ENV_DATA, str(b))
    assert D.resolve_data_root(str(a)) == str(a)
    assert D.resolve_data_root(None) == str(b)


def test_empty_root_gives_clear_errors(tmp_path):
    with pytest.raises(D.DataRootError, match="MNIST"):
        D.load_mnist(str(tmp_path))
    with pytest.raises(D.DataRootError, match="CIFAR-10"):
        D.load_cifar10(str(tmp_path))
    with pytest.raises(D.DataRootError, match="--data-root"):
        M.load_target("mnist-authors", data_root=str(tmp_path))


# ------------------------------------------------------------------------------------------------- splits
def test_shuffle_is_the_reference_shuffle():
    idx = list(np.arange(9915, dtype=np.int64) * 3)
    ref = list(idx)
    state = random.getstate()
    try:
        random.seed(1234)
        random.shuffle(ref)
    finally:
        random.setstate(state)
    before = random.getstate()
    assert D.shuffled_correct(idx) == [int(v) for v in ref]
    assert random.getstate() == before  # the global random state is untouched


def test_parse_positions():
    assert D.parse_positions("5000:5003") == [5000, 5001, 5002]
    assert D.parse_positions("0:6:2,9") == [0, 2, 4, 9]
    assert D.parse_positions(None, 3) == [5000, 5001, 5002]
    assert D.parse_positions(None, 2, default_start=0) == [0, 1]
    assert D.parse_positions(None, None) is None
    for bad in ("a:b", "1:2:3:4", "x", "-1"):
        with pytest.raises(ValueError):
            D.parse_positions(bad)
    with pytest.raises(ValueError, match="out of range"):
        D.take_positions([1, 2, 3], [0, 5])


def test_mnist_split_reproduces(data_root):
    _need(data_root, "mnist", "mnist_correct", "label_correct_index.npy")
    split = D.mnist_split(data_root)
    ref = [int(i) for i in np.load(os.path.join(data_root, "mnist", "mnist_correct", "label_correct_index.npy"))]
    state = random.getstate()
    try:
        random.seed(1234)  # the reference code's procedure, literally
        random.shuffle(ref)
    finally:
        random.setstate(state)
    assert len(split["shuffled"]) == 9915
    assert split["train"] == ref[:100] and split["test"] == ref[5000:5100]
    # regression constants (computed once with the procedure above)
    assert split["train"][:5] == [463, 6222, 232, 2066, 6525]
    assert split["test"][:5] == [8022, 2056, 3630, 8795, 4037]


def test_mnist_and_cifar_images(data_root):
    _need(data_root, "mnist", "MNIST", "raw")
    x, y = D.load_mnist(data_root, train=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    _need(data_root, "cifar10", "cifar10_test.npz")
    x, y = D.load_cifar10(data_root, train=False)
    assert x.shape == (10000, 3, 32, 32) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert torch.bincount(y).tolist() == [1000] * 10


# ------------------------------------------------------------------------------------------ staged models
def test_authors_mnist_model_classifies(data_root):
    _need(data_root, "models", "mnist_cnn.pt")
    t = M.load_target("mnist-authors", data_root=data_root)
    assert t.output == "logprob" and not t.model.training
    x, y = D.load_mnist(data_root)
    assert M.check_model_outputs(t.model, x[:16], declared="logprob") == "logprob"
    assert M.accuracy(t.model, x[:500], y[:500]) >= 0.98
    test = D.mnist_split(data_root)["test"][:50]  # the reference split's images are all classified right
    assert bool((D.predict(t.model, x[test]) == y[test]).all())


def test_staged_cifar_model_classifies(data_root):
    _need(data_root, "models", "cifar10_model.pt")
    t = M.load_target("cifar10-staged", data_root=data_root)
    assert t.output == "logits" and not t.model.training
    x, y = D.load_cifar10(data_root)
    assert M.check_model_outputs(t.model, x[:16]) == "logits"
    acc = M.accuracy(t.model, x[:500], y[:500])
    assert 0.70 <= acc <= 0.85, acc  # 76.85% on the full test set
    # the model is deterministic in eval mode and takes non-contiguous input
    assert torch.equal(t.model(x[:4]), t.model(x[:4].transpose(2, 3).contiguous().transpose(2, 3)))


def test_bare_state_dict_path_is_recognised(data_root, tmp_path):
    path = _need(data_root, "models", "cifar10_model.pt")
    t = M.load_target(path, dataset="cifar10")
    assert isinstance(t.model, M.Cifar10StagedCNN)
    with pytest.raises(M.ModelOutputError, match="fits none"):
        M.load_target(path, dataset="mnist")


# ----------------------------------------------------------------------------------------------- digits
def test_digits_cnn_trains_above_90(tmp_path, monkeypatch):
    from zol2l_ext import digits

    monkeypatch.setenv(D.ENV_CACHE, str(tmp_path))
    model, meta = digits.get_digits_model(progress=False)
    assert meta["test_accuracy"] > 0.90 and not meta["cached"]
    _, _, x_te, y_te = digits.load_digits_split()
    assert x_te.shape[1:] == (1, 8, 8) and 0 <= float(x_te.min()) and float(x_te.max()) <= 1
    assert M.accuracy(model, x_te, y_te) > 0.90
    again, meta2 = digits.get_digits_model(progress=False)  # from the cache now
    assert meta2["cached"] and torch.equal(again.fc2.weight, model.fc2.weight)
    images, labels, ids = digits.digits_attack_set(model, count=4)
    assert images.shape == (4, 1, 8, 8) and len(ids) == 4
    assert bool((D.predict(model, images) == labels).all())


# ------------------------------------------------------------------------------------------ output checks
class _Wrong(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("fn, match", [
    (lambda x: torch.zeros(x.shape[0], 7), "num_classes|\\[8, 10\\]"),
    (lambda x: torch.zeros(x.shape[0]), "shape"),
    (lambda x: torch.softmax(torch.randn(x.shape[0], 10), 1), "probabilities"),
    (lambda x: torch.full((x.shape[0], 10), float("nan")), "non-finite"),
    (lambda x: (torch.zeros(x.shape[0], 10),), "not a tensor"),
    (lambda x: torch.zeros(x.shape[0], 10, dtype=torch.int64), "float"),
    (lambda x: torch.zeros(x.shape[0] + 1, 10), "shape"),
])
def test_bad_model_outputs_raise(fn, match):
    with pytest.raises(M.ModelOutputError, match=match):
        M.check_model_outputs(_Wrong(fn), torch.rand(8, 1, 8, 8))


def test_declared_logprob_must_be_logprob():
    logits = _Wrong(lambda x: torch.randn(x.shape[0], 10) * 3)
    assert M.check_model_outputs(logits, torch.rand(4, 1, 8, 8)) == "logits"
    with pytest.raises(M.ModelOutputError, match="log-probabilities"):
        M.check_model_outputs(logits, torch.rand(4, 1, 8, 8), declared="logprob")
    logp = _Wrong(lambda x: torch.log_softmax(torch.randn(x.shape[0], 10), 1))
    assert M.check_model_outputs(logp, torch.rand(4, 1, 8, 8)) == "logprob"


def test_model_that_crashes_on_the_images():
    with pytest.raises(M.ModelOutputError, match="fails on images"):
        M.check_model_outputs(M.MnistAuthorsCNN(), torch.rand(2, 3, 32, 32))


def test_architectures_shapes():
    for (arch, ds), _ in M.ARCHS.items():
        m = M.build_model(arch, ds).eval()
        c, h, w = m.input_shape
        out = m(torch.rand(2, c, h, w))
        assert out.shape == (2, 10)
    cw = M.build_model("cw", "mnist")
    assert [cw.conv1.out_channels, cw.conv3.out_channels, cw.fc1.out_features] == [32, 64, 200]
    cw = M.build_model("cw", "cifar10")
    assert [cw.conv1.out_channels, cw.conv3.out_channels, cw.fc1.out_features] == [64, 128, 256]
    # normalization constants are not part of the state_dict (the staged files load unchanged)
    assert not any("normalize" in k for k in M.MnistAuthorsCNN().state_dict())
    with pytest.raises(ValueError):
        M.build_model("cw", "digits")


@pytest.mark.parametrize("arch,ds", list(M.ARCHS))
def test_cpu_targets_run_channels_last_with_the_same_outputs(arch, ds):
    # frozen_eval_model (every target the attack loads) puts CPU convolutions in channels-last format, the
    # layout oneDNN convolves without reordering; the scores must not change beyond float32 rounding.
    torch.manual_seed(0)
    ref = M.build_model(arch, ds).eval()
    c, h, w = ref.input_shape
    x = torch.rand(5, c, h, w)
    with torch.no_grad():
        want = ref(x)
    model = M.frozen_eval_model(M.build_model(arch, ds), "cpu")
    model.load_state_dict(ref.state_dict())
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)


def test_channels_last_leaves_models_without_convolutions_alone():
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    before = [p.stride() for p in mlp.parameters()]
    assert M.channels_last_on_cpu(mlp) is mlp
    assert [p.stride() for p in mlp.parameters()] == before
