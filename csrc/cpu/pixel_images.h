// CPU row kernel of attack_pixel_images (per-ISA, raw pointers only; see isa_kernels.h and attack_cpu.cpp).
#pragma once

#include "cpu/isa_kernels.h"

#include <cstdint>

namespace zol2l {
namespace ZOL2L_CPU_NS {
namespace {

constexpr int kDistLanes = 16;

// out[j] = clamp(x0[j] + p[j], 0, 1), NaN kept (a comparison with NaN is false, so NaN passes both); returns
// sum_j |out - x0| (kNorm 1) or sum_j (out - x0)^2 (kNorm 2). kDistLanes partial sums, added in a fixed order, let
// the loop vectorize without reassociation: every ISA build gives the same bits.
template <typename T, int kNorm>
T pixel_images_row_norm(const T* __restrict p, const T* __restrict x0, T* __restrict out, int64_t d) {
  T acc[kDistLanes] = {};
  int64_t j = 0;
  for (; j + kDistLanes <= d; j += kDistLanes)
    for (int l = 0; l < kDistLanes; ++l) {
      const T v = x0[j + l] + p[j + l];
      const T x = v < T(0) ? T(0) : (v > T(1) ? T(1) : v);
      out[j + l] = x;
      const T diff = x - x0[j + l];
      acc[l] += kNorm == 1 ? (diff < T(0) ? -diff : diff) : diff * diff;
    }
  T sum = 0;
  for (int l = 0; l < kDistLanes; ++l) sum += acc[l];
  for (; j < d; ++j) {
    const T v = x0[j] + p[j];
    const T x = v < T(0) ? T(0) : (v > T(1) ? T(1) : v);
    out[j] = x;
    const T diff = x - x0[j];
    sum += kNorm == 1 ? (diff < T(0) ? -diff : diff) : diff * diff;
  }
  return sum;
}

template <typename T>
T pixel_images_row(const T* p, const T* x0, T* out, int64_t d, int norm) {
  return norm == 1 ? pixel_images_row_norm<T, 1>(p, x0, out, d) : pixel_images_row_norm<T, 2>(p, x0, out, d);
}

}  // namespace
}  // namespace ZOL2L_CPU_NS
}  // namespace zol2l
