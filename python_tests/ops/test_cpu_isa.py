"""The per-ISA builds of the CPU kernels (csrc/cpu/kernels_{default,avx2,avx512}.cpp) compute the same numbers.

This process runs the best build the CPU has (`_C.cpu_isa()`); ``ZOL2L_CPU_ISA=avx2|default`` caps it in a child
process. The AVX2 and AVX-512 builds contract the same multiply-adds into FMAs, so their outputs must be equal
bit for bit; the baseline build has no FMA and may differ by rounding.
"""
import os
import subprocess
import sys

import pytest
import torch

from testing import LSTM_ARG_ORDER, assert_close, assert_equal, lstm_inputs, ops, seeds

import zol2l_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ISAS = ("default", "avx2", "avx512")  # lowest first
ISA = zol2l_ext._C.cpu_isa()
FMA_ISAS = ("avx2", "avx512")


def outputs() -> dict:
    """Every per-ISA CPU kernel once, float32 and float64: the sampler (directions and points, with and without a
    scale), the LSTM step forward and backward and the pixel-space attack images, at sizes with whole tiles (or
    lane groups) and a ragged end."""
    out = {}
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(0)
        theta = torch.rand(5, 3001, generator=g, dtype=torch.float64).to(dtype)
        scale = (torch.rand(5, 3001, generator=g, dtype=torch.float64) + 0.1).to(dtype)
        use = torch.tensor([True, False, True, True, False])
        out[f"sample/{dtype}"] = ops.sample_queries(theta, 13, 1e-3, seed=seeds(5))
        out[f"sample_scaled/{dtype}"] = ops.sample_queries(theta, 13, 1e-3, scale=scale, use_scale=use, seed=seeds(5))
        args = lstm_inputs(1003, 10, 2, 1, dtype=dtype, seed=3, requires_grad=True)
        y, h, c = ops.lstm_step(**args)
        keys = [k for k in LSTM_ARG_ORDER if args[k] is not None]
        grads = torch.autograd.grad((y.square().sum() + h.sum() + c.square().sum()), [args[k] for k in keys])
        out[f"lstm/{dtype}"] = (y, h, c) + tuple(grads)
        points = (torch.rand(5, 7, 3001, generator=g, dtype=torch.float64) - 0.5).to(dtype)
        for norm in (1, 2):  # images and their distances, 16-lane partial sums and a ragged end
            out[f"pixel_images{norm}/{dtype}"] = ops.attack_pixel_images(points, theta, norm)
    return {k: tuple(t.detach() for t in v) for k, v in out.items()}


def _child(isa: str, path: str) -> str:
    env = dict(os.environ, ZOL2L_CPU_ISA=isa, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), HERE]
                                                                      + sys.path))
    code = ("import sys, torch, zol2l_ext, test_cpu_isa as t; "
            "torch.save(t.outputs(), sys.argv[1]); print(zol2l_ext._C.cpu_isa())")
    r = subprocess.run([sys.executable, "-c", code, path], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip().splitlines()[-1]


def test_cpu_isa_names_a_build():
    assert ISA in ISAS


@pytest.mark.parametrize("isa", [i for i in ISAS if ISAS.index(i) < ISAS.index(ISA)])
def test_lower_builds_compute_what_this_one_does(isa, tmp_path):
    path = str(tmp_path / "out.pt")
    assert _child(isa, path) == isa  # the cap took effect
    theirs = torch.load(path)
    mine = outputs()
    assert set(theirs) == set(mine)
    for key, ts in mine.items():
        for i, (a, b) in enumerate(zip(ts, theirs[key])):
            if isa in FMA_ISAS and ISA in FMA_ISAS:
                assert_equal(b, a, msg=f"{key}[{i}] {isa} vs {ISA}")
            else:  # no FMA in the baseline build: rounding apart (gradients are sums over the 1003 coordinates)
                assert_close(b, a, a.dtype, scale=32.0, msg=f"{key}[{i}] {isa} vs {ISA}")


def test_unknown_cap_keeps_the_best_build(tmp_path):
    assert _child("sse9", str(tmp_path / "out.pt")) == ISA
