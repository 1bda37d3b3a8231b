// CPU tile kernels compiled with AVX-512 (F, VL, BW, DQ) on top of AVX2 + FMA; isa_dispatch.cpp picks them only
// where the CPU has all of them. lstm_tile.h's explicit vectors stay 256-bit; GCC widens some loops it vectorizes
// itself (the 16-lane cell loops) to 512 bits, and AVX-512VL adds 32 vector registers instead of 16, masks and
// two-source permutes: fewer spills and shuffles in the tile and Box-Muller loops. Preferring 512-bit vectors
// everywhere (prefer-vector-width=512) was measured slower. On a 2-core EPYC, one thread: lstm_step over 307 200
// coordinates 27 -> 17 ms, sample_queries of 100 x 50 x 3072 directions 44 -> 27 ms, outputs bit for bit those
// of the AVX2 build (the same FMA contractions; python_tests/ops/test_cpu_isa.py).
#define ZOL2L_CPU_NS cpu_avx512
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512bw,avx512dq")
#define ZOL2L_CPU_AVX512 1  // intrinsics where GCC's own vectorization falls short (normal_fill.h's Philox)
#include "cpu/isa_entry.h"
#else
#include "cpu/isa_alias_baseline.h"
#endif
