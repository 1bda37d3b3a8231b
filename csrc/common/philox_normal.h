// Counter-based Gaussian numbers shared by the CPU and CUDA sampling kernels.
//
// z[b, i, j] depends only on (seed[b], i * d + j): CPU and CUDA produce the same directions, a problem gets
// the same directions whether it runs alone or inside a batch, and the backward pass regenerates z from
// the seed instead of storing B x q x d numbers.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

// Internal linkage: these headers are compiled under different ISA flags in different translation units
// (lstm_cpu_avx2.cpp), and a shared inline definition would let the linker hand AVX2 code to every caller.
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

// Box-Muller on two 32-bit words; uniforms lie in (0, 1] so the log never sees 0.
template <typename T>
ZOL2L_HD_INLINE void box_muller(uint32_t a, uint32_t b, T* z0, T* z1) {
  constexpr T kInv2_32 = T(2.3283064365386963e-10);
  constexpr T kTwoPi = T(6.283185307179586);
  const T u1 = (static_cast<T>(a) + T(1)) * kInv2_32;
  const T u2 = static_cast<T>(b) * kInv2_32;
  const T r = ::sqrt(T(-2) * ::log(u1));
  *z0 = r * ::cos(kTwoPi * u2);
  *z1 = r * ::sin(kTwoPi * u2);
}

// The four normals of one counter block: element e of a problem uses block e / 4, lane e % 4.
template <typename T>
ZOL2L_HD_INLINE void normal4(uint64_t seed, uint64_t block, T out[4]) {
  const Philox4 r = philox4x32_10(block, seed);
  box_muller<T>(r.v[0], r.v[1], &out[0], &out[1]);
  box_muller<T>(r.v[2], r.v[3], &out[2], &out[3]);
}

}  // namespace zol2l
