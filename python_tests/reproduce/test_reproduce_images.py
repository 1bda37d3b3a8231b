"""`zol2l reproduce fig8` (dimension study) and `table1` (adversarial examples) at the tiny scale (digits attack:
no data root needed), and the low-resolution attack problem fig8 rests on."""
import os

import pytest
import torch
import torch.nn.functional as F

from zol2l_ext.reproduce import core
from zol2l_ext.reproduce import fig8_dimension as F8
from zol2l_ext.reproduce import table1_examples as T1
from zol2l_ext.tasks import load_task


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny runs are dominated by thread start-up on a shared CPU: one thread is several times faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _check_common(res, out):
    assert res["format"] == core.FORMAT and res["scale"] == "tiny"
    assert res["claims"] and all(c["verdict"] in core.VERDICTS for c in res["claims"])
    assert all(c["claim"] and c["measured"] for c in res["claims"])
    assert res["figures"]
    for fig in res["figures"]:
        assert os.path.getsize(os.path.join(out, fig)) > 10_000
    assert os.path.exists(os.path.join(out, "result.json"))


# ------------------------------------------------------------------------------------------------------ fig8
@pytest.fixture(scope="module")
def digits_test():
    return load_task("digits-attack", "test")


def test_low_resolution_problem_is_the_full_problem_at_the_upsampled_point(digits_test):
    torch.manual_seed(0)
    full = F8.build_problem(digits_test, 3, 1, None, "cpu")
    same = F8.build_problem(digits_test, 3, 1, (8, 8), "cpu")  # the image size: the full problem
    low = F8.build_problem(digits_test, 3, 1, (4, 2), "cpu")
    assert (full.dim, same.dim, low.dim) == (64, 64, 8)
    assert same.upsample_from is None
    # delta = 0 is the clean image, exactly the full problem's initial point
    x0 = low.adversarial_images(low.initial_point())
    torch.testing.assert_close(x0, full.adversarial_images(full.initial_point()))
    torch.testing.assert_close(x0, full.images, atol=1e-5, rtol=0)
    delta = torch.randn(3, 5, low.dim)
    up = F.interpolate(delta.reshape(15, 1, 4, 2), size=(8, 8), mode="bilinear", align_corners=False)
    theta_full = full.initial_point().unsqueeze(1) + up.reshape(3, 5, 64)
    torch.testing.assert_close(low(delta), full(theta_full))
    assert torch.equal(low.success(delta[:, 0]), full.success(theta_full[:, 0]))
    # rows selected from the low-resolution problem stay low-resolution problems of those rows
    sub = low.select(torch.tensor([2, 0]))
    torch.testing.assert_close(sub(delta[[2, 0]]), low(delta)[[2, 0]])


@pytest.fixture(scope="module")
def fig8_tiny(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fig8"))
    return core.run_experiment("fig8", "tiny", out_dir=out, progress=False), out


def test_fig8_tiny_result(fig8_tiny):
    res, out = fig8_tiny
    _check_common(res, out)
    data, p = res["data"], res["params"]
    assert [e["dim"] for e in data["resolutions"]] == [64, 32, 16]
    inits = set()
    for e in data["resolutions"]:
        assert set(e["optimizers"]) == set(F8.OPTIMIZERS)
        for o in e["optimizers"].values():
            first = torch.tensor(o["first_success_step"])
            assert o["rows"] == p["items"] * p["trials"] == first.numel()
            assert ((first >= 1) | (first == -1)).all() and (first <= p["steps"]).all()  # the clean image is correct
            ok = first >= 0
            assert o["success_rate"] == pytest.approx(ok.double().mean().item())
            cens = torch.where(ok, first, torch.full_like(first, p["steps"])).double().mean().item()
            assert o["mean_iterations"] == pytest.approx(cens)
            assert o["lr"] == data["lr"]
            inits.add(round(o["initial_loss"], 6))
    assert len(inits) == 1, f"every resolution and optimizer starts from the clean image: {inits}"
    assert len(res["claims"]) == 3


def test_fig8_claims_follow_the_numbers():
    def data(sgd, lstm):
        """sgd / lstm: per resolution the per-row iterations to first success (-1: none)."""
        res = []
        for r, a, b in zip((8, 6, 4, 2), sgd, lstm):
            opts = {}
            for name, rows in (("zo-sgd", a), ("zo-lstm-no-update", b)):
                cens = [50 if v < 0 else v for v in rows]
                opts[name] = {"first_success_step": rows, "mean_iterations": sum(cens) / len(cens)}
            res.append({"resolution": [r, r], "dim": r * r, "optimizers": opts})
        return {"resolutions": res, "steps": 50}

    sgd = [[40, 42, 38, -1], [30, 31, 29, 33], [20, 22, 21, 19], [10, 11, 12, 9]]
    good = F8.claims(data(sgd, [[20, 21, 19, 30], [18, 19, 17, 20], [16, 17, 18, 15], [9, 10, 11, 8]]))
    assert [c["verdict"] for c in good] == ["supported"] * 3
    bad = F8.claims(data(sgd[::-1], [[12, 13, 14, 11], [22, 24, 23, 21], [31, 32, 30, 34], [45, 44, 40, -1]]))
    assert [c["verdict"] for c in bad] == ["not supported"] * 3
    # differences within the noise are no evidence either way
    noise = F8.claims(data(sgd, [[41, 40, 39, -1], [31, 30, 28, 34], [19, 23, 21, 18], [11, 10, 12, 9]]))
    assert noise[0]["verdict"] == "not supported"


# ----------------------------------------------------------------------------------------------------- table1
@pytest.fixture(scope="module")
def table1_tiny(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("table1"))
    return core.run_experiment("table1", "tiny", out_dir=out, progress=False), out


def test_table1_tiny_result(table1_tiny):
    res, out = table1_tiny
    _check_common(res, out)
    data, p = res["data"], res["params"]
    iters = sorted(p["iterations"])
    assert data["iterations"] == iters
    assert list(data["optimizers"]) == T1.OPTIMIZERS
    assert len(res["figures"]) == p["images"]
    start_loss = set()
    for name, e in data["optimizers"].items():
        assert len(e["rows"]) == p["stat_images"]
        for i, r in enumerate(e["rows"]):
            # the exact first change read by the callback is the runner's first success
            assert (r["first_change"] if r["first_change"] is not None else -1) == r["runner_first_success"]
            if r["first_change"] is None:
                assert r["first_change_shown"] is None and r["first_l1"] is None
            else:
                assert 1 <= r["first_change"] <= p["steps"] and r["first_l1"] > 0 and r["first_l2"] > 0
                if r["first_change_shown"] is not None:
                    assert r["first_change_shown"] >= r["first_change"]
            if i < p["images"]:
                assert set(r["at"]) == {str(k) for k in iters} and "images_u8" in r
                a0 = r["at"]["0"]
                assert a0["pred"] == r["label"] and a0["l1"] < 1e-3  # iteration 0 is the clean image
                start_loss.add(round(a0["loss"], 6))
                changed = [k for k in iters if r["at"][str(k)]["pred"] != r["label"]]
                assert r["first_change_shown"] == (changed[0] if changed else None)
                assert all(r["at"][str(k)]["l2"] <= r["at"][str(k)]["l1"] + 1e-9 for k in iters)
            else:
                assert "images_u8" not in r
    assert len(start_loss) == 1, f"every optimizer starts from the same point: {start_loss}"
    assert len(data["table"]) == len(T1.OPTIMIZERS) * p["images"] * len(iters)
    assert len(res["claims"]) == 2 * p["images"] + 2
    assert "iter" in T1.table(data)


def test_table1_verdicts():
    assert T1._earliest_verdict(10, [20, 30, 15]) == "supported"
    assert T1._earliest_verdict(15, [20, 30, 15]) == "partly"
    assert T1._earliest_verdict(25, [20, 30, 15], 48, [62, 48, 75]) == "partly"
    assert T1._earliest_verdict(25, [20, 30, 15], 62, [48, 75, 75]) == "not supported"
    assert T1._distortion_verdict((1.0, 0.5), [(2.0, 0.6), None]) == "supported"
    assert T1._distortion_verdict((1.0, 0.7), [(2.0, 0.6)]) == "partly"
    assert T1._distortion_verdict(None, [(2.0, 0.6)]) == "not supported"
    assert T1._distortion_verdict((1.0, 0.5), [None, None]) == "not tested"
