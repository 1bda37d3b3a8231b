"""The attack parameterisation ("pixel" / "tanh") selectable in run_attack, evaluate_task, `zol2l attack`,
`zol2l tune` and `zol2l evaluate`, and tunings refused in another space. A tiny linear classifier on the 8x8
digits stands in for the target (no CNN training, no data root): `tasks.load_task` and `attack.prepare_attack`
are replaced by stand-ins returning it."""
import json

import pytest
import torch

from zol2l_ext import attack as A
from zol2l_ext import cli
from zol2l_ext import evaluate as E
from zol2l_ext import models as M
from zol2l_ext import tasks as T
from zol2l_ext import tune as TU
from zol2l_ext.digits import load_digits_split
from zol2l_ext.zo import runner
from zol2l_ext import settings as S
from zol2l_ext import attack_setup as AS


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.LogSoftmax(dim=1)).eval()


@pytest.fixture(scope="module")
def tiny():
    """(model, images [6, 1, 8, 8], labels = the model's own predictions: all 'correctly classified')."""
    model = _tiny_model()
    images = load_digits_split()[2][:6].contiguous()
    with torch.no_grad():
        labels = model(images).argmax(1)
    return model, images, labels


@pytest.fixture
def starts(monkeypatch):
    """Records the theta0 of every runner.minimize call."""
    seen = []
    orig = runner.minimize

    def spy(opt, problem, steps, *a, **kw):
        seen.append(kw["theta0"].detach().clone())
        return orig(opt, problem, steps, *a, **kw)

    monkeypatch.setattr(runner, "minimize", spy)
    return seen


@pytest.fixture
def tiny_task(monkeypatch, tiny):
    """tasks.load_task of attack tasks returns the tiny model and digits images."""
    model, images, labels = tiny
    orig = T.load_task

    def load(spec, part, data_root=None, device="cpu"):
        spec = T.get_task(spec) if isinstance(spec, str) else spec
        if spec.kind != "attack":
            return orig(spec, part, data_root=data_root, device=device)
        return T.TaskData(spec, part, images=images, labels=labels, model=model, output="logprob",
                          target_name="tiny-linear", device=str(torch.device(device)))

    monkeypatch.setattr(T, "load_task", load)


@pytest.fixture
def tuned_dir(tmp_path, monkeypatch):
    d = tmp_path / "shipped"
    d.mkdir()
    monkeypatch.setattr(TU, "TUNED_DIR", str(d))
    return d


def _tuning(task="digits-attack", space=None, lr=0.7):
    """A minimal tuning result of an attack task (space None: written before spaces existed)."""
    cfg = {"kind": "attack", "dataset": "digits"}
    if space is not None:
        cfg["space"] = space
    return {"format": TU.FORMAT, "task": task, "config": cfg,
            "optimizers": {"zo-sgd": {"lr": lr, "score": 1.0, "candidates": []}}}


def _tanh_start(images):
    return torch.atanh((2.0 * images - 1.0) * (1.0 - 1e-6)).reshape(images.shape[0], -1)


# ------------------------------------------------------------------------------------------------- defaults
def test_defaults_come_from_the_tasks():
    for ds, task in T.DATASET_TASKS.items():
        assert T.TASKS[task].dataset == ds and T.TASKS[task].kind == "attack"
        assert S.DATASET_DEFAULTS[ds]["space"] == T.TASKS[task].space
    assert T.DATASET_TASKS == {"digits": "digits-attack", "mnist": "mnist-attack", "cifar10": "cifar-attack"}
    assert TU.DATASET_TASKS is T.DATASET_TASKS
    # the fallback lrs depend on the space
    assert S.default_lrs("mnist", "pixel")["zo-sgd"] == 8.0 and S.default_lrs("mnist", "tanh")["zo-sgd"] == 300.0
    assert S.default_lrs("mnist") == S.default_lrs("mnist", S.DATASET_DEFAULTS["mnist"]["space"])
    assert S.default_lrs("binary") == {}
    with pytest.raises(AS.AttackSetupError, match="space"):
        S.default_lrs("mnist", "logit")
    lrs = S.learning_rates("digits", ["zo-sgd", "zo-lstm"], space="tanh")
    assert lrs == {"zo-sgd": S.DEFAULT_LRS[("digits", "tanh")]["zo-sgd"], "zo-lstm": None}


# ---------------------------------------------------------------------------------------------- run_attack
def test_run_attack_space(tiny, starts):
    model, images, labels = tiny
    kw = dict(steps=2, trials=2, q=3, progress=False)
    out = {}
    for space in ("tanh", "pixel"):
        o = A.run_attack("digits", images[:3], labels[:3], model, ["zo-sgd"], space=space, **kw)
        out[space] = o
        cfg = o.results["config"]
        assert cfg["space"] == space
        assert cfg["lrs"]["zo-sgd"] == S.DEFAULT_LRS[("digits", space)]["zo-sgd"]
    t0_tanh, t0_pixel = starts
    assert t0_tanh.shape == t0_pixel.shape == (6, 64)  # 3 images x 2 trials
    assert torch.equal(t0_pixel, torch.zeros_like(t0_pixel))  # pixel: delta = 0
    assert torch.allclose(t0_tanh, _tanh_start(images[:3]).repeat(2, 1))  # tanh: w0 = atanh(2 x0 - 1)
    # both start at the clean image: the same loss at step 0 (up to tanh_eps)
    l0 = {s: o.results["optimizers"]["zo-sgd"]["aggregate"]["loss_mean"][0] for s, o in out.items()}
    assert l0["tanh"] == pytest.approx(l0["pixel"], abs=1e-4)
    # the default is the dataset's task's space
    o = A.run_attack("digits", images[:1], labels[:1], model, ["zo-sgd"], steps=1, trials=1, q=2, progress=False)
    assert o.results["config"]["space"] == T.TASKS["digits-attack"].space
    with pytest.raises(AS.AttackSetupError, match="space"):
        A.run_attack("digits", images[:1], labels[:1], model, ["zo-sgd"], space="logit", **kw)


# ------------------------------------------------------------------------------------------- evaluate_task
def test_evaluate_task_space(tiny_task, tuned_dir, starts):
    kw = dict(optimizers=["zo-sgd"], items=2, trials=2, steps=3, progress=False)
    res = {}
    for space in ("tanh", "pixel"):
        r = E.evaluate_task(T.task_with("digits-attack", space), **kw)
        res[space] = r
        assert r["config"]["space"] == space and r["config"]["target"] == "tiny-linear"
        e = r["optimizers"]["zo-sgd"]
        assert e["lr"] == S.DEFAULT_LRS[("digits", space)]["zo-sgd"] and "untuned" in e["lr_source"]
        # per-row first-success queries (-1: none) and per-item losses for the paired criteria
        assert len(e["first_success_queries"]) == 4
        assert all(q == -1 or (q > 0 and q % (T.TASKS["digits-attack"].q + 1) == 0)
                   for q in e["first_success_queries"])
        assert list(e["per_item_loss_at"]) == ["3"] and len(e["per_item_loss_at"]["3"]) == 2
    t0_tanh, t0_pixel = starts
    assert torch.equal(t0_pixel, torch.zeros_like(t0_pixel))
    assert t0_tanh.abs().max() > 1.0
    assert E.evaluate_task("digits-attack", **kw)["config"]["space"] == T.TASKS["digits-attack"].space
    with pytest.raises(ValueError, match="attack tasks"):
        T.task_with("binary", "tanh")


# ------------------------------------------------------------------------------------- tuning space checks
def test_tuning_space_of_results():
    assert TU.tuning_space(_tuning()) == "tanh"  # written before spaces: tanh
    assert TU.tuning_space(_tuning(space="pixel")) == "pixel"
    assert TU.tuning_space({"task": "binary", "config": {"kind": "binary"}, "optimizers": {}}) is None
    assert TU.tuning_space({"task": "digits-attack", "config": {}, "optimizers": {}}) == "tanh"
    assert TU.tuning_space({"task": "binary", "config": {}, "optimizers": {}}) is None
    TU.check_tuning_space("tanh", None, "x", "digits-attack")  # not an attack run: no check
    TU.check_tuning_space(None, "pixel", "x", "binary")  # not an attack tuning: no check


def _one_line_mismatch(e, source, tuned_space, run_space, task="digits-attack"):
    msg = str(e.value)
    assert "\n" not in msg
    for word in (source, f"{tuned_space} space", f"{run_space} space", f"zol2l tune {task} --space {run_space}",
                 "--tuned none"):
        assert word in msg, (word, msg)


def test_mismatch_raises_in_evaluate(tiny_task, tuned_dir, tmp_path):
    TU.save_tuning(_tuning(), TU.shipped_path("digits-attack"))  # shipped, tanh (no config.space)
    with pytest.raises(ValueError) as e:
        E.resolve_tuned(None, "digits-attack", space="pixel")
    _one_line_mismatch(e, "digits-attack.json", "tanh", "pixel")
    table, source, task = E.resolve_tuned(None, "digits-attack", space="tanh")
    assert task == "digits-attack" and "digits-attack.json" in source
    kw = dict(optimizers=["zo-sgd"], items=1, trials=1, steps=2, progress=False)
    with pytest.raises(ValueError) as e:
        E.evaluate_task(T.task_with("digits-attack", "pixel"), **kw)
    _one_line_mismatch(e, "digits-attack.json", "tanh", "pixel")
    with pytest.raises(ValueError, match="tanh space"):
        E.baseline_settings("zo-sgd", "digits-attack", space="pixel")
    r = E.evaluate_task(T.task_with("digits-attack", "tanh"), **kw)  # same space: the tuning drives the run
    assert r["optimizers"]["zo-sgd"]["lr"] == 0.7 and "digits-attack.json" in r["optimizers"]["zo-sgd"]["lr_source"]
    assert E.baseline_settings("zo-sgd", "digits-attack", space="tanh")[0] == 0.7
    # --tuned none: the space's fallback
    r = E.evaluate_task(T.task_with("digits-attack", "pixel"), tuned="none", **kw)
    assert r["optimizers"]["zo-sgd"]["lr"] == S.DEFAULT_LRS[("digits", "pixel")]["zo-sgd"]
    # a file and a task name are checked too; a pixel tuning drives a pixel run, not a tanh one
    path = tmp_path / "pixel.json"
    TU.save_tuning(_tuning(space="pixel", lr=0.2), path)
    assert E.resolve_tuned(str(path), "digits-attack", space="pixel")[0] == {"zo-sgd": {"lr": 0.2}}
    with pytest.raises(ValueError) as e:
        E.resolve_tuned(path, "digits-attack", space="tanh")
    _one_line_mismatch(e, str(path), "pixel", "tanh")
    with pytest.raises(ValueError, match="tanh space"):
        E.resolve_tuned("digits-attack", "mnist-attack", space="pixel")
    with pytest.raises(ValueError, match="tanh space"):
        E.resolve_tuned(_tuning(), "digits-attack", space="pixel")  # a tuning result dict
    # a tuning of a non-attack task has no space (and a non-attack run is not checked)
    assert E.resolve_tuned(dict(_tuning(), config={"kind": "binary"}), "digits-attack", space="pixel")[0]
    assert E.resolve_tuned(_tuning(), "binary", space=None)[0]


def test_mismatch_raises_in_attack_lrs(tuned_dir, tmp_path):
    path = tmp_path / "tanh.json"
    TU.save_tuning(_tuning(), path)

    def resolve(tuned, space):
        return S.resolve_lrs("digits", S.dataset_space("digits", space), ["zo-sgd", "zo-adam"], None, tuned)

    with pytest.raises(ValueError) as e:
        resolve(str(path), None)  # digits' default space is pixel
    _one_line_mismatch(e, str(path), "tanh", "pixel")
    lrs, _, src = resolve(str(path), "tanh")
    assert lrs["zo-sgd"] == 0.7 and src["zo-adam"] == "settings.DEFAULT_LRS (untuned)"
    TU.save_tuning(_tuning(), TU.shipped_path("digits-attack"))
    with pytest.raises(ValueError) as e:
        resolve(None, "pixel")  # the shipped default is checked too
    _one_line_mismatch(e, "digits-attack.json", "tanh", "pixel")
    lrs, _, src = resolve("none", "pixel")
    assert lrs == {} and set(src.values()) == {"settings.DEFAULT_LRS (untuned)"}


# ----------------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def tiny_attack_set(monkeypatch, tiny):
    model, images, labels = tiny

    def prepare(dataset, data_root=None, target=None, indices=None, count=None, device="cpu", download=False,
                progress=True):
        n = count or 2
        tgt = M.LoadedTarget(model, "tiny-linear", "digits", "logprob", "test")
        return AS.AttackSet("digits", images[:n], labels[:n], list(range(n)), list(range(n)), tgt, "logprob",
                           [str(i) for i in range(10)])

    monkeypatch.setattr(AS, "prepare_attack", prepare)


def test_cli_parses_space():
    p = cli.build_parser()
    assert p.parse_args(["attack", "--space", "tanh"]).space == "tanh"
    assert p.parse_args(["attack"]).space is None
    assert p.parse_args(["tune", "digits-attack", "--space", "pixel"]).space == "pixel"
    assert p.parse_args(["evaluate", "digits-attack", "--space", "tanh"]).space == "tanh"
    with pytest.raises(SystemExit):
        p.parse_args(["attack", "--space", "logit"])


def test_cli_attack_space(tiny_attack_set, tuned_dir, tmp_path, capsys):
    base = ["attack", "--optimizers", "zo-sgd", "--steps", "2", "--trials", "1", "--count", "2", "--no-progress",
            "--threads", "1"]
    for space in ("tanh", "pixel"):
        out = tmp_path / space
        rc = cli.main(base + ["--space", space, "--out", str(out)])
        assert rc == 0, capsys.readouterr().err
        cfg = json.loads((out / "results.json").read_text())["config"]
        assert cfg["space"] == space and cfg["lrs"]["zo-sgd"] == S.DEFAULT_LRS[("digits", space)]["zo-sgd"]
    rc = cli.main(base + ["--out", str(tmp_path / "default")])
    assert rc == 0
    cfg = json.loads((tmp_path / "default" / "results.json").read_text())["config"]
    assert cfg["space"] == S.DATASET_DEFAULTS["digits"]["space"]
    capsys.readouterr()
    path = tmp_path / "tanh.json"
    TU.save_tuning(_tuning(), path)
    rc = cli.main(base + ["--tuned", str(path), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "tanh space" in err and "--tuned none" in err and len(err.strip().splitlines()) == 1
    rc = cli.main(base + ["--tuned", str(path), "--space", "tanh", "--out", str(tmp_path / "y")])
    assert rc == 0
    assert json.loads((tmp_path / "y" / "results.json").read_text())["config"]["lrs"] == {"zo-sgd": 0.7}


def test_cli_tune_and_evaluate_space(tiny_task, tuned_dir, tmp_path, capsys):
    out = tmp_path / "tune.json"
    rc = cli.main(["tune", "digits-attack", "--space", "tanh", "--optimizers", "zo-sgd", "--steps", "1",
                   "--trials", "1", "--grid", "1", "--fine", "", "--out", str(out), "--ship", "--no-progress",
                   "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["config"]["space"] == "tanh" and "--space tanh" in res["command"]
    assert TU.tuning_space(TU.shipped_tuning("digits-attack")) == "tanh"
    capsys.readouterr()
    # the shipped tuning is tanh now: a pixel evaluation refuses it, a tanh one uses it
    ev = ["evaluate", "digits-attack", "--optimizers", "zo-sgd", "--items", "1", "--trials", "1", "--steps", "2",
          "--no-progress", "--threads", "1"]
    rc = cli.main(ev + ["--space", "pixel", "--out", str(tmp_path / "e1")])
    err = capsys.readouterr().err
    assert rc == 2 and "digits-attack --space pixel" in err
    rc = cli.main(ev + ["--space", "tanh", "--out", str(tmp_path / "e2")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    r = json.loads((tmp_path / "e2" / "results.json").read_text())
    assert r["config"]["space"] == "tanh" and "digits-attack.json" in r["optimizers"]["zo-sgd"]["lr_source"]
    assert "tanh space" in cap.out
    rc = cli.main(["tune", "binary", "--space", "tanh", "--steps", "1", "--out", str(tmp_path / "b.json")])
    assert rc == 2 and "attack tasks" in capsys.readouterr().err


def test_cifar_attack_defaults_to_pixel_space_and_the_mean_baseline():
    """As measured in issue 11 (docs/TRAINING.md, CIFAR-10); the help texts say so from the tasks themselves."""
    from zol2l_ext.cli_args import task_baselines

    spec = T.TASKS["cifar-attack"]
    assert (spec.space, spec.baseline, spec.mu) == ("pixel", "mean", T.SPACE_MU["pixel"])
    assert S.DATASET_DEFAULTS["cifar10"]["baseline"] == "mean"
    assert task_baselines() == "f0; mean for cifar-attack"
    shipped = TU.shipped_tuning("cifar-attack")
    assert shipped["config"]["space"] == "pixel" and shipped["config"]["baseline"] == "mean"
