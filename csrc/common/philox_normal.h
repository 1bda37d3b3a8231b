// Counter-based Gaussian numbers shared by the CPU and CUDA sampling kernels.
//
// z[b, i, j] depends only on (seed[b], i * d + j): CPU and CUDA produce the same directions, a problem gets
// the same directions whether it runs alone or inside a batch, and the backward pass regenerates z from
// the seed instead of storing B x q x d numbers.
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

struct Philox4 {
  uint32_t v[4];
};

ZOL2L_HD_INLINE uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Philox4x32-10 (Salmon et al., SC'11), the generator behind curand and torch's CUDA RNG.
ZOL2L_HD_INLINE Philox4 philox4x32_10(uint64_t counter, uint64_t key64) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0u, c3 = 0u;
  uint32_t k0 = static_cast<uint32_t>(key64), k1 = static_cast<uint32_t>(key64 >> 32);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(0xD2511F53u, c0, &hi0);
    const uint32_t lo1 = mulhilo32(0xCD9E8D57u, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  Philox4 r;
  r.v[0] = c0;
  r.v[1] = c1;
  r.v[2] = c2;
  r.v[3] = c3;
  return r;
}

// float log for x in (0, 1] (Cephes logf, about 1 ulp): branch-free so that the CPU fill loops vectorize,
// and the same code on the device so that CPU and CUDA draw the same numbers up to FMA contraction.
ZOL2L_HD_INLINE float log_unit(float x) {
  int32_t bits;
  memcpy(&bits, &x, sizeof(bits));
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  bits = (bits & 0x807fffff) | 0x3f000000;  // mantissa m in [0.5, 1)
  float m;
  memcpy(&m, &bits, sizeof(m));
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  m = low ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  float y = p * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return (m + y) + 0.693359375f * e;
}

// sin and cos of 2 pi u for u in [0, 1] (Cephes sinf/cosf polynomials after an exact quadrant reduction).
ZOL2L_HD_INLINE void sincos_turns(float u, float* s, float* c) {
  const float qf = (u * 4.0f + 12582912.0f) - 12582912.0f;  // nearest quadrant, branch-free
  const int32_t q = static_cast<int32_t>(qf);
  const float r = (u - qf * 0.25f) * 6.28318530717958648f;  // in [-pi/4, pi/4]
  const float r2 = r * r;
  float sp = -1.9515295891e-4f;
  sp = sp * r2 + 8.3321608736e-3f;
  sp = sp * r2 - 1.6666654611e-1f;
  const float sr = r + r * r2 * sp;
  float cp = 2.443315711809948e-5f;
  cp = cp * r2 - 1.388731625493765e-3f;
  cp = cp * r2 + 4.166664568298827e-2f;
  const float cr = 1.0f - 0.5f * r2 + r2 * r2 * cp;
  const bool swap = (q & 1) != 0;
  const float s0 = swap ? cr : sr, c0 = swap ? sr : cr;
  *s = (q & 2) ? -s0 : s0;
  *c = ((q + 1) & 2) ? -c0 : c0;
}

// Box-Muller on two 32-bit words; uniforms lie in (0, 1] so the log never sees 0. Overloads, not a template:
// double keeps libm, float uses the branch-free approximations above.
ZOL2L_HD_INLINE void box_muller(uint32_t a, uint32_t b, double* z0, double* z1) {
  constexpr double kInv2_32 = 2.3283064365386963e-10;
  constexpr double kTwoPi = 6.283185307179586;
  const double u1 = (static_cast<double>(a) + 1.0) * kInv2_32;
  const double u2 = static_cast<double>(b) * kInv2_32;
  const double r = ::sqrt(-2.0 * ::log(u1));
  *z0 = r * ::cos(kTwoPi * u2);
  *z1 = r * ::sin(kTwoPi * u2);
}

ZOL2L_HD_INLINE void box_muller(uint32_t a, uint32_t b, float* z0, float* z1) {
  constexpr float kInv2_32 = 2.3283064365386963e-10f;
  const float u1 = (static_cast<float>(a) + 1.0f) * kInv2_32;
  const float u2 = static_cast<float>(b) * kInv2_32;
  const float r = sqrtf(-2.0f * log_unit(u1));
  float s, c;
  sincos_turns(u2, &s, &c);
  *z0 = r * c;
  *z1 = r * s;
}

// The four normals of one counter block: element e of a problem uses block e / 4, lane e % 4.
template <typename T>
ZOL2L_HD_INLINE void normal4(uint64_t seed, uint64_t block, T out[4]) {
  const Philox4 r = philox4x32_10(block, seed);
  box_muller(r.v[0], r.v[1], &out[0], &out[1]);
  box_muller(r.v[2], r.v[3], &out[2], &out[3]);
}

}  // namespace zol2l
