// bgemm micro-kernel for AVX-512 CPUs with VPOPCNTDQ (contract and maths: micro.h).
//
// VPOPCNTQ counts the bits of 8 words at once, so one K step of a tile is
//   broadcast A word (a load uop)  ->  VPXORQ with 8 B columns  ->  VPOPCNTQ  ->  VPADDQ,
// 3 vector ops per 8 word pairs.  Each 64-bit lane is one output column, so the
// accumulators are the per-column counts with no horizontal reduction.  Tile MR = 6 rows x
// NV = 4 vectors (NR = 32 columns): 24 accumulators + 4 B vectors + 1 broadcast = 29 of the
// 32 ZMM registers.  Counts are narrowed from 64 to 32 bits with VPMOVQD.
//
// Compiled on every x86-64 build; executed only where CPUID reports AVX512F + AVX512BW +
// AVX512VPOPCNTDQ with OS support for the ZMM state (Ice Lake, Sapphire Rapids, Zen 4...).
#pragma once

#include <algorithm>
#include <cstdint>

#include "bgemm/micro.h"

#if LOWBIT_X86_PATHS
namespace lowbit {
namespace bgemm_detail {

template <int MR, int NV>
LOWBIT_TARGET_AVX512 void micro_avx512(const uint64_t* __restrict ap,
                                       const uint64_t* __restrict bp, int64_t kc, int64_t nq,
                                       int64_t bstride, int32_t* c, int64_t ldc, int mr,
                                       int64_t ncols, bool first) {
  constexpr int NR = 8 * NV;
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
    __m512i acc[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_si512();
    for (int64_t w = 0; w < kc; ++w) {
      __m512i bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_si512(bp + w * NR + 8 * v);
      for (int i = 0; i < MR; ++i) {
        const __m512i a = _mm512_set1_epi64(static_cast<long long>(ap[w * MR + i]));
        for (int v = 0; v < NV; ++v)
          acc[i][v] = _mm512_add_epi64(acc[i][v], _mm512_popcnt_epi64(_mm512_xor_si512(a, bv[v])));
      }
    }
    const int nr = static_cast<int>(std::min<int64_t>(NR, ncols - q * NR));
    if (mr == MR && nr == NR) {
      for (int i = 0; i < MR; ++i)
        for (int v = 0; v < NV; ++v) {
          auto* p = reinterpret_cast<__m256i*>(c + i * ldc + 8 * v);
          const __m256i counts = _mm512_cvtepi64_epi32(acc[i][v]);
          _mm256_storeu_si256(p, first ? counts : _mm256_add_epi32(_mm256_loadu_si256(p), counts));
        }
    } else {  // tail tile: spill the counts, the shared scalar epilogue writes the valid part
      alignas(64) uint64_t counts[MR][NR];
      for (int i = 0; i < MR; ++i)
        for (int v = 0; v < NV; ++v) _mm512_store_si512(&counts[i][8 * v], acc[i][v]);
      store_counts<MR, NR>(counts, c, ldc, mr, nr, first);
    }
  }
}

}  // namespace bgemm_detail
}  // namespace lowbit
#endif  // LOWBIT_X86_PATHS
