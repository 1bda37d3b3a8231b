// CPU tile kernels compiled for AVX2 + FMA; isa_dispatch.cpp picks them only where the CPU has both.
#define ZOL2L_CPU_NS cpu_avx2
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma")
#define ZOL2L_CPU_AVX2 1  // intrinsics where GCC's own vectorization falls short (normal_fill.h's Philox)
#include "cpu/isa_entry.h"
#else
#include "cpu/isa_alias_baseline.h"
#endif
