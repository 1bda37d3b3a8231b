"""Attacks sharded over processes under ``torchrun`` (torch.distributed): rank and world, row shards, gather.

An attack's rows (trial x image, row = trial * images + image) are independent problems whose random
directions are keyed by (seed, row id, step) (zo.seeding.step_seeds), so a rank that runs only some rows, with
their own ids, computes for them exactly what one process computes for all rows. Each rank takes a contiguous
block of row ids (`shard_rows`), runs it as one batch, and rank 0 gathers every rank's per-row tensors
(`gather_rows`) and puts them back in row order before anything is summarized. Meta-training shards each
meta-batch the same way and sums the meta-gradients over ranks (`all_sum_many`: zo.meta_trainer).

The process group's CPU backend is gloo: the only collectives of an attack are a broadcast of the output folder
and the final gather of small CPU tensors (object collectives go through the CPU backend), and gloo lets a rank
fail or finish early without a CUDA context on the others. On CUDA the group also has NCCL for CUDA tensors
(``"cpu:gloo,cuda:nccl"``, one group, the backend chosen by the tensor's device), so the meta-trainer's
all-reduce of CUDA meta-gradients stays on the GPUs; ``ZOL2L_DIST_BACKEND`` overrides the choice (e.g. "gloo").
Every collective has a timeout (``ZOL2L_DIST_TIMEOUT`` seconds, default 1800), so a
rank waiting for one that died stops with an error instead of hanging; under torchrun, the agent already ends
every rank as soon as one exits with an error.
"""
from __future__ import annotations

from dataclasses import dataclass
import datetime
import os
import sys
from typing import Any

import torch
import torch.distributed as dist

from .fileio import atomic_torch_save

__all__ = ["ENV_BACKEND", "ENV_TIMEOUT", "Dist", "all_sum", "all_sum_many", "backend_for",
           "collective_timeout", "finish", "gather_rows", "load_shard", "note", "save_shard", "setup", "shard_rows",
           "store"]

ENV_TIMEOUT = "ZOL2L_DIST_TIMEOUT"
ENV_BACKEND = "ZOL2L_DIST_BACKEND"
_store: Any = None  # the rendezvous store of this process's group (None: not distributed)


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: ``rank`` of ``world`` (world 1: not distributed); ``keep``: the folder
    where each rank keeps its shard's progress until rank 0 has written the results (None: not kept): the
    optimizers it finished and, every ``checkpoint_every`` steps (None: never), the live state of the one it runs."""
    rank: int = 0
    world: int = 1
    keep: str | None = None
    checkpoint_every: int | None = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def note(message: str) -> None:
    """A setup note on stderr, from rank 0 only (every rank resolves the same settings: under torchrun the notes
    would repeat once per process). Read from the environment, so it works before `setup`; errors are not
    notes and every rank still reports its own."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr)


def collective_timeout() -> datetime.timedelta:
    raw = os.environ.get(ENV_TIMEOUT, "1800")
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"${ENV_TIMEOUT}={raw!r}: give the collectives' timeout in seconds") from None
    if not seconds > 0:
        raise ValueError(f"${ENV_TIMEOUT}={raw!r}: the timeout must be > 0 seconds")
    return datetime.timedelta(seconds=seconds)


def backend_for(device: torch.device | None) -> str:
    """The process group's backend: ``$ZOL2L_DIST_BACKEND`` when set, else gloo, with NCCL for CUDA tensors when the
    run is on CUDA and this torch has NCCL."""
    chosen = os.environ.get(ENV_BACKEND, "").strip()
    if chosen:
        return chosen
    if device is not None and device.type == "cuda" and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def setup(device: torch.device | None = None) -> Dist:
    """The run's `Dist` from the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT); joins the
    process group (`backend_for`) when WORLD_SIZE > 1 (once per process). On CUDA each rank takes GPU LOCAL_RANK of its node."""
    global _store
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_available() or not dist.is_gloo_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch has no torch.distributed gloo backend")
    if device is not None and device.type == "cuda" and device.index is None:  # before NCCL meets the device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if not dist.is_initialized():
        # the group's own store, kept: ranks publish their progress in it without a collective (ShardProgress)
        _store, rank, world = next(dist.rendezvous("env://", timeout=collective_timeout()))
        _store.set_timeout(collective_timeout())
        dist.init_process_group(backend_for(device), store=_store, rank=rank, world_size=world,
                                timeout=collective_timeout())
    return Dist(dist.get_rank(), dist.get_world_size())


def shard_rows(n_rows: int, rank: int, world: int) -> list[int]:
    """Rank ``rank``'s block of the row ids 0..n_rows-1: blocks differ by at most one row; with more ranks than
    rows the last ranks get none."""
    base, extra = divmod(n_rows, world)
    start = rank * base + min(rank, extra)
    return list(range(start, start + base + (1 if rank < extra else 0)))


def broadcast(value: Any, d: Dist) -> Any:
    """Rank 0's ``value`` on every rank (e.g. the output folder, whose default name holds the time)."""
    if not d.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_rows(part: dict[str, dict[str, Any]], rows: list[int], d: Dist) -> dict[str, dict[str, Any]] | None:
    """Every rank's per-row results, in row order, on rank 0 (None on the other ranks).

    ``part`` maps a name (an optimizer) to a dict of tensors whose first dimension follows ``rows`` and of
    floats (seconds: the largest over ranks is kept, the wall time of the whole run)."""
    if not d.active:
        return part
    mine = (rows, {name: {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in entry.items()}
                   for name, entry in part.items()})
    every: list[Any] | None = [None] * d.world if d.main else None
    dist.gather_object(mine, every, dst=0)
    if not d.main:
        return None
    order = torch.argsort(torch.tensor([r for rws, _ in every for r in rws], dtype=torch.int64))
    merged: dict[str, dict[str, Any]] = {}
    for name, entry in part.items():
        merged[name] = {}
        for k, v in entry.items():
            values = [p[name][k] for _, p in every]
            merged[name][k] = torch.cat(values)[order] if torch.is_tensor(v) else max(values)
    return merged


def all_sum(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """The sum over ranks of ``x`` (a new tensor; ``x`` itself when not distributed)."""
    if not d.active:
        return x
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_sum_many(xs: list[torch.Tensor], d: Dist) -> list[torch.Tensor]:
    """`all_sum` of every tensor of ``xs`` (all on one device and dtype) in ONE all-reduce of their concatenation:
    a meta-gradient is a dozen small tensors, and a collective per tensor costs a round trip each."""
    if not d.active or not xs:
        return list(xs)
    flat = all_sum(torch.cat([x.detach().reshape(-1) for x in xs]), d)
    return [part.view_as(x) for part, x in zip(flat.split([x.numel() for x in xs]), xs)]


def _shard_path(d: Dist) -> str | None:
    return None if d.keep is None else os.path.join(d.keep, f"rank{d.rank}-of-{d.world}.pt")


def store() -> Any:
    """The process group's key-value store (None when not distributed)."""
    return _store


def load_shard(d: Dist, key: str) -> dict[str, dict[str, Any]] | None:
    """What this rank kept of an earlier run of the same attack (``key``), else None: ``{"done": {optimizer:
    per-row results}, "partial": {optimizer: RunState dict}}``. After a failure or a kill anywhere, the same command
    redoes neither the optimizers a rank had finished nor the steps it had checkpointed."""
    path = _shard_path(d)
    if path is None or not os.path.exists(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a file cut by a kill is only work to redo (writes are atomic anyway)
        return None
    if not (isinstance(state, dict) and state.get("key") == key and isinstance(state.get("done"), dict)):
        return None
    return {"done": state["done"], "partial": dict(state.get("partial") or {})}


def save_shard(d: Dist, key: str, kept: dict[str, dict[str, Any]]) -> None:
    """Keeps this rank's progress, as `load_shard` reads it (atomic: a kill mid-write leaves no half file)."""
    path = _shard_path(d)
    if path is None:
        return
    atomic_torch_save({"key": key, "done": kept["done"], "partial": kept.get("partial", {})}, path)


def finish(d: Dist) -> None:
    """Once rank 0 has written the results: every rank drops its kept shard, then leaves the process group."""
    if not d.active or not dist.is_initialized():
        return
    dist.barrier()
    path = _shard_path(d)
    if path is not None and os.path.exists(path):
        os.remove(path)
    dist.barrier()  # every rank's file is gone: the folder may go
    if d.main and d.keep is not None and os.path.isdir(d.keep) and not os.listdir(d.keep):
        os.rmdir(d.keep)
    dist.destroy_process_group()
    global _store
    _store = None
