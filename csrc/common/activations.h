// Activation math shared by the CPU and CUDA kernels.
//
// float on the CPU: branch-free rational approximations, so that GCC auto-vectorizes the tile loops (libm's
// tanhf/expf are opaque calls that block vectorization); on the device the hardware __expf. double keeps
// libm/CUDA exp and tanh so that gradcheck in float64 sees exact derivatives.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

// Internal linkage: these headers are compiled under different ISA flags in different translation units
// (kernels_avx2.cpp), and a shared inline definition would let the linker hand AVX2 code to every caller.
#ifndef ZOL2L_HD_INLINE
#define ZOL2L_HD_INLINE C10_HOST_DEVICE static inline
#endif

namespace zol2l {

// float tanh on the CPU: Eigen's rational minimax approximation (Eigen 3.4, MathFunctionsImpl.h, which PyTorch's
// vectorized tanh uses too), x P(x^2) / Q(x^2) on [-7.9053, 7.9053] (float's tanh is +-1 beyond): 9 multiply-adds,
// two multiplications and one division, where the former exp-based form (a Cody-Waite exp with Cephes'
// polynomial, then 1 - 2 / (e + 1)) took about twice the operations. The cell's five activations per hidden
// unit are about half of the CPU LSTM kernel's time: lstm_step over 307 200 coordinates 16.5-17.4 -> 13.1-14.5
// ms (benchmarks/README.md). Branch-free (ternary clamps become vector blends); NaN propagates.
ZOL2L_HD_INLINE float tanh_rational(float x) {
  x = x < -7.90531110763549805f ? -7.90531110763549805f : x;
  x = x > 7.90531110763549805f ? 7.90531110763549805f : x;
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return (x * p) / q;
}

// sigmoid(x) = (1 + tanh(x / 2)) / 2 on the CPU: absolute error ~1e-7 (the relative error grows where sigmoid
// itself is below ~1e-4, which no gate product can tell from 0).
ZOL2L_HD_INLINE float sigmoid(float x) {
#if defined(__CUDA_ARCH__)
  return 1.0f / (1.0f + __expf(-x));
#else
  return 0.5f * tanh_rational(0.5f * x) + 0.5f;
#endif
}
ZOL2L_HD_INLINE double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }

ZOL2L_HD_INLINE float tanh_fast(float x) {
#if defined(__CUDA_ARCH__)
  return 1.0f - 2.0f / (__expf(2.0f * x) + 1.0f);  // stable at both ends
#else
  return tanh_rational(x);
#endif
}
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
