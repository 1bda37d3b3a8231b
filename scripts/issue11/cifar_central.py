"""Forward against central differences on the CIFAR-10 attack loss in pixel space (5 held-out images, 1 trial,
plain ZO-SGD written out here, step lr/d): the l1 term is not differentiable at delta = 0, and a forward
difference there reads c * mu * ||u||_1 > 0 in every direction, a large common value that the estimate turns
into noise; a central difference cancels it. Usage: cifar_central.py forward=1 central=1 ..."""
import sys, torch, time
from zol2l_ext import tasks as T
torch.set_num_threads(1)
spec = T.task_with("cifar-attack", "pixel"); td = T.load_task(spec, "val", data_root=None)
pb = T.make_problem(td, rows=list(range(5)), repeat=1)
q, mu = spec.q, spec.mu
for mode, lr in [(m, float(l)) for m, l in (a.split("=") for a in sys.argv[1:])]:
    torch.manual_seed(0); th = pb.initial_point(); B, d = th.shape; curve = []
    for t in range(201):
        u = torch.randn(B, q, d)
        if mode == "central":
            pts = torch.cat([th.unsqueeze(1), th.unsqueeze(1) + mu * u, th.unsqueeze(1) - mu * u], 1)
            v = pb(pts); f0 = v[:, 0]; dv = (v[:, 1:q+1] - v[:, q+1:]) / (2 * mu)
        else:
            pts = torch.cat([th.unsqueeze(1), th.unsqueeze(1) + mu * u], 1)
            v = pb(pts); f0 = v[:, 0]; dv = (v[:, 1:] - f0[:, None]) / mu
        curve.append(float(f0.mean()))
        g = (dv.unsqueeze(2) * u).mean(1)
        th = th - lr / d * g
    print(mode, lr, " ".join(f"L{t}={curve[t]:.3f}" for t in (0, 25, 50, 100, 200)), flush=True)
