"""Meta-training sharded over 2 gloo processes: one update equals the one-process update on the whole batch."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_meta_trainer import Quadratics, _cfg, _weights

from zol2l_ext import distributed as DI
from zol2l_ext.zo import LearnedZO
from zol2l_ext.zo.meta_trainer import MetaTrainer

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch has no torch.distributed gloo backend")

CFG = {"batch": 5, "horizon": 10, "unroll": 5}  # 5 problems over 2 ranks: uneven blocks of 3 and 2


def one_update(shard=None):
    torch.manual_seed(0)  # the same initial weights in every process
    trainer = MetaTrainer(_cfg(**CFG), Quadratics(8, 1), None, model=LearnedZO(), progress=False,
                          shard=shard)
    row = trainer.train_update()
    return _weights(trainer.model), row


def _rank(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    shard = DI.setup()
    weights, row = one_update(shard)
    if shard.main:
        torch.save({"weights": weights, "row": row}, out)
    DI.finish(shard)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_update_equals_the_one_process_update(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(_rank, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    two = torch.load(out, weights_only=False)
    weights, row = one_update()
    torch.manual_seed(0)
    start = _weights(LearnedZO())
    assert any(not torch.equal(w, start[k]) for k, w in weights.items())  # the update did move the weights
    for k, w in weights.items():
        torch.testing.assert_close(two["weights"][k], w, rtol=1e-5, atol=1e-6)
    for k in ("meta_loss", "initial_loss", "final_loss", "grad_norm"):
        assert two["row"][k] == pytest.approx(row[k], rel=1e-5), k
    assert two["row"]["rows"] == row["rows"]


def test_more_processes_than_meta_batch_problems_is_refused():
    with pytest.raises(ValueError, match="cannot be shared by 6 processes"):
        MetaTrainer(_cfg(**CFG), Quadratics(8, 1), None, model=LearnedZO(), progress=False, shard=DI.Dist(0, 6))


class PoisonedOnRank1(Quadratics):
    """Rank 1's problems have an infinite curvature: its meta-loss and iterates are not finite, rank 0's are."""

    def make(self, rows=None, repeat=1):
        problem = super().make(rows, repeat)
        if os.environ.get("RANK") == "1":
            fn = problem.fn
            problem.fn = lambda pts: fn(pts) * float("inf")
        return problem


def _poisoned_rank(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      **{DI.ENV_TIMEOUT: "60"})
    torch.set_num_threads(1)
    shard = DI.setup()
    torch.manual_seed(0)
    trainer = MetaTrainer(_cfg(**CFG), PoisonedOnRank1(8, 1), None, model=LearnedZO(), progress=False, shard=shard)
    row = trainer.train_update()
    torch.save({"weights": _weights(trainer.model), "row": row}, f"{out}.{rank}")
    DI.finish(shard)


def test_a_rank_with_non_finite_values_makes_every_rank_skip_and_stop_alike(tmp_path):
    # the skip and stop decisions are taken on the all-reduced numbers: a rank deciding alone would leave the
    # other waiting in the next window's all-reduce (a timeout here), or let the weights part ways
    out = str(tmp_path / "rank")
    mp.spawn(_poisoned_rank, args=(2, _free_port(), out), nprocs=2, join=True)
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=False) for r in (0, 1))
    assert r0["row"]["skipped_windows"] == r1["row"]["skipped_windows"] >= 1
    for k, w in r0["weights"].items():
        assert torch.equal(w, r1["weights"][k]), k
    torch.manual_seed(0)
    start = _weights(LearnedZO())
    for k, w in r0["weights"].items():  # every window was skipped: no Adam step anywhere
        assert torch.equal(w, start[k]), k
