// CPU implementation of fd_gradient and central_points.
#include "checks.h"
#include "cpu/op_helpers.h"

#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <vector>

namespace zol2l {
namespace {

at::Tensor fd_gradient_cpu(const at::Tensor& f0_, const at::Tensor& fq_, const at::Tensor& u_, double mu) {
  check_fd_inputs("fd_gradient", f0_, fq_, u_, mu);
  check_cpu_dtype("fd_gradient", u_);
  const at::Tensor f0 = f0_.contiguous(), fq = fq_.contiguous(), u = u_.contiguous();
  const int64_t B = u.size(0), Q = u.size(1), d = u.size(2);
  at::Tensor g = at::empty({B, d}, u.options());
  if (g.numel() == 0) return g;
  constexpr int64_t kCols = 2048;
  const int64_t n_col_chunks = at::divup(d, kCols);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "fd_gradient_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *pf0 = f0.data_ptr<scalar_t>(), *pfq = fq.data_ptr<scalar_t>(), *pu = u.data_ptr<scalar_t>();
    scalar_t* pg = g.data_ptr<scalar_t>();
    const acc_t inv = acc_t(1) / (static_cast<acc_t>(mu) * static_cast<acc_t>(Q));
    at::parallel_for(0, B * n_col_chunks, 1, [&](int64_t w0, int64_t w1) {
      std::vector<acc_t> acc(kCols);
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t b = w / n_col_chunks, j0 = (w % n_col_chunks) * kCols, n = std::min(d, j0 + kCols) - j0;
        std::fill(acc.begin(), acc.begin() + n, acc_t(0));
        acc_t* a = acc.data();
        const auto weight = [&](int64_t i) {
          return (static_cast<acc_t>(pfq[b * Q + i]) - static_cast<acc_t>(pf0[b])) * inv;
        };
        const auto row = [&](int64_t i) { return pu + (b * Q + i) * d + j0; };
        int64_t i = 0;
        // Four directions per pass over the accumulators: each element still adds its terms in the order i = 0,
        // 1, 2, ... (the same rounding as one direction per pass), with a quarter of the loads and stores of acc.
        for (; i + 4 <= Q; i += 4) {
          const acc_t w0 = weight(i), w1 = weight(i + 1), w2 = weight(i + 2), w3 = weight(i + 3);
          const scalar_t *r0 = row(i), *r1 = row(i + 1), *r2 = row(i + 2), *r3 = row(i + 3);
          for (int64_t j = 0; j < n; ++j) {
            acc_t v = a[j];
            v += w0 * static_cast<acc_t>(r0[j]);
            v += w1 * static_cast<acc_t>(r1[j]);
            v += w2 * static_cast<acc_t>(r2[j]);
            v += w3 * static_cast<acc_t>(r3[j]);
            a[j] = v;
          }
        }
        for (; i < Q; ++i) {
          const acc_t wi = weight(i);
          const scalar_t* r = row(i);
          for (int64_t j = 0; j < n; ++j) a[j] += wi * static_cast<acc_t>(r[j]);
        }
        for (int64_t j = 0; j < n; ++j) pg[b * d + j0 + j] = static_cast<scalar_t>(a[j]);
      }
    });
  });
  return g;
}

at::Tensor central_points_cpu(const at::Tensor& theta_, double mu, int64_t start, int64_t count) {
  check_central_inputs("central_points", theta_, mu, start, count);
  const at::Tensor theta = theta_.contiguous();
  const int64_t B = theta.size(0), d = theta.size(1);
  at::Tensor pts = theta.unsqueeze(1).expand({B, 2 * count, d}).contiguous();
  if (pts.numel() == 0) return pts;
  AT_DISPATCH_FLOATING_TYPES(theta.scalar_type(), "central_points_cpu", [&] {
    scalar_t* pp = pts.data_ptr<scalar_t>();
    const scalar_t* pt = theta.data_ptr<scalar_t>();
    const scalar_t m = static_cast<scalar_t>(mu);
    at::parallel_for(0, B * count, 1024, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t b = k / count, j = start + k % count, row = 2 * (k % count);
        pp[(b * 2 * count + row) * d + j] = pt[b * d + j] + m;
        pp[(b * 2 * count + row + 1) * d + j] = pt[b * d + j] - m;
      }
    });
  });
  return pts;
}

}  // namespace

TORCH_LIBRARY_IMPL(zol2l, CPU, m) {
  m.impl("fd_gradient", &fd_gradient_cpu);
  m.impl("central_points", &central_points_cpu);
}

}  // namespace zol2l
