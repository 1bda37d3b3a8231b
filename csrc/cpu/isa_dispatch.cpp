// Chooses, once per process, the per-ISA build of the CPU kernels that this processor can run.
#include "cpu/isa_kernels.h"

#include <cstdlib>
#include <cstring>

namespace zol2l {
namespace {

enum class Isa { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

Isa cpu_best_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return Isa::kDefault;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    return Isa::kAvx512;
  return Isa::kAvx2;
#else
  return Isa::kDefault;
#endif
}

// The best ISA, capped by ZOL2L_CPU_ISA (avx2 / default; any other value leaves the best).
Isa chosen_isa() {
  static const Isa isa = [] {
    Isa best = cpu_best_isa();
    const char* cap = std::getenv("ZOL2L_CPU_ISA");
    if (cap != nullptr && std::strcmp(cap, "default") == 0) return Isa::kDefault;
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0 && best > Isa::kAvx2) return Isa::kAvx2;
    return best;
  }();
  return isa;
}

// The builds, in Isa order.
struct Build {
  const char* name;
  CpuKernels<float> (*kernels_float)();
  CpuKernels<double> (*kernels_double)();
};
constexpr Build kBuilds[] = {
    {"default", &cpu_default::kernels_float, &cpu_default::kernels_double},
    {"avx2", &cpu_avx2::kernels_float, &cpu_avx2::kernels_double},
    {"avx512", &cpu_avx512::kernels_float, &cpu_avx512::kernels_double},
};

const Build& chosen_build() { return kBuilds[static_cast<int>(chosen_isa())]; }

}  // namespace

template <>
const CpuKernels<float>& cpu_kernels<float>() {
  static const CpuKernels<float> k = chosen_build().kernels_float();
  return k;
}

template <>
const CpuKernels<double>& cpu_kernels<double>() {
  static const CpuKernels<double> k = chosen_build().kernels_double();
  return k;
}

const char* cpu_isa_name() { return chosen_build().name; }

}  // namespace zol2l
