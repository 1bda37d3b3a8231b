// Activation math shared by the CPU and CUDA kernels.
//
// float uses a branch-free exp so that GCC can auto-vectorize the CPU tile loops (libm's expf is an opaque
// call that blocks vectorization); on the device it maps to the hardware __expf. double keeps libm/CUDA
// exp so that gradcheck in float64 sees exact derivatives.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <cstring>

// Internal linkage: these headers are compiled under different ISA flags in different translation units
// (kernels_avx2.cpp), and a shared inline definition would let the linker hand AVX2 code to every caller.
#ifndef ZOL2L_HD_INLINE
#define ZOL2L_HD_INLINE C10_HOST_DEVICE static inline
#endif

namespace zol2l {

ZOL2L_HD_INLINE float exp_approx(float x) {
#if defined(__CUDA_ARCH__)
  return __expf(x);
#else
  // Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then Cephes' degree-7 polynomial for exp(r):
  // max relative error about 2 ulp over the clamped range.
  // Ternary clamps, not fmin/fmax (library calls that block vectorization); with -fno-trapping-math GCC
  // turns them into vector blends.
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // Round to nearest by the 1.5 * 2^23 shift: branch-free, so the tile loops stay vectorizable.
  const float nf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const int32_t n = static_cast<int32_t>(nf);
  const float r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
#endif
}

ZOL2L_HD_INLINE double exp_approx(double x) { return ::exp(x); }

template <typename T>
ZOL2L_HD_INLINE T sigmoid(T x) {
  return T(1) / (T(1) + exp_approx(-x));
}

// tanh(x) = 1 - 2 / (exp(2x) + 1): stable at both ends, and it reuses the vectorizable exp.
ZOL2L_HD_INLINE float tanh_fast(float x) { return 1.0f - 2.0f / (exp_approx(2.0f * x) + 1.0f); }
ZOL2L_HD_INLINE double tanh_fast(double x) { return ::tanh(x); }

// LSTM cell pointwise part for one hidden unit, PyTorch gate order (i, f, g, o).
// Inputs are pre-activations; returns the activated gates through the out-parameters.
template <typename T>
struct CellOut {
  T i, f, g, o, c_new, tanh_c, h_new;
};

template <typename T>
ZOL2L_HD_INLINE CellOut<T> lstm_cell(T ai, T af, T ag, T ao, T c) {
  CellOut<T> r;
  r.i = sigmoid(ai);
  r.f = sigmoid(af);
  r.g = tanh_fast(ag);
  r.o = sigmoid(ao);
  r.c_new = r.f * c + r.i * r.g;
  r.tanh_c = tanh_fast(r.c_new);
  r.h_new = r.o * r.tanh_c;
  return r;
}

// Backward of lstm_cell for one hidden unit. dh, dc are the gradients flowing into h_new and c_new.
// Writes the gradients of the four pre-activations and of the old cell state.
template <typename T>
ZOL2L_HD_INLINE void lstm_cell_backward(const CellOut<T>& s, T c, T dh, T dc_in, T& dai, T& daf, T& dag,
                                               T& dao, T& dc_prev) {
  const T dc = dc_in + dh * s.o * (T(1) - s.tanh_c * s.tanh_c);
  const T do_ = dh * s.tanh_c;
  dai = dc * s.g * s.i * (T(1) - s.i);
  daf = dc * c * s.f * (T(1) - s.f);
  dag = dc * s.i * (T(1) - s.g * s.g);
  dao = do_ * s.o * (T(1) - s.o);
  dc_prev = dc * s.f;
}

}  // namespace zol2l
