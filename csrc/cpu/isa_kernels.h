// Plain data and the dispatch table shared by the per-ISA builds of the CPU kernels (kernels_default.cpp,
// kernels_avx2.cpp, kernels_avx512.cpp) and their callers. Only data types and declarations here: no inline code
// that two ISAs could both define.
#pragma once

#include <cstdint>

namespace zol2l {

constexpr int kMaxHidden = 64;  // per-coordinate state lives in registers / L1 tiles
constexpr int kMaxInput = 4;
constexpr int kMaxOutput = 8;

template <typename T>
struct LstmPtrs {
  const T *x, *h, *c, *w_ih, *w_hh, *bias, *w_out, *b_out;  // bias, b_out may be null
  int I, H, O;
};

template <typename T>
struct LstmGradPtrs {
  const T *grad_y, *grad_h_new, *grad_c_new;  // the last two may be null (zero)
  T *grad_x, *grad_h, *grad_c;
};

// Weight-gradient accumulators of one chunk, in double so that long reductions over N stay accurate.
// Layout: [w_ih 4H*I | w_hh 4H*H | bias 4H | w_out O*H | b_out O].
constexpr int64_t weight_grad_size(int I, int H, int O) { return 4 * H * I + 4 * H * H + 4 * H + O * H + O; }

template <typename T>
struct CpuKernels {
  void (*lstm_forward)(const LstmPtrs<T>& p, T* y, T* h_new, T* c_new, int64_t begin, int64_t end);
  void (*lstm_backward)(const LstmPtrs<T>& p, const LstmGradPtrs<T>& gp, double* wacc, int64_t begin,
                        int64_t end);
  // out[k] = z at flat element e0 + k of one problem (csrc/common/philox_normal.h), for e in [e0, e1).
  void (*fill_normals)(uint64_t seed, int64_t e0, int64_t e1, T* out);
  // One direction row of sample_queries: u[j] = scale[j] * factor * z[j] (z[j] where scale is null) and
  // p[j] = theta[j] + mu * u[j] for j < d, z[j] the normal at flat element e0 + j of one problem.
  void (*sample_row)(uint64_t seed, int64_t e0, int64_t d, const T* scale, T factor, const T* theta, T mu, T* u,
                     T* p);
  // out[j] = clamp(x0[j] + p[j], 0, 1) for j < d; returns the distance of out to x0 (norm 1: sum |.|, 2: sum of
  // squares). One row of attack_pixel_images.
  T (*pixel_images)(const T* p, const T* x0, T* out, int64_t d, int norm);
};

namespace cpu_default {
CpuKernels<float> kernels_float();
CpuKernels<double> kernels_double();
}  // namespace cpu_default

namespace cpu_avx2 {
CpuKernels<float> kernels_float();
CpuKernels<double> kernels_double();
}  // namespace cpu_avx2

namespace cpu_avx512 {
CpuKernels<float> kernels_float();
CpuKernels<double> kernels_double();
}  // namespace cpu_avx512

// The best build this CPU runs (AVX-512, else AVX2 + FMA, else the baseline), chosen once; the environment
// variable ZOL2L_CPU_ISA = avx2 or default caps it (to compare the builds, or to rule one out).
template <typename T>
const CpuKernels<T>& cpu_kernels();

// The name of that build: "avx512", "avx2" or "default".
const char* cpu_isa_name();

}  // namespace zol2l
