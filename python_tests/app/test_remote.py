"""The remote black box (remote.py, remote_attack.py) against the reference server (serve.py) on 127.0.0.1:
exact answers and query counts under injected faults, one-line errors, a clean stop and an exact resume."""
from __future__ import annotations

import os
import sys
import time

import pytest
import torch
from torch import nn

from zol2l_ext import attack as A
from zol2l_ext.remote import EndpointError, RemoteModel
from zol2l_ext.remote_attack import run_resumable_attack
from zol2l_ext.serve import Faults, ScoringServer
from zol2l_ext import attack_setup as AS

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the shared helpers, under any import mode
from zo_testing import tiny_attack  # noqa: E402

FAST = dict(backoff=0.001)  # retries without the default backoff's waits


class CountingModel(nn.Module):
    """The local model, counting the images it scores (what an endpoint would answer)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.inner(x)


class FailsAfter(nn.Module):
    """A model that raises from its ``calls``-th call on (the endpoint answers 500 from then on)."""

    def __init__(self, inner, calls):
        super().__init__()
        self.inner, self.left = inner, calls

    def forward(self, x):
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("the GPU fell off the bus")
        return self.inner(x)


def _linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


def _without_times(results):
    out = {k: v for k, v in results.items() if k != "endpoint"}
    out["config"] = {k: v for k, v in results["config"].items() if k != "device"}
    out["optimizers"] = {n: {k: v for k, v in e.items() if k != "wall_seconds"}
                         for n, e in results["optimizers"].items()}
    return out


def test_remote_model_is_exact_under_faults():
    model, x = _linear(), torch.rand(400, 1, 8, 8)
    faults = Faults(error_rate=0.1, drop_rate=0.05, latency=0.01, seed=3)
    with ScoringServer(model, faults=faults, input_shape=(1, 8, 8)) as srv:
        remote = RemoteModel(srv.url, batch_size=16, concurrency=3, retries=8, **FAST)
        out = remote(x)
        served = srv.stats()
    with torch.no_grad():
        assert torch.equal(out, model(x))
    s = remote.stats()
    assert s["answered_evaluations"] == served["answered_evaluations"] == 400
    assert s["requests"] == 25 and s["failed_requests"] == 0
    assert s["retried_requests"] > 0 and served["injected_errors"] > 0 and served["dropped_connections"] > 0
    # every attempt reached the server: the first tries and the retries, nothing else
    assert served["requests"] == s["requests"] + s["retries"]


def test_remote_model_errors_say_what_failed():
    model, x = _linear(), torch.rand(5, 1, 8, 8)
    with ScoringServer(model, input_shape=(1, 8, 8)) as srv:
        with pytest.raises(EndpointError, match=r"HTTP 400 for 5 images: .*\[n, 1, 8, 8\], got float32 \(5, 1, 9, 9\)"):
            RemoteModel(srv.url, **FAST)(torch.rand(5, 1, 9, 9))
        url = srv.url
    with pytest.raises(EndpointError, match=rf"endpoint {url}: 5 images not scored after 2 retries \(.*refused"):
        RemoteModel(url, retries=2, **FAST)(x)  # the server is gone
    with ScoringServer(FailsAfter(model, 0)) as srv:
        remote = RemoteModel(srv.url, retries=2, **FAST)
        with pytest.raises(EndpointError, match="not scored after 2 retries .*500"):
            remote(x)
        assert remote.stats()["failed_requests"] == 1 and remote.stats()["answered_evaluations"] == 0
    with ScoringServer(lambda t: model(t)[:-1]) as srv:
        with pytest.raises(EndpointError, match=r"answered float32 \(4, 10\) for 5 images"):
            RemoteModel(srv.url, **FAST)(x)
    with pytest.raises(ValueError, match="http:// or https://"):
        RemoteModel("127.0.0.1:8080/predict")


class SlowFirst(nn.Module):
    """A model whose first ``n`` calls take ``seconds`` (longer than the client's timeout)."""

    def __init__(self, inner, seconds, n=1):
        super().__init__()
        self.inner, self.seconds, self.n = inner, seconds, n

    def forward(self, x):
        if self.n > 0:
            self.n -= 1
            time.sleep(self.seconds)
        return self.inner(x)


def test_a_timed_out_request_is_retried_and_counted_once():
    model, x = _linear(), torch.rand(7, 1, 8, 8)
    with ScoringServer(SlowFirst(model, 0.5)) as srv:
        remote = RemoteModel(srv.url, timeout=0.1, retries=2, **FAST)
        with torch.no_grad():
            assert torch.equal(remote(x), model(x))
    s = remote.stats()
    assert s["answered_evaluations"] == 7 and s["requests"] == 1 and s["retried_requests"] == 1
    with ScoringServer(SlowFirst(model, 0.5, n=3)) as srv:
        with pytest.raises(EndpointError, match=r"7 images not scored after 1 retries \(ReadTimeoutError: .*Read timed"):
            RemoteModel(srv.url, timeout=0.1, retries=1, **FAST)(x)


def _attack_args():
    _, model, images, labels = tiny_attack(B=3)
    kw = dict(q=4, mu=1e-3, steps=8, trials=2, seed=1, lrs={"zo-sgd": 0.5, "zo-adam": 0.5}, c=0.1,
              space="pixel", output="logprob", progress=False)
    return model, images, labels, kw


def test_attack_through_a_faulty_endpoint_equals_the_local_attack(tmp_path):
    model, images, labels, kw = _attack_args()
    local = CountingModel(model)
    ref = A.run_attack("digits", images, labels, local, ["zo-sgd", "zo-adam"], **kw)
    faults = Faults(error_rate=0.1, latency=0.005, seed=0)
    with ScoringServer(model, faults=faults) as srv:
        remote = RemoteModel(srv.url, batch_size=8, concurrency=2, retries=10, **FAST)
        out = run_resumable_attack(str(tmp_path / "resume.pt"), "digits", images, labels, remote,
                                   ["zo-sgd", "zo-adam"], **kw)
        served = srv.stats()
    assert _without_times(out.results) == _without_times(ref.results)
    for name in ("zo-sgd", "zo-adam"):
        assert torch.equal(out.adversarial[name], ref.adversarial[name])
    ep = out.results["endpoint"]
    # every image the local attack scored was answered once by the endpoint, however many attempts it took
    assert ep["answered_evaluations"] == local.rows == served["answered_evaluations"]
    assert ep["failed_requests"] == 0 and ep["retried_requests"] > 0 and served["injected_errors"] > 0
    queries = sum(sum(sum(p["queries"]) for p in e["per_image"]) for e in ref.results["optimizers"].values())
    assert ep["attack_queries"] == queries == 2 * 6 * 8 * 5
    assert not (tmp_path / "resume.pt").exists()


def test_endpoint_down_stops_with_a_checkpoint_and_resumes_exactly(tmp_path):
    model, images, labels, kw = _attack_args()
    ref = A.run_attack("digits", images, labels, model, ["zo-sgd", "zo-adam"], **kw)
    state = tmp_path / "resume.pt"
    # zo-sgd: 8 steps, a final evaluation, a label read; then zo-adam's 5th step finds the endpoint down
    with ScoringServer(FailsAfter(model, 10 + 4)) as srv:
        remote = RemoteModel(srv.url, retries=2, **FAST)
        with pytest.raises(EndpointError, match=rf"not scored after 2 retries .*progress saved in {state}"):
            run_resumable_attack(str(state), "digits", images, labels, remote, ["zo-sgd", "zo-adam"], **kw)
    saved = torch.load(state, weights_only=True)
    assert list(saved["done"]) == ["zo-sgd"] and saved["partial"]["zo-adam"]["t"] == 4
    assert saved["endpoint"]["failed_requests"] == 1
    # another attack may not take this progress for its own
    with pytest.raises(AS.AttackSetupError, match="progress of another attack .*differs in seed"):
        run_resumable_attack(str(state), "digits", images, labels, model, ["zo-sgd", "zo-adam"], **dict(kw, seed=2))
    with ScoringServer(model) as srv:  # back up (on another port: the URL is not part of the attack)
        out = run_resumable_attack(str(state), "digits", images, labels, RemoteModel(srv.url, **FAST),
                                   ["zo-sgd", "zo-adam"], **kw)
    assert _without_times(out.results) == _without_times(ref.results)
    assert out.results["endpoint"]["failed_requests"] == 1 and not state.exists()


def test_a_corrupt_progress_file_is_a_one_line_error(tmp_path):
    model, images, labels, kw = _attack_args()
    state = tmp_path / "resume.pt"
    state.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(AS.AttackSetupError, match=rf"cannot resume from {state}: .*delete it to start over"):
        run_resumable_attack(str(state), "digits", images, labels, model, ["zo-sgd"], **kw)


def test_zoattack_on_a_remote_model_equals_the_local_attack():
    from zol2l_ext import ZOAttack

    _, model, images, labels = tiny_attack(B=4)
    kw = dict(q=4, c=0.1, steps=10, lr=0.5, progress=False)
    adv, res = ZOAttack(model, "zo-sgd", **kw)(images, labels)
    with ScoringServer(model, faults=Faults(error_rate=0.1, seed=4)) as srv:
        remote = RemoteModel(srv.url, batch_size=8, concurrency=2, retries=10, **FAST)
        radv, rres = ZOAttack(remote, "zo-sgd", **kw)(images, labels)
    assert torch.equal(radv, adv) and torch.equal(rres.queries, res.queries)
    # the forward of 8-image requests may round otherwise than one forward of all: the losses, not the steps
    assert torch.allclose(rres.loss, res.loss, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert remote.stats()["failed_requests"] == 0


def test_a_rate_limited_endpoint_is_waited_for_and_exact():
    """429 with Retry-After: the client waits as told and retries; every image is scored once and exactly."""
    model, x = _linear(), torch.rand(96, 1, 8, 8)
    faults = Faults(rate_limit=4.0, rate_burst=2)  # 2 requests at once, then 4 a second
    with ScoringServer(model, faults=faults, input_shape=(1, 8, 8)) as srv:
        remote = RemoteModel(srv.url, batch_size=16, concurrency=3, retries=8, **FAST)
        out = remote(x)  # 6 requests: more than the burst
        served = srv.stats()
    with torch.no_grad():
        assert torch.equal(out, model(x))
    stats = remote.stats()
    assert served["rate_limited"] > 0 and stats["retried_requests"] > 0
    assert stats["answered_evaluations"] == 96 and stats["failed_requests"] == 0
