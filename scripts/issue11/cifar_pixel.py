"""ZO-SGD and the MNIST-trained ZO-LSTM (update scaled by alpha) on the CIFAR-10 attack in pixel space, on the
first N held-out images, 1 trial. Usage: cifar_pixel.py N zo-sgd=LR zo-lstm=WEIGHTS:ALPHA ..."""
import sys, torch, copy, time
from zol2l_ext import tasks as T
from zol2l_ext.zo import make_optimizer, minimize, ZOLSTM, LearnedZO
torch.set_num_threads(1)
spec = T.task_with("cifar-attack", "pixel"); td = T.load_task(spec, "val", data_root=None)
n = int(sys.argv[1]); pb = T.make_problem(td, rows=list(range(n)), repeat=1)
def show(name, res, t0):
    L = res.loss.double().mean(1); fq = res.first_success_queries.double()
    print(f"{name:28s}", " ".join(f"L{t}={float(L[t]):.3f}" for t in (0, 25, 50, 100, spec.horizon)),
          f"succ={float(res.success.double().mean()):.2f} q@s={float(fq[fq >= 0].mean()) if (fq>=0).any() else -1:.0f} {time.time()-t0:.0f}s", flush=True)
for s in sys.argv[2:]:
    kind, val = s.split("=")
    t0 = time.time()
    if kind.startswith("zo-lstm"):
        w, a = val.split(":"); m = LearnedZO.from_name_or_path(w); m.scale_update(float(a))
        opt = ZOLSTM(m, q=spec.q, mu=spec.mu)
    else:
        opt = make_optimizer(kind, q=spec.q, mu=spec.mu, lr=float(val))
    show(s, minimize(opt, pb, spec.horizon, seed=0, progress=False), t0)
