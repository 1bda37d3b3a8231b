"""`zol2l attack --endpoint URL`: the attack of attack.py on a model behind HTTP, resumable after a failure.

The target is a `remote.RemoteModel` wrapped as a `models.LoadedTarget` (`endpoint_target`), so that
``attack.prepare_attack`` picks the images the endpoint classifies right and ``attack.run_attack`` attacks
through it exactly as it attacks a local model: same problem, optimizers, runner and outputs.

`run_resumable_attack` runs ``run_attack`` one optimizer at a time and keeps the run's progress in one file
(``<out>/resume.pt``): the finished optimizers' results, and the runner's `RunState` of the one under way. The
file is written when the endpoint fails past its retries (or on Ctrl-C), from the runner's own snapshot of the
last step it completed, and every ``checkpoint_every`` steps (so that even a killed process loses at most that
many steps); it is removed when the attack completes. The same call (the same command) then resumes: the runner
keys every step's directions by (seed, row, step), so the resumed run gives the uninterrupted run's results.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from typing import Any, Dict, Optional, Sequence

import torch

from . import attack as A
from . import models as M
from . import settings as S
from .attack_setup import AttackSetupError
from .cli_args import nonnegative_int, positive_float, positive_int
from .fileio import atomic_torch_save, first_line
from .remote import EndpointError, RemoteModel

__all__ = ["add_endpoint_args", "check_progress_file", "endpoint_target", "run_resumable_attack", "STATE_FILE",
           "ENDPOINT_CHECKPOINT_EVERY"]

STATE_FILE = "resume.pt"
#: steps between progress saves of an --endpoint attack without --checkpoint-every
ENDPOINT_CHECKPOINT_EVERY = 20
_STATE_KIND = "zol2l attack progress"
# run_attack arguments that do not change the results, so a resume may differ in them
_NOT_RESULTS = ("device", "progress", "chunk_size", "target_name", "classes", "learned", "minimize_kwargs")


def add_endpoint_args(p: argparse.ArgumentParser) -> None:
    """The --endpoint options of `zol2l attack`."""
    g = p.add_argument_group("remote black box (the target served over HTTP, e.g. by `zol2l serve`)")
    g.add_argument("--endpoint", default=None, metavar="URL",
                   help="attack the model behind this scoring URL (POST of an .npy image batch, .npy scores back; "
                        "zol2l serve prints one) instead of a local --target; progress is kept in OUT/resume.pt "
                        "and the same command resumes after a failure")
    g.add_argument("--endpoint-batch", type=positive_int, default=1024, help="images per request (default 1024)")
    g.add_argument("--endpoint-concurrency", type=positive_int, default=4,
                   help="requests in flight at once (default 4)")
    g.add_argument("--endpoint-timeout", type=positive_float, default=30.0,
                   help="seconds to wait for a connection, then for an answer, per attempt (default 30)")
    g.add_argument("--endpoint-retries", type=nonnegative_int, default=5,
                   help="retries of a request after a timeout, a reset connection, a 429 or a 5xx, with "
                        "exponential backoff (default 5); past them the run stops and saves its progress")
    g.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                   help="save the progress in OUT/resume.pt (under torchrun: each rank's in OUT/shards/) every N "
                        "steps, so that the same command resumes a killed run (default: "
                        f"{ENDPOINT_CHECKPOINT_EVERY} with --endpoint, else none)")


def endpoint_target(url: str, dataset: str, batch_size: int = 1024, concurrency: int = 4, timeout: float = 30.0,
                    retries: int = 5, backoff: float = 0.05) -> M.LoadedTarget:
    """The endpoint as an attack target (its output kind, logits or log-probabilities, is read from its answers)."""
    model = RemoteModel(url, batch_size=batch_size, concurrency=concurrency, timeout=timeout, retries=retries,
                        backoff=backoff)
    return M.LoadedTarget(model, name=url, dataset=dataset, output=None, source="endpoint")


def _fingerprint(dataset: str, images: torch.Tensor, labels: torch.Tensor, kw: Dict[str, Any]) -> Dict[str, str]:
    """What must match for a saved progress to belong to this attack: the settings and a hash of the images."""
    digest = hashlib.sha256(images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update(labels.detach().cpu().to(torch.int64).numpy().tobytes())
    out = {"dataset": dataset, "images": digest.hexdigest()[:16]}
    for k, v in sorted(kw.items()):
        if k not in _NOT_RESULTS:
            out[k] = json.dumps(v, sort_keys=True, default=str)
    return out


def _empty(key: Dict[str, str]) -> Dict[str, Any]:
    return {"kind": _STATE_KIND, "key": key, "done": {}, "partial": {}, "endpoint": {}}


def check_progress_file(path: str) -> Optional[Dict[str, Any]]:
    """The progress saved in ``path`` (None: no file); a file that is not one is an error naming it."""
    if not os.path.exists(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("kind") != _STATE_KIND:
            raise ValueError("not an attack's progress file")
    except Exception as e:  # noqa: BLE001 - truncated, corrupt or foreign: all the same to the user
        raise AttackSetupError(f"cannot resume from {path}: {first_line(e)} (delete it to start over)") from None
    return state


def _load_state(path: str, key: Dict[str, str]) -> Dict[str, Any]:
    state = check_progress_file(path)
    if state is None:
        return _empty(key)
    differ = sorted(k for k in set(key) | set(state["key"]) if key.get(k) != state["key"].get(k))
    if differ:
        raise AttackSetupError(f"{path} holds the progress of another attack (it differs in {', '.join(differ)}); "
                                 "delete it or choose another --out")
    return state


def _save_state(path: str, state: Dict[str, Any]) -> None:
    """Atomic: a kill or a full disk mid-write leaves the previous file, never half of one."""
    atomic_torch_save(state, path)


def _add_counts(a: Dict[str, int], b: Dict[str, int]) -> Dict[str, int]:
    return {k: int(a.get(k, 0)) + int(b.get(k, 0)) for k in set(a) | set(b)}


def run_resumable_attack(state_path: str, dataset: str, images: torch.Tensor, labels: torch.Tensor, model,
                         optimizers: Sequence[str] = S.BASELINES, *, checkpoint_every: Optional[int] = None,
                         **kw: Any) -> A.AttackOutcome:
    """``attack.run_attack(dataset, images, labels, model, optimizers, **kw)`` that keeps its progress in
    ``state_path`` and resumes from it (see the module docstring). With a `RemoteModel`, results["endpoint"]
    counts its requests over every session of the run (requests, answered evaluations, retries, failures)."""
    optimizers = list(optimizers)
    key = _fingerprint(dataset, images, labels, dict(kw, optimizers=optimizers))
    state = _load_state(state_path, key)
    remote = model if isinstance(model, RemoteModel) else None

    def endpoint_counts() -> Dict[str, int]:  # this session's (the model's, since its creation) and earlier ones'
        return _add_counts(state["endpoint"], remote.stats() if remote is not None else {})

    outcome = A.AttackOutcome({}, images.cpu(), labels.cpu(), classes=kw.get("classes"))
    for name in optimizers:
        if name not in state["done"]:
            last = {}

            def keep_snapshot(info, _last=last):  # the runner's snapshot of its live state, taken only if needed
                _last["snapshot"] = info.checkpoint

            def save_partial(run_state, _name=name):
                state["partial"][_name] = run_state.to_dict()
                _save_state(state_path, dict(state, endpoint=endpoint_counts()))

            mk = dict(callback=keep_snapshot, resume_from=state["partial"].get(name))
            if checkpoint_every:
                mk.update(checkpoint_every=int(checkpoint_every), on_checkpoint=save_partial)
            try:
                part = A.run_attack(dataset, images, labels, model, [name], minimize_kwargs=mk, **kw)
            except (EndpointError, KeyboardInterrupt) as e:
                # The black box is only called inside a step, before the step changes any state, so the snapshot
                # taken now is the state after the last completed step (the runner's own Ctrl-C save relies on
                # the same).
                if "snapshot" in last:
                    state["partial"][name] = last["snapshot"]().to_dict()
                _save_state(state_path, dict(state, endpoint=endpoint_counts()))
                if isinstance(e, KeyboardInterrupt):
                    raise
                raise EndpointError(f"{e}; progress saved in {state_path}: run the same command again to "
                                    "resume") from None
            state["done"][name] = {"entry": part.results["optimizers"][name], "config": part.results["config"],
                                   "adversarial": part.adversarial[name], "adv_labels": part.adv_labels[name]}
            state["partial"].pop(name, None)
            if len(state["done"]) < len(optimizers):
                _save_state(state_path, dict(state, endpoint=endpoint_counts()))
        done = state["done"][name]
        if not outcome.results:
            outcome.results = {"config": dict(done["config"], optimizers=optimizers, lrs={}), "optimizers": {}}
        outcome.results["config"]["lrs"][name] = done["config"]["lrs"][name]
        outcome.results["optimizers"][name] = done["entry"]
        outcome.adversarial[name] = done["adversarial"]
        outcome.adv_labels[name] = done["adv_labels"]
    if remote is not None:
        outcome.results["endpoint"] = {"url": remote.url, **endpoint_counts(),
                                       "attack_queries": sum(sum(sum(p["queries"]) for p in e["per_image"])
                                                             for e in outcome.results["optimizers"].values())}
    if os.path.exists(state_path):
        os.remove(state_path)
    return outcome
