// fgemm for the portable path: Eigen at the build's baseline ISA (SSE2 on x86-64, NEON on
// aarch64).  See fgemm.h.
#include "graph/fgemm_std.inc"
#define Eigen lowbit_eigen_portable
#define LOWBIT_FGEMM_FN gemm_portable
#include "graph/fgemm_eigen.inc"
