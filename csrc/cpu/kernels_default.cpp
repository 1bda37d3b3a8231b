// CPU tile kernels for the baseline x86-64 / aarch64 instruction set.
#define ZOL2L_CPU_NS cpu_default
#include "cpu/isa_entry.h"
