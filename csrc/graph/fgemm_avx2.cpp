// fgemm for the avx2 path: Eigen with AVX2 + FMA packets.  See fgemm.h.
#include "graph/fgemm_std.inc"
#pragma GCC target("avx2,fma,popcnt")
// C++ front ends preprocess the whole unit before the pragma acts, so the ISA macros
// Eigen reads are set by hand (only Eigen, included below, sees them).
#ifndef __SSE3__
#define __SSE3__ 1
#endif
#ifndef __SSSE3__
#define __SSSE3__ 1
#endif
#ifndef __SSE4_1__
#define __SSE4_1__ 1
#endif
#ifndef __SSE4_2__
#define __SSE4_2__ 1
#endif
#ifndef __POPCNT__
#define __POPCNT__ 1
#endif
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#define Eigen lowbit_eigen_avx2
#define LOWBIT_FGEMM_FN gemm_avx2
#include "graph/fgemm_eigen.inc"
