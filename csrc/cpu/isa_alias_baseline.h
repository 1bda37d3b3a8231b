// The per-ISA build ZOL2L_CPU_NS on an architecture without that ISA: the baseline build under its name, so that
// the dispatcher links everywhere (it never picks it there: csrc/cpu/isa_dispatch.cpp).
#include "cpu/isa_kernels.h"

namespace zol2l {
namespace ZOL2L_CPU_NS {

CpuKernels<float> kernels_float() { return cpu_default::kernels_float(); }
CpuKernels<double> kernels_double() { return cpu_default::kernels_double(); }

}  // namespace ZOL2L_CPU_NS
}  // namespace zol2l
