"""The cases of bench_ops.py: each times one fused op against its pure-PyTorch reference and logs table rows.

A case yields rows {op, shape, dims, mode, impls: {name: summary}, bytes, kernel, err, note} through ``log``:
``lstm_cases`` (lstm_step as the UpdateRNN and the QueryRNN, against the reference and nn.LSTMCell + a Linear
head), ``query_cases`` (sample_queries, with and without a scale) and ``fd_cases`` (fd_gradient).
"""
from __future__ import annotations

import torch

import zol2l_ext
from common import no_grad_fn
from zol2l_ext import reference as R

MU = 0.005
H, O = 10, 1


def _nbytes(*ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


def _maxerr(a, b) -> float:
    return max(float((x.detach().double() - y.detach().double()).abs().max()) if x.numel() else 0.0
               for x, y in zip(a, b))


def _fused_available(fn) -> tuple[bool, str]:
    try:
        fn()
        return True, ""
    except NotImplementedError as e:  # no kernel registered for this device (yet)
        return False, str(e).splitlines()[0][:160]
    except RuntimeError as e:
        msg = str(e)
        if "Could not run" in msg or "not implemented" in msg.lower():
            return False, msg.splitlines()[0][:160]
        raise


def _grads(outs, inputs, grad_outs):
    return torch.autograd.grad(outs, inputs, grad_outs)


def lstm_cases(device, timer, n_list, log):
    for I, role in ((1, "UpdateRNN"), (2, "QueryRNN")):
        for label, N in n_list:
            torch.manual_seed(1234 + N + I)
            cell = torch.nn.LSTMCell(I, H, bias=False).to(device)
            head = torch.nn.Linear(H, O).to(device)
            w_ih = cell.weight_ih.detach().clone().requires_grad_()
            w_hh = cell.weight_hh.detach().clone().requires_grad_()
            w_out = head.weight.detach().clone().requires_grad_()
            b_out = head.bias.detach().clone().requires_grad_()
            x = torch.randn(N, I, device=device).requires_grad_()
            h = (0.5 * torch.randn(N, H, device=device)).requires_grad_()
            c = torch.randn(N, H, device=device).requires_grad_()
            gy = torch.randn(N, O, device=device)
            gh = torch.randn(N, H, device=device)
            gc_ = torch.randn(N, H, device=device)
            gouts = (gy, gh, gc_)

            def fused():
                return zol2l_ext.lstm_step(x, h, c, w_ih, w_hh, w_out, None, b_out)

            def ref():
                return R.lstm_step_ref(x, h, c, w_ih, w_hh, w_out, None, b_out)

            def lstmcell():
                h1, c1 = cell(x, (h, c))
                return head(h1), h1, c1

            fused_in = [x, h, c, w_ih, w_hh, w_out, b_out]
            cell_in = [x, h, c, cell.weight_ih, cell.weight_hh, head.weight, head.bias]
            impls = {
                "fused": (fused, lambda o: _grads(o, fused_in, gouts)),
                "ref": (ref, lambda o: _grads(o, fused_in, gouts)),
                "cell": (lstmcell, lambda o: _grads(o, cell_in, gouts)),
            }
            ok, why = _fused_available(fused)
            with torch.no_grad():
                r_out = ref()
                err = {"ref": _maxerr(fused(), r_out) if ok else None, "cell": _maxerr(lstmcell(), r_out)}
            n_bytes = _nbytes(x, h, c, w_ih, w_hh, w_out, b_out) + (N * O + 2 * N * H) * x.element_size()
            op = f"lstm_step I={I} ({role})"
            if not ok:
                del impls["fused"]
            train = timer.time(impls)

            infer_impls = {k: (no_grad_fn(f), None) for k, (f, _) in impls.items()}
            infer = {k: v["fwd"] for k, v in timer.time(infer_impls).items()}
            kern = timer.kernel_ms(no_grad_fn(fused)) if ok else None
            for mode in ("fwd", "bwd", "fwd+bwd"):
                log(dict(op=op, shape=label, dims=dict(N=N, I=I, H=H, O=O), mode=mode,
                         impls={k: v[mode] for k, v in train.items()}, bytes=n_bytes if mode == "fwd" else None,
                         kernel=kern if mode == "fwd" else None, err=err, note=None if ok else why))
            log(dict(op=op, shape=label, dims=dict(N=N, I=I, H=H, O=O), mode="inference", impls=infer,
                     bytes=n_bytes, kernel=kern, err=err, note=None if ok else why))
            del cell, head, x, h, c, gy, gh, gc_, impls, train, infer


def query_cases(device, timer, shapes, log):
    for B, q, d in shapes:
        torch.manual_seed(B * 7 + q + d)
        theta = torch.randn(B, d, device=device)
        scale = (torch.rand(B, d, device=device) + 0.5).requires_grad_()
        use_scale = torch.rand(B, device=device) < 0.5
        use_scale[0] = True
        seed = zol2l_ext.draw_seeds(B, device=device)
        gu = torch.randn(B, q, d, device=device)
        gp = torch.randn(B, q + 1, d, device=device)
        shape = f"B={B},q={q},d={d}"
        dims = dict(B=B, q=q, d=d)
        for with_scale in (False, True):
            sc = scale if with_scale else None
            us = use_scale if with_scale else None

            def fused(sc=sc, us=us):
                return zol2l_ext.sample_queries(theta, q, MU, scale=sc, use_scale=us, seed=seed)

            def ref(sc=sc, us=us):
                return R.sample_queries_ref(seed, theta, q, MU, scale=sc, use_scale=us)

            ok, why = _fused_available(fused)
            with torch.no_grad():
                err = {"ref": _maxerr(fused(), ref()) if ok else None}
            n_bytes = _nbytes(seed, theta, sc, us) + (B * q * d + B * (q + 1) * d) * theta.element_size()
            bwd = (lambda o: _grads(o, [scale], (gu, gp))) if with_scale else None
            impls = {"fused": (fused, bwd), "ref": (ref, bwd)} if ok else {"ref": (ref, bwd)}
            res = timer.time(impls)
            kern = timer.kernel_ms(lambda: fused(sc.detach() if sc is not None else None, us)) if ok else None
            op = "sample_queries+scale" if with_scale else "sample_queries"
            modes = ("fwd", "bwd", "fwd+bwd") if with_scale else ("fwd",)
            for mode in modes:
                log(dict(op=op, shape=shape, dims=dims, mode=mode, impls={k: v[mode] for k, v in res.items()},
                         bytes=n_bytes if mode == "fwd" else None, kernel=kern if mode == "fwd" else None, err=err,
                         note=None if ok else why))
            del res
        del theta, scale, gu, gp


def fd_cases(device, timer, shapes, log):
    for B, q, d in shapes:
        torch.manual_seed(B * 11 + q + d)
        f0 = torch.randn(B, device=device).requires_grad_()
        fq = torch.randn(B, q, device=device).requires_grad_()
        u = torch.randn(B, q, d, device=device).requires_grad_()
        gg = torch.randn(B, d, device=device)

        def fused():
            return zol2l_ext.fd_gradient(f0, fq, u, MU)

        def ref():
            return R.fd_gradient_ref(f0, fq, u, MU)

        def bwd(o):
            return _grads([o], [f0, fq, u], [gg])

        ok, why = _fused_available(fused)
        with torch.no_grad():
            err = {"ref": _maxerr([fused()], [ref()]) if ok else None}
        n_bytes = _nbytes(f0, fq, u) + B * d * u.element_size()
        impls = {"fused": (fused, bwd), "ref": (ref, bwd)} if ok else {"ref": (ref, bwd)}
        res = timer.time(impls)

        def fused_nograd():
            with torch.no_grad():
                return fused()

        kern = timer.kernel_ms(fused_nograd) if ok else None
        for mode in ("fwd", "bwd", "fwd+bwd"):
            log(dict(op="fd_gradient", shape=f"B={B},q={q},d={d}", dims=dict(B=B, q=q, d=d), mode=mode,
                     impls={k: v[mode] for k, v in res.items()}, bytes=n_bytes if mode == "fwd" else None,
                     kernel=kern if mode == "fwd" else None, err=err, note=None if ok else why))
        del f0, fq, u, gg, res

