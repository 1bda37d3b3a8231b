// CPU implementation of attack_pixel_images: the query images of a pixel-space attack and their distances to the
// clean images, in one pass.
//
// AttackProblem (zol2l_ext/zo/problems/attack.py) written as tensor ops makes x0 + delta (a new tensor), clamps it,
// and after the forward subtracts x0 again, takes |.| and sums: five passes over B x Q x d values (for 100
// CIFAR-10 images 16 ms a step, 61 MB each). Here: one read of the points, one write of the images, the distance
// accumulated on the way (csrc/cpu/pixel_images.h, compiled per ISA; its partial sums add in another order than
// torch's sum, so distances agree to rounding).
#include "checks.h"
#include "cpu/isa_kernels.h"
#include "cpu/op_helpers.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

namespace zol2l {
namespace {

std::tuple<at::Tensor, at::Tensor> attack_pixel_images_cpu(const at::Tensor& points_, const at::Tensor& clean_,
                                                            int64_t norm) {
  const char* op = "attack_pixel_images";
  check_floating(op, points_, "points");
  check_cpu_dtype(op, points_);
  TORCH_CHECK(points_.dim() == 3, op, ": points must be [B, Q, d], got shape ", points_.sizes());
  const int64_t B = points_.size(0), Q = points_.size(1), d = points_.size(2);
  check_shape(op, clean_, "clean", {B, d});
  check_same(op, points_, "points", clean_, "clean");
  TORCH_CHECK(norm == 1 || norm == 2, op, ": norm must be 1 (l1) or 2 (squared l2), got ", norm);
  const at::Tensor points = points_.contiguous(), clean = clean_.contiguous();
  at::Tensor images = at::empty({B, Q, d}, points.options());
  at::Tensor dist = at::empty({B, Q}, points.options());
  if (B * Q == 0) return {images, dist};
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "attack_pixel_images_cpu", [&] {
    using T = scalar_t;
    const T *pp = points.data_ptr<T>(), *pc = clean.data_ptr<T>();
    T *pi = images.data_ptr<T>(), *pd = dist.data_ptr<T>();
    const auto row = cpu_kernels<T>().pixel_images;  // the per-ISA build (csrc/cpu/pixel_images.h)
    at::parallel_for(0, B * Q, elementwise_grain_rows(d), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        pd[r] = row(pp + r * d, pc + (r / Q) * d, pi + r * d, d, static_cast<int>(norm));
    });
  });
  return {images, dist};
}

}  // namespace

TORCH_LIBRARY_IMPL(zol2l, CPU, m) { m.impl("attack_pixel_images", &attack_pixel_images_cpu); }

}  // namespace zol2l
