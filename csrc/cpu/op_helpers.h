// What the CPU ops share around their kernels: the dtype check, how finely they split work over threads, and the
// LSTM's pointers.
#pragma once

#include "checks.h"
#include "tensor_args.h"
#include "cpu/isa_kernels.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <optional>

namespace zol2l {

// The CPU kernels are built for float32 and float64 (CUDA also takes half types): the check every CPU op makes.
inline void check_cpu_dtype(const char* op, const at::Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op,
              ": the CPU kernel supports float32 and float64, got ", t.scalar_type());
}

// The LSTM forward runs on the calling thread below this many coordinates (~0.15 ms of work): one MNIST image's
// 784 coordinates then cost no OpenMP fork/join, which on a busy machine waits for a descheduled worker (a 2-core
// step at B = 1 lost ~10 ms per parallel region under load), while 3072+ coordinates still split. The coordinates
// are independent, so the split does not change the results (unlike the backward's reduction).
constexpr int64_t kLstmForwardGrain = 1024;

// Rows of d values per parallel chunk for elementwise work: ATen's grain (at::internal::GRAIN_SIZE, 32768 values),
// so that one MNIST image's 21 x 784 values stay on the calling thread. Rows are independent: any split gives the
// same results.
inline int64_t elementwise_grain_rows(int64_t d) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(d, 1)); }

// The kernels' view of an LSTM step's tensors (contiguous, of type T; x may be a buffer of the op's own).
template <typename T>
LstmPtrs<T> lstm_ptrs(const T* x, const at::Tensor& h, const at::Tensor& c, const at::Tensor& w_ih,
                      const at::Tensor& w_hh, const std::optional<at::Tensor>& bias, const at::Tensor& w_out,
                      const std::optional<at::Tensor>& b_out, const LstmDims& d) {
  return LstmPtrs<T>{x, h.data_ptr<T>(), c.data_ptr<T>(), w_ih.data_ptr<T>(), w_hh.data_ptr<T>(),
                     ptr_or_null<T>(bias), w_out.data_ptr<T>(), ptr_or_null<T>(b_out), d.I, d.H, d.O};
}

}  // namespace zol2l
