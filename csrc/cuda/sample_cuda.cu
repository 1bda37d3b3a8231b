// CUDA kernels of sample_queries and directions_vjp (contract: docs/OPS.md section 2).
//
// z[b, i, j] is normal4(seed[b], e / 4)[e % 4] with e = i d + j (csrc/common/philox_normal.h), generated in
// the accumulation type (float for float/half/bf16, double for double) like the CPU kernels, so the two
// backends draw the same directions. Seeds are read from the device tensor: no host synchronization.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "checks.h"
#include "common/philox_normal.h"
#include "launch_utils.cuh"

namespace zol2l {
namespace {

using cuda_detail::kElemThreads;

template <typename scalar_t>
struct SampleParams {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t* seed;
  const scalar_t* theta;
  const scalar_t* scale;    // nullable: identity
  const acc_t* norm;        // ||scale[b]||_2, valid when scale != nullptr
  const bool* use_scale;    // nullable: all true
  scalar_t* u;              // [B, q, d]
  scalar_t* points;         // [B, q + 1, d]
  int64_t B, d, qd, blocks_per_problem;
  acc_t mu, sqrt_d;
};

// One thread per Philox block: the 4 consecutive flat elements e = 4 blk .. 4 blk + 3 of one problem, so
// every generated normal is used exactly once. A block may straddle row boundaries (any d) and the end of
// the q d elements (the last block of a problem), hence the per-lane column walk and bound check. The same
// threads copy row 0 of points (theta): e < d covers it because q >= 1.
template <typename scalar_t>
__global__ void __launch_bounds__(kElemThreads) sample_queries_kernel(SampleParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = p.B * p.blocks_per_problem;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int64_t b = t / p.blocks_per_problem;
    const int64_t blk = t - b * p.blocks_per_problem;
    acc_t z[4];
    normal4<acc_t>(static_cast<uint64_t>(p.seed[b]), static_cast<uint64_t>(blk), z);
    const bool scaled = p.scale != nullptr && (p.use_scale == nullptr || p.use_scale[b]);
    const acc_t factor = scaled ? p.sqrt_d / p.norm[b] : acc_t(1);
    const scalar_t* theta_b = p.theta + b * p.d;
    const scalar_t* scale_b = scaled ? p.scale + b * p.d : nullptr;
    scalar_t* u_b = p.u + b * p.qd;
    scalar_t* points_b = p.points + b * (p.qd + p.d);
    int64_t e = 4 * blk;
    int64_t j = e % p.d;
#pragma unroll
    for (int l = 0; l < 4; ++l, ++e) {
      if (e < p.qd) {
        const acc_t s_hat = scaled ? static_cast<acc_t>(scale_b[j]) * factor : acc_t(1);
        const scalar_t u = static_cast<scalar_t>(s_hat * z[l]);
        u_b[e] = u;
        // From the stored (rounded) u, so that points and u agree exactly in half / bf16 too.
        points_b[p.d + e] = static_cast<scalar_t>(static_cast<acc_t>(theta_b[j]) + p.mu * static_cast<acc_t>(u));
        if (e < p.d) points_b[e] = theta_b[e];
        if (++j == p.d) j = 0;
      }
    }
  }
}

template <typename scalar_t>
struct VjpParams {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t* seed;
  const scalar_t* grad_u;  // [B, q, d]
  scalar_t* out;           // [B, d] when the rows are not split
  acc_t* partial;          // [chunks, B, d] otherwise (nullptr when not split)
  int64_t B, q, d, groups_per_problem, rows_per_chunk;
};

// Rotation of the 8 normals of two consecutive Philox blocks by `off` in 0..3, with constant register
// indices only (a runtime index into z would send it to local memory).
template <typename acc_t>
__device__ __forceinline__ acc_t pick(const acc_t (&z)[8], int off, int l) {
  return off == 0 ? z[l] : off == 1 ? z[l + 1] : off == 2 ? z[l + 2] : z[l + 3];
}

// One thread per (problem b, group of 4 columns j0 .. j0 + 3), looping over the rows i of its chunk: the
// reduction over i stays in registers (deterministic) and a warp reads 128 contiguous elements of grad_u per
// row. The 4 elements of a row segment lie in one Philox block when d % 4 == 0 and in at most two otherwise.
template <typename scalar_t>
__global__ void __launch_bounds__(kElemThreads) directions_vjp_kernel(VjpParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = p.B * p.groups_per_problem;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t i_begin = static_cast<int64_t>(blockIdx.y) * p.rows_per_chunk;
  const int64_t i_end = (p.q - i_begin < p.rows_per_chunk) ? p.q : i_begin + p.rows_per_chunk;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int64_t b = t / p.groups_per_problem;
    const int64_t j0 = 4 * (t - b * p.groups_per_problem);
    const int nj = (p.d - j0 < 4) ? static_cast<int>(p.d - j0) : 4;
    const uint64_t seed = static_cast<uint64_t>(p.seed[b]);
    acc_t acc[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
    for (int64_t i = i_begin; i < i_end; ++i) {
      const int64_t e0 = i * p.d + j0;
      const int off = static_cast<int>(e0 & 3);
      acc_t z[8];
      normal4<acc_t>(seed, static_cast<uint64_t>(e0 >> 2), z);
      if (off + nj > 4) {
        normal4<acc_t>(seed, static_cast<uint64_t>(e0 >> 2) + 1, z + 4);
      } else {
#pragma unroll
        for (int l = 4; l < 8; ++l) z[l] = acc_t(0);  // unused; keeps the selects well defined
      }
      const scalar_t* row = p.grad_u + (b * p.q + i) * p.d + j0;
#pragma unroll
      for (int l = 0; l < 4; ++l)
        if (l < nj) acc[l] += static_cast<acc_t>(row[l]) * pick(z, off, l);
    }
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      if (l < nj) {
        if (p.partial != nullptr) {
          p.partial[(static_cast<int64_t>(blockIdx.y) * p.B + b) * p.d + j0 + l] = acc[l];
        } else {
          p.out[b * p.d + j0 + l] = static_cast<scalar_t>(acc[l]);
        }
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> sample_queries_cuda(const at::Tensor& seed_in, const at::Tensor& theta_in,
                                                       const std::optional<at::Tensor>& scale_in,
                                                       const std::optional<at::Tensor>& use_scale_in, int64_t q,
                                                       double mu) {
  constexpr const char* op = "sample_queries";
  const SampleDims dims = check_sample_inputs(op, seed_in, theta_in, scale_in, use_scale_in, q, mu);
  c10::cuda::CUDAGuard device_guard(theta_in.device());
  const at::Tensor seed = seed_in.contiguous(), theta = theta_in.contiguous();
  at::Tensor u = at::empty({dims.B, dims.q, dims.d}, theta.options());
  at::Tensor points = at::empty({dims.B, dims.q + 1, dims.d}, theta.options());
  if (dims.B == 0 || dims.d == 0) return {u, points};

  const at::ScalarType acc_type = theta.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor scale, norm, use_scale;
  if (scale_in) {
    scale = scale_in->contiguous();
    // ATen's reduction splits long rows across blocks, which a one-block-per-problem kernel could not do
    // for B = 1 and large d; the norm is accumulated in acc_type.
    const int64_t reduce_dim = 1;
    // Clamped like the CPU kernel: an all-zero scale row gives u = 0 rather than NaN.
    norm = at::linalg_vector_norm(scale, 2.0, at::IntArrayRef(&reduce_dim, 1), /*keepdim=*/false, acc_type)
               .clamp_min_(1e-30)
               .contiguous();
  }
  if (use_scale_in) use_scale = use_scale_in->contiguous();

  const int64_t qd = dims.q * dims.d;
  const int64_t blocks_per_problem = (qd + 3) / 4;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, theta.scalar_type(), op, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    SampleParams<scalar_t> p;
    p.seed = seed.data_ptr<int64_t>();
    p.theta = theta.data_ptr<scalar_t>();
    p.scale = scale.defined() ? scale.data_ptr<scalar_t>() : nullptr;
    p.norm = norm.defined() ? norm.data_ptr<acc_t>() : nullptr;
    p.use_scale = use_scale.defined() ? use_scale.data_ptr<bool>() : nullptr;
    p.u = u.data_ptr<scalar_t>();
    p.points = points.data_ptr<scalar_t>();
    p.B = dims.B;
    p.d = dims.d;
    p.qd = qd;
    p.blocks_per_problem = blocks_per_problem;
    p.mu = static_cast<acc_t>(mu);
    p.sqrt_d = static_cast<acc_t>(std::sqrt(static_cast<double>(dims.d)));
    sample_queries_kernel<scalar_t>
        <<<cuda_detail::grid_stride_blocks(dims.B * blocks_per_problem), kElemThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {u, points};
}

at::Tensor directions_vjp_cuda(const at::Tensor& seed_in, const at::Tensor& grad_u_in) {
  constexpr const char* op = "directions_vjp";
  check_directions_vjp_inputs(op, seed_in, grad_u_in);
  c10::cuda::CUDAGuard device_guard(grad_u_in.device());
  const at::Tensor seed = seed_in.contiguous(), grad_u = grad_u_in.contiguous();
  const int64_t B = grad_u.size(0), q = grad_u.size(1), d = grad_u.size(2);
  if (B == 0 || d == 0) return at::empty({B, d}, grad_u.options());
  if (q == 0) return at::zeros({B, d}, grad_u.options());

  const int64_t groups_per_problem = (d + 3) / 4;
  const int64_t column_threads = B * groups_per_problem;
  const cuda_detail::RowChunks chunks = cuda_detail::plan_row_chunks(column_threads, q);
  const at::ScalarType acc_type = grad_u.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor out = at::empty({B, d}, grad_u.options());
  at::Tensor partial;
  if (chunks.num_chunks > 1) partial = at::empty({chunks.num_chunks, B, d}, grad_u.options().dtype(acc_type));

  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_u.scalar_type(), op, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    VjpParams<scalar_t> p;
    p.seed = seed.data_ptr<int64_t>();
    p.grad_u = grad_u.data_ptr<scalar_t>();
    p.out = out.data_ptr<scalar_t>();
    p.partial = partial.defined() ? partial.data_ptr<acc_t>() : nullptr;
    p.B = B;
    p.q = q;
    p.d = d;
    p.groups_per_problem = groups_per_problem;
    p.rows_per_chunk = chunks.rows_per_chunk;
    const dim3 grid(cuda_detail::grid_stride_blocks(column_threads), static_cast<unsigned int>(chunks.num_chunks));
    directions_vjp_kernel<scalar_t><<<grid, kElemThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (partial.defined()) out.copy_(partial.sum(0));  // fixed-order reduction of the row chunks
  return out;
}

}  // namespace
}  // namespace zol2l

TORCH_LIBRARY_IMPL(zol2l, CUDA, m) {
  m.impl("sample_queries", &zol2l::sample_queries_cuda);
  m.impl("directions_vjp", &zol2l::directions_vjp_cuda);
}
