// Chooses, once per process, the per-ISA build of the CPU kernels that this processor can run.
#include "cpu/isa_kernels.h"

namespace zol2l {
namespace {

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace

template <>
const CpuKernels<float>& cpu_kernels<float>() {
  static const CpuKernels<float> k = cpu_has_avx2_fma() ? cpu_avx2::kernels_float() : cpu_default::kernels_float();
  return k;
}

template <>
const CpuKernels<double>& cpu_kernels<double>() {
  static const CpuKernels<double> k =
      cpu_has_avx2_fma() ? cpu_avx2::kernels_double() : cpu_default::kernels_double();
  return k;
}

}  // namespace zol2l
