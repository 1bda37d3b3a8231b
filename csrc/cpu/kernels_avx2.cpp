// CPU tile kernels compiled for AVX2 + FMA; isa_dispatch.cpp picks them only where the CPU has both.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma")
#define ZOL2L_CPU_NS cpu_avx2
#include "cpu/isa_entry.h"
#else
// Other architectures: alias the baseline build so the dispatcher links everywhere.
#include "cpu/isa_kernels.h"
namespace zol2l {
namespace cpu_avx2 {
CpuKernels<float> kernels_float() { return cpu_default::kernels_float(); }
CpuKernels<double> kernels_double() { return cpu_default::kernels_double(); }
}  // namespace cpu_avx2
}  // namespace zol2l
#endif
