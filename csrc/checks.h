// Input validation shared by the CPU and CUDA implementations: every error names the op and the argument.
#pragma once

#include "cpu/isa_kernels.h"  // kMaxHidden, kMaxInput, kMaxOutput

#include <ATen/ATen.h>

#include <optional>

namespace zol2l {


struct LstmDims {
  int64_t N;
  int I, H, O;
};

inline void check_same(const char* op, const at::Tensor& ref, const char* ref_name, const at::Tensor& t,
                       const char* name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), " but ",
              ref_name, " has dtype ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device());
}

inline void check_shape(const char* op, const at::Tensor& t, const char* name, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", expected, ", got ", t.sizes());
}

inline void check_floating(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name, " must be a floating tensor, got ",
              t.scalar_type());
}

inline LstmDims check_lstm_inputs(const char* op, const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                                  const at::Tensor& w_ih, const at::Tensor& w_hh,
                                  const std::optional<at::Tensor>& bias, const at::Tensor& w_out,
                                  const std::optional<at::Tensor>& b_out) {
  check_floating(op, x, "x");
  TORCH_CHECK(x.dim() == 2, op, ": x must be 2-D [N, I], got shape ", x.sizes());
  TORCH_CHECK(h.dim() == 2, op, ": h must be 2-D [N, H], got shape ", h.sizes());
  TORCH_CHECK(w_hh.dim() == 2, op, ": w_hh must be 2-D [4H, H], got shape ", w_hh.sizes());
  TORCH_CHECK(w_out.dim() == 2, op, ": w_out must be 2-D [O, H], got shape ", w_out.sizes());
  LstmDims d;
  d.N = x.size(0);
  d.I = static_cast<int>(x.size(1));
  // The hidden size comes from w_hh, so that a state of the wrong width is blamed, not its partner.
  d.H = static_cast<int>(w_hh.size(1));
  d.O = static_cast<int>(w_out.size(0));
  TORCH_CHECK(d.I >= 1 && d.I <= kMaxInput, op, ": x must have between 1 and ", kMaxInput,
              " input features per coordinate, got ", d.I);
  TORCH_CHECK(d.H >= 1 && d.H <= kMaxHidden, op, ": hidden size (w_hh.size(1)) must be in [1, ", kMaxHidden,
              "], got ", d.H);
  TORCH_CHECK(d.O >= 1 && d.O <= kMaxOutput, op, ": w_out must have between 1 and ", kMaxOutput,
              " output rows, got ", d.O);
  TORCH_CHECK(w_hh.size(0) == 4 * d.H, op, ": w_hh must be [4H, H] = [", 4 * d.H, ", ", d.H, "], got ",
              w_hh.sizes());
  TORCH_CHECK(h.size(0) == d.N, op, ": h has ", h.size(0), " rows but x has ", d.N);
  TORCH_CHECK(h.size(1) == d.H, op, ": h must be [N, H] with hidden size H = ", d.H, " (from w_hh), got ",
              h.sizes());
  check_shape(op, c, "c", {d.N, d.H});
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == 4 * d.H && w_ih.size(1) == d.I, op, ": w_ih must be [4H, I] = [",
              4 * d.H, ", ", d.I, "] for hidden size H = ", d.H, " (from w_hh), got ", w_ih.sizes());
  TORCH_CHECK(w_out.size(1) == d.H, op, ": w_out must be [O, H] with H = ", d.H, " (from w_hh), got ",
              w_out.sizes());
  check_same(op, x, "x", h, "h");
  check_same(op, x, "x", c, "c");
  check_same(op, x, "x", w_ih, "w_ih");
  check_same(op, x, "x", w_hh, "w_hh");
  check_same(op, x, "x", w_out, "w_out");
  if (bias) {
    check_shape(op, *bias, "bias", {4 * d.H});
    check_same(op, x, "x", *bias, "bias");
  }
  if (b_out) {
    check_shape(op, *b_out, "b_out", {d.O});
    check_same(op, x, "x", *b_out, "b_out");
  }
  return d;
}

struct SampleDims {
  int64_t B, q, d;
};

inline SampleDims check_sample_inputs(const char* op, const at::Tensor& seed, const at::Tensor& theta,
                                      const std::optional<at::Tensor>& scale,
                                      const std::optional<at::Tensor>& use_scale, int64_t q, double mu) {
  check_floating(op, theta, "theta");
  TORCH_CHECK(theta.dim() == 2, op, ": theta must be 2-D [B, d], got shape ", theta.sizes());
  TORCH_CHECK(q >= 1, op, ": q (number of query directions) must be >= 1, got ", q);
  TORCH_CHECK(mu > 0.0, op, ": mu (smoothing radius) must be > 0, got ", mu);
  SampleDims s{theta.size(0), q, theta.size(1)};
  TORCH_CHECK(seed.scalar_type() == at::kLong, op, ": seed must be int64, got ", seed.scalar_type());
  check_shape(op, seed, "seed", {s.B});
  TORCH_CHECK(seed.device() == theta.device(), op, ": seed is on ", seed.device(), " but theta is on ",
              theta.device());
  if (scale) {
    check_shape(op, *scale, "scale", {s.B, s.d});
    check_same(op, theta, "theta", *scale, "scale");
  }
  if (use_scale) {
    TORCH_CHECK(scale.has_value(), op, ": use_scale was given without scale");
    TORCH_CHECK(use_scale->scalar_type() == at::kBool, op, ": use_scale must be bool, got ",
                use_scale->scalar_type());
    check_shape(op, *use_scale, "use_scale", {s.B});
    TORCH_CHECK(use_scale->device() == theta.device(), op, ": use_scale is on ", use_scale->device(),
                " but theta is on ", theta.device());
  }
  return s;
}

inline void check_directions_vjp_inputs(const char* op, const at::Tensor& seed, const at::Tensor& grad_u) {
  check_floating(op, grad_u, "grad_u");
  TORCH_CHECK(grad_u.dim() == 3, op, ": grad_u must be 3-D [B, q, d], got shape ", grad_u.sizes());
  TORCH_CHECK(seed.scalar_type() == at::kLong, op, ": seed must be int64, got ", seed.scalar_type());
  check_shape(op, seed, "seed", {grad_u.size(0)});
  TORCH_CHECK(seed.device() == grad_u.device(), op, ": seed is on ", seed.device(), " but grad_u is on ",
              grad_u.device());
}

inline void check_fd_inputs(const char* op, const at::Tensor& f0, const at::Tensor& fq, const at::Tensor& u,
                            double mu) {
  check_floating(op, u, "u");
  TORCH_CHECK(u.dim() == 3, op, ": u must be 3-D [B, q, d], got shape ", u.sizes());
  TORCH_CHECK(u.size(1) >= 1, op, ": u must hold q >= 1 directions, got q = ", u.size(1));
  TORCH_CHECK(mu > 0.0, op, ": mu (smoothing radius) must be > 0, got ", mu);
  check_shape(op, f0, "f0", {u.size(0)});
  check_shape(op, fq, "fq", {u.size(0), u.size(1)});
  check_same(op, u, "u", f0, "f0");
  check_same(op, u, "u", fq, "fq");
}

inline void check_central_inputs(const char* op, const at::Tensor& theta, double mu, int64_t start,
                                 int64_t count) {
  check_floating(op, theta, "theta");
  TORCH_CHECK(theta.dim() == 2, op, ": theta must be 2-D [B, d], got shape ", theta.sizes());
  TORCH_CHECK(mu > 0.0, op, ": mu (smoothing radius) must be > 0, got ", mu);
  TORCH_CHECK(start >= 0 && count >= 0 && start + count <= theta.size(1), op, ": coordinates [start, start + count) = [",
              start, ", ", start + count, ") must lie in [0, d = ", theta.size(1), ")");
}

}  // namespace zol2l
