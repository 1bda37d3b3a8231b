"""Learned optimizers and baselines with a hand-added early-step schedule, on a task's held-out part: the check
whether a boost helps the learned update or would help any optimizer. TASK (default binary) and REP (trials,
default 3) from the environment. Arguments: zo-sgd=LR, zo-adam=LR:B1:B2, sgd-sched=LR:BOOST:DECAY,
adam-sched=LR:BOOST:DECAY (betas 0.99), lstm=WEIGHTS:ALPHA:BOOST:DECAY, fresh=STEP:BOOST:DECAY (untrained, no query)."""
import sys, torch, copy, time
from zol2l_ext import tasks as T
from zol2l_ext.zo import make_optimizer, minimize, ZOLSTM, LearnedZO
torch.set_num_threads(1)
spec = T.get_task(__import__("os").environ.get("TASK", "binary")); td = T.load_task(spec, "val", data_root=None)
pb = T.make_problem(td, repeat=int(__import__("os").environ.get("REP", "3")))
def show(name, res, t0):
    L = res.loss.double().mean(1); H = spec.horizon
    fl = res.final_loss.double().mean()
    extra = ""
    if res.has_success:
        fq = res.first_success_queries.double(); extra = f"succ={float(res.success.double().mean()):.2f} q@s={float(fq[fq>=0].mean()):.0f}"
    print(f"{name:30s}", " ".join(f"L{t}={float(L[t]):.4f}" for t in (25, 50, 100, H // 2, H)), f"final={float(fl):.4f}", extra, f"{time.time()-t0:.0f}s", flush=True)
for s in sys.argv[1:]:
    kind, val = s.split("=")
    t0 = time.time()
    if kind == "lstm":
        w, a, b, tau = val.split(":"); m = LearnedZO.from_name_or_path(w); m.scale_update(float(a)); m.set_boost(float(b), float(tau))
        opt = ZOLSTM(m, q=spec.q, mu=spec.mu)
    elif kind == "fresh":
        st, b, tau = val.split(":"); torch.manual_seed(0); m = LearnedZO(scaling="rms", step=float(st), boost=float(b), boost_decay=float(tau))
        opt = ZOLSTM(m, q=spec.q, mu=spec.mu, use_query=False)
    elif kind == "zo-adam":
        lr, b1, b2 = val.split(":"); opt = make_optimizer(kind, q=spec.q, mu=spec.mu, lr=float(lr), beta1=float(b1), beta2=float(b2))
    elif kind in ("sgd-sched", "adam-sched"):
        lr, b, tau = (float(x) for x in val.split(":"))
        opt = make_optimizer("zo-sgd" if kind == "sgd-sched" else "zo-adam", q=spec.q, mu=spec.mu, lr=lr,
                             **({} if kind == "sgd-sched" else dict(beta1=0.99, beta2=0.99)))
        cnt = [0]; base = opt.step_size
        def ss(d, base=base, cnt=cnt, b=b, tau=tau):
            import math; return base(d) * (1 + (b - 1) * math.exp(-cnt[0] / tau))
        ostep = opt.step
        def st(*a, ostep=ostep, cnt=cnt):
            r = ostep(*a); cnt[0] += 1; return r
        opt.step_size = ss; opt.step = st
    else:
        opt = make_optimizer(kind, q=spec.q, mu=spec.mu, lr=float(val))
    show(s, minimize(opt, pb, spec.horizon, seed=0, progress=False), t0)
