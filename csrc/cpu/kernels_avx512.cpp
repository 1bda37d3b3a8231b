// CPU tile kernels compiled with AVX-512 (F, VL, BW, DQ) on top of AVX2 + FMA; isa_dispatch.cpp picks them only
// where the CPU has all of them. The vectors stay 256-bit (lstm_tile.h's Vec, GCC's default preferred width):
// what AVX-512VL adds is 32 vector registers instead of 16, masked and two-source permutes, and the fewer spills
// and shuffles of the tile and Box-Muller loops. Measured on a 2-core EPYC, one thread: lstm_step over 307 200
// coordinates 27 -> 17 ms, sample_queries of 100 x 50 x 3072 directions 44 -> 27 ms, outputs bit for bit those
// of the AVX2 build (the same FMA contractions; python_tests/ops/test_cpu_isa.py).
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512bw,avx512dq")
#define ZOL2L_CPU_NS cpu_avx512
#include "cpu/isa_entry.h"
#else
// Other architectures: alias the baseline build so the dispatcher links everywhere.
#include "cpu/isa_kernels.h"
namespace zol2l {
namespace cpu_avx512 {
CpuKernels<float> kernels_float() { return cpu_default::kernels_float(); }
CpuKernels<double> kernels_double() { return cpu_default::kernels_double(); }
}  // namespace cpu_avx512
}  // namespace zol2l
#endif
