// CUDA kernels of lstm_step / lstm_step_backward (contract: docs/OPS.md section 1).
//
// One thread per coordinate. All N coordinates share the weights, so each block first copies a packed,
// zero-padded float/double image of the weights into shared memory, where every thread of a warp reads the
// same address (a broadcast, no bank conflicts). The per-coordinate hidden state lives in registers: the
// kernels are templated on a compile-time bound HMAX on H and every loop that indexes a register array is
// fully unrolled over HMAX with `j < H` guards, so register arrays are only indexed by constants.
//
// The row-major [N, H] state tensors would give one 32-row scatter per warp access if each thread walked its
// own row; instead they move through shared-memory tiles of kChunk columns x kThreads rows with coalesced
// copies, and the kernels consume them kChunk hidden units at a time.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "checks.h"
#include "tensor_args.h"
#include "common/activations.h"

namespace zol2l {
namespace {

constexpr int kThreads = 128;            // coordinates per block
constexpr int kChunk = 16;               // hidden units per tile pass
constexpr int kTileStride = kChunk + 1;  // odd stride: thread-per-row tile reads hit 32 distinct banks
constexpr int kPackThreads = 256;
static_assert(kMaxInput == 4 && kMaxOutput == 8, "the packed layout pads I to 4 and O to 8");

__host__ __device__ constexpr int pad4(int v) { return (v + 3) & ~3; }

// Packed weight image (elements of the accumulation type), each section 16-byte aligned so that rows can be
// read with 128-bit loads:
//   [0, wih)       w_hh as [4H][HP], HP = H rounded up to 4, zero-padded columns
//   [wih, bias)    w_ih as [4H][4], zero-padded inputs
//   [bias, wout)   bias [4H] (zeros when None)
//   [wout, bout)   w_out transposed to [H][8], zero-padded outputs
//   [bout, total)  b_out [8] (zeros when None / padded)
// Zero padding lets the inner loops run over whole groups of 4 without masking the weights.
struct PackedLayout {
  int HP, wih, bias, wout, bout, total;
};

__host__ __device__ inline PackedLayout packed_layout(int H) {
  PackedLayout L;
  L.HP = pad4(H);
  L.wih = 4 * H * L.HP;
  L.bias = L.wih + 16 * H;
  L.wout = L.bias + 4 * H;
  L.bout = L.wout + 8 * H;
  L.total = L.bout + 8;
  return L;
}

__device__ __forceinline__ void load4(const float* p, float* v) {
  const float4 t = *reinterpret_cast<const float4*>(p);
  v[0] = t.x;
  v[1] = t.y;
  v[2] = t.z;
  v[3] = t.w;
}

__device__ __forceinline__ void load4(const double* p, double* v) {
  const double2 a = reinterpret_cast<const double2*>(p)[0];
  const double2 b = reinterpret_cast<const double2*>(p)[1];
  v[0] = a.x;
  v[1] = a.y;
  v[2] = b.x;
  v[3] = b.y;
}

template <typename scalar_t>
struct PackParams {
  const scalar_t* w_ih;
  const scalar_t* w_hh;
  const scalar_t* bias;  // nullable
  const scalar_t* w_out;
  const scalar_t* b_out;  // nullable
  at::opmath_type<scalar_t>* packed;
  int I, H, O;
};

// Builds the packed image once per call; the index arithmetic stays out of the per-block staging copy,
// which every one of the N / kThreads blocks repeats.
template <typename scalar_t>
__global__ void __launch_bounds__(kPackThreads) lstm_pack_weights_kernel(PackParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const PackedLayout L = packed_layout(p.H);
  const int H = p.H;
  for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < L.total; idx += gridDim.x * blockDim.x) {
    acc_t v = acc_t(0);
    if (idx < L.wih) {
      const int row = idx / L.HP, col = idx - row * L.HP;
      if (col < H) v = static_cast<acc_t>(p.w_hh[row * H + col]);
    } else if (idx < L.bias) {
      const int row = (idx - L.wih) >> 2, i = (idx - L.wih) & 3;
      if (i < p.I) v = static_cast<acc_t>(p.w_ih[row * p.I + i]);
    } else if (idx < L.wout) {
      if (p.bias != nullptr) v = static_cast<acc_t>(p.bias[idx - L.bias]);
    } else if (idx < L.bout) {
      const int k = (idx - L.wout) >> 3, o = (idx - L.wout) & 7;
      if (o < p.O) v = static_cast<acc_t>(p.w_out[o * H + k]);
    } else {
      const int o = idx - L.bout;
      if (o < p.O && p.b_out != nullptr) v = static_cast<acc_t>(p.b_out[o]);
    }
    p.packed[idx] = v;
  }
}

// Block-wide 16-byte copy of the packed image (L.total is a multiple of 4 elements, hence of 16 bytes).
template <typename acc_t>
__device__ __forceinline__ void stage_weights(const acc_t* __restrict__ src, acc_t* dst, int total) {
  const int n16 = total * static_cast<int>(sizeof(acc_t)) / 16;
  const uint4* s = reinterpret_cast<const uint4*>(src);
  uint4* d = reinterpret_cast<uint4*>(dst);
  for (int t = threadIdx.x; t < n16; t += kThreads) d[t] = s[t];
}

// Copies columns [k0, k0 + kChunk) ∩ [0, W) of rows [n0, n0 + rows) of a row-major [N, W] matrix into a tile
// (row r at tile + r * kTileStride). Consecutive threads take consecutive columns of a row, so a warp reads
// two contiguous row segments rather than 32 rows.
template <typename src_t, typename dst_t>
__device__ __forceinline__ void tile_load(const src_t* __restrict__ g, int64_t n0, int rows, int W, int k0,
                                          dst_t* tile) {
  for (int t = threadIdx.x; t < rows * kChunk; t += kThreads) {
    const int r = t / kChunk, kk = t % kChunk;
    if (k0 + kk < W) tile[r * kTileStride + kk] = static_cast<dst_t>(g[(n0 + r) * W + k0 + kk]);
  }
}

template <typename src_t, typename dst_t>
__device__ __forceinline__ void tile_store(const src_t* tile, int64_t n0, int rows, int W, int k0,
                                           dst_t* __restrict__ g) {
  for (int t = threadIdx.x; t < rows * kChunk; t += kThreads) {
    const int r = t / kChunk, kk = t % kChunk;
    if (k0 + kk < W) g[(n0 + r) * W + k0 + kk] = static_cast<dst_t>(tile[r * kTileStride + kk]);
  }
}

// Row n0 + threadIdx.x of a [N, H] matrix into registers (zeros past H), through `tile`. Contains
// __syncthreads(): every thread of the block must call it.
template <int HMAX, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_rows_to_regs(const scalar_t* __restrict__ g, int64_t n0, int rows, int H,
                                                  acc_t* tile, acc_t (&r)[HMAX]) {
  const acc_t* mine = tile + threadIdx.x * kTileStride;
#pragma unroll
  for (int c0 = 0; c0 < HMAX; c0 += kChunk) {
    if (c0 < H) {  // block-uniform
      __syncthreads();
      tile_load(g, n0, rows, H, c0, tile);
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kChunk; ++kk) r[c0 + kk] = (c0 + kk < H) ? mine[kk] : acc_t(0);
    } else {
#pragma unroll
      for (int kk = 0; kk < kChunk; ++kk) r[c0 + kk] = acc_t(0);
    }
  }
}

// Inverse of load_rows_to_regs. Same __syncthreads() rule.
template <int HMAX, typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_regs_to_rows(const acc_t (&r)[HMAX], int64_t n0, int rows, int H,
                                                   acc_t* tile, scalar_t* __restrict__ g) {
  acc_t* mine = tile + threadIdx.x * kTileStride;
#pragma unroll
  for (int c0 = 0; c0 < HMAX; c0 += kChunk) {
    if (c0 < H) {
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kChunk; ++kk) mine[kk] = r[c0 + kk];
      __syncthreads();
      tile_store(tile, n0, rows, H, c0, g);
    }
  }
}

// The four gate pre-activations of hidden unit k: a_g = bias + w_ih[gH+k] . x + w_hh[gH+k] . h.
// The four gates share each h[j] load and give four independent FMA chains.
template <int HMAX, typename acc_t>
__device__ __forceinline__ void gate_preacts(const acc_t* __restrict__ W, const PackedLayout& L, int H, int k,
                                             const acc_t (&xr)[4], const acc_t (&hr)[HMAX], acc_t (&a)[4]) {
#pragma unroll
  for (int g = 0; g < 4; ++g) {
    acc_t w[4];
    load4(W + L.wih + (g * H + k) * 4, w);
    a[g] = W[L.bias + g * H + k];
    a[g] += w[0] * xr[0];
    a[g] += w[1] * xr[1];
    a[g] += w[2] * xr[2];
    a[g] += w[3] * xr[3];
  }
  const acc_t* row = W + k * L.HP;
  const int gate_stride = H * L.HP;
#pragma unroll
  for (int j = 0; j < HMAX; j += 4) {
    if (j < H) {
#pragma unroll
      for (int g = 0; g < 4; ++g) {
        acc_t w[4];
        load4(row + g * gate_stride + j, w);
        a[g] += w[0] * hr[j];
        a[g] += w[1] * hr[j + 1];
        a[g] += w[2] * hr[j + 2];
        a[g] += w[3] * hr[j + 3];
      }
    }
  }
}

template <typename scalar_t>
struct FwdParams {
  const scalar_t* x;
  const scalar_t* h;
  const scalar_t* c;
  const at::opmath_type<scalar_t>* w;  // packed image in global memory
  scalar_t* y;
  scalar_t* h_new;
  scalar_t* c_new;
  int64_t N;
  int I, H, O;
};

// kStageWeights = false reads the packed image from global memory (L1-cached broadcasts): the fallback for
// GPUs whose per-block shared memory cannot hold it (double, H = 64 on a 99 KiB part).
template <typename scalar_t, int HMAX, bool kStageWeights>
__global__ void __launch_bounds__(kThreads) lstm_step_fwd_kernel(FwdParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const int H = p.H, O = p.O;
  const PackedLayout L = packed_layout(H);
  const acc_t* W = p.w;
  acc_t* tiles = smem;
  if constexpr (kStageWeights) {
    stage_weights(p.w, smem, L.total);  // visible after the first __syncthreads in load_rows_to_regs
    W = smem;
    tiles = smem + L.total;
  }
  acc_t* tile_h = tiles;  // h in, then h_new out
  acc_t* tile_c = tiles + kThreads * kTileStride;  // c in, overwritten by c_new
  const int tid = threadIdx.x;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kThreads;
  const int rows = (p.N - n0 < kThreads) ? static_cast<int>(p.N - n0) : kThreads;
  const int64_t n = n0 + tid;
  // Threads past N still run the loop body (on garbage tile rows that are never stored) because they must
  // take part in the __syncthreads of the tile passes.
  const bool active = tid < rows;

  acc_t xr[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) xr[i] = (active && i < p.I) ? static_cast<acc_t>(p.x[n * p.I + i]) : acc_t(0);
  acc_t hr[HMAX];
  load_rows_to_regs<HMAX>(p.h, n0, rows, H, tile_h, hr);
  acc_t y[8];
  load4(W + L.bout, y);
  load4(W + L.bout + 4, y + 4);

  acc_t* my_h = tile_h + tid * kTileStride;
  acc_t* my_c = tile_c + tid * kTileStride;
  for (int k0 = 0; k0 < H; k0 += kChunk) {
    __syncthreads();  // the previous pass's tile_store (or the h load) is done with the tiles
    tile_load(p.c, n0, rows, H, k0, tile_c);
    __syncthreads();
    const int kc = (H - k0 < kChunk) ? H - k0 : kChunk;
    for (int kk = 0; kk < kc; ++kk) {
      const int k = k0 + kk;
      acc_t a[4];
      gate_preacts<HMAX>(W, L, H, k, xr, hr, a);
      const CellOut<acc_t> s = lstm_cell(a[0], a[1], a[2], a[3], my_c[kk]);
      my_c[kk] = s.c_new;
      my_h[kk] = s.h_new;
      acc_t wo[8];
      load4(W + L.wout + k * 8, wo);
      load4(W + L.wout + k * 8 + 4, wo + 4);
#pragma unroll
      for (int o = 0; o < 8; ++o) y[o] += wo[o] * s.h_new;
    }
    __syncthreads();
    tile_store(tile_c, n0, rows, H, k0, p.c_new);
    tile_store(tile_h, n0, rows, H, k0, p.h_new);
  }
  if (active) {
#pragma unroll
    for (int o = 0; o < 8; ++o)
      if (o < O) p.y[n * O + o] = static_cast<scalar_t>(y[o]);
  }
}

template <typename scalar_t>
struct BwdParams {
  const scalar_t* grad_y;
  const scalar_t* grad_h_new;  // nullable (= 0)
  const scalar_t* grad_c_new;  // nullable (= 0)
  const scalar_t* x;
  const scalar_t* h;
  const scalar_t* c;
  const at::opmath_type<scalar_t>* w;
  scalar_t* grad_x;
  scalar_t* grad_h;
  scalar_t* grad_c;
  // Inputs of the weight-gradient GEMMs, stored transposed ([4H, N], [H, N]) so that a warp's writes for one
  // hidden unit are contiguous.
  at::opmath_type<scalar_t>* da_t;
  at::opmath_type<scalar_t>* h_new_t;
  int64_t N;
  int I, H, O;
};

template <typename scalar_t, int HMAX, bool kStageWeights>
__global__ void __launch_bounds__(kThreads) lstm_step_bwd_kernel(BwdParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const int H = p.H, I = p.I, O = p.O;
  const int64_t N = p.N;
  const PackedLayout L = packed_layout(H);
  const acc_t* W = p.w;
  acc_t* tiles = smem;
  if constexpr (kStageWeights) {
    stage_weights(p.w, smem, L.total);
    W = smem;
    tiles = smem + L.total;
  }
  acc_t* tile_c = tiles;                              // c in, overwritten by grad_c
  acc_t* tile_gh = tiles + kThreads * kTileStride;    // grad_h_new; at the end grad_h out
  acc_t* tile_gc = tiles + 2 * kThreads * kTileStride;  // grad_c_new
  const int tid = threadIdx.x;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kThreads;
  const int rows = (N - n0 < kThreads) ? static_cast<int>(N - n0) : kThreads;
  const int64_t n = n0 + tid;
  const bool active = tid < rows;  // see the forward kernel
  const bool has_gh = p.grad_h_new != nullptr, has_gc = p.grad_c_new != nullptr;

  acc_t xr[4], gx[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    xr[i] = (active && i < I) ? static_cast<acc_t>(p.x[n * I + i]) : acc_t(0);
    gx[i] = acc_t(0);
  }
  acc_t gy[8];  // zero past O, which also zeroes the padded w_out columns' contribution
#pragma unroll
  for (int o = 0; o < 8; ++o) gy[o] = (active && o < O) ? static_cast<acc_t>(p.grad_y[n * O + o]) : acc_t(0);
  acc_t hr[HMAX];
  load_rows_to_regs<HMAX>(p.h, n0, rows, H, tile_c, hr);
  acc_t gh[HMAX];
#pragma unroll
  for (int j = 0; j < HMAX; ++j) gh[j] = acc_t(0);

  acc_t* my_c = tile_c + tid * kTileStride;
  const acc_t* my_gh = tile_gh + tid * kTileStride;
  const acc_t* my_gc = tile_gc + tid * kTileStride;
  const int gate_stride = H * L.HP;
  for (int k0 = 0; k0 < H; k0 += kChunk) {
    __syncthreads();
    tile_load(p.c, n0, rows, H, k0, tile_c);
    if (has_gh) tile_load(p.grad_h_new, n0, rows, H, k0, tile_gh);
    if (has_gc) tile_load(p.grad_c_new, n0, rows, H, k0, tile_gc);
    __syncthreads();
    const int kc = (H - k0 < kChunk) ? H - k0 : kChunk;
    for (int kk = 0; kk < kc; ++kk) {
      const int k = k0 + kk;
      acc_t a[4];
      gate_preacts<HMAX>(W, L, H, k, xr, hr, a);
      const acc_t cv = my_c[kk];
      const CellOut<acc_t> s = lstm_cell(a[0], a[1], a[2], a[3], cv);
      acc_t wo[8];
      load4(W + L.wout + k * 8, wo);
      load4(W + L.wout + k * 8 + 4, wo + 4);
      acc_t dh = has_gh ? my_gh[kk] : acc_t(0);
#pragma unroll
      for (int o = 0; o < 8; ++o) dh += gy[o] * wo[o];
      const acc_t dc = has_gc ? my_gc[kk] : acc_t(0);
      acc_t da[4], dc_prev;
      lstm_cell_backward(s, cv, dh, dc, da[0], da[1], da[2], da[3], dc_prev);
      my_c[kk] = dc_prev;
      if (active) {
        p.h_new_t[static_cast<int64_t>(k) * N + n] = s.h_new;
#pragma unroll
        for (int g = 0; g < 4; ++g) p.da_t[static_cast<int64_t>(g * H + k) * N + n] = da[g];
      }
#pragma unroll
      for (int g = 0; g < 4; ++g) {
        acc_t w[4];
        load4(W + L.wih + (g * H + k) * 4, w);
#pragma unroll
        for (int i = 0; i < 4; ++i) gx[i] += da[g] * w[i];
      }
      const acc_t* row = W + k * L.HP;
#pragma unroll
      for (int j = 0; j < HMAX; j += 4) {
        if (j < H) {
#pragma unroll
          for (int g = 0; g < 4; ++g) {
            acc_t w[4];
            load4(row + g * gate_stride + j, w);
            gh[j] += da[g] * w[0];
            gh[j + 1] += da[g] * w[1];
            gh[j + 2] += da[g] * w[2];
            gh[j + 3] += da[g] * w[3];
          }
        }
      }
    }
    __syncthreads();
    tile_store(tile_c, n0, rows, H, k0, p.grad_c);
  }
  store_regs_to_rows<HMAX>(gh, n0, rows, H, tile_gh, p.grad_h);
  if (active) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (i < I) p.grad_x[n * I + i] = static_cast<scalar_t>(gx[i]);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Host side

// Shared memory: the weight image when it fits next to the tiles (always for H <= 16; for float up to
// H = 64 on GPUs with >= 99 KiB per block, i.e. sm_80 and newer), otherwise only the tiles.
struct SmemPlan {
  bool stage_weights;
  size_t bytes;
};

SmemPlan plan_smem(const char* op, int H, size_t acc_size, int num_tiles) {
  const size_t tile_bytes = static_cast<size_t>(num_tiles) * kThreads * kTileStride * acc_size;
  const size_t weight_bytes = static_cast<size_t>(packed_layout(H).total) * acc_size;
  const size_t limit = at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
  if (weight_bytes + tile_bytes <= limit) return {true, weight_bytes + tile_bytes};
  TORCH_CHECK(tile_bytes <= limit, op, ": needs ", tile_bytes, " bytes of shared memory per block, the device allows ",
              limit);
  return {false, tile_bytes};
}

template <typename Kernel>
void set_smem_limit(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) {  // beyond the default per-block limit an explicit opt-in is required
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
}

unsigned int lstm_blocks(const char* op, int64_t N) {
  const int64_t blocks = (N + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= 0x7fffffff, op, ": too many coordinates (N = ", N, ")");
  return static_cast<unsigned int>(blocks);
}

template <typename scalar_t>
at::Tensor pack_weights(const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& bias,
                        const at::Tensor& w_out, const std::optional<at::Tensor>& b_out, const LstmDims& dims,
                        at::ScalarType acc_type, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const PackedLayout L = packed_layout(dims.H);
  at::Tensor packed = at::empty({L.total}, w_hh.options().dtype(acc_type));
  PackParams<scalar_t> pp;
  pp.w_ih = w_ih.data_ptr<scalar_t>();
  pp.w_hh = w_hh.data_ptr<scalar_t>();
  pp.bias = bias ? bias->data_ptr<scalar_t>() : nullptr;
  pp.w_out = w_out.data_ptr<scalar_t>();
  pp.b_out = b_out ? b_out->data_ptr<scalar_t>() : nullptr;
  pp.packed = packed.data_ptr<acc_t>();
  pp.I = dims.I;
  pp.H = dims.H;
  pp.O = dims.O;
  const int blocks = (L.total + kPackThreads - 1) / kPackThreads;
  lstm_pack_weights_kernel<scalar_t><<<blocks, kPackThreads, 0, stream>>>(pp);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return packed;
}

at::ScalarType acc_type_of(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

template <typename scalar_t, int HMAX, bool kStage>
void launch_fwd(const FwdParams<scalar_t>& p, size_t smem, cudaStream_t stream) {
  auto kernel = lstm_step_fwd_kernel<scalar_t, HMAX, kStage>;
  set_smem_limit(kernel, smem);
  kernel<<<lstm_blocks("lstm_step", p.N), kThreads, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int HMAX, bool kStage>
void launch_bwd(const BwdParams<scalar_t>& p, size_t smem, cudaStream_t stream) {
  auto kernel = lstm_step_bwd_kernel<scalar_t, HMAX, kStage>;
  set_smem_limit(kernel, smem);
  kernel<<<lstm_blocks("lstm_step_backward", p.N), kThreads, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_step_cuda(const at::Tensor& x_in, const at::Tensor& h_in,
                                                              const at::Tensor& c_in, const at::Tensor& w_ih_in,
                                                              const at::Tensor& w_hh_in,
                                                              const std::optional<at::Tensor>& bias_in,
                                                              const at::Tensor& w_out_in,
                                                              const std::optional<at::Tensor>& b_out_in) {
  constexpr const char* op = "lstm_step";
  const LstmDims dims = check_lstm_inputs(op, x_in, h_in, c_in, w_ih_in, w_hh_in, bias_in, w_out_in, b_out_in);
  c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), h = h_in.contiguous(), c = c_in.contiguous();
  const at::Tensor w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous(), w_out = w_out_in.contiguous();
  const std::optional<at::Tensor> bias = contiguous_opt(bias_in), b_out = contiguous_opt(b_out_in);

  at::Tensor y = at::empty({dims.N, dims.O}, x.options());
  at::Tensor h_new = at::empty({dims.N, dims.H}, x.options());
  at::Tensor c_new = at::empty({dims.N, dims.H}, x.options());
  if (dims.N == 0) return {y, h_new, c_new};

  const at::ScalarType acc_type = acc_type_of(x.scalar_type());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lstm_step", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor packed = pack_weights<scalar_t>(w_ih, w_hh, bias, w_out, b_out, dims, acc_type, stream);
    FwdParams<scalar_t> p;
    p.x = x.data_ptr<scalar_t>();
    p.h = h.data_ptr<scalar_t>();
    p.c = c.data_ptr<scalar_t>();
    p.w = packed.data_ptr<acc_t>();
    p.y = y.data_ptr<scalar_t>();
    p.h_new = h_new.data_ptr<scalar_t>();
    p.c_new = c_new.data_ptr<scalar_t>();
    p.N = dims.N;
    p.I = dims.I;
    p.H = dims.H;
    p.O = dims.O;
    const SmemPlan plan = plan_smem(op, dims.H, sizeof(acc_t), 2);
    if (dims.H <= 16 && plan.stage_weights) {
      launch_fwd<scalar_t, 16, true>(p, plan.bytes, stream);
    } else if (plan.stage_weights) {
      launch_fwd<scalar_t, kMaxHidden, true>(p, plan.bytes, stream);
    } else {
      launch_fwd<scalar_t, kMaxHidden, false>(p, plan.bytes, stream);
    }
  });
  return {y, h_new, c_new};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_step_backward_cuda(const at::Tensor& grad_y_in, const std::optional<at::Tensor>& grad_h_new_in,
                        const std::optional<at::Tensor>& grad_c_new_in, const at::Tensor& x_in,
                        const at::Tensor& h_in, const at::Tensor& c_in, const at::Tensor& w_ih_in,
                        const at::Tensor& w_hh_in, const std::optional<at::Tensor>& bias_in,
                        const at::Tensor& w_out_in, const std::optional<at::Tensor>& b_out_in) {
  constexpr const char* op = "lstm_step_backward";
  const LstmDims dims = check_lstm_inputs(op, x_in, h_in, c_in, w_ih_in, w_hh_in, bias_in, w_out_in, b_out_in);
  check_shape(op, grad_y_in, "grad_y", {dims.N, dims.O});
  check_same(op, x_in, "x", grad_y_in, "grad_y");
  if (grad_h_new_in) {
    check_shape(op, *grad_h_new_in, "grad_h_new", {dims.N, dims.H});
    check_same(op, x_in, "x", *grad_h_new_in, "grad_h_new");
  }
  if (grad_c_new_in) {
    check_shape(op, *grad_c_new_in, "grad_c_new", {dims.N, dims.H});
    check_same(op, x_in, "x", *grad_c_new_in, "grad_c_new");
  }
  c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::Tensor grad_y = grad_y_in.contiguous();
  const std::optional<at::Tensor> grad_h_new = contiguous_opt(grad_h_new_in), grad_c_new = contiguous_opt(grad_c_new_in);
  const at::Tensor x = x_in.contiguous(), h = h_in.contiguous(), c = c_in.contiguous();
  const at::Tensor w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous(), w_out = w_out_in.contiguous();
  const std::optional<at::Tensor> bias = contiguous_opt(bias_in), b_out = contiguous_opt(b_out_in);

  const int64_t N = dims.N, H = dims.H;
  const at::ScalarType acc_type = acc_type_of(x.scalar_type());
  const at::TensorOptions acc_opts = x.options().dtype(acc_type);
  at::Tensor grad_x = at::empty({N, dims.I}, x.options());
  at::Tensor grad_h = at::empty({N, H}, x.options());
  at::Tensor grad_c = at::empty({N, H}, x.options());
  at::Tensor da_t = at::empty({4 * H, N}, acc_opts);
  at::Tensor h_new_t = at::empty({H, N}, acc_opts);

  if (N > 0) {
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lstm_step_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const at::Tensor packed = pack_weights<scalar_t>(w_ih, w_hh, bias, w_out, b_out, dims, acc_type, stream);
      BwdParams<scalar_t> p;
      p.grad_y = grad_y.data_ptr<scalar_t>();
      p.grad_h_new = grad_h_new ? grad_h_new->data_ptr<scalar_t>() : nullptr;
      p.grad_c_new = grad_c_new ? grad_c_new->data_ptr<scalar_t>() : nullptr;
      p.x = x.data_ptr<scalar_t>();
      p.h = h.data_ptr<scalar_t>();
      p.c = c.data_ptr<scalar_t>();
      p.w = packed.data_ptr<acc_t>();
      p.grad_x = grad_x.data_ptr<scalar_t>();
      p.grad_h = grad_h.data_ptr<scalar_t>();
      p.grad_c = grad_c.data_ptr<scalar_t>();
      p.da_t = da_t.data_ptr<acc_t>();
      p.h_new_t = h_new_t.data_ptr<acc_t>();
      p.N = N;
      p.I = dims.I;
      p.H = dims.H;
      p.O = dims.O;
      const SmemPlan plan = plan_smem(op, dims.H, sizeof(acc_t), 3);
      if (dims.H <= 16 && plan.stage_weights) {
        launch_bwd<scalar_t, 16, true>(p, plan.bytes, stream);
      } else if (plan.stage_weights) {
        launch_bwd<scalar_t, kMaxHidden, true>(p, plan.bytes, stream);
      } else {
        launch_bwd<scalar_t, kMaxHidden, false>(p, plan.bytes, stream);
      }
    });
  }

  // Reductions over N as GEMMs / sums in the accumulation dtype: deterministic (no atomics), and with N = 0
  // they give the zero gradients the contract asks for.
  const at::ScalarType dtype = x.scalar_type();
  const at::Tensor x_acc = x.to(acc_type), h_acc = h.to(acc_type), grad_y_acc = grad_y.to(acc_type);
  at::Tensor grad_w_ih = at::mm(da_t, x_acc).to(dtype);
  at::Tensor grad_w_hh = at::mm(da_t, h_acc).to(dtype);
  at::Tensor grad_bias = da_t.sum(1).to(dtype);
  at::Tensor grad_w_out = at::mm(grad_y_acc.t(), h_new_t.t()).to(dtype);
  at::Tensor grad_b_out = grad_y_acc.sum(0).to(dtype);
  return {grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_bias, grad_w_out, grad_b_out};
}

}  // namespace
}  // namespace zol2l

TORCH_LIBRARY_IMPL(zol2l, CUDA, m) {
  m.impl("lstm_step", &zol2l::lstm_step_cuda);
  m.impl("lstm_step_backward", &zol2l::lstm_step_backward_cuda);
}
