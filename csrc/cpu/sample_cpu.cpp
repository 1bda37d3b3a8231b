// CPU implementation of sample_queries and directions_vjp (Gaussian directions regenerated from the seed).
#include "checks.h"
#include "cpu/isa_kernels.h"
#include "cpu/op_helpers.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace zol2l {
namespace {

// The scale of each problem as the kernel applies it, s_hat[b, j] = scale[b, j] * factor[b], factor = sqrt(d) /
// ||scale[b]|| (1e-30 at least), or no scale (the identity) where there is none or use_scale[b] is false. Computed
// here instead of as tensor ops: at one image those were six dispatches and as many temporaries, at 100 CIFAR-10
// images three more passes over B x d values. The norm is summed in double.
template <typename T>
struct RowScale {
  const T* scale = nullptr;  // contiguous [B, d], or null: the identity for every problem
  std::vector<T> factor;     // [B]; 0 marks a problem that uses the identity
};

template <typename T>
RowScale<T> row_scale(const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& use_scale,
                      const at::Tensor& scale_c, const at::Tensor& use_c, int64_t B, int64_t d) {
  RowScale<T> r;
  if (!scale) return r;
  r.scale = scale_c.data_ptr<T>();
  r.factor.assign(static_cast<size_t>(B), T(0));
  const bool* use = use_scale ? use_c.data_ptr<bool>() : nullptr;
  const T sqrt_d = static_cast<T>(std::sqrt(static_cast<double>(d)));
  for (int64_t b = 0; b < B; ++b) {
    if (use != nullptr && !use[b]) continue;
    double acc = 0;
    for (int64_t j = 0; j < d; ++j) acc += static_cast<double>(r.scale[b * d + j]) * r.scale[b * d + j];
    r.factor[b] = sqrt_d / std::max(static_cast<T>(std::sqrt(acc)), static_cast<T>(1e-30));
  }
  return r;
}

// Fills u [B, q, d] and points [B, q + 1, d] (contiguous) from contiguous theta and seed.
void sample_into(const at::Tensor& seed, const at::Tensor& theta, const std::optional<at::Tensor>& scale,
                 const std::optional<at::Tensor>& use_scale, const SampleDims& s, double mu, at::Tensor& u,
                 at::Tensor& points) {
  if (u.numel() == 0) {
    points.copy_(theta.unsqueeze(1).expand_as(points));
    return;
  }
  const at::Tensor scale_c = scale ? scale->contiguous() : at::Tensor();
  const at::Tensor use_c = use_scale ? use_scale->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(theta.scalar_type(), "sample_queries_cpu", [&] {
    const auto sample_row = cpu_kernels<scalar_t>().sample_row;
    const int64_t* pseed = seed.data_ptr<int64_t>();
    const scalar_t* pth = theta.data_ptr<scalar_t>();
    const RowScale<scalar_t> rs = row_scale<scalar_t>(scale, use_scale, scale_c, use_c, s.B, s.d);
    scalar_t *pu = u.data_ptr<scalar_t>(), *pp = points.data_ptr<scalar_t>();
    const scalar_t m = static_cast<scalar_t>(mu);
    const int64_t d = s.d, Q = s.q;
    // One work item per (problem, row): row 0 of points copies theta, row 1 + i holds direction i; one MNIST
    // image's rows stay on the calling thread, where an OpenMP region would cost more than it saves (and far more
    // on a busy machine).
    at::parallel_for(0, s.B * (Q + 1), elementwise_grain_rows(d), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / (Q + 1), row = r % (Q + 1);
        const scalar_t* th = pth + b * d;
        scalar_t* out_p = pp + (b * (Q + 1) + row) * d;
        if (row == 0) {
          std::copy(th, th + d, out_p);
          continue;
        }
        const int64_t i = row - 1;
        scalar_t* out_u = pu + (b * Q + i) * d;
        const scalar_t factor = rs.scale == nullptr ? scalar_t(0) : rs.factor[b];  // 0: the identity
        sample_row(static_cast<uint64_t>(pseed[b]), i * d, d, factor == scalar_t(0) ? nullptr : rs.scale + b * d,
                   factor, th, m, out_u, out_p);
      }
    });
  });
}

std::tuple<at::Tensor, at::Tensor> sample_queries_cpu(const at::Tensor& seed_, const at::Tensor& theta_,
                                                      const std::optional<at::Tensor>& scale,
                                                      const std::optional<at::Tensor>& use_scale, int64_t q,
                                                      double mu) {
  const SampleDims s = check_sample_inputs("sample_queries", seed_, theta_, scale, use_scale, q, mu);
  check_cpu_dtype("sample_queries", theta_);
  const at::Tensor theta = theta_.contiguous(), seed = seed_.contiguous();
  at::Tensor u = at::empty({s.B, s.q, s.d}, theta.options());
  at::Tensor points = at::empty({s.B, s.q + 1, s.d}, theta.options());
  sample_into(seed, theta, scale, use_scale, s, mu, u, points);
  return {u, points};
}

void sample_queries_out_cpu(const at::Tensor& seed_, const at::Tensor& theta_, const std::optional<at::Tensor>& scale,
                            const std::optional<at::Tensor>& use_scale, int64_t q, double mu, at::Tensor u,
                            at::Tensor points) {
  const char* op = "sample_queries_out";
  const SampleDims s = check_sample_inputs(op, seed_, theta_, scale, use_scale, q, mu);
  check_cpu_dtype(op, theta_);
  check_shape(op, u, "u", {s.B, s.q, s.d});
  check_shape(op, points, "points", {s.B, s.q + 1, s.d});
  check_same(op, theta_, "theta", u, "u");
  check_same(op, theta_, "theta", points, "points");
  TORCH_CHECK(u.is_contiguous() && points.is_contiguous(), op, ": u and points must be contiguous");
  // The kernel reads theta (and the scale) while it writes the outputs.
  at::assert_no_overlap(u, points);
  at::assert_no_overlap(points, theta_);
  at::assert_no_overlap(u, theta_);
  const at::Tensor theta = theta_.contiguous(), seed = seed_.contiguous();
  sample_into(seed, theta, scale, use_scale, s, mu, u, points);
}

at::Tensor directions_vjp_cpu(const at::Tensor& seed_, const at::Tensor& grad_u_) {
  check_directions_vjp_inputs("directions_vjp", seed_, grad_u_);
  check_cpu_dtype("directions_vjp", grad_u_);
  const at::Tensor g = grad_u_.contiguous(), seed = seed_.contiguous();
  const int64_t B = g.size(0), Q = g.size(1), d = g.size(2);
  at::Tensor out = at::zeros({B, d}, g.options());
  if (out.numel() == 0 || Q == 0) return out;
  constexpr int64_t kCols = 1024;
  const int64_t n_col_chunks = at::divup(d, kCols);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "directions_vjp_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto fill = cpu_kernels<scalar_t>().fill_normals;
    const int64_t* pseed = seed.data_ptr<int64_t>();
    const scalar_t* pg = g.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * n_col_chunks, 1, [&](int64_t w0, int64_t w1) {
      std::vector<scalar_t> z(kCols);
      std::vector<acc_t> acc(kCols);
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t b = w / n_col_chunks, j0 = (w % n_col_chunks) * kCols, j1 = std::min(d, j0 + kCols);
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t i = 0; i < Q; ++i) {
          fill(static_cast<uint64_t>(pseed[b]), i * d + j0, i * d + j1, z.data());
          const scalar_t* row = pg + (b * Q + i) * d;
          for (int64_t j = j0; j < j1; ++j) acc[j - j0] += static_cast<acc_t>(row[j]) * z[j - j0];
        }
        for (int64_t j = j0; j < j1; ++j) po[b * d + j] = static_cast<scalar_t>(acc[j - j0]);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(zol2l, CPU, m) {
  m.impl("sample_queries", &sample_queries_cpu);
  m.impl("sample_queries_out", &sample_queries_out_cpu);
  m.impl("directions_vjp", &directions_vjp_cpu);
}

}  // namespace zol2l
