// C++ test of the zol2l ops as a C++ user sees them: looked up through the PyTorch dispatcher (the library only
// registers them; it exports no C++ API) and run on CPU against references computed here with at:: ops and
// libtorch autograd, following the contracts of docs/OPS.md.
//
// One line per check ("PASS name ..." / "FAIL name ..."), a summary line, exit status 1 on any failure.
// Run by ctest (CMakeLists.txt: zol2l_ext_cpp_ops).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;
using OptTensor = std::optional<at::Tensor>;

// ---- reporting -------------------------------------------------------------------------------------------------

int g_checks = 0;
int g_failures = 0;

void report(bool ok, const std::string& name, const std::string& detail = "") {
  ++g_checks;
  if (!ok) ++g_failures;
  std::printf("%s  %s%s%s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.empty() ? "" : "  ", detail.c_str());
  std::fflush(stdout);
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

double max_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.numel() == 0) return 0.0;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// got ~ want elementwise (|got - want| <= atol + rtol |want|), same shape and dtype.
void check_close(const std::string& name, const Tensor& got, const Tensor& want, double rtol, double atol) {
  if (got.sizes() != want.sizes()) {
    report(false, name, c10::str("shape ", got.sizes(), ", expected ", want.sizes()));
    return;
  }
  if (got.scalar_type() != want.scalar_type()) {
    report(false, name, c10::str("dtype ", got.scalar_type(), ", expected ", want.scalar_type()));
    return;
  }
  const bool ok = got.numel() == 0 || at::allclose(got, want, rtol, atol);
  report(ok, name, fmt("max |diff| = %.3g", max_abs_diff(got, want)));
}

void check_equal(const std::string& name, const Tensor& got, const Tensor& want) {
  const bool ok = got.sizes() == want.sizes() && got.scalar_type() == want.scalar_type() && at::equal(got, want);
  report(ok, name, ok ? "bitwise equal" : c10::str("max |diff| = ", max_abs_diff(got, want)));
}

// fn must throw c10::Error whose message names the op and the argument: "<op>: <what>..." (checks.h's format).
void expect_error(const std::string& name, const std::function<void()>& fn, const std::string& op,
                  const std::string& what) {
  try {
    fn();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    const std::string needle = op + ": " + what;
    const bool ok = msg.find(needle) != std::string::npos;
    report(ok, name, (ok ? "c10::Error: " : "c10::Error without \"" + needle + "\": ") + first_line(msg));
    return;
  } catch (const std::exception& e) {
    report(false, name, std::string("threw a non-c10::Error: ") + e.what());
    return;
  }
  report(false, name, "no exception");
}

// Runs a group of checks; an unexpected exception fails the group instead of ending the program.
void run_group(const char* group, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    report(false, std::string(group) + " (unexpected exception)", first_line(e.what()));
  }
}

// ---- the ops, through the dispatcher ---------------------------------------------------------------------------

using LstmStepSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                       const Tensor&, const OptTensor&, const Tensor&,
                                                       const OptTensor&);
using LstmStepBackwardSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const OptTensor&, const OptTensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
    const Tensor&, const OptTensor&, const Tensor&, const OptTensor&);
using SampleQueriesSig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                                                    int64_t, double);
using DirectionsVjpSig = Tensor(const Tensor&, const Tensor&);
using FdGradientSig = Tensor(const Tensor&, const Tensor&, const Tensor&, double);
using CentralPointsSig = Tensor(const Tensor&, double, int64_t, int64_t);

template <typename Sig>
c10::TypedOperatorHandle<Sig> op(const char* name) {
  // typed<>() also checks Sig against the C++ signature of the registered kernels.
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

struct Ops {
  c10::TypedOperatorHandle<LstmStepSig> lstm_step = op<LstmStepSig>("zol2l::lstm_step");
  c10::TypedOperatorHandle<LstmStepBackwardSig> lstm_step_backward =
      op<LstmStepBackwardSig>("zol2l::lstm_step_backward");
  c10::TypedOperatorHandle<SampleQueriesSig> sample_queries = op<SampleQueriesSig>("zol2l::sample_queries");
  c10::TypedOperatorHandle<DirectionsVjpSig> directions_vjp = op<DirectionsVjpSig>("zol2l::directions_vjp");
  c10::TypedOperatorHandle<FdGradientSig> fd_gradient = op<FdGradientSig>("zol2l::fd_gradient");
  c10::TypedOperatorHandle<CentralPointsSig> central_points = op<CentralPointsSig>("zol2l::central_points");
};

const char* const kOpNames[] = {"zol2l::lstm_step",      "zol2l::lstm_step_backward", "zol2l::sample_queries",
                                "zol2l::directions_vjp", "zol2l::fd_gradient",        "zol2l::central_points"};

// ---- references (docs/OPS.md) ----------------------------------------------------------------------------------

struct LstmInputs {
  Tensor x, h, c, w_ih, w_hh;
  OptTensor bias;
  Tensor w_out;
  OptTensor b_out;
};

// Weights scaled so that the gates stay away from saturation (gradients are then informative).
LstmInputs make_lstm(int64_t N, int64_t I, int64_t H, int64_t O, at::ScalarType dt, bool biases) {
  const auto o = at::TensorOptions().dtype(dt);
  LstmInputs in;
  in.x = at::randn({N, I}, o);
  in.h = at::randn({N, H}, o) * 0.5;
  in.c = at::randn({N, H}, o);
  in.w_ih = at::randn({4 * H, I}, o) * 0.5;
  in.w_hh = at::randn({4 * H, H}, o) * (1.0 / std::sqrt(static_cast<double>(H)));
  in.w_out = at::randn({O, H}, o) * (1.0 / std::sqrt(static_cast<double>(H)));
  if (biases) {
    in.bias = at::randn({4 * H}, o) * 0.3;
    in.b_out = at::randn({O}, o) * 0.3;
  }
  return in;
}

// a = x w_ih^T + h w_hh^T (+ bias); i, f, o = sigmoid; g = tanh; c_new = f c + i g; h_new = o tanh(c_new);
// y = h_new w_out^T (+ b_out).
std::tuple<Tensor, Tensor, Tensor> lstm_ref(const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& w_ih,
                                            const Tensor& w_hh, const OptTensor& bias, const Tensor& w_out,
                                            const OptTensor& b_out) {
  Tensor a = at::matmul(x, w_ih.t()) + at::matmul(h, w_hh.t());
  if (bias) a = a + *bias;
  const auto gates = a.chunk(4, 1);
  const Tensor i = at::sigmoid(gates[0]), f = at::sigmoid(gates[1]), g = at::tanh(gates[2]),
               o = at::sigmoid(gates[3]);
  const Tensor c_new = f * c + i * g;
  const Tensor h_new = o * at::tanh(c_new);
  Tensor y = at::matmul(h_new, w_out.t());
  if (b_out) y = y + *b_out;
  return {y, h_new, c_new};
}

// ---- lstm_step -------------------------------------------------------------------------------------------------

void test_lstm_step(const Ops& ops) {
  struct Case {
    const char* name;
    int64_t N, I, H, O;
    at::ScalarType dt;
    bool biases;
    double rtol, atol;
  };
  // N not a multiple of the 16-row tile; the largest I/H/O the kernel accepts; float32 (fast exp) vs a float32
  // reference.
  const Case cases[] = {
      {"float64 N=37 I=3 H=20 O=5 biases", 37, 3, 20, 5, at::kDouble, true, 1e-10, 1e-12},
      {"float64 N=16 I=4 H=64 O=8 no biases", 16, 4, 64, 8, at::kDouble, false, 1e-10, 1e-12},
      {"float32 N=1000 I=2 H=32 O=1 biases", 1000, 2, 32, 1, at::kFloat, true, 1e-4, 2e-5},
  };
  for (const auto& cs : cases) {
    const LstmInputs in = make_lstm(cs.N, cs.I, cs.H, cs.O, cs.dt, cs.biases);
    const auto [y, h_new, c_new] = ops.lstm_step.call(in.x, in.h, in.c, in.w_ih, in.w_hh, in.bias, in.w_out, in.b_out);
    const auto [ry, rh, rc] = lstm_ref(in.x, in.h, in.c, in.w_ih, in.w_hh, in.bias, in.w_out, in.b_out);
    const std::string p = std::string("lstm_step ") + cs.name;
    check_close(p + ": y", y, ry, cs.rtol, cs.atol);
    check_close(p + ": h_new", h_new, rh, cs.rtol, cs.atol);
    check_close(p + ": c_new", c_new, rc, cs.rtol, cs.atol);
  }

  {  // Non-contiguous inputs (transposed / strided views) give the same result.
    const LstmInputs in = make_lstm(50, 3, 8, 2, at::kDouble, true);
    const Tensor x_nc = in.x.t().contiguous().t();
    const Tensor h_nc = at::cat({in.h, in.h}, 1).narrow(1, 0, 8);
    const Tensor w_hh_nc = in.w_hh.t().contiguous().t();
    const auto [y, h_new, c_new] = ops.lstm_step.call(x_nc, h_nc, in.c, in.w_ih, w_hh_nc, in.bias, in.w_out, in.b_out);
    const auto [ry, rh, rc] = lstm_ref(in.x, in.h, in.c, in.w_ih, in.w_hh, in.bias, in.w_out, in.b_out);
    report(!x_nc.is_contiguous() && !h_nc.is_contiguous() && !w_hh_nc.is_contiguous(),
           "lstm_step non-contiguous: inputs really are non-contiguous");
    check_close("lstm_step non-contiguous: y", y, ry, 1e-10, 1e-12);
    check_close("lstm_step non-contiguous: c_new", c_new, rc, 1e-10, 1e-12);
  }

  {  // N = 0.
    const LstmInputs in = make_lstm(0, 2, 4, 3, at::kFloat, true);
    const auto [y, h_new, c_new] = ops.lstm_step.call(in.x, in.h, in.c, in.w_ih, in.w_hh, in.bias, in.w_out, in.b_out);
    report(y.sizes() == at::IntArrayRef{0, 3} && h_new.sizes() == at::IntArrayRef{0, 4} &&
               c_new.sizes() == at::IntArrayRef{0, 4},
           "lstm_step N=0: empty outputs", c10::str("y ", y.sizes(), ", h_new ", h_new.sizes()));
  }
}

// ---- lstm_step_backward ----------------------------------------------------------------------------------------

// Gradients of the reference through libtorch autograd. Missing biases are zero leaves: the kernel returns
// grad_bias / grad_b_out (the gradient a bias would get) in any case.
std::vector<Tensor> lstm_ref_grads(const LstmInputs& in, const Tensor& gy, const OptTensor& gh, const OptTensor& gc) {
  auto leaf = [](const Tensor& t) { return t.detach().to(at::kDouble).clone().requires_grad_(true); };
  const int64_t H = in.h.size(1), O = in.w_out.size(0);
  const auto dbl = at::TensorOptions().dtype(at::kDouble);
  const Tensor x = leaf(in.x), h = leaf(in.h), c = leaf(in.c), w_ih = leaf(in.w_ih), w_hh = leaf(in.w_hh),
               w_out = leaf(in.w_out);
  const Tensor bias = leaf(in.bias ? *in.bias : at::zeros({4 * H}, dbl));
  const Tensor b_out = leaf(in.b_out ? *in.b_out : at::zeros({O}, dbl));
  const auto [y, h_new, c_new] = lstm_ref(x, h, c, w_ih, w_hh, bias, w_out, b_out);
  std::vector<Tensor> outs{y}, grads{gy.to(at::kDouble)};
  if (gh) {
    outs.push_back(h_new);
    grads.push_back(gh->to(at::kDouble));
  }
  if (gc) {
    outs.push_back(c_new);
    grads.push_back(gc->to(at::kDouble));
  }
  return torch::autograd::grad(outs, {x, h, c, w_ih, w_hh, bias, w_out, b_out}, grads);
}

void test_lstm_step_backward(const Ops& ops) {
  struct Case {
    const char* name;
    int64_t N, I, H, O;
    at::ScalarType dt;
    bool biases, grad_h, grad_c;
    double rtol, atol;
  };
  // N = 600 spans several of the kernel's reduction chunks (256 rows each).
  const Case cases[] = {
      {"float64 N=600 I=3 H=20 O=5 biases, all grads", 600, 3, 20, 5, at::kDouble, true, true, true, 1e-9, 1e-10},
      {"float64 N=45 I=1 H=64 O=8 no biases, grad_y only", 45, 1, 64, 8, at::kDouble, false, false, false, 1e-9,
       1e-10},
      {"float64 N=33 I=4 H=7 O=2 biases, grad_c_new None", 33, 4, 7, 2, at::kDouble, true, true, false, 1e-9, 1e-10},
      {"float32 N=300 I=2 H=16 O=3 biases, all grads", 300, 2, 16, 3, at::kFloat, true, true, true, 1e-3, 2e-4},
  };
  const char* names[] = {"grad_x", "grad_h", "grad_c", "grad_w_ih", "grad_w_hh", "grad_bias", "grad_w_out",
                         "grad_b_out"};
  for (const auto& cs : cases) {
    const LstmInputs in = make_lstm(cs.N, cs.I, cs.H, cs.O, cs.dt, cs.biases);
    const auto o = at::TensorOptions().dtype(cs.dt);
    const Tensor gy = at::randn({cs.N, cs.O}, o);
    const OptTensor gh = cs.grad_h ? OptTensor(at::randn({cs.N, cs.H}, o)) : std::nullopt;
    const OptTensor gc = cs.grad_c ? OptTensor(at::randn({cs.N, cs.H}, o)) : std::nullopt;
    const auto got = ops.lstm_step_backward.call(gy, gh, gc, in.x, in.h, in.c, in.w_ih, in.w_hh, in.bias, in.w_out,
                                                 in.b_out);
    const std::vector<Tensor> got_v{std::get<0>(got), std::get<1>(got), std::get<2>(got), std::get<3>(got),
                                    std::get<4>(got), std::get<5>(got), std::get<6>(got), std::get<7>(got)};
    const std::vector<Tensor> want = lstm_ref_grads(in, gy, gh, gc);
    for (size_t k = 0; k < want.size(); ++k)
      check_close(std::string("lstm_step_backward ") + cs.name + ": " + names[k], got_v[k],
                  want[k].to(cs.dt), cs.rtol, cs.atol);
  }

  {  // Weight gradients, independently of autograd: central finite differences of <grad_y, y> in float64.
    const LstmInputs in = make_lstm(20, 2, 5, 3, at::kDouble, true);
    const Tensor gy = at::randn({20, 3}, at::kDouble);
    const auto got = ops.lstm_step_backward.call(gy, std::nullopt, std::nullopt, in.x, in.h, in.c, in.w_ih, in.w_hh,
                                                 in.bias, in.w_out, in.b_out);
    const Tensor g_wih = std::get<3>(got);
    const double eps = 1e-6;
    Tensor fd = at::empty_like(in.w_ih);
    for (int64_t r = 0; r < in.w_ih.size(0); ++r)
      for (int64_t k = 0; k < in.w_ih.size(1); ++k) {
        Tensor wp = in.w_ih.clone(), wm = in.w_ih.clone();
        wp[r][k] += eps;
        wm[r][k] -= eps;
        const double fp = (std::get<0>(ops.lstm_step.call(in.x, in.h, in.c, wp, in.w_hh, in.bias, in.w_out,
                                                          in.b_out)) * gy).sum().item<double>();
        const double fm = (std::get<0>(ops.lstm_step.call(in.x, in.h, in.c, wm, in.w_hh, in.bias, in.w_out,
                                                          in.b_out)) * gy).sum().item<double>();
        fd[r][k] = (fp - fm) / (2 * eps);
      }
    check_close("lstm_step_backward float64: grad_w_ih vs finite differences of lstm_step", g_wih, fd, 1e-5, 1e-7);
  }
}

// ---- sample_queries / directions_vjp ---------------------------------------------------------------------------

void test_sample_queries(const Ops& ops) {
  const int64_t B = 3, q = 5, d = 37;
  const double mu = 0.01;
  const Tensor seed = at::tensor(std::vector<int64_t>{11, 22, 33}, at::kLong);
  const Tensor theta = at::randn({B, d}, at::kDouble);

  const auto [u, pts] = ops.sample_queries.call(seed, theta, std::nullopt, std::nullopt, q, mu);
  report(u.sizes() == at::IntArrayRef{B, q, d} && pts.sizes() == at::IntArrayRef{B, q + 1, d},
         "sample_queries: shapes u [B, q, d], points [B, q + 1, d]", c10::str("u ", u.sizes(), ", points ", pts.sizes()));

  const auto [u2, pts2] = ops.sample_queries.call(seed, theta, std::nullopt, std::nullopt, q, mu);
  check_equal("sample_queries: same seeds give identical u", u2, u);
  const Tensor theta_other = at::randn({B, d}, at::kDouble);
  check_equal("sample_queries: u does not depend on theta",
              std::get<0>(ops.sample_queries.call(seed, theta_other, std::nullopt, std::nullopt, q, mu)), u);

  const auto [u_alone, pts_alone] =
      ops.sample_queries.call(seed.narrow(0, 1, 1), theta.narrow(0, 1, 1), std::nullopt, std::nullopt, q, mu);
  check_equal("sample_queries: a problem alone draws the same u as inside the batch", u_alone, u.narrow(0, 1, 1));

  const double diff01 = max_abs_diff(u[0], u[1]);
  report(diff01 > 0.5, "sample_queries: different seeds give different u", fmt("max |u[0] - u[1]| = %.3g", diff01));
  const Tensor seed_b = at::tensor(std::vector<int64_t>{12, 22, 33}, at::kLong);
  const Tensor u_b = std::get<0>(ops.sample_queries.call(seed_b, theta, std::nullopt, std::nullopt, q, mu));
  const double diff_changed = max_abs_diff(u_b[0], u[0]);
  report(diff_changed > 0.5 && at::equal(u_b.narrow(0, 1, 2), u.narrow(0, 1, 2)),
         "sample_queries: changing seed[0] changes only problem 0", fmt("max |diff| in problem 0 = %.3g", diff_changed));

  check_equal("sample_queries: points[:, 0] == theta", pts.select(1, 0), theta);
  check_close("sample_queries: points[:, 1:] == theta + mu u", pts.narrow(1, 1, q), theta.unsqueeze(1) + mu * u,
              1e-14, 1e-15);

  {  // z ~ N(0, 1): mean and standard deviation over 2 x 64 x 512 draws (5-sigma bounds).
    const Tensor t = at::zeros({2, 512}, at::kDouble);
    const Tensor z = std::get<0>(ops.sample_queries.call(at::tensor(std::vector<int64_t>{1, 2}, at::kLong), t,
                                                         std::nullopt, std::nullopt, 64, 1.0));
    const double mean = z.mean().item<double>(), sd = z.std().item<double>();
    const double kurt = (((z - mean) / sd).pow(4)).mean().item<double>();
    report(std::abs(mean) < 0.02 && std::abs(sd - 1.0) < 0.015 && std::abs(kurt - 3.0) < 0.15,
           "sample_queries: u with scale None is standard normal",
           c10::str("mean ", mean, ", std ", sd, ", kurtosis ", kurt));
  }

  {  // float32 draws the same z (computed in float) as float64.
    const auto [u32, p32] = ops.sample_queries.call(seed, theta.to(at::kFloat), std::nullopt, std::nullopt, q, mu);
    check_close("sample_queries: float32 u matches float64 u", u32, u.to(at::kFloat), 1e-4, 1e-4);
  }

  {  // scale: u = s_hat z with ||s_hat[b]|| = sqrt(d) where use_scale[b], else s_hat[b] = 1.
    const Tensor scale = at::rand({B, d}, at::kDouble) * 3.0 + 0.1;
    const Tensor use_scale = at::tensor(std::vector<uint8_t>{1, 0, 1}, at::kByte).to(at::kBool);
    const auto [us, ps] = ops.sample_queries.call(seed, theta, scale, use_scale, q, mu);
    // The scale the kernel applied, per (b, j): least-squares fit of us = s u over the q draws.
    const Tensor s_fit = (us * u).sum(1) / (u * u).sum(1);
    const Tensor norms = s_fit.norm(2, {1});
    const double sqrt_d = std::sqrt(static_cast<double>(d));
    report(std::abs(norms[0].item<double>() - sqrt_d) < 1e-9 && std::abs(norms[2].item<double>() - sqrt_d) < 1e-9,
           "sample_queries: ||s_hat|| = sqrt(d) where use_scale",
           c10::str("norms ", norms[0].item<double>(), ", ", norms[2].item<double>(), ", sqrt(d) = ", sqrt_d));
    const Tensor s_hat = at::where(use_scale.unsqueeze(1), scale * (sqrt_d / scale.norm(2, {1}, true)),
                                   at::ones_like(scale));
    check_close("sample_queries: u = s_hat z (s_hat = sqrt(d) s / ||s||, 1 where not use_scale)", us,
                s_hat.unsqueeze(1) * u, 1e-12, 1e-13);
    check_close("sample_queries: scaled points[:, 1:] == theta + mu u", ps.narrow(1, 1, q),
                theta.unsqueeze(1) + mu * us, 1e-14, 1e-15);
    const Tensor us_all = std::get<0>(ops.sample_queries.call(seed, theta, scale, std::nullopt, q, mu));
    const Tensor s_hat_all = scale * (sqrt_d / scale.norm(2, {1}, true));
    check_close("sample_queries: use_scale None scales every problem", us_all, s_hat_all.unsqueeze(1) * u, 1e-12,
                1e-13);
  }

  {  // directions_vjp(seed, grad_u) = sum_i grad_u[b, i] z[b, i], with z = u of sample_queries (scale None).
    const Tensor grad_u = at::randn({B, q, d}, at::kDouble);
    check_close("directions_vjp: sum_i grad_u z", ops.directions_vjp.call(seed, grad_u), (grad_u * u).sum(1), 1e-12,
                1e-13);
    const Tensor seed_big = at::tensor(std::vector<int64_t>{5, 6}, at::kLong);
    const Tensor u_big = std::get<0>(
        ops.sample_queries.call(seed_big, at::zeros({2, 2500}, at::kDouble), std::nullopt, std::nullopt, 3, 1.0));
    const Tensor g_big = at::randn({2, 3, 2500}, at::kDouble);
    check_close("directions_vjp: d = 2500 (several column chunks)", ops.directions_vjp.call(seed_big, g_big),
                (g_big * u_big).sum(1), 1e-12, 1e-13);
  }
}

// ---- fd_gradient / central_points ------------------------------------------------------------------------------

Tensor fd_ref(const Tensor& f0, const Tensor& fq, const Tensor& u, double mu) {
  return ((fq - f0.unsqueeze(1)).unsqueeze(2) * u).sum(1) / (mu * static_cast<double>(u.size(1)));
}

void test_fd_gradient(const Ops& ops) {
  {  // d > 2048: several column chunks.
    const Tensor f0 = at::randn({2}, at::kDouble), fq = at::randn({2, 3}, at::kDouble),
                 u = at::randn({2, 3, 3000}, at::kDouble);
    check_close("fd_gradient float64 B=2 q=3 d=3000: sum_i (fq - f0) u / (mu q)", ops.fd_gradient.call(f0, fq, u, 0.05),
                fd_ref(f0, fq, u, 0.05), 1e-12, 1e-12);
  }
  {
    const Tensor f0 = at::randn({4}), fq = at::randn({4, 10}), u = at::randn({4, 10, 100});
    check_close("fd_gradient float32 B=4 q=10 d=100", ops.fd_gradient.call(f0, fq, u, 0.1),
                fd_ref(f0.to(at::kDouble), fq.to(at::kDouble), u.to(at::kDouble), 0.1).to(at::kFloat), 1e-5, 1e-5);
  }
  {  // Non-contiguous u.
    const Tensor f0 = at::randn({3}, at::kDouble), fq = at::randn({3, 4}, at::kDouble);
    const Tensor u_nc = at::randn({3, 9, 4}, at::kDouble).transpose(1, 2);
    check_close("fd_gradient non-contiguous u", ops.fd_gradient.call(f0, fq, u_nc, 0.2),
                fd_ref(f0, fq, u_nc.contiguous(), 0.2), 1e-12, 1e-13);
  }
  {  // On a linear f(x) = a.x with u from sample_queries, g = (1/q) sum_i u_i u_i^T a exactly.
    const int64_t d = 6, q = 4;
    const double mu = 0.5;
    const Tensor a = at::randn({1, d}, at::kDouble), theta = at::randn({1, d}, at::kDouble);
    const auto [u, pts] = ops.sample_queries.call(at::tensor(std::vector<int64_t>{7}, at::kLong), theta,
                                                  std::nullopt, std::nullopt, q, mu);
    const Tensor f = (pts * a.unsqueeze(1)).sum(2);  // [1, q + 1]
    const Tensor g = ops.fd_gradient.call(f.select(1, 0), f.narrow(1, 1, q), u, mu);
    const Tensor want = at::matmul(u.select(0, 0).t(), at::matmul(u.select(0, 0), a.t())).t() / q;
    check_close("fd_gradient on a linear function: (1/q) sum_i u_i u_i^T a", g, want, 1e-9, 1e-10);
  }
}

void test_central_points(const Ops& ops) {
  const int64_t B = 2, d = 7;
  const double mu = 0.1;
  const Tensor theta = at::randn({B, d}, at::kDouble);
  auto ref = [&](const Tensor& th, int64_t start, int64_t count) {
    Tensor e = th.unsqueeze(1).repeat({1, 2 * count, 1});
    for (int64_t k = 0; k < count; ++k) {
      e.select(1, 2 * k).select(1, start + k).add_(mu);
      e.select(1, 2 * k + 1).select(1, start + k).sub_(mu);
    }
    return e;
  };
  check_equal("central_points start=2 count=3: rows theta +/- mu e_(start+k)", ops.central_points.call(theta, mu, 2, 3),
              ref(theta, 2, 3));
  check_equal("central_points start=0 count=d (all coordinates)", ops.central_points.call(theta, mu, 0, d),
              ref(theta, 0, d));
  const Tensor t32 = theta.to(at::kFloat);
  check_equal("central_points float32", ops.central_points.call(t32, mu, 4, 3), ref(t32, 4, 3));
  const Tensor empty = ops.central_points.call(theta, mu, 3, 0);
  report(empty.sizes() == at::IntArrayRef{B, 0, d}, "central_points count=0: shape [B, 0, d]",
         c10::str("shape ", empty.sizes()));
}

// ---- bad input -------------------------------------------------------------------------------------------------

void test_bad_input(const Ops& ops) {
  const Tensor seed = at::tensor(std::vector<int64_t>{1, 2}, at::kLong);
  const Tensor theta = at::randn({2, 5}, at::kDouble);
  const auto& sq = ops.sample_queries;
  expect_error("bad input: sample_queries q = 0", [&] { sq.call(seed, theta, std::nullopt, std::nullopt, 0, 0.1); },
               "sample_queries", "q");
  expect_error("bad input: sample_queries mu = 0", [&] { sq.call(seed, theta, std::nullopt, std::nullopt, 3, 0.0); },
               "sample_queries", "mu");
  expect_error("bad input: sample_queries mu < 0", [&] { sq.call(seed, theta, std::nullopt, std::nullopt, 3, -0.5); },
               "sample_queries", "mu");
  expect_error("bad input: sample_queries theta 1-D",
               [&] { sq.call(seed, theta.select(0, 0), std::nullopt, std::nullopt, 3, 0.1); },
               "sample_queries", "theta");
  expect_error("bad input: sample_queries seed float",
               [&] { sq.call(seed.to(at::kFloat), theta, std::nullopt, std::nullopt, 3, 0.1); },
               "sample_queries", "seed");
  expect_error("bad input: sample_queries seed [3] for B = 2",
               [&] { sq.call(at::tensor(std::vector<int64_t>{1, 2, 3}, at::kLong), theta, std::nullopt, std::nullopt,
                             3, 0.1); },
               "sample_queries", "seed");
  expect_error("bad input: sample_queries scale of the wrong shape",
               [&] { sq.call(seed, theta, at::ones({2, 4}, at::kDouble), std::nullopt, 3, 0.1); },
               "sample_queries", "scale");
  expect_error("bad input: sample_queries use_scale without scale",
               [&] { sq.call(seed, theta, std::nullopt, at::ones({2}, at::kBool), 3, 0.1); },
               "sample_queries", "use_scale");

  const Tensor f0 = at::randn({2}, at::kDouble), fq = at::randn({2, 3}, at::kDouble),
               u = at::randn({2, 3, 5}, at::kDouble);
  expect_error("bad input: fd_gradient mu = 0", [&] { ops.fd_gradient.call(f0, fq, u, 0.0); }, "fd_gradient", "mu");
  expect_error("bad input: fd_gradient fq [2, 4] for q = 3",
               [&] { ops.fd_gradient.call(f0, at::randn({2, 4}, at::kDouble), u, 0.1); }, "fd_gradient", "fq");
  expect_error("bad input: fd_gradient u 2-D", [&] { ops.fd_gradient.call(f0, fq, u.select(1, 0), 0.1); },
               "fd_gradient", "u");
  expect_error("bad input: fd_gradient f0 float32 with u float64",
               [&] { ops.fd_gradient.call(f0.to(at::kFloat), fq, u, 0.1); }, "fd_gradient", "f0");

  expect_error("bad input: central_points mu < 0", [&] { ops.central_points.call(theta, -1.0, 0, 2); },
               "central_points", "mu");
  expect_error("bad input: central_points start + count > d", [&] { ops.central_points.call(theta, 0.1, 3, 3); },
               "central_points", "coordinates [start");
  expect_error("bad input: central_points theta 3-D", [&] { ops.central_points.call(u, 0.1, 0, 1); },
               "central_points", "theta");

  expect_error("bad input: directions_vjp grad_u 2-D", [&] { ops.directions_vjp.call(seed, theta); },
               "directions_vjp", "grad_u");

  const LstmInputs in = make_lstm(4, 2, 3, 2, at::kDouble, true);
  const auto& ls = ops.lstm_step;
  expect_error("bad input: lstm_step w_hh [4H, H + 1]",
               [&] { ls.call(in.x, in.h, in.c, in.w_ih, at::randn({12, 4}, at::kDouble), in.bias, in.w_out, in.b_out); },
               "lstm_step", "w_hh");
  expect_error("bad input: lstm_step c with N + 1 rows",
               [&] { ls.call(in.x, in.h, at::randn({5, 3}, at::kDouble), in.w_ih, in.w_hh, in.bias, in.w_out, in.b_out); },
               "lstm_step", "c");
  expect_error("bad input: lstm_step bias [4H + 1]",
               [&] { ls.call(in.x, in.h, in.c, in.w_ih, in.w_hh, at::randn({13}, at::kDouble), in.w_out, in.b_out); },
               "lstm_step", "bias");
  expect_error("bad input: lstm_step hidden size 65 > 64",
               [&] {
                 const LstmInputs big = make_lstm(2, 1, 65, 1, at::kDouble, false);
                 ls.call(big.x, big.h, big.c, big.w_ih, big.w_hh, big.bias, big.w_out, big.b_out);
               },
               "lstm_step", "hidden size");
  expect_error("bad input: lstm_step h float32 with x float64",
               [&] { ls.call(in.x, in.h.to(at::kFloat), in.c, in.w_ih, in.w_hh, in.bias, in.w_out, in.b_out); },
               "lstm_step", "h has dtype");
  expect_error("bad input: lstm_step float16 on CPU",
               [&] {
                 const LstmInputs half = make_lstm(4, 2, 3, 2, at::kHalf, true);
                 ls.call(half.x, half.h, half.c, half.w_ih, half.w_hh, half.bias, half.w_out, half.b_out);
               },
               "lstm_step", "the CPU kernel supports float32 and float64");
  expect_error("bad input: lstm_step_backward grad_y [N, O + 1]",
               [&] {
                 ops.lstm_step_backward.call(at::randn({4, 3}, at::kDouble), std::nullopt, std::nullopt, in.x, in.h,
                                             in.c, in.w_ih, in.w_hh, in.bias, in.w_out, in.b_out);
               },
               "lstm_step_backward", "grad_y");
}

}  // namespace

int main() {
  at::manual_seed(0);

  // The registrations survived linking: every schema is known and has a CPU kernel.
  bool all_registered = true;
  for (const char* name : kOpNames) {
    const auto handle = c10::Dispatcher::singleton().findSchema({name, ""});
    const bool ok = handle.has_value() && handle->hasKernelForDispatchKey(c10::DispatchKey::CPU);
    report(ok, std::string("registered: ") + name + " (schema + CPU kernel)");
    all_registered = all_registered && ok;
  }
  if (!all_registered) {
    std::printf("SUMMARY  %d checks, %d failed (ops not registered: was libzol2l_ext dropped at link time?)\n",
                g_checks, g_failures);
    return 1;
  }

  const Ops ops;
  run_group("lstm_step", [&] { test_lstm_step(ops); });
  run_group("lstm_step_backward", [&] { test_lstm_step_backward(ops); });
  run_group("sample_queries", [&] { test_sample_queries(ops); });
  run_group("fd_gradient", [&] { test_fd_gradient(ops); });
  run_group("central_points", [&] { test_central_points(ops); });
  run_group("bad input", [&] { test_bad_input(ops); });

  std::printf("SUMMARY  %d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
