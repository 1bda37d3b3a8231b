"""Probe of a learned optimizer on the sparse-quadratic test part (docs/TRAINING.md): per step range, the cosine
between the ZO estimate and the true gradient with the QueryRNN scale and with isotropic directions at the same
iterates (ZO-LSTM with p = 1), and the share of the query energy on the active coordinates (isotropic: 0.05).

    .venv/bin/python scripts/probe_sparse_query.py WEIGHTS.pt
"""
import sys

import torch

from zol2l_ext import tasks as T
from zol2l_ext.zo import ZOLSTM, LearnedZO
from zol2l_ext.zo.estimator import gaussian_estimate
from zol2l_ext.zo.seeding import step_seeds
torch.set_num_threads(1)
m = LearnedZO.load(sys.argv[1]); spec = T.get_task("sparse-quadratic")
pb = T.make_problem(T.load_task(spec, "test"))
opt = ZOLSTM(m, q=spec.q, mu=spec.mu, use_query=True, query_prob=1.0)
theta = pb.initial_point(); st = opt.init_state(theta); pids = torch.arange(pb.batch); mask = pb.mask().double()
rows = []
with torch.no_grad():
    for t in range(spec.horizon):
        seeds = step_seeds(99, pids, t)
        s, _ = m.query_step(st)
        true = 2 * pb.curvature * (theta - pb.theta_star)
        cos = lambda g: float(torch.nn.functional.cosine_similarity(g, true, dim=1).mean())
        gq = gaussian_estimate(pb, theta, spec.q, spec.mu, seeds, scale=s.abs()).g
        gi = gaussian_estimate(pb, theta, spec.q, spec.mu, seeds).g
        e = s.abs().double().square(); share = float(((e * mask).sum(1) / e.sum(1)).mean())
        rows.append((t, cos(gq), cos(gi), share))
        theta, st, _ = opt.step(pb, theta, st, seeds)
for lo, hi in ((0, 10), (10, 25), (25, 50), (50, 100)):
    sel = [r for r in rows if lo <= r[0] < hi]
    print(f"steps {lo}-{hi-1}: cos(query) {sum(r[1] for r in sel)/len(sel):.3f} cos(isotropic) {sum(r[2] for r in sel)/len(sel):.3f} active share {sum(r[3] for r in sel)/len(sel):.3f}")
