// CPU implementation of learned_update_step and learned_query_step: one inference step of each network of the
// learned optimizer (LearnedZO, scaling "rms"), input normalisation + fused LSTM step + head + update, in one op.
//
// Why: written as tensor ops, a step of the two networks is ~50 dispatches of tiny ops around the two LSTM
// kernels; for one MNIST image (784 coordinates) they cost more than the kernels, and more again after the
// target's forward has pushed the interpreter's and ATen's code out of the caches. Here they are one pass over
// the coordinates. The formulas are LearnedZO.update_step / query_step's (zol2l_ext/zo/lstm_optimizer.py, the
// reference that autograd and other devices use); the per-problem mean square is accumulated in double, so results
// agree with the reference to rounding, not bit for bit.
#include "checks.h"
#include "tensor_args.h"
#include "cpu/isa_kernels.h"
#include "cpu/op_helpers.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

namespace zol2l {
namespace {

void check_row_tensor(const char* op, const at::Tensor& ref, const char* ref_name, const at::Tensor& t,
                      const char* name, at::IntArrayRef shape) {
  check_shape(op, t, name, shape);
  check_same(op, ref, ref_name, t, name);
}

// x_hat[(b, j), k] = x_k[b, j] / sqrt(v_k[b] + eps) for the K inputs x_k [B, d]; v_k is the mean square of row b
// (accumulated in double), or, where ema_old is given, its moving average with the previous one (ema_new).
template <typename T>
void normalise_inputs(const T* const* xs, int K, int64_t B, int64_t d, double eps, const T* ema_old, T* ema_new,
                      double beta, T* x_hat) {
  // rows of d coordinates, split as the LSTM forward splits coordinates
  const int64_t grain_rows = std::max<int64_t>(1, kLstmForwardGrain / std::max<int64_t>(d, 1));
  at::parallel_for(0, B, grain_rows, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      for (int k = 0; k < K; ++k) {
        const T* x = xs[k] + b * d;
        double acc = 0;
        for (int64_t j = 0; j < d; ++j) acc += static_cast<double>(x[j]) * static_cast<double>(x[j]);
        T v = static_cast<T>(acc / static_cast<double>(d));
        if (ema_old != nullptr) {  // LearnedZO.update_step: 0 = no estimate seen yet
          const T old = ema_old[b];
          v = old > T(0) ? static_cast<T>(beta) * old + static_cast<T>(1.0 - beta) * v : v;
          ema_new[b] = v;
        }
        const T denom = std::sqrt(v + static_cast<T>(eps));
        T* out = x_hat + b * d * K + k;
        for (int64_t j = 0; j < d; ++j) out[j * K] = x[j] / denom;
      }
  });
}

// g (named g_name) [B, d] is the network's first input; h, c [B, d, H] its states.
LstmDims check_network(const char* op, const at::Tensor& g, const char* g_name, int I, const at::Tensor& h,
                       const at::Tensor& c, const at::Tensor& w_ih, const at::Tensor& w_hh,
                       const std::optional<at::Tensor>& bias, const at::Tensor& w_out,
                       const std::optional<at::Tensor>& b_out) {
  check_cpu_dtype(op, g);
  TORCH_CHECK(g.dim() == 2, op, ": ", g_name, " must be [B, d], got shape ", g.sizes());
  const int64_t B = g.size(0), d = g.size(1);
  TORCH_CHECK(h.dim() == 3 && h.size(0) == B && h.size(1) == d, op, ": h must be [B, d, H] = [", B, ", ", d,
              ", H], got shape ", h.sizes());
  TORCH_CHECK(w_out.dim() == 2 && w_out.size(0) == 1, op, ": the head must have one output (w_out [1, H]), got ",
              w_out.sizes());
  TORCH_CHECK(c.sizes() == h.sizes(), op, ": c must have h's shape ", h.sizes(), ", got ", c.sizes());
  check_same(op, g, g_name, h, "h");
  check_same(op, g, g_name, c, "c");
  // The LSTM's own checks, on the shapes its kernel sees: B*d coordinates of I inputs (x: one row, expanded).
  return check_lstm_inputs(op, g.new_empty({1, I}).expand({B * d, I}), h.reshape({B * d, h.size(2)}),
                           c.reshape({B * d, c.size(2)}), w_ih, w_hh, bias, w_out, b_out);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> learned_update_step_cpu(
    const at::Tensor& g_, const at::Tensor& g_sq_, const at::Tensor& h_, const at::Tensor& c_,
    const at::Tensor& w_ih_, const at::Tensor& w_hh_, const std::optional<at::Tensor>& bias_,
    const at::Tensor& w_out_, const std::optional<at::Tensor>& b_out_, const at::Tensor& log_step_, double rms_beta,
    double eps, const std::optional<at::Tensor>& n_, double boost, double boost_decay) {
  const char* op = "learned_update_step";
  const LstmDims dims = check_network(op, g_, "g", 1, h_, c_, w_ih_, w_hh_, bias_, w_out_, b_out_);
  const int64_t B = g_.size(0), d = g_.size(1);
  check_row_tensor(op, g_, "g", g_sq_, "g_sq", {B, 1});
  check_row_tensor(op, g_, "g", log_step_, "log_step", {});
  if (n_) check_row_tensor(op, g_, "g", *n_, "n", {B, 1});
  const at::Tensor g = g_.contiguous(), g_sq = g_sq_.contiguous(), h = h_.contiguous(), c = c_.contiguous(),
                   w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous(), w_out = w_out_.contiguous();
  const auto bias = contiguous_opt(bias_), b_out = contiguous_opt(b_out_), n = contiguous_opt(n_);
  at::Tensor delta = at::empty({B, d}, g.options()), g_sq_new = at::empty({B, 1}, g.options());
  at::Tensor h_new = at::empty_like(h, at::MemoryFormat::Contiguous), c_new = at::empty_like(h_new);
  if (B * d == 0) return {delta, g_sq_new.copy_(g_sq), h_new, c_new};
  at::Tensor g_hat = at::empty({B * d, 1}, g.options()), y = at::empty({B * d, 1}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "learned_update_step_cpu", [&] {
    using T = scalar_t;
    const T* xs[1] = {g.data_ptr<T>()};
    T* xh = g_hat.data_ptr<T>();
    normalise_inputs<T>(xs, 1, B, d, eps, g_sq.data_ptr<T>(), g_sq_new.data_ptr<T>(), rms_beta, xh);
    const LstmPtrs<T> p = lstm_ptrs<T>(xh, h, c, w_ih, w_hh, bias, w_out, b_out, dims);
    const T step = std::exp(log_step_.item<T>());
    // the boost of each problem's step n: 1 + (boost - 1) exp(-n / decay), 1 without one
    std::vector<T> boost_of(static_cast<size_t>(n ? B : 0));
    for (int64_t r = 0; r < static_cast<int64_t>(boost_of.size()); ++r)
      boost_of[r] = T(1) + static_cast<T>(boost - 1.0) * std::exp(-n->data_ptr<T>()[r] / static_cast<T>(boost_decay));
    const auto& fns = cpu_kernels<T>();
    T *py = y.data_ptr<T>(), *pd = delta.data_ptr<T>(), *ph = h_new.data_ptr<T>(), *pc = c_new.data_ptr<T>();
    at::parallel_for(0, B * d, kLstmForwardGrain, [&](int64_t begin, int64_t end) {
      fns.lstm_forward(p, py, ph, pc, begin, end);
      for (int64_t k = begin; k < end; ++k) {  // Delta theta = step (y - g_hat), times the boost
        const T v = step * (py[k] - xh[k]);
        pd[k] = boost_of.empty() ? v : v * boost_of[k / d];
      }
    });
  });
  return {delta, g_sq_new, h_new, c_new};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> learned_query_step_cpu(
    const at::Tensor& g_prev_, const at::Tensor& dtheta_prev_, const at::Tensor& h_, const at::Tensor& c_,
    const at::Tensor& w_ih_, const at::Tensor& w_hh_, const std::optional<at::Tensor>& bias_,
    const at::Tensor& w_out_, const std::optional<at::Tensor>& b_out_, double eps) {
  const char* op = "learned_query_step";
  const LstmDims dims = check_network(op, g_prev_, "g_prev", 2, h_, c_, w_ih_, w_hh_, bias_, w_out_, b_out_);
  const int64_t B = g_prev_.size(0), d = g_prev_.size(1);
  check_row_tensor(op, g_prev_, "g_prev", dtheta_prev_, "dtheta_prev", {B, d});
  const at::Tensor g = g_prev_.contiguous(), dt = dtheta_prev_.contiguous(), h = h_.contiguous(),
                   c = c_.contiguous(), w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous(),
                   w_out = w_out_.contiguous();
  const auto bias = contiguous_opt(bias_), b_out = contiguous_opt(b_out_);
  at::Tensor s = at::empty({B, d}, g.options());
  at::Tensor h_new = at::empty_like(h, at::MemoryFormat::Contiguous), c_new = at::empty_like(h_new);
  if (B * d == 0) return {s, h_new, c_new};
  at::Tensor x = at::empty({B * d, 2}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "learned_query_step_cpu", [&] {
    using T = scalar_t;
    const T* xs[2] = {g.data_ptr<T>(), dt.data_ptr<T>()};
    T* px = x.data_ptr<T>();
    normalise_inputs<T>(xs, 2, B, d, eps, nullptr, nullptr, 0.0, px);
    const LstmPtrs<T> p = lstm_ptrs<T>(px, h, c, w_ih, w_hh, bias, w_out, b_out, dims);
    const auto& fns = cpu_kernels<T>();
    T *ps = s.data_ptr<T>(), *ph = h_new.data_ptr<T>(), *pc = c_new.data_ptr<T>();
    at::parallel_for(0, B * d, kLstmForwardGrain, [&](int64_t begin, int64_t end) {
      fns.lstm_forward(p, ps, ph, pc, begin, end);
      for (int64_t k = begin; k < end; ++k) ps[k] += T(1);  // the raw scale s = head + 1
    });
  });
  return {s, h_new, c_new};
}

}  // namespace

TORCH_LIBRARY_IMPL(zol2l, CPU, m) {
  m.impl("learned_update_step", &learned_update_step_cpu);
  m.impl("learned_query_step", &learned_query_step_cpu);
}

}  // namespace zol2l
