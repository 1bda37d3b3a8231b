// Body of a per-ISA translation unit: define ZOL2L_CPU_NS, then include this file.
#include "cpu/lstm_tile.h"
#include "cpu/normal_fill.h"
#include "cpu/pixel_images.h"

namespace zol2l {
namespace ZOL2L_CPU_NS {

CpuKernels<float> kernels_float() {
  return {&lstm_forward_range<float>, &lstm_backward_range<float>, &fill_normals_range<float>,
          &sample_row_range<float>, &pixel_images_row<float>};
}
CpuKernels<double> kernels_double() {
  return {&lstm_forward_range<double>, &lstm_backward_range<double>, &fill_normals_range<double>,
          &sample_row_range<double>, &pixel_images_row<double>};
}

}  // namespace ZOL2L_CPU_NS
}  // namespace zol2l
