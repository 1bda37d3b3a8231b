# mu per space: ZO-SGD at a fixed step on the tune images (train part), 3 trials, both spaces
import sys, torch
from zol2l_ext import tasks as T
from zol2l_ext.zo import make_optimizer, minimize
torch.set_num_threads(1)
for space, lr in (("pixel", 8.0), ("tanh", 300.0)):
    spec = T.task_with("mnist-attack", space)
    td = T.load_task(spec, "tune", data_root=None)
    for mu in (0.01, 0.005, 1e-3, 1e-4, 1e-5):
        pb = T.make_problem(td, list(range(10)), repeat=3)
        res = minimize(make_optimizer("zo-sgd", q=20, mu=mu, lr=lr), pb, 200, seed=0, progress=False)
        L = res.loss.double()
        per_item = L.reshape(201, 3, 10).mean(1)
        print(f"{space} lr={lr:g} mu={mu:g}: L50={L[50].mean():.3f} L200={L[200].mean():.3f} "
              f"succ={res.success.float().mean():.2f}", " ".join(f"{v:.3f}" for v in per_item[200].tolist()), flush=True)
