// Op schemas, defined once for every backend (kernels: csrc/cpu, csrc/cuda; autograd and fake kernels:
// zol2l_ext/ops.py). Semantics are documented in docs/OPS.md and mirrored by zol2l_ext/reference.py.
#include <torch/library.h>

TORCH_LIBRARY(zol2l, m) {
  // Coordinatewise LSTM step + linear head over N coordinates: returns (y [N, O], h_new [N, H], c_new [N, H]).
  m.def(
      "lstm_step(Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor? bias, Tensor w_out, "
      "Tensor? b_out) -> (Tensor, Tensor, Tensor)");
  // Backward of lstm_step (recomputes the gates): returns (grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh,
  // grad_bias [4H], grad_w_out, grad_b_out [O]).
  m.def(
      "lstm_step_backward(Tensor grad_y, Tensor? grad_h_new, Tensor? grad_c_new, Tensor x, Tensor h, Tensor c, "
      "Tensor w_ih, Tensor w_hh, Tensor? bias, Tensor w_out, Tensor? b_out) -> (Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor, Tensor, Tensor)");
  // Gaussian query directions u [B, q, d] with the per-problem scale normalized to ||s_hat|| = sqrt(d), and the
  // query points [B, q + 1, d] (row 0 = theta, row 1 + i = theta + mu u_i). seed: int64 [B], one per problem.
  m.def(
      "sample_queries(Tensor seed, Tensor theta, Tensor? scale, Tensor? use_scale, int q, float mu) -> "
      "(Tensor, Tensor)");
  // sample_queries writing into caller-owned u [B, q, d] and points [B, q + 1, d] (contiguous, theta's dtype and
  // device, not overlapping theta): a step reuses its buffers instead of allocating (and page-faulting) new ones.
  // No autograd.
  m.def(
      "sample_queries_out(Tensor seed, Tensor theta, Tensor? scale, Tensor? use_scale, int q, float mu, "
      "Tensor(a!) u, Tensor(b!) points) -> ()");
  // sum_i grad_u[b, i, j] * z[b, i, j] with z regenerated from the seed: [B, d].
  m.def("directions_vjp(Tensor seed, Tensor grad_u) -> Tensor");
  // g [B, d] = sum_i (fq[b, i] - f0[b]) u[b, i, :] / (mu q).
  m.def("fd_gradient(Tensor f0, Tensor fq, Tensor u, float mu) -> Tensor");
  // Points of eq. 5 for coordinates [start, start + count): [B, 2 count, d], row 2k = theta + mu e_{start+k},
  // row 2k + 1 = theta - mu e_{start+k}.
  m.def("central_points(Tensor theta, float mu, int start, int count) -> Tensor");
  // One inference step of the learned optimizer's UpdateRNN (LearnedZO, scaling "rms"; no autograd): g [B, d]
  // normalised by the moving mean square g_sq [B, 1] (rms_beta), the fused LSTM step on h, c [B, d, H], and
  // Delta theta = exp(log_step) (head - g_hat), times 1 + (boost - 1) exp(-n / boost_decay) where n [B, 1] is
  // given. Returns (Delta theta [B, d], the new g_sq, h_new, c_new).
  m.def(
      "learned_update_step(Tensor g, Tensor g_sq, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor? bias, "
      "Tensor w_out, Tensor? b_out, Tensor log_step, float rms_beta, float eps, Tensor? n, float boost, "
      "float boost_decay) -> (Tensor, Tensor, Tensor, Tensor)");
  // One inference step of the QueryRNN (LearnedZO, scaling "rms"; no autograd): inputs g_prev and dtheta_prev
  // [B, d], each divided by its per-problem RMS; returns (the raw scale s = head + 1 [B, d], h_new, c_new).
  m.def(
      "learned_query_step(Tensor g_prev, Tensor dtheta_prev, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, "
      "Tensor? bias, Tensor w_out, Tensor? b_out, float eps) -> (Tensor, Tensor, Tensor)");
  // The query images of a pixel-space attack, images [B, Q, d] = clamp(clean + points, 0, 1) with clean [B, d],
  // and their distances [B, Q] to the clean images: sum |images - clean| (norm 1) or its square (norm 2).
  m.def("attack_pixel_images(Tensor points, Tensor clean, int norm) -> (Tensor, Tensor)");
  // SplitMix64 finaliser of int64 bit patterns, elementwise (the key derivation of zol2l_ext/zo/seeding.py).
  m.def("splitmix64(Tensor x) -> Tensor");
}
