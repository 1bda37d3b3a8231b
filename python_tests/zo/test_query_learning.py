"""The QueryRNN learns where it provably should: on sparse quadratics (zo/synthetic.py) a short stage-2 training
concentrates the query directions on the coordinates f depends on. A broken path from the meta-loss to the
scale s (no reparameterised gradient, a frozen QueryRNN, a scale the sampler ignores) leaves the share isotropic."""
import torch

from zol2l_ext.zo import LearnedZO
from zol2l_ext.zo.meta_trainer import MetaTrainConfig, MetaTrainer
from zol2l_ext.zo.synthetic import SparseQuadraticProblem, query_share_on_active

DIM, ACTIVE, Q, MU, HORIZON = 50, 3, 6, 0.005, 30


class _Seeds:
    """A ProblemSet of sparse quadratics by seed."""

    def __init__(self, seeds):
        self.seeds = list(seeds)

    def __len__(self):
        return len(self.seeds)

    def make(self, rows, repeat=1):
        rows = range(len(self.seeds)) if rows is None else rows
        return SparseQuadraticProblem([self.seeds[r] for r in rows] * repeat, dim=DIM, active=ACTIVE)


def test_stage2_concentrates_queries_on_the_active_coordinates():
    torch.manual_seed(0)
    model = LearnedZO(scaling="rms", step=0.05)
    held_out = SparseQuadraticProblem(list(range(1000, 1010)), dim=DIM, active=ACTIVE)
    isotropic = ACTIVE / DIM
    before = query_share_on_active(model, held_out, HORIZON, Q, MU)
    assert abs(sum(before) / len(before) - isotropic) < 0.01  # the untrained scale is ~1 everywhere
    cfg = MetaTrainConfig(task="sparse", stage=2, epochs=1, updates_per_epoch=20, batch=8, horizon=HORIZON,
                          unroll=10, q=Q, mu=MU, lr_query=0.02)
    MetaTrainer(cfg, _Seeds(range(200)), None, model=model, progress=False).fit()
    after = query_share_on_active(model, held_out, HORIZON, Q, MU)[5:]
    assert sum(after) / len(after) > 1.25 * isotropic, after
    # stage 2 trains the QueryRNN only: the UpdateRNN is untouched
    assert not any(p.requires_grad for p in model.update.parameters())
