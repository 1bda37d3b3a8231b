"""CIFAR-10 pixel space, 5 held-out images, 1 trial: the library's optimizers with the forward-difference baseline
replaced by the mean of the step's q values (ops.fd_gradient patched). Args: zo-sgd=LR, zo-adam=LR,
zo-signsgd=LR, zo-lstm=WEIGHTS:ALPHA[:BOOST]."""
import os, sys, time, torch
from zol2l_ext import ops, tasks as T
from zol2l_ext.zo import make_optimizer, minimize, ZOLSTM, LearnedZO
torch.set_num_threads(1)
if os.environ.get("BASE", "mean") == "mean":
    _orig = ops.fd_gradient
    ops.fd_gradient = lambda f0, fq, u, mu: _orig(fq.mean(1), fq, u, mu)
spec = T.task_with(os.environ.get("TASK", "cifar-attack"), "pixel"); td = T.load_task(spec, "val", data_root=None)
pb = T.make_problem(td, rows=list(range(int(os.environ.get("N", "5")))), repeat=1)
for s in sys.argv[1:]:
    kind, val = s.split("="); t0 = time.time()
    if kind == "zo-lstm":
        parts = val.split(":"); m = LearnedZO.from_name_or_path(parts[0]); m.scale_update(float(parts[1]))
        if len(parts) > 2: m.set_boost(float(parts[2]), 25.0)
        opt = ZOLSTM(m, q=spec.q, mu=spec.mu)
    else:
        opt = make_optimizer(kind, q=spec.q, mu=spec.mu, lr=float(val))
    res = minimize(opt, pb, spec.horizon, seed=0, progress=False)
    L = res.loss.double().mean(1); fq = res.first_success_queries.double()
    print(f"{s:28s}", " ".join(f"L{t}={float(L[t]):.3f}" for t in (0, 25, 50, 100, 200)),
          f"succ={float(res.success.double().mean()):.2f} {time.time()-t0:.0f}s", flush=True)
