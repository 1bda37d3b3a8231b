// CPU implementation of lstm_step / lstm_step_backward: validation, the ISA choice and the parallel split.
#include "checks.h"
#include "tensor_args.h"
#include "cpu/isa_kernels.h"
#include "cpu/op_helpers.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

namespace zol2l {
namespace {

// Enough tiles per chunk to amortize the weight-gradient reduction, enough chunks to feed every thread.
constexpr int64_t kGrain = 256;

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_step_cpu(const at::Tensor& x_, const at::Tensor& h_,
                                                             const at::Tensor& c_, const at::Tensor& w_ih_,
                                                             const at::Tensor& w_hh_,
                                                             const std::optional<at::Tensor>& bias_,
                                                             const at::Tensor& w_out_,
                                                             const std::optional<at::Tensor>& b_out_) {
  const LstmDims d = check_lstm_inputs("lstm_step", x_, h_, c_, w_ih_, w_hh_, bias_, w_out_, b_out_);
  check_cpu_dtype("lstm_step", x_);
  const at::Tensor x = x_.contiguous(), h = h_.contiguous(), c = c_.contiguous(), w_ih = w_ih_.contiguous(),
                   w_hh = w_hh_.contiguous(), w_out = w_out_.contiguous();
  const auto bias = contiguous_opt(bias_), b_out = contiguous_opt(b_out_);
  at::Tensor y = at::empty({d.N, d.O}, x.options());
  at::Tensor h_new = at::empty({d.N, d.H}, x.options());
  at::Tensor c_new = at::empty({d.N, d.H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_step_cpu", [&] {
    const LstmPtrs<scalar_t> p = lstm_ptrs<scalar_t>(x.data_ptr<scalar_t>(), h, c, w_ih, w_hh, bias, w_out, b_out, d);
    const auto& fns = cpu_kernels<scalar_t>();
    scalar_t *py = y.data_ptr<scalar_t>(), *ph = h_new.data_ptr<scalar_t>(), *pc = c_new.data_ptr<scalar_t>();
    at::parallel_for(0, d.N, kLstmForwardGrain,
                     [&](int64_t begin, int64_t end) { fns.lstm_forward(p, py, ph, pc, begin, end); });
  });
  return {y, h_new, c_new};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_step_backward_cpu(const at::Tensor& grad_y_, const std::optional<at::Tensor>& grad_h_new_,
                       const std::optional<at::Tensor>& grad_c_new_, const at::Tensor& x_, const at::Tensor& h_,
                       const at::Tensor& c_, const at::Tensor& w_ih_, const at::Tensor& w_hh_,
                       const std::optional<at::Tensor>& bias_, const at::Tensor& w_out_,
                       const std::optional<at::Tensor>& b_out_) {
  const char* op = "lstm_step_backward";
  const LstmDims d = check_lstm_inputs(op, x_, h_, c_, w_ih_, w_hh_, bias_, w_out_, b_out_);
  check_cpu_dtype(op, x_);
  check_shape(op, grad_y_, "grad_y", {d.N, d.O});
  check_same(op, x_, "x", grad_y_, "grad_y");
  if (grad_h_new_) {
    check_shape(op, *grad_h_new_, "grad_h_new", {d.N, d.H});
    check_same(op, x_, "x", *grad_h_new_, "grad_h_new");
  }
  if (grad_c_new_) {
    check_shape(op, *grad_c_new_, "grad_c_new", {d.N, d.H});
    check_same(op, x_, "x", *grad_c_new_, "grad_c_new");
  }
  const at::Tensor x = x_.contiguous(), h = h_.contiguous(), c = c_.contiguous(), w_ih = w_ih_.contiguous(),
                   w_hh = w_hh_.contiguous(), w_out = w_out_.contiguous(), grad_y = grad_y_.contiguous();
  const auto bias = contiguous_opt(bias_), b_out = contiguous_opt(b_out_);
  const auto grad_h_new = contiguous_opt(grad_h_new_), grad_c_new = contiguous_opt(grad_c_new_);
  at::Tensor grad_x = at::empty_like(x), grad_h = at::empty_like(h), grad_c = at::empty_like(c);

  // Fixed chunking (not parallel_for's own split) so that the reduction order, and with it the weight
  // gradients, do not depend on scheduling.
  const int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(at::divup(d.N, kGrain), 4 * at::get_num_threads()));
  const int64_t chunk = at::divup(std::max<int64_t>(d.N, 1), n_chunks);
  const int64_t P = weight_grad_size(d.I, d.H, d.O);
  std::vector<double> partials(static_cast<size_t>(n_chunks * P), 0.0);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_step_backward_cpu", [&] {
    const LstmPtrs<scalar_t> p = lstm_ptrs<scalar_t>(x.data_ptr<scalar_t>(), h, c, w_ih, w_hh, bias, w_out, b_out, d);
    const LstmGradPtrs<scalar_t> gp{grad_y.data_ptr<scalar_t>(),      ptr_or_null<scalar_t>(grad_h_new),
                                    ptr_or_null<scalar_t>(grad_c_new), grad_x.data_ptr<scalar_t>(),
                                    grad_h.data_ptr<scalar_t>(),      grad_c.data_ptr<scalar_t>()};
    const auto& fns = cpu_kernels<scalar_t>();
    at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t k = c0; k < c1; ++k) {
        const int64_t begin = k * chunk, end = std::min(d.N, begin + chunk);
        if (begin < end) fns.lstm_backward(p, gp, partials.data() + k * P, begin, end);
      }
    });
  });
  at::Tensor wgrad = at::zeros({P}, x.options().dtype(at::kDouble));
  double* acc = wgrad.data_ptr<double>();
  for (int64_t k = 0; k < n_chunks; ++k)
    for (int64_t i = 0; i < P; ++i) acc[i] += partials[k * P + i];
  wgrad = wgrad.to(x.scalar_type());
  const int64_t H4 = 4 * d.H;
  int64_t off = 0;
  auto take = [&](int64_t n, at::IntArrayRef shape) {
    at::Tensor t = wgrad.narrow(0, off, n).view(shape).clone();
    off += n;
    return t;
  };
  at::Tensor g_wih = take(H4 * d.I, {H4, d.I});
  at::Tensor g_whh = take(H4 * d.H, {H4, d.H});
  at::Tensor g_b = take(H4, {H4});
  at::Tensor g_wout = take(d.O * d.H, {d.O, d.H});
  at::Tensor g_bout = take(d.O, {d.O});
  return {grad_x, grad_h, grad_c, g_wih, g_whh, g_b, g_wout, g_bout};
}

}  // namespace

TORCH_LIBRARY_IMPL(zol2l, CPU, m) {
  m.impl("lstm_step", &lstm_step_cpu);
  m.impl("lstm_step_backward", &lstm_step_backward_cpu);
}

}  // namespace zol2l
