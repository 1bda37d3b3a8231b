// CPU fill of the counter-based Gaussian numbers (per-ISA, raw pointers only; see isa_kernels.h).
//
// Philox blocks are generated a chunk at a time into word arrays, then turned into normals by a second
// loop: both loops are straight-line per block, so GCC vectorizes them (8 blocks per AVX2 register).
#pragma once

#include "common/philox_normal.h"
#include "cpu/isa_kernels.h"

#include <algorithm>
#include <cstdint>

#if defined(ZOL2L_CPU_AVX512) || defined(ZOL2L_CPU_AVX2)
#include <immintrin.h>
#endif

namespace zol2l {
namespace ZOL2L_CPU_NS {
namespace {

constexpr int kNormalChunk = 64;  // blocks per chunk = 256 normals

// The Philox words of blocks [block, block + kNormalChunk): w[k][j] = philox4x32_10(block + j, seed).v[k].
#if defined(ZOL2L_CPU_AVX512) || defined(ZOL2L_CPU_AVX2)
// Vector builds: one block per 64-bit lane, its four 32-bit words in the low halves of four registers.
// vpmuludq multiplies those low halves into full 64-bit products, so a round is two multiplies, two shifts
// and two three-way XORs; the high halves carry junk that no multiply reads, and only the low halves are
// stored. GCC vectorizes philox4x32_10 itself by widening to 64-bit lanes and (with AVX-512DQ) a full 64 x 64
// vpmullq, with spills. sample_queries of 100 x 50 x 3072 directions, one thread (bench_sample_floor.py):
// AVX-512 26.4 -> 20.6 ms, AVX2 44.1 -> 30.1 ms. Integer arithmetic: the same words bit for bit as the scalar
// code of the baseline build (python_tests/ops/test_cpu_isa.py, test_sampling.py).
#if defined(ZOL2L_CPU_AVX512)
struct PhiloxVec {
  using V = __m512i;
  static constexpr int kBlocks = 8;
  static V counters(uint64_t first) {  // first, first + 1, ..., first + 7
    const __m512i iota = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    return _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(first)), iota);
  }
  static V set1(uint32_t x) { return _mm512_set1_epi64(static_cast<long long>(x)); }
  static V mul(V a, V b) { return _mm512_mul_epu32(a, b); }
  static V shr(V a) { return _mm512_srli_epi64(a, 32); }
  static V xor3(V a, V b, V c) { return _mm512_ternarylogic_epi64(a, b, c, 0x96); }
  static void store_low(uint32_t* p, V a) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi64_epi32(a));
  }
};
#else
struct PhiloxVec {
  using V = __m256i;
  static constexpr int kBlocks = 4;
  static V counters(uint64_t first) {
    return _mm256_add_epi64(_mm256_set1_epi64x(static_cast<long long>(first)), _mm256_set_epi64x(3, 2, 1, 0));
  }
  static V set1(uint32_t x) { return _mm256_set1_epi64x(static_cast<long long>(x)); }
  static V mul(V a, V b) { return _mm256_mul_epu32(a, b); }
  static V shr(V a) { return _mm256_srli_epi64(a, 32); }
  static V xor3(V a, V b, V c) { return _mm256_xor_si256(_mm256_xor_si256(a, b), c); }
  static void store_low(uint32_t* p, V a) {
    const __m256i even = _mm256_permutevar8x32_epi32(a, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(even));
  }
};
#endif

inline void philox_chunk(uint64_t block, uint64_t seed, uint32_t (*w)[kNormalChunk]) {
  using P = PhiloxVec;
  const P::V m0 = P::set1(0xD2511F53u), m1 = P::set1(0xCD9E8D57u);
  for (int j = 0; j < kNormalChunk; j += P::kBlocks) {
    const P::V ctr = P::counters(block + static_cast<uint64_t>(j));
    P::V c0 = ctr, c1 = P::shr(ctr), c2 = P::set1(0), c3 = P::set1(0);  // c0: the counter's low half
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {  // philox4x32_10's round
      const P::V p0 = P::mul(c0, m0), p1 = P::mul(c2, m1);  // lo in the low half, hi in the high half
      c0 = P::xor3(P::shr(p1), c1, P::set1(k0));
      c2 = P::xor3(P::shr(p0), c3, P::set1(k1));
      c1 = p1;
      c3 = p0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    P::store_low(w[0] + j, c0);
    P::store_low(w[1] + j, c1);
    P::store_low(w[2] + j, c2);
    P::store_low(w[3] + j, c3);
  }
}
#else
inline void philox_chunk(uint64_t block, uint64_t seed, uint32_t (*w)[kNormalChunk]) {
  for (int j = 0; j < kNormalChunk; ++j) {
    const Philox4 r = philox4x32_10(block + static_cast<uint64_t>(j), seed);
    w[0][j] = r.v[0];
    w[1][j] = r.v[1];
    w[2][j] = r.v[2];
    w[3][j] = r.v[3];
  }
}
#endif

template <typename T>
void fill_normals_range(uint64_t seed, int64_t e0, int64_t e1, T* out) {
  alignas(64) uint32_t w[4][kNormalChunk];
  alignas(64) T z[4][kNormalChunk];
  int64_t block = e0 >> 2;
  const int64_t last_block = (e1 + 3) >> 2;  // exclusive
  while (block < last_block) {
    const int n = static_cast<int>(std::min<int64_t>(kNormalChunk, last_block - block));
    philox_chunk(static_cast<uint64_t>(block), seed, w);
    for (int j = 0; j < kNormalChunk; ++j) {
      box_muller(w[0][j], w[1][j], &z[0][j], &z[1][j]);
      box_muller(w[2][j], w[3][j], &z[2][j], &z[3][j]);
    }
    const int64_t lo = std::max(e0, block * 4), hi = std::min(e1, (block + n) * 4);
    if (lo == block * 4 && hi == (block + n) * 4) {
      // Whole blocks (all but a range's two ends): a fixed 4-lane interleave, which GCC turns into vector
      // shuffles; the per-element index arithmetic below kept this copy scalar (~18% of the fill).
      T* o = out + (lo - e0);
      for (int j = 0; j < n; ++j) {
        o[4 * j + 0] = z[0][j];
        o[4 * j + 1] = z[1][j];
        o[4 * j + 2] = z[2][j];
        o[4 * j + 3] = z[3][j];
      }
    } else {
      for (int64_t e = lo; e < hi; ++e) {
        const int64_t j = (e >> 2) - block;
        out[e - e0] = z[e & 3][j];
      }
    }
    block += n;
  }
}

// One direction row of sample_queries (CpuKernels::sample_row). Here rather than in sample_cpu.cpp, which is
// compiled for the baseline ISA: the scaling and the points then run 4-wide without FMA, a fifth of the sampler's
// time. The normals go through an L1-sized buffer; the multiply-add of the points is contracted like every other
// in these builds (the baseline build rounds it twice).
template <typename T>
void sample_row_range(uint64_t seed, int64_t e0, int64_t d, const T* scale, T factor, const T* theta, T mu, T* u,
                      T* p) {
  constexpr int64_t kChunk = 1024;
  alignas(64) T z[kChunk];
  for (int64_t j0 = 0; j0 < d; j0 += kChunk) {
    const int64_t n = std::min(kChunk, d - j0);
    fill_normals_range(seed, e0 + j0, e0 + j0 + n, z);
    T* __restrict uo = u + j0;
    T* __restrict po = p + j0;
    const T* th = theta + j0;
    if (scale == nullptr) {
      for (int64_t j = 0; j < n; ++j) {
        uo[j] = z[j];
        po[j] = th[j] + mu * z[j];
      }
    } else {
      const T* sc = scale + j0;
      for (int64_t j = 0; j < n; ++j) {
        const T v = (sc[j] * factor) * z[j];
        uo[j] = v;
        po[j] = th[j] + mu * v;
      }
    }
  }
}

}  // namespace
}  // namespace ZOL2L_CPU_NS
}  // namespace zol2l
