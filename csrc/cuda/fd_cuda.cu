// CUDA kernels of fd_gradient and central_points (contract: docs/OPS.md section 3). Both are memory-bound:
// threads run along the contiguous d axis so that every warp access is coalesced.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "checks.h"
#include "launch_utils.cuh"

namespace zol2l {
namespace {

using cuda_detail::kElemThreads;

template <typename scalar_t>
struct FdParams {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* f0;  // [B]
  const scalar_t* fq;  // [B, q]
  const scalar_t* u;   // [B, q, d]
  scalar_t* out;       // [B, d] when the rows are not split
  acc_t* partial;      // [chunks, B, d] otherwise (nullptr when not split)
  int64_t B, q, d, rows_per_chunk;
  acc_t inv_mu_q;      // 1 / (mu q), rounded as the CPU kernel rounds it
};

// One thread per (b, j), summing its chunk of rows i in registers: deterministic, and a warp reads 32
// consecutive u[b, i, :] elements per row. fq[b, i] and f0[b] are the same for the whole warp (broadcast).
// Same arithmetic as the CPU kernel: acc += ((fq - f0) / (mu q)) u, in row order.
template <typename scalar_t>
__global__ void __launch_bounds__(kElemThreads) fd_gradient_kernel(FdParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = p.B * p.d;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t i_begin = static_cast<int64_t>(blockIdx.y) * p.rows_per_chunk;
  const int64_t i_end = (p.q - i_begin < p.rows_per_chunk) ? p.q : i_begin + p.rows_per_chunk;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int64_t b = t / p.d;
    const int64_t j = t - b * p.d;
    const acc_t f0 = static_cast<acc_t>(p.f0[b]);
    const scalar_t* fq_b = p.fq + b * p.q;
    const scalar_t* u_bj = p.u + b * p.q * p.d + j;
    acc_t acc = acc_t(0);
#pragma unroll 4
    for (int64_t i = i_begin; i < i_end; ++i) {
      const acc_t w = (static_cast<acc_t>(fq_b[i]) - f0) * p.inv_mu_q;
      acc += w * static_cast<acc_t>(u_bj[i * p.d]);
    }
    if (p.partial != nullptr) {
      p.partial[static_cast<int64_t>(blockIdx.y) * total + t] = acc;
    } else {
      p.out[t] = static_cast<scalar_t>(acc);
    }
  }
}

template <typename scalar_t>
struct CentralParams {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* theta;  // [B, d]
  scalar_t* out;          // [B, 2 count, d]
  int64_t B, d, start, count;
  acc_t mu;
};

// One thread per (b, j) reads theta once and writes its column of rows 2k, 2k + 1 for the k of its y-slice;
// the warp's writes stay contiguous along j. Untouched entries copy theta exactly.
template <typename scalar_t>
__global__ void __launch_bounds__(kElemThreads) central_points_kernel(CentralParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = p.B * p.d;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int64_t b = t / p.d;
    const int64_t j = t - b * p.d;
    const scalar_t th = p.theta[t];
    scalar_t* out_b = p.out + b * 2 * p.count * p.d + j;
    for (int64_t k = blockIdx.y; k < p.count; k += gridDim.y) {
      const bool hit = (j == p.start + k);
      out_b[(2 * k) * p.d] = hit ? static_cast<scalar_t>(static_cast<acc_t>(th) + p.mu) : th;
      out_b[(2 * k + 1) * p.d] = hit ? static_cast<scalar_t>(static_cast<acc_t>(th) - p.mu) : th;
    }
  }
}

at::Tensor fd_gradient_cuda(const at::Tensor& f0_in, const at::Tensor& fq_in, const at::Tensor& u_in, double mu) {
  constexpr const char* op = "fd_gradient";
  check_fd_inputs(op, f0_in, fq_in, u_in, mu);
  c10::cuda::CUDAGuard device_guard(u_in.device());
  const at::Tensor f0 = f0_in.contiguous(), fq = fq_in.contiguous(), u = u_in.contiguous();
  const int64_t B = u.size(0), q = u.size(1), d = u.size(2);
  at::Tensor out = at::empty({B, d}, u.options());
  if (B == 0 || d == 0) return out;

  const cuda_detail::RowChunks chunks = cuda_detail::plan_row_chunks(B * d, q);
  const at::ScalarType acc_type = u.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor partial;
  if (chunks.num_chunks > 1) partial = at::empty({chunks.num_chunks, B, d}, u.options().dtype(acc_type));

  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, u.scalar_type(), op, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    FdParams<scalar_t> p;
    p.f0 = f0.data_ptr<scalar_t>();
    p.fq = fq.data_ptr<scalar_t>();
    p.u = u.data_ptr<scalar_t>();
    p.out = out.data_ptr<scalar_t>();
    p.partial = partial.defined() ? partial.data_ptr<acc_t>() : nullptr;
    p.B = B;
    p.q = q;
    p.d = d;
    p.rows_per_chunk = chunks.rows_per_chunk;
    p.inv_mu_q = acc_t(1) / (static_cast<acc_t>(mu) * static_cast<acc_t>(q));
    const dim3 grid(cuda_detail::grid_stride_blocks(B * d), static_cast<unsigned int>(chunks.num_chunks));
    fd_gradient_kernel<scalar_t><<<grid, kElemThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (partial.defined()) out.copy_(partial.sum(0));  // fixed-order reduction of the row chunks
  return out;
}

at::Tensor central_points_cuda(const at::Tensor& theta_in, double mu, int64_t start, int64_t count) {
  constexpr const char* op = "central_points";
  check_central_inputs(op, theta_in, mu, start, count);
  c10::cuda::CUDAGuard device_guard(theta_in.device());
  const at::Tensor theta = theta_in.contiguous();
  const int64_t B = theta.size(0), d = theta.size(1);
  at::Tensor out = at::empty({B, 2 * count, d}, theta.options());
  if (B == 0 || d == 0 || count == 0) return out;

  // Few columns (small B d): spread the k rows over gridDim.y so the device still fills up.
  const int64_t columns = B * d;
  const int64_t want_y = (cuda_detail::kTargetThreads + columns - 1) / columns;
  const unsigned int grid_y = static_cast<unsigned int>(std::clamp<int64_t>(want_y, 1, std::min<int64_t>(count, 65535)));

  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, theta.scalar_type(), op, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    CentralParams<scalar_t> p;
    p.theta = theta.data_ptr<scalar_t>();
    p.out = out.data_ptr<scalar_t>();
    p.B = B;
    p.d = d;
    p.start = start;
    p.count = count;
    p.mu = static_cast<acc_t>(mu);
    const dim3 grid(cuda_detail::grid_stride_blocks(columns), grid_y);
    central_points_kernel<scalar_t><<<grid, kElemThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace zol2l

TORCH_LIBRARY_IMPL(zol2l, CUDA, m) {
  m.impl("fd_gradient", &zol2l::fd_gradient_cuda);
  m.impl("central_points", &zol2l::central_points_cuda);
}
