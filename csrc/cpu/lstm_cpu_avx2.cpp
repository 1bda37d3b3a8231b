// LSTM tile kernels compiled for AVX2 + FMA; lstm_cpu.cpp calls them only where the CPU has both.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma")
#define ZOL2L_CPU_NS cpu_avx2
#include "cpu/lstm_isa_entry.h"
#else
// Other architectures: alias the baseline build so the dispatcher links everywhere.
#include "cpu/lstm_ranges.h"
namespace zol2l {
namespace cpu_avx2 {
LstmRangeFns<float> lstm_fns_float() { return cpu_default::lstm_fns_float(); }
LstmRangeFns<double> lstm_fns_double() { return cpu_default::lstm_fns_double(); }
}  // namespace cpu_avx2
}  // namespace zol2l
#endif
