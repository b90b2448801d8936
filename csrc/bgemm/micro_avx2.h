// bgemm micro-kernels for AVX2 + POPCNT CPUs (contract and maths: micro.h).
//
// Two ways to count bits on such a CPU, both kept so that the choice can be re-measured:
//
// * popcnt: scalar XOR + POPCNT + ADD on the integer pipes, MR x NR tile of 64-bit
//   accumulators in general registers.  3 integer ops per word pair; Zen 1 has 4 integer
//   ALUs and a 1-cycle POPCNT on each, so the ceiling is 4/3 word pairs = 85 binary MACs
//   per cycle.  2 x 4 needs 8 accumulators + 2 A words + 1 temporary + 2 pointers + a
//   counter: it fits the 15 usable general registers without spills.
//
// * lut: AVX2 nibble look-up (Mula): popcount of each byte = LUT[low nibble] +
//   LUT[high nibble] with VPSHUFB, byte counts added for up to 31 words (<= 248), then
//   VPSADBW folds each 64-bit lane's 8 bytes into a 64-bit sum.  Layout: one A word is
//   broadcast and XORed with 4 consecutive B columns' words, so each 64-bit lane belongs to
//   one output column and VPSADBW leaves exactly the per-column sums (no horizontal
//   reduction).  8 vector ops per 4 word pairs; on Zen 1 a 256-bit op is two 128-bit
//   halves, which makes this ~1 word pair per cycle at best.
//
// Measured on the development machine (AMD EPYC Zen 1): see docs/results.md; the kernel
// table in bgemm.h lists the faster one first for the avx2 path.
#pragma once

#include <algorithm>
#include <cstdint>

#include "bgemm/micro.h"

#if LOWBIT_X86_PATHS
namespace lowbit {
namespace bgemm_detail {

template <int MR, int NR>
LOWBIT_TARGET_AVX2 void micro_avx2_popcnt(const uint64_t* __restrict ap,
                                          const uint64_t* __restrict bp, int64_t kc,
                                          int64_t nq, int64_t bstride, int32_t* c, int64_t ldc, int mr, int64_t ncols,
                                          int32_t k, bool first) {
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
  const int nr = static_cast<int>(std::min<int64_t>(NR, ncols - q * NR));
  uint64_t acc[MR][NR] = {};
#pragma GCC unroll 2
  for (int64_t w = 0; w < kc; ++w) {
    uint64_t av[MR];
    for (int i = 0; i < MR; ++i) av[i] = ap[w * MR + i];
    for (int j = 0; j < NR; ++j) {
      const uint64_t bv = bp[w * NR + j];
      for (int i = 0; i < MR; ++i) acc[i][j] += static_cast<uint64_t>(_mm_popcnt_u64(av[i] ^ bv));
    }
  }
  store_tile<MR, NR>(acc, c, ldc, mr, nr, k, first);
  }
}


// Per-byte popcount of a ^ b (each byte 0..8).
LOWBIT_TARGET_AVX2 static inline __m256i popcount_bytes_avx2(__m256i x, __m256i lut,
                                                             __m256i low) {
  const __m256i lo = _mm256_and_si256(x, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

// MR rows x NV vectors of 4 columns (NR = 4 * NV).
template <int MR, int NV>
LOWBIT_TARGET_AVX2 void micro_avx2_lut(const uint64_t* __restrict ap,
                                       const uint64_t* __restrict bp, int64_t kc, int64_t nq, int64_t bstride, int32_t* c,
                                       int64_t ldc, int mr, int64_t ncols, int32_t k, bool first) {
  constexpr int NR = 4 * NV;
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
  const int nr = static_cast<int>(std::min<int64_t>(NR, ncols - q * NR));
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0F);
  alignas(32) uint64_t acc[MR][NR] = {};
  for (int64_t w0 = 0; w0 < kc; w0 += 31) {
    const int64_t w1 = std::min<int64_t>(kc, w0 + 31);
    __m256i cnt[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) cnt[i][v] = _mm256_setzero_si256();
    for (int64_t w = w0; w < w1; ++w) {
      __m256i bv[NV];
      for (int v = 0; v < NV; ++v)
        bv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + w * NR + 4 * v));
      for (int i = 0; i < MR; ++i) {
        const __m256i a = _mm256_set1_epi64x(static_cast<long long>(ap[w * MR + i]));
        for (int v = 0; v < NV; ++v)
          cnt[i][v] = _mm256_add_epi8(cnt[i][v],
                                      popcount_bytes_avx2(_mm256_xor_si256(a, bv[v]), lut, low));
      }
    }
    const __m256i zero = _mm256_setzero_si256();
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) {
        auto* p = reinterpret_cast<__m256i*>(&acc[i][4 * v]);
        _mm256_store_si256(p, _mm256_add_epi64(_mm256_load_si256(p),
                                               _mm256_sad_epu8(cnt[i][v], zero)));
      }
  }
  store_tile<MR, NR>(acc, c, ldc, mr, nr, k, first);
  }
}


// hybrid: one tile, two engines.  Columns [0, NS) of the tile are counted with scalar
// POPCNT on the integer pipes, columns [NS, NS + 4*NV) with the VPSHUFB look-up on the
// vector pipes; the out-of-order core runs both streams at once.
template <int MR, int NS, int NV>
LOWBIT_TARGET_AVX2 void micro_avx2_hybrid(const uint64_t* __restrict ap,
                                          const uint64_t* __restrict bp, int64_t kc,
                                          int64_t nq, int64_t bstride, int32_t* c, int64_t ldc, int mr, int64_t ncols,
                                          int32_t k, bool first) {
  constexpr int NR = NS + 4 * NV;
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
  const int nr = static_cast<int>(std::min<int64_t>(NR, ncols - q * NR));
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0F);
  alignas(32) uint64_t acc[MR][NR] = {};
  uint64_t sacc[MR][NS] = {};
  for (int64_t w0 = 0; w0 < kc; w0 += 31) {
    const int64_t w1 = std::min<int64_t>(kc, w0 + 31);
    __m256i cnt[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) cnt[i][v] = _mm256_setzero_si256();
    for (int64_t w = w0; w < w1; ++w) {
      uint64_t av[MR];
      for (int i = 0; i < MR; ++i) av[i] = ap[w * MR + i];
      for (int j = 0; j < NS; ++j) {
        const uint64_t bv = bp[w * NR + j];
        for (int i = 0; i < MR; ++i) sacc[i][j] += static_cast<uint64_t>(_mm_popcnt_u64(av[i] ^ bv));
      }
      __m256i bv[NV];
      for (int v = 0; v < NV; ++v)
        bv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + w * NR + NS + 4 * v));
      for (int i = 0; i < MR; ++i) {
        const __m256i a = _mm256_set1_epi64x(static_cast<long long>(av[i]));
        for (int v = 0; v < NV; ++v)
          cnt[i][v] = _mm256_add_epi8(cnt[i][v],
                                      popcount_bytes_avx2(_mm256_xor_si256(a, bv[v]), lut, low));
      }
    }
    const __m256i zero = _mm256_setzero_si256();
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) {
        auto* p = reinterpret_cast<__m256i*>(&acc[i][NS + 4 * v]);
        _mm256_storeu_si256(p, _mm256_add_epi64(_mm256_loadu_si256(p),
                                                _mm256_sad_epu8(cnt[i][v], zero)));
      }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NS; ++j) acc[i][j] = sacc[i][j];
  store_tile<MR, NR>(acc, c, ldc, mr, nr, k, first);
  }
}

}  // namespace bgemm_detail
}  // namespace lowbit
#endif  // LOWBIT_X86_PATHS
