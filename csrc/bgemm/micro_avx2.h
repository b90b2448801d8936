// bgemm micro-kernels for AVX2 + POPCNT CPUs (contract and maths: micro.h).
//
// Three ways to count on such a CPU; all are kept and tested so the choice can be
// re-measured on another CPU (`lowbit bench bgemm` shows the variant it ran):
//
// * popcnt (default): scalar XOR + POPCNT + ADD on the integer pipes, a 2 x 4 tile of
//   64-bit accumulators in general registers (8 accumulators + 2 A words + temporaries and
//   pointers fit the 15 usable registers without spills).  3 integer ops per word pair:
//   Zen 1 has 4 integer ALUs, each with a 1-cycle POPCNT, so the ceiling is 4/3 word pairs
//   = 85 binary MACs per cycle.  The K loop is unrolled 6x (loop overhead is ALU work too).
//
// * lut: AVX2 nibble look-up (Mula): popcount of a byte = LUT[low nibble] + LUT[high
//   nibble] with VPSHUFB; byte counts are added for up to 31 words (<= 248), then VPSADBW
//   folds each 64-bit lane's 8 bytes into a 64-bit sum.  One A word is broadcast and XORed
//   with 4 consecutive B columns, so each 64-bit lane is one output column and VPSADBW
//   leaves exactly the per-column sums.  8 vector ops per 4 word pairs; Zen 1 executes a
//   256-bit op as two 128-bit halves.
//
// * hybrid: columns [0, 4) of the tile by popcnt, [4, 8) by lut, so that the integer and
//   the vector pipes work at the same time.
//
// On the development machine (AMD EPYC, Zen 1) popcnt and hybrid are within noise of each
// other (~150 binary GMAC/s at ~2 GHz, the measured ceiling of XOR+POPCNT+ADD there) and
// lut is ~25% slower: the front end (~5 macro-ops per cycle sustained), not the ALUs,
// limits hybrid.
// Also tried and dropped: XOR in vectors + POPCNT from memory (store-forwarding bound,
// ~120 GMAC/s); a POPCNT step written in inline asm (no gain); 3x3 / 2x5 / 4x2 tiles;
// AVX2 Harley-Seal carry-save adders over 16-word blocks (equal to popcnt at K = 9216,
// 20-30% slower at K <= 2304, where the blocks do not amortise), alone or next to popcnt;
// the AND form popcount(a ^ b) = popcount(a) + popcount(b) - 2 popcount(a & b) with BMI1's
// non-destructive ANDN (no register copy per pair): 5-10% slower.
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
                                          int64_t nq, int64_t bstride, int32_t* c,
                                          int64_t ldc, int mr, int64_t ncols, bool first) {
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
    uint64_t acc[MR][NR] = {};
#pragma GCC unroll 6
    for (int64_t w = 0; w < kc; ++w) {
      uint64_t av[MR];
      for (int i = 0; i < MR; ++i) av[i] = ap[w * MR + i];
      for (int j = 0; j < NR; ++j) {
        const uint64_t bv = bp[w * NR + j];
        for (int i = 0; i < MR; ++i)
          acc[i][j] += static_cast<uint64_t>(_mm_popcnt_u64(av[i] ^ bv));
      }
    }
    store_counts<MR, NR>(acc, c, ldc, mr, static_cast<int>(std::min<int64_t>(NR, ncols - q * NR)),
                         first);
  }
}

// Per-byte popcount of x (each byte 0..8).
LOWBIT_TARGET_AVX2 static inline __m256i popcount_bytes_avx2(__m256i x, __m256i lut,
                                                             __m256i low) {
  const __m256i lo = _mm256_and_si256(x, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

// MR rows x (NS scalar columns + NV vectors of 4 columns).  NS = 0: pure lut kernel.
template <int MR, int NS, int NV>
LOWBIT_TARGET_AVX2 void micro_avx2_lut(const uint64_t* __restrict ap,
                                       const uint64_t* __restrict bp, int64_t kc, int64_t nq,
                                       int64_t bstride, int32_t* c, int64_t ldc, int mr,
                                       int64_t ncols, bool first) {
  constexpr int NR = NS + 4 * NV;
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
    alignas(32) uint64_t acc[MR][NR] = {};
    uint64_t sacc[MR][NS > 0 ? NS : 1] = {};
    for (int64_t w0 = 0; w0 < kc; w0 += 31) {  // byte counters hold <= 31 * 8 = 248
      const int64_t w1 = std::min<int64_t>(kc, w0 + 31);
      __m256i cnt[MR][NV];
      for (int i = 0; i < MR; ++i)
        for (int v = 0; v < NV; ++v) cnt[i][v] = zero;
      for (int64_t w = w0; w < w1; ++w) {
        uint64_t av[MR];
        for (int i = 0; i < MR; ++i) av[i] = ap[w * MR + i];
        for (int j = 0; j < NS; ++j) {
          const uint64_t bv = bp[w * NR + j];
          for (int i = 0; i < MR; ++i)
            sacc[i][j] += static_cast<uint64_t>(_mm_popcnt_u64(av[i] ^ bv));
        }
        __m256i bv[NV];
        for (int v = 0; v < NV; ++v)
          bv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + w * NR + NS + 4 * v));
        for (int i = 0; i < MR; ++i) {
          const __m256i a = _mm256_set1_epi64x(static_cast<long long>(av[i]));
          for (int v = 0; v < NV; ++v)
            cnt[i][v] = _mm256_add_epi8(
                cnt[i][v], popcount_bytes_avx2(_mm256_xor_si256(a, bv[v]), lut, low));
        }
      }
      for (int i = 0; i < MR; ++i)
        for (int v = 0; v < NV; ++v) {
          auto* p = reinterpret_cast<__m256i*>(&acc[i][NS + 4 * v]);
          _mm256_storeu_si256(p, _mm256_add_epi64(_mm256_loadu_si256(p),
                                                  _mm256_sad_epu8(cnt[i][v], zero)));
        }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NS; ++j) acc[i][j] = sacc[i][j];
    store_counts<MR, NR>(acc, c, ldc, mr, static_cast<int>(std::min<int64_t>(NR, ncols - q * NR)),
                         first);
  }
}

}  // namespace bgemm_detail
}  // namespace lowbit
#endif  // LOWBIT_X86_PATHS
