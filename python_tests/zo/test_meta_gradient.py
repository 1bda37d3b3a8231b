"""The meta-gradient of zo.meta_trainer, checked against an independent replay of a truncated-BPTT window.

`_replay` recomputes one window of ``window_loss`` in plain torch (``zol2l_ext.reference`` ops, the quadratic
written out by hand, eq. 4's weights and normalisation spelled out here) with the learned weights passed as
explicit tensors. The trainer deliberately detaches the estimator's inputs from theta (query points built from
``theta.detach()``, the RMS statistic and the QueryRNN's inputs detached); the replay records those detached
quantities on a first pass at the current weights and holds them fixed when the weights are perturbed, so a
central finite difference of the replay is exactly the partial derivative that autograd takes through the
trainer. Everything is float64 and tiny (d = 8, q = 3, unroll = 3, hidden = 4): the file runs in seconds.

What breaks these tests (checked by hand on a throw-away copy of the package):
* the meta-loss without eq. 4's weights t           -> the replay's loss differs from window_loss's;
* truncated BPTT cut to one step (theta.detach() + delta in meta_step) -> autograd differs from the FD;
* clip_meta_gradient not clipping                   -> the clipping tests.
"""
import math

import pytest
import torch

from zol2l_ext import ops, reference
from zol2l_ext.zo import CallableProblem, LearnedZO
from zol2l_ext.zo.meta_trainer import (MetaTrainConfig, MetaTrainer, clip_meta_gradient, init_meta_state,
                                       window_loss)
from zol2l_ext.zo.seeding import step_seeds
from zol2l_ext.zo.synthetic import SparseQuadraticProblem

DT = torch.float64
D, ACTIVE, B, Q, UNROLL, HIDDEN = 8, 4, 2, 3, 3, 4
MU = 0.01
RUN_SEED = 12345
RMS_EPS = 1e-30  # lstm_optimizer.RMS_EPS, written out so the replay does not borrow it


def _cfg(**kw):
    base = dict(task="meta-gradient", batch=B, epochs=1, updates_per_epoch=1, horizon=2 * UNROLL, unroll=UNROLL,
                q=Q, mu=MU, lam=0.05, clip=1.0, grad_mode="first-order", weighting="linear")
    base.update(kw)
    return MetaTrainConfig(**base)


def _model(seed=0):
    torch.manual_seed(seed)
    # a head of 0.5 x the default init (instead of 0.1) so that the LSTM weights matter visibly
    return LearnedZO(hidden=HIDDEN, scaling="rms", step=0.1, output_init_scale=0.5).double()


def _problem():
    return SparseQuadraticProblem([11, 22], dim=D, active=ACTIVE, dtype=DT)


def _net(model, stage):
    return model.update if stage == 1 else model.query


def _set_trainable(model, stage):
    _net(model, stage).requires_grad_(True)
    _net(model, 3 - stage).requires_grad_(False)


def _weights(model):
    """The learned weights as plain tensors for the replay (no autograd)."""
    u, qn = model.update.lstm, model.query.lstm
    return {
        "u_ih": u.w_ih.detach().clone(), "u_hh": u.w_hh.detach().clone(), "u_out": u.w_out.detach().clone(),
        "log_step": model.update.log_step.detach().clone(),
        "q_ih": qn.w_ih.detach().clone(), "q_hh": qn.w_hh.detach().clone(), "q_out": qn.w_out.detach().clone(),
    }


# trainer parameter name -> replay weight name
STAGE_PARAMS = {
    1: {"lstm.w_ih": "u_ih", "lstm.w_hh": "u_hh", "lstm.w_out": "u_out", "log_step": "log_step"},
    2: {"lstm.w_ih": "q_ih", "lstm.w_hh": "q_hh", "lstm.w_out": "q_out"},
}


def _f(problem, x):
    """The sparse quadratic, written out: x [B, ..., d] -> [B, ...]."""
    a, star = problem.curvature, problem.theta_star
    while a.dim() < x.dim():
        a, star = a.unsqueeze(1), star.unsqueeze(1)
    return (a * (x - star).square()).sum(-1)


def _replay(P, problem, theta0, st0, f_start, t_first, cfg, use_query, rms_beta, zs, rec=None, value_scale=1.0):
    """One window of the meta-loss from explicit weights P. ``rec=None``: record the detached quantities of this
    pass (returned); else hold the recorded ones fixed where the trainer detaches. Returns (loss, rec, theta, f_start).
    """
    Bn, d = theta0.shape
    H = P["u_hh"].shape[1]
    recording = rec is None
    if recording:
        rec = []
    f = lambda x: value_scale * _f(problem, x)  # noqa: E731
    theta = theta0
    hu, cu = st0["h_update"].reshape(Bn * d, H), st0["c_update"].reshape(Bn * d, H)
    v_old = st0["g_sq"]
    if use_query:
        Hq = P["q_hh"].shape[1]
        hq, cq = st0["h_query"].reshape(Bn * d, Hq), st0["c_query"].reshape(Bn * d, Hq)
        g_prev, dt_prev = st0["g_prev"], st0["dtheta_prev"]
    total = theta0.new_zeros(Bn)
    step = P["log_step"].exp()
    for j in range(cfg.unroll):
        t = t_first + j
        z = zs[j]
        if recording:
            r = {"theta": theta.detach().clone()}
            if use_query:
                r["g_prev"], r["dtheta_prev"] = g_prev.detach().clone(), dt_prev.detach().clone()
            rec.append(r)
        r = rec[j]
        base = r["theta"]  # the query points are built from theta.detach()
        reg = 0.0
        if use_query:
            gp, dp = r["g_prev"], r["dtheta_prev"]  # detached inputs of the QueryRNN
            gp = gp / gp.square().mean(1, keepdim=True).add(RMS_EPS).sqrt()
            dp = dp / dp.square().mean(1, keepdim=True).add(RMS_EPS).sqrt()
            y, hq, cq = reference.lstm_step_ref(torch.stack([gp, dp], -1).reshape(Bn * d, 2), hq, cq,
                                                P["q_ih"], P["q_hh"], P["q_out"])
            s = y.view(Bn, d) + 1.0
            reg = cfg.lam * (s - 1.0).square().sum(1)
            sa = s.abs()
            s_hat = sa * (math.sqrt(d) / sa.norm(dim=1, keepdim=True))
            u = s_hat.unsqueeze(1) * z
            if recording:
                r["s"] = s.detach().clone()
        else:
            u = z
        f0 = f(base)
        fq = f(base.unsqueeze(1) + MU * u)  # differentiable through u in stage 2 (first-order mode)
        g = reference.fd_gradient_ref(f0, fq, u, MU)
        if recording:  # the running mean square is computed from g.detach()
            m = g.detach().square().mean(1, keepdim=True)
            r["v"] = torch.where(v_old > 0, rms_beta * v_old + (1 - rms_beta) * m, m)
            v_old = r["v"]
        g_hat = g / r["v"].add(RMS_EPS).sqrt()
        y, hu, cu = reference.lstm_step_ref(g_hat.reshape(Bn * d, 1), hu, cu, P["u_ih"], P["u_hh"], P["u_out"])
        delta = step * (y.view(Bn, d) - g_hat)
        theta = theta + delta
        f_new = f(theta)
        if f_start is None:
            f_start = f0.detach()
        wt = t if cfg.weighting == "linear" else 1  # eq. 4: weight t, the 1-based step number within the horizon
        total = total + wt * f_new + reg
        if use_query and recording:
            g_prev, dt_prev = g.detach(), delta.detach()
    W = sum(range(1, cfg.horizon + 1)) if cfg.weighting == "linear" else cfg.horizon
    if cfg.normalize:
        total = total / (W * f_start.abs())
    return total.mean(), rec, theta, f_start


def _window(stage, window, cfg=None, objective="eq4", problem=None, model=None):
    """Set up the tested window (the first or the second of the horizon) and run window_loss on it.

    Returns a dict with the trainer's loss and autograd gradients plus what the replay needs."""
    cfg = cfg or _cfg(stage=stage, objective=objective)
    model = model or _model()
    _set_trainable(model, stage)
    use_query = stage == 2
    problem = problem or _problem()
    theta = problem.initial_point()
    st = init_meta_state(model, theta, use_query)
    f_start = None
    t_first = 1
    for _ in range(window):  # earlier windows: the trainer's own, then detached as in train_update
        _, theta, st, f_start, _ = window_loss(model, problem, theta, st, RUN_SEED, t_first, cfg, use_query, f_start)
        theta, st = theta.detach(), {k: v.detach() for k, v in st.items()}
        t_first += cfg.unroll
    theta0, st0 = theta.clone(), {k: v.clone() for k, v in st.items()}
    loss, theta_end, st_end, f_start_out, f_last = window_loss(model, problem, theta, st, RUN_SEED, t_first, cfg,
                                                               use_query, f_start)
    names = STAGE_PARAMS[stage]
    params = dict(_net(model, stage).named_parameters())
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    pids = torch.arange(B)
    zs = [reference.gaussian_z_ref(step_seeds(RUN_SEED, pids, t_first + j - 1), cfg.q, D, dtype=DT)
          for j in range(cfg.unroll)]
    return dict(model=model, problem=problem, cfg=cfg, use_query=use_query, theta0=theta0, st0=st0,
                f_start=f_start, t_first=t_first, loss=loss.detach(), theta_end=theta_end.detach(),
                f_start_out=f_start_out, f_last=f_last, zs=zs,
                grads={names[n]: g for n, g in zip(names, grads)})


def _run_replay(w, P, rec=None, value_scale=1.0):
    return _replay(P, w["problem"], w["theta0"], w["st0"], w["f_start"], w["t_first"], w["cfg"], w["use_query"],
                   w["model"].rms_beta, w["zs"], rec=rec, value_scale=value_scale)


# ------------------------------------------------------------------------------------ 1. finite differences
@pytest.mark.parametrize("window", [0, 1], ids=["window1", "window2"])
@pytest.mark.parametrize("stage", [1, 2])
def test_replay_reproduces_window_loss(stage, window, monkeypatch):
    """The independent replay gives window_loss's loss, iterate and f values: pins eq. 4's weights t, the
    regulariser and the normalisation by W f(theta_0), and that the recorded iterates are the trainer's."""
    seen = []
    real = ops.sample_queries

    def spy(theta, *a, **k):
        seen.append(theta.detach().clone())
        return real(theta, *a, **k)

    monkeypatch.setattr(ops, "sample_queries", spy)
    w = _window(stage, window)
    trainer_thetas = seen[-UNROLL:]
    loss, rec, theta_end, f_start = _run_replay(w, _weights(w["model"]))
    torch.testing.assert_close(loss, w["loss"], rtol=1e-12, atol=0)
    torch.testing.assert_close(theta_end.detach(), w["theta_end"], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(f_start, w["f_start_out"], rtol=1e-13, atol=0)
    torch.testing.assert_close(_f(w["problem"], theta_end.detach()), w["f_last"], rtol=1e-12, atol=0)
    for r, th in zip(rec, trainer_thetas):
        torch.testing.assert_close(r["theta"], th, rtol=1e-12, atol=1e-15)
    if stage == 2:  # a sane regime for the FD test: the scale stays away from |s| = 0
        assert min(float(r["s"].abs().min()) for r in rec) > 0.2


@pytest.mark.parametrize("window", [0, 1], ids=["window1", "window2"])
@pytest.mark.parametrize("stage", [1, 2])
def test_meta_gradient_matches_finite_differences(stage, window):
    """Autograd through window_loss (fused ops) == central differences of the replay, entry by entry, for every
    trained weight: UpdateRNN incl. log_step in stage 1, QueryRNN in stage 2 (through u = s_hat z and the
    differentiable query values)."""
    w = _window(stage, window)
    P0 = _weights(w["model"])
    loss0, rec, _, _ = _run_replay(w, P0)
    torch.testing.assert_close(loss0, w["loss"], rtol=1e-12, atol=0)
    eps = 1e-6
    fds = {}
    for name in w["grads"]:
        fd = torch.zeros_like(P0[name]).reshape(-1)
        for i in range(fd.numel()):
            vals = []
            for sgn in (1.0, -1.0):
                P = dict(P0)
                P[name] = P0[name].clone().reshape(-1)
                P[name][i] += sgn * eps
                P[name] = P[name].reshape(P0[name].shape)
                vals.append(_run_replay(w, P, rec=rec)[0])
            fd[i] = (vals[0] - vals[1]) / (2 * eps)
        fds[name] = fd.reshape(P0[name].shape)
        assert float(fds[name].abs().max()) > 0, f"{name}: the finite differences see no dependence"
    # The FD's rounding noise is ~1e-10 absolute (the loss passes through (f(theta + mu u) - f(theta)) / mu), so
    # small entries are compared to the largest meta-gradient entry of the stage, not to themselves.
    gmax = max(float(fd.abs().max()) for fd in fds.values())
    for name, auto in w["grads"].items():
        torch.testing.assert_close(auto, fds[name], rtol=1e-5, atol=1e-7 * gmax,
                                   msg=lambda m: f"stage {stage} window {window + 1} {name}: {m}")


# ----------------------------------------------------------------------------------- 2. meta-gradient clipping
def _grads(seed, shapes):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.zeros(s, dtype=DT, requires_grad=True) for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g, dtype=DT)
    return ps


def _global_norm(grads):
    return float(torch.linalg.vector_norm(torch.cat([x.reshape(-1) for x in grads])))


def test_clip_norm_mode_scales_to_clip_and_keeps_the_direction():
    ps = _grads(0, [(16, 1), (16, 4), (1, 4), ()])
    before = [p.grad.clone() for p in ps]
    norm = _global_norm(before)
    clip = 1e-6
    stats = clip_meta_gradient(ps, clip, "norm")
    after = [p.grad for p in ps]
    assert stats["clipped"] == 1.0
    assert stats["grad_norm"] == pytest.approx(norm, rel=1e-12)
    assert _global_norm(after) == pytest.approx(clip, rel=1e-10)
    for b, a in zip(before, after):
        torch.testing.assert_close(a, b * (clip / norm), rtol=1e-12, atol=0)
    # below the threshold nothing changes
    ps = _grads(1, [(5,), (3, 2)])
    before = [p.grad.clone() for p in ps]
    stats = clip_meta_gradient(ps, 1e6, "norm")
    assert stats["clipped"] == 0.0
    for b, p in zip(before, ps):
        assert torch.equal(b, p.grad)


def test_clip_value_mode_clamps_every_entry():
    ps = _grads(2, [(16, 2), (16, 4), (1, 4)])
    before = [p.grad.clone() for p in ps]
    clip = 0.5
    want_frac = sum(int((b.abs() > clip).sum()) for b in before) / sum(b.numel() for b in before)
    assert 0.1 < want_frac < 0.9
    stats = clip_meta_gradient(ps, clip, "value")
    assert stats["clipped"] == pytest.approx(want_frac)
    assert stats["grad_norm"] == pytest.approx(_global_norm(before), rel=1e-12)
    for b, p in zip(before, ps):
        assert float(p.grad.abs().max()) <= clip
        torch.testing.assert_close(p.grad, b.clamp(-clip, clip), rtol=0, atol=0)
    stats = clip_meta_gradient(_grads(3, [(4,)]), 1e-9, "value")
    assert stats["clipped"] == 1.0


class _SparseSet:
    """A ProblemSet of sparse quadratics (float64)."""

    def __len__(self):
        return 4

    def make(self, rows=None, repeat=1):
        rows = list(range(len(self))) if rows is None else list(rows)
        return SparseQuadraticProblem([100 + r for r in rows * repeat], dim=D, active=ACTIVE, dtype=DT)


@pytest.mark.parametrize("mode", ["norm", "value"])
@pytest.mark.parametrize("stage", [1, 2])
def test_train_update_hands_adam_clipped_gradients(stage, mode):
    """End to end: with a tiny clip, the gradients Adam steps on are the clipped raw meta-gradients of each
    window (captured as they are accumulated), and the update's log reports the raw norm and the fraction."""
    clip = 1e-6
    cfg = _cfg(stage=stage, clip=clip, clip_mode=mode, batch=2)
    tr = MetaTrainer(cfg, _SparseSet(), None, model=_model(), progress=False)
    raw, seen, current = [], [], {}  # per window: the raw gradients (after backward), the ones Adam steps on

    def hook(i):
        def record(p):
            current[i] = p.grad.detach().clone()
        return record

    for i, p in enumerate(tr.params):
        p.register_post_accumulate_grad_hook(hook(i))
    real_step = tr.opt.step

    def step(*a, **k):
        raw.append(dict(current))
        current.clear()
        seen.append({i: p.grad.detach().clone() for i, p in enumerate(tr.params) if p.grad is not None})
        return real_step(*a, **k)

    tr.opt.step = step
    row = tr.train_update()
    n_windows = cfg.horizon // cfg.unroll
    assert len(seen) == len(raw) == n_windows and row["skipped_windows"] == 0
    fracs = []
    for window, (r, s) in enumerate(zip(raw, seen)):
        assert sorted(r) == sorted(s) == list(range(len(tr.params)))
        norm = _global_norm(list(r.values()))
        assert row["window_grad_norm"][window] == pytest.approx(norm, rel=1e-12)
        assert norm > 100 * clip  # the raw meta-gradient is far above the threshold
        if mode == "norm":
            assert _global_norm(list(s.values())) == pytest.approx(clip, rel=1e-9)
            for i in r:
                torch.testing.assert_close(s[i], r[i] * (clip / norm), rtol=1e-12, atol=0)
            fracs.append(1.0)
        else:
            for i in r:
                torch.testing.assert_close(s[i], r[i].clamp(-clip, clip), rtol=0, atol=0)
            fracs.append(sum(int((g.abs() > clip).sum()) for g in r.values()) / sum(g.numel() for g in r.values()))
        assert row["window_clipped"][window] == pytest.approx(fracs[-1])
    assert row["grad_norm"] > 100 * clip
    assert row["clipped_fraction"] == pytest.approx(sum(fracs) / len(fracs))
    assert row["clipped_fraction"] > 0.5


# ------------------------------------------------------------------------- 3. eq. 4 vs the "reference" objective
@pytest.mark.parametrize("stage", [1, 2])
def test_reference_objective_has_the_eq4_gradient(stage):
    """objective="reference" subtracts t f(theta_{t-1}) with f(theta_{t-1}) detached: a constant, so its
    meta-gradient is eq. 4's exactly (the option changes the logged loss, not what is learned)."""
    eq4 = _window(stage, 1, objective="eq4")
    ref = _window(stage, 1, objective="reference")
    for name in eq4["grads"]:
        torch.testing.assert_close(ref["grads"][name], eq4["grads"][name], rtol=1e-12, atol=1e-15)
    # the losses differ by exactly sum_t t f(theta_{t-1}) / (W f_start), averaged over the problems
    _, rec, _, _ = _run_replay(eq4, _weights(eq4["model"]))
    W = sum(range(1, eq4["cfg"].horizon + 1))
    shift = sum((eq4["t_first"] + j) * _f(eq4["problem"], r["theta"]) for j, r in enumerate(rec))
    shift = (shift / (W * eq4["f_start"].abs())).mean()
    assert float(shift) > 0
    torch.testing.assert_close(eq4["loss"] - ref["loss"], shift, rtol=1e-10, atol=0)


# ----------------------------------------------------------------------------------------- 4. normalisation
def _scaled_problem(c):
    base = _problem()
    return CallableProblem(lambda pts: c * base(pts), D, B, dtype=DT)


@pytest.mark.parametrize("stage", [1, 2])
def test_normalised_loss_is_invariant_to_the_value_scale(stage):
    """Values x 1000: under scaling="rms" g_hat, the updates, the iterates and the QueryRNN inputs do not change,
    and the normaliser divides f_start out, so the normalised eq. 4 part of the loss is unchanged. The
    regulariser lambda ||s - 1||^2 is *inside* the normalised sum and not proportional to f: its share of the
    normalised loss scales as 1 / c (so the effective lambda depends on the problem's loss scale)."""
    c = 1000.0
    out = {}
    for lam in (0.0, 0.05):
        for scale in (1.0, c):
            cfg = _cfg(stage=stage, lam=lam)
            w = _window(stage, 0, cfg=cfg, problem=_scaled_problem(scale))
            out[lam, scale] = w
    for lam in (0.0, 0.05):
        torch.testing.assert_close(out[lam, c]["theta_end"], out[lam, 1.0]["theta_end"], rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(out[lam, c]["f_start_out"], c * out[lam, 1.0]["f_start_out"], rtol=1e-12, atol=0)
    # the objective part (lam = 0) is scale-free, and so is its meta-gradient
    torch.testing.assert_close(out[0.0, c]["loss"], out[0.0, 1.0]["loss"], rtol=1e-10, atol=0)
    for name in out[0.0, 1.0]["grads"]:
        g1, gc = out[0.0, 1.0]["grads"][name], out[0.0, c]["grads"][name]
        torch.testing.assert_close(gc, g1, rtol=1e-7, atol=1e-9 * float(g1.abs().max()))
    reg1 = out[0.05, 1.0]["loss"] - out[0.0, 1.0]["loss"]
    regc = out[0.05, c]["loss"] - out[0.0, c]["loss"]
    if stage == 1:  # no QueryRNN, no regulariser
        assert float(reg1) == 0.0 and float(regc) == 0.0
    else:
        assert float(reg1) > 0
        torch.testing.assert_close(regc, reg1 / c, rtol=1e-8, atol=0)


@pytest.mark.parametrize("stage", [1, 2])
def test_uniform_weighting_replay(stage):
    """weighting="uniform" (w_t = 1, normaliser W = horizon): the independent replay gives window_loss's loss,
    and it differs from eq. 4's."""
    w = _window(stage, 1, cfg=_cfg(stage=stage, weighting="uniform"))
    loss, _, _, _ = _run_replay(w, _weights(w["model"]))
    torch.testing.assert_close(loss, w["loss"], rtol=1e-12, atol=0)
    linear = _window(stage, 1)
    assert not torch.allclose(linear["loss"], w["loss"])
