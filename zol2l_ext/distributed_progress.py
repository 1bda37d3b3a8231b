"""Rank 0's progress bar of a sharded attack, counting every rank's rows.

Each rank publishes the row-steps it has done (its rows x the steps it has taken, over the optimizers in turn) in
the process group's store (`distributed.store`), a plain key-value write that needs no collective and so never
makes a fast rank wait for a slow one; rank 0 sums them into one tqdm bar of rows x steps x optimizers of the whole
attack. Once its own shard is done, rank 0 keeps the bar moving until every rank has finished (or the collectives'
timeout has passed: the gather that follows then reports the missing rank).
"""
from __future__ import annotations

import itertools
import time

import torch.distributed as dist

from . import distributed as DI

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is a dependency; the bar is only a convenience
    tqdm = None

__all__ = ["ShardProgress"]

_attacks = itertools.count()  # every rank runs the same attacks in the same order: the same prefix for each


class ShardProgress:
    """Row-steps of this rank's ``rows`` over ``steps`` x ``optimizers``, published every ``every`` seconds; the bar
    (rank 0, ``enabled``) totals ``all_rows`` x ``steps`` x ``optimizers``."""

    def __init__(self, d: DI.Dist, all_rows: int, rows: int, steps: int, optimizers: int, enabled: bool,
                 every: float = 0.25):
        base = DI.store()
        self.d, self.rows, self.steps, self.every = d, rows, steps, every
        self.total = all_rows * steps * optimizers
        self.store = None if base is None else dist.PrefixStore(f"zol2l/progress/{next(_attacks)}", base)
        self.bar = (tqdm(total=self.total, desc=f"attack, {d.world} ranks", unit=" row-steps", leave=False)
                    if enabled and d.main and tqdm is not None else None)
        self.finished = 0  # row-steps of this rank's finished optimizers
        self._last = 0.0

    def callback(self, info) -> None:
        """The runner's per-step callback: ``info.step + 1`` steps of the current optimizer are done."""
        self._publish(self.finished + (info.step + 1) * self.rows)

    def optimizer_done(self) -> None:
        self.finished += self.rows * self.steps
        self._publish(self.finished, force=True)

    def wait_for_all(self) -> None:
        """Rank 0, its own shard done: the bar follows the others until all are done; then it closes."""
        if self.bar is None:
            return
        deadline = time.monotonic() + DI.collective_timeout().total_seconds()
        while self.store is not None and self._sum() < self.total and time.monotonic() < deadline:
            self._refresh()
            time.sleep(self.every)
        self._refresh()
        self.bar.close()

    def _publish(self, value: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        if self.store is not None:
            self.store.set(str(self.d.rank), str(value))
        elif self.bar is not None:  # no store (a group made elsewhere): the bar counts rank 0's rows only
            self.bar.n = value
            self.bar.refresh()
        self._refresh()

    def _sum(self) -> int:
        keys = [str(r) for r in range(self.d.world)]
        return sum(int(self.store.get(k)) for k in keys if self.store.check([k]))

    def _refresh(self) -> None:
        if self.bar is not None and self.store is not None:
            self.bar.n = self._sum()
            self.bar.refresh()
