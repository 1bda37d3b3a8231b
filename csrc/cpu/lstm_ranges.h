// Plain data shared by the per-ISA builds of the LSTM tile kernels (lstm_tile.h) and their dispatcher
// (lstm_cpu.cpp). Only data types and declarations here: no inline code that two ISAs could both define.
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
struct LstmRangeFns {
  void (*forward)(const LstmPtrs<T>& p, T* y, T* h_new, T* c_new, int64_t begin, int64_t end);
  void (*backward)(const LstmPtrs<T>& p, const LstmGradPtrs<T>& gp, double* wacc, int64_t begin, int64_t end);
};

namespace cpu_default {
LstmRangeFns<float> lstm_fns_float();
LstmRangeFns<double> lstm_fns_double();
}  // namespace cpu_default

namespace cpu_avx2 {
LstmRangeFns<float> lstm_fns_float();
LstmRangeFns<double> lstm_fns_double();
}  // namespace cpu_avx2

}  // namespace zol2l
