// Launch helpers shared by the elementwise / reduction kernels of csrc/cuda (not the LSTM, which has its own
// one-thread-per-coordinate configuration).
#pragma once

#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <cstdint>

namespace zol2l {
namespace cuda_detail {

constexpr int kElemThreads = 256;

// Blocks for a grid-stride loop over n items: enough to fill any current GPU, but capped so that the grid
// stays legal for any n (the loops index with int64_t, so n may exceed 2^31).
inline unsigned int grid_stride_blocks(int64_t n, int threads = kElemThreads) {
  const int64_t want = (n + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(want, cap)));
}

// Threads that keep a GPU busy. A fixed constant (not the SM count) so that the split of the q rows of a
// reduction, and therefore the rounding of the result, is the same on every GPU.
constexpr int64_t kTargetThreads = int64_t(1) << 18;

// How a reduction over `rows` (the q directions) is split across gridDim.y when the columns alone
// (`column_threads`, one thread each) cannot fill the device. Every chunk writes its own partial row and the
// partials are summed by at::sum afterwards: deterministic, no atomics.
struct RowChunks {
  int64_t rows_per_chunk;
  int64_t num_chunks;
};

inline RowChunks plan_row_chunks(int64_t column_threads, int64_t rows) {
  constexpr int64_t kMinRowsPerChunk = 8;  // below this the partial buffer costs more than it saves
  if (rows <= 0) return {1, 0};
  int64_t chunks = 1;
  if (column_threads < kTargetThreads && rows > kMinRowsPerChunk) {
    chunks = std::min((kTargetThreads + column_threads - 1) / column_threads,
                      (rows + kMinRowsPerChunk - 1) / kMinRowsPerChunk);
    chunks = std::clamp<int64_t>(chunks, 1, 65535);  // gridDim.y limit
  }
  const int64_t per = (rows + chunks - 1) / chunks;
  return {per, (rows + per - 1) / per};
}

}  // namespace cuda_detail
}  // namespace zol2l
