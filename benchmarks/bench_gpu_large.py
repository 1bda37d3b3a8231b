"""GPU kernels at large sizes against the card's copy bandwidth and cuDNN (the GPU issue's measurements).

    python benchmarks/bench_gpu_large.py [--out benchmarks/results/gpu_large.json]

Measures, with CUDA events after warm-up (median of repeats):
  * the device-to-device copy bandwidth (bytes read + written) of a 1 GiB tensor;
  * lstm_step inference at N = 1M and 4M coordinates (H = 10, I = 1, O = 1): bytes = inputs read once +
    outputs written once, as a fraction of the copy bandwidth;
  * lstm_step forward+backward vs torch.nn.LSTM (cuDNN, sequence length 1, batch N) + a Linear head, at
    N = 150528 and 100 x 3072;
  * sample_queries and fd_gradient at B x q x d = 100 x 50 x 3072 (15.4 M elements), as a fraction of copy.
"""
import argparse
import json
import os
import statistics
import time

import torch

import zol2l_ext as z


def cuda_ms(fn, reps=20, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "gpu_large.json"))
    args = ap.parse_args()
    dev = torch.device("cuda")
    rows = []
    src = torch.empty(256 * 2**20, device=dev)  # 1 GiB of float32
    dst = torch.empty_like(src)
    copy_ms = cuda_ms(lambda: dst.copy_(src))
    copy_gbs = 2 * src.numel() * 4 / copy_ms / 1e6
    del src, dst
    print(f"{torch.cuda.get_device_name(0)}: device-to-device copy {copy_gbs:.0f} GB/s")

    H = 10
    w_ih, w_hh, w_out = (torch.randn(4 * H, 1, device=dev) * 0.3, torch.randn(4 * H, H, device=dev) * 0.3,
                         torch.randn(1, H, device=dev))
    for n in (2**20, 2**22):
        x, h, c = torch.randn(n, 1, device=dev), torch.randn(n, H, device=dev), torch.randn(n, H, device=dev)
        with torch.no_grad():
            ms = cuda_ms(lambda: z.lstm_step(x, h, c, w_ih, w_hh, w_out))
        nbytes = 4 * n * (1 + 2 * H) + 4 * n * (1 + 2 * H)  # x, h, c read; y, h_new, c_new written
        gbs = nbytes / ms / 1e6
        rows.append(dict(case="lstm_step inference", N=n, ms=ms, GBps=gbs, frac_copy=gbs / copy_gbs))
        print(f"lstm_step inference N={n}: {ms:.4f} ms, {gbs:.0f} GB/s = {100 * gbs / copy_gbs:.1f}% of copy")

    for n in (150528, 100 * 3072):
        x, h, c = torch.randn(n, 1, device=dev), torch.randn(n, H, device=dev), torch.randn(n, H, device=dev)
        params = [w.clone().requires_grad_() for w in (w_ih, w_hh, w_out)]

        def fused():
            y, hn, cn = z.lstm_step(x, h, c, *params)
            torch.autograd.grad((y.sum() + hn.sum()), params)

        lstm = torch.nn.LSTM(1, H, bias=False).to(dev)
        head = torch.nn.Linear(H, 1, bias=False).to(dev)
        cparams = list(lstm.parameters()) + list(head.parameters())

        def cudnn():
            out, (hn, cn) = lstm(x.unsqueeze(0), (h.unsqueeze(0), c.unsqueeze(0)))
            y = head(out[0])
            torch.autograd.grad((y.sum() + hn.sum()), cparams)

        f_ms, c_ms = cuda_ms(fused), cuda_ms(cudnn)
        rows.append(dict(case="lstm_step fwd+bwd vs cuDNN LSTM+head", N=n, fused_ms=f_ms, cudnn_ms=c_ms,
                         speedup=c_ms / f_ms))
        print(f"lstm fwd+bwd N={n}: fused {f_ms:.3f} ms, cuDNN LSTM + head {c_ms:.3f} ms, x{c_ms / f_ms:.2f}")

    B, q, d = 100, 50, 3072
    theta, seed = torch.randn(B, d, device=dev), torch.arange(B, device=dev)
    ms = cuda_ms(lambda: z.sample_queries(theta, q, 0.01, seed=seed))
    nbytes = 4 * (B * d + B * q * d + B * (q + 1) * d)  # theta read; u and points written
    gbs = nbytes / ms / 1e6
    rows.append(dict(case="sample_queries", B=B, q=q, d=d, ms=ms, GBps=gbs, frac_copy=gbs / copy_gbs))
    print(f"sample_queries {B}x{q}x{d}: {ms:.4f} ms, {gbs:.0f} GB/s = {100 * gbs / copy_gbs:.1f}% of copy")
    u = torch.randn(B, q, d, device=dev)
    f0, fq = torch.randn(B, device=dev), torch.randn(B, q, device=dev)
    ms = cuda_ms(lambda: z.fd_gradient(f0, fq, u, 0.01))
    nbytes = 4 * (B * q * d + B * d)
    gbs = nbytes / ms / 1e6
    rows.append(dict(case="fd_gradient", B=B, q=q, d=d, ms=ms, GBps=gbs, frac_copy=gbs / copy_gbs))
    print(f"fd_gradient {B}x{q}x{d}: {ms:.4f} ms, {gbs:.0f} GB/s = {100 * gbs / copy_gbs:.1f}% of copy")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(0), torch=torch.__version__, copy_GBps=copy_gbs,
                       date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), rows=rows), f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
