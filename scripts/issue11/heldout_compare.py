import sys, torch
from zol2l_ext import tasks as T
from zol2l_ext.zo import make_optimizer, minimize, ZOLSTM, LearnedZO
torch.set_num_threads(1)
spec = T.get_task(sys.argv[1]); td = T.load_task(spec, "val", data_root=None)
trials = int(sys.argv[2])
pb = T.make_problem(td, repeat=trials)
def show(name, res):
    L = res.loss.double().mean(1); fq = res.first_success_queries.double()
    print(f"{name:28s}", " ".join(f"L{t}={float(L[t]):.3f}" for t in (25, 50, 100, spec.horizon)),
          f"succ={float(res.success.double().mean()):.2f} q@s={float(fq[fq >= 0].mean()):.0f}", flush=True)
for spec_s in sys.argv[3:]:
    kind, val = spec_s.split("=")
    if kind.startswith("zo-lstm"):
        p = 0.5
        if ":" in val: val, p = val.split(":"); p = float(p)
        opt = ZOLSTM(LearnedZO.load(val), q=spec.q, mu=spec.mu, use_query=kind == "zo-lstm", query_prob=p)
    else:
        opt = make_optimizer(kind, q=spec.q, mu=spec.mu, lr=float(val))
    show(spec_s, minimize(opt, pb, spec.horizon, seed=0, progress=False))
