// CPU fill of the counter-based Gaussian numbers (per-ISA, raw pointers only; see isa_kernels.h).
//
// Philox blocks are generated a chunk at a time into word arrays, then turned into normals by a second
// loop: both loops are straight-line per block, so GCC vectorizes them (8 blocks per AVX2 register).
#pragma once

#include "common/philox_normal.h"
#include "cpu/isa_kernels.h"

#include <algorithm>
#include <cstdint>

namespace zol2l {
namespace ZOL2L_CPU_NS {
namespace {

constexpr int kNormalChunk = 64;  // blocks per chunk = 256 normals

template <typename T>
void fill_normals_range(uint64_t seed, int64_t e0, int64_t e1, T* out) {
  alignas(64) uint32_t w[4][kNormalChunk];
  alignas(64) T z[4][kNormalChunk];
  int64_t block = e0 >> 2;
  const int64_t last_block = (e1 + 3) >> 2;  // exclusive
  while (block < last_block) {
    const int n = static_cast<int>(std::min<int64_t>(kNormalChunk, last_block - block));
    for (int j = 0; j < kNormalChunk; ++j) {
      const Philox4 r = philox4x32_10(static_cast<uint64_t>(block + j), seed);
      w[0][j] = r.v[0];
      w[1][j] = r.v[1];
      w[2][j] = r.v[2];
      w[3][j] = r.v[3];
    }
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

}  // namespace
}  // namespace ZOL2L_CPU_NS
}  // namespace zol2l
