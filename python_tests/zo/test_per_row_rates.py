"""Per-row learning rates (and ZO-ADAM betas): one run of K x R rows, each row with its own hyper-parameters, is
the K runs with scalar ones, row by row. This is what lets `zol2l tune` run a stage's candidates as one batch
with the optimizers of make_optimizer."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from zol2l_ext import zo

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the shared helpers, under any import mode
from zo_testing import quadratic  # noqa: E402

R, D, STEPS = 3, 10, 14
# (name, K candidate hyper-parameter sets); lr is delta (coordinate step lr / d)
CANDIDATES = {
    "zo-sgd": [dict(lr=1.0), dict(lr=4.0)],
    "zo-signsgd": [dict(lr=0.3), dict(lr=1.0), dict(lr=3.0)],
    "zo-adam": [dict(lr=0.5, beta1=0.9, beta2=0.99), dict(lr=2.0, beta1=0.99, beta2=0.999)],
    "zo-szvr-g": [dict(lr=1.0, q_snapshot=8), dict(lr=3.0, q_snapshot=8)],
    "guided-es": [dict(lr=1.0), dict(lr=4.0)],
}
# budgets (queries per problem) that stop some rows early, so that the runner drops rows mid-run and the per-row
# hyper-parameters must follow their rows through its row selection
BUDGETS = [10 ** 6, 40, 10 ** 6]


def _per_row(cands, key, rows):
    return torch.tensor([c[key] for c in cands for _ in range(rows)], dtype=torch.float64)


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_per_row_run_equals_separate_scalar_runs(name):
    cands = CANDIDATES[name]
    K = len(cands)
    prob, _ = quadratic(B=R, d=D)
    kw = {"q": 5, "mu": 0.01}
    rows = torch.arange(R).repeat(K)  # candidate k's rows are copies of the R problems (same directions)
    per_row = {k: (_per_row(cands, k, R) if k in ("lr", "beta1", "beta2") else v) for k, v in cands[0].items()}
    batched = zo.make_optimizer(name, **kw, **per_row)
    assert batched.per_row
    big = zo.minimize(batched, prob.select(rows), STEPS, seed=5, problem_ids=rows, budget=BUDGETS * K,
                      progress=False)
    for k, c in enumerate(cands):
        alone = zo.minimize(zo.make_optimizer(name, **kw, **c), prob, STEPS, seed=5, budget=BUDGETS, progress=False)
        blk = slice(k * R, (k + 1) * R)
        assert big.queries[blk].tolist() == alone.queries.tolist()  # the same rows stopped at the same step
        assert 0 < alone.queries[1] < alone.queries[0]  # row 1 stopped early (its budget)
        # equal up to rounding: the scalar step is fused into one multiply-add, the per-row one is not
        torch.testing.assert_close(big.theta[blk], alone.theta, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(big.loss[:, blk], alone.loss, rtol=1e-10, atol=1e-12, equal_nan=True)
    assert big.loss[-1, 0] < big.loss[0, 0]  # and it descends


def test_per_row_state_follows_row_selection_and_round_trips():
    opt = zo.make_optimizer("zo-adam", q=3, lr=[1.0, 2.0, 3.0], beta1=[0.9, 0.99, 0.9])
    theta = torch.zeros(3, 4, dtype=torch.float64)
    st = opt.init_state(theta)
    assert st["lr_row"].view(-1).tolist() == [1.0 / 4, 2.0 / 4, 3.0 / 4]
    assert st["b1"].view(-1).tolist() == [0.9, 0.99, 0.9] and st["b2"].view(-1).tolist() == [0.996] * 3
    sub = opt.select_state(st, torch.tensor([2, 0]))
    assert sub["lr_row"].view(-1).tolist() == [3.0 / 4, 1.0 / 4] and sub["b1"].view(-1).tolist() == [0.9, 0.9]
    opt2, st2 = zo.optimizer_from_state_dict(opt.state_dict(st))
    assert torch.equal(opt2.lr, opt.lr) and torch.equal(st2["b1"], st["b1"])
    with pytest.raises(ValueError, match="per-row lr has 3 rows, theta0 has 2"):
        opt.init_state(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="lr must be >= 0"):
        zo.make_optimizer("zo-sgd", lr=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="betas must lie in"):
        zo.make_optimizer("zo-adam", beta2=[0.9, 1.0])
    assert not zo.make_optimizer("zo-sgd", lr=torch.tensor(2.0)).per_row  # a 0-dim tensor is a scalar
