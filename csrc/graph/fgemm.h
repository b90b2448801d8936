// Float GEMM for the graph executor's float conv / dense layers: C (M, N) = A (M, K) B,
// all row-major, B given as (K, N) or, with b_trans, as its transpose (N, K) (torch's dense
// weight layout, borrowed without a copy).  Eigen does the product (docs/design.md says why
// Eigen and what it measured against numpy / OpenBLAS).
//
// Eigen picks its SIMD packets at compile time from the ISA macros (__AVX2__, __FMA__,
// __AVX512F__), while the extension is compiled for baseline x86-64 so that it loads on any
// CPU.  So the product is compiled once per CPU path, each in its own translation unit
// (fgemm_portable.cpp, fgemm_avx2.cpp, fgemm_avx512.cpp) that includes fgemm_eigen.inc with
//   * every standard header first, at the baseline ISA, so that the std templates Eigen
//     instantiates are baseline code in every unit (the linker keeps one copy of each
//     inline function: it must run on any CPU);
//   * then `#pragma GCC target(...)` (which also defines __AVX2__ / __FMA__ / __AVX512F__
//     for what follows) and Eigen itself in a namespace of its own
//     (`#define Eigen lowbit_eigen_avx2`), so no Eigen function of one ISA can be picked for
//     a caller of another.
// find_fgemm(path) returns the product for a CPU path; the caller has checked the CPU runs it.
#pragma once

#include <cstdint>
#include <string>

namespace lowbit {
namespace fgemm_detail {

// C[i*ldc + j] = sum_k A[i*lda + k] * B(k, j); B(k, j) = b_trans ? B[j*ldb + k] : B[k*ldb + j].
using GemmFn = void (*)(const float* A, int64_t lda, const float* B, int64_t ldb, bool b_trans,
                        float* C, int64_t ldc, int64_t M, int64_t K, int64_t N);

void gemm_portable(const float* A, int64_t lda, const float* B, int64_t ldb, bool b_trans,
                   float* C, int64_t ldc, int64_t M, int64_t K, int64_t N);
#if defined(LOWBIT_FGEMM_X86)
void gemm_avx2(const float* A, int64_t lda, const float* B, int64_t ldb, bool b_trans,
               float* C, int64_t ldc, int64_t M, int64_t K, int64_t N);
void gemm_avx512(const float* A, int64_t lda, const float* B, int64_t ldb, bool b_trans,
                 float* C, int64_t ldc, int64_t M, int64_t K, int64_t N);
#endif

}  // namespace fgemm_detail

inline fgemm_detail::GemmFn find_fgemm(const std::string& path) {
#if defined(LOWBIT_FGEMM_X86)
  if (path == "avx2") return &fgemm_detail::gemm_avx2;
  if (path == "avx512") return &fgemm_detail::gemm_avx512;
#endif
  if (path == "portable" || path == "avx2" || path == "avx512" || path == "neon") return &fgemm_detail::gemm_portable;
  return nullptr;
}

}  // namespace lowbit
