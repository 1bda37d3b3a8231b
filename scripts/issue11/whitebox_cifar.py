# White-box check that the CIFAR-10 attack loss can fall: Adam on the same loss with autograd (test 5000:5020)
import torch
from zol2l_ext import tasks as T
torch.set_num_threads(1)
for space in ("tanh", "pixel"):
    spec = T.task_with("cifar-attack", space)
    td = T.load_task(spec, "test", data_root=None)
    pb = T.make_problem(td, list(range(20)))
    theta = pb.initial_point().clone().requires_grad_(True)
    start = float(pb.differentiable_loss(theta).mean())
    opt = torch.optim.Adam([theta], lr=0.01 if space == "pixel" else 0.1)
    for t in range(200):
        loss = pb.differentiable_loss(theta)
        opt.zero_grad(); loss.sum().backward(); opt.step()
    with torch.no_grad():
        end = pb.differentiable_loss(theta)
    print(f"{space}: clean {start:.3f} -> white-box Adam 200 steps {float(end.mean()):.3f}, success {float(pb.success(theta.detach()).float().mean()):.2f}")
