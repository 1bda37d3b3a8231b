import sys, torch, copy
from zol2l_ext import tasks as T
from zol2l_ext.zo import minimize, ZOLSTM, LearnedZO
torch.set_num_threads(1)
spec = T.get_task("mnist-attack"); td = T.load_task(spec, "val", data_root=None)
pb = T.make_problem(td, repeat=2)
base = LearnedZO.pretrained("mnist-attack")
for a in [float(x) for x in sys.argv[1].split(",")]:
    m = copy.deepcopy(base); m.scale_update(a)
    res = minimize(ZOLSTM(m, q=spec.q, mu=spec.mu), pb, 200, seed=0, progress=False)
    L = res.loss.double().mean(1); fq = res.first_success_queries.double()
    print(f"alpha {a}: L25={float(L[25]):.3f} L50={float(L[50]):.3f} L100={float(L[100]):.3f} L200={float(L[200]):.3f} succ={float(res.success.double().mean()):.2f} q@s={float(fq[fq>=0].mean()):.0f}", flush=True)
