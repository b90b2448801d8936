// Masked XOR-popcount micro-kernels for ternary weights (sign plane s, nonzero mask m):
//
//   a . w = sum over m=1 of a_i * (s_i ? +1 : -1) = #agree - #differ over the mask
//         = popcount(m) - 2 * popcount((a XOR s) AND m),
//
// so a tile accumulates count = popcount((a XOR s) AND m) and the finish step (bconv.h,
// kTernaryMasked) computes popcount(m) - 2 * count.  Pad bits: s = m = 0 there, so AND m
// drops them.  Out-of-image taps read a = 0 (activation -1): count += popcount(s AND m),
// i.e. the tap adds -(sum of its ternary weights), the same as binary - one padding
// correction serves both (bconv.h).
//
// Layouts: A as bgemm's word panels (kc, MR); B panels (W, 2, NR): for each K word, NR sign
// words, then NR mask words (pack_b_masked).  MicroFn contract: bgemm/micro.h.
//
// Cost per word pair: XOR, AND, POPCNT, ADD = 4 integer ops (the binary kernel: 3), so the
// scalar POPCNT ceiling is 3/4 of binary; the (u, v) decomposition of kTernary costs 2
// binary products.  AVX-512: VPTERNLOGQ computes (a XOR s) AND m in one op, 3 vector ops per
// 8 pairs, as fast as binary.
#pragma once

#include <algorithm>
#include <cstdint>

#include "bgemm/micro.h"
#include "common/target.h"

namespace lowbit {
namespace bconv_detail {

// src (N, 2, W) words (sign row then mask row of each column) -> panels (ceil(N/NR), W, 2, NR).
inline void pack_b_masked(const uint64_t* src, int64_t N, int64_t W, int nr, uint64_t* dst) {
  const int64_t np = (N + nr - 1) / nr;
  for (int64_t p = 0; p < np; ++p)
    for (int64_t k = 0; k < W; ++k) {
      uint64_t* d = dst + (p * W + k) * 2 * nr;
      for (int j = 0; j < nr; ++j) {
        const int64_t col = p * nr + j;
        d[j] = col < N ? src[col * 2 * W + k] : 0;
        d[nr + j] = col < N ? src[col * 2 * W + W + k] : 0;
      }
    }
}

// Portable: SWAR popcount of (a ^ s) & m, byte counts accumulated for up to 31 words.
template <int MR, int NR>
void micro_masked_portable(const uint64_t* __restrict ap, const uint64_t* __restrict bp,
                           int64_t kc, int64_t nq, int64_t bstride, int32_t* c, int64_t ldc,
                           int mr, int64_t ncols, bool first) {
  const uint64_t m1 = 0x5555555555555555ULL, m2 = 0x3333333333333333ULL,
                 m4 = 0x0F0F0F0F0F0F0F0FULL;
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
    uint64_t acc[MR][NR] = {};
    for (int64_t w0 = 0; w0 < kc; w0 += 31) {
      const int64_t w1 = std::min<int64_t>(kc, w0 + 31);
      uint64_t bytes[MR][NR] = {};
      for (int64_t w = w0; w < w1; ++w)
        for (int j = 0; j < NR; ++j) {
          const uint64_t s = bp[w * 2 * NR + j], m = bp[w * 2 * NR + NR + j];
          for (int i = 0; i < MR; ++i) {
            uint64_t x = (ap[w * MR + i] ^ s) & m;
            x = x - ((x >> 1) & m1);
            x = (x & m2) + ((x >> 2) & m2);
            bytes[i][j] += (x + (x >> 4)) & m4;
          }
        }
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc[i][j] += bgemm_detail::sum_bytes(bytes[i][j]);
    }
    bgemm_detail::store_counts<MR, NR>(acc, c, ldc, mr,
                                       static_cast<int>(std::min<int64_t>(NR, ncols - q * NR)), first);
  }
}

#if LOWBIT_X86_PATHS
// AVX2 CPUs: scalar POPCNT, MR x NR tile of 64-bit accumulators in general registers.
template <int MR, int NR>
LOWBIT_TARGET_AVX2 void micro_masked_popcnt(const uint64_t* __restrict ap,
                                            const uint64_t* __restrict bp, int64_t kc,
                                            int64_t nq, int64_t bstride, int32_t* c,
                                            int64_t ldc, int mr, int64_t ncols, bool first) {
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
    uint64_t acc[MR][NR] = {};
#pragma GCC unroll 4
    for (int64_t w = 0; w < kc; ++w) {
      uint64_t av[MR];
      for (int i = 0; i < MR; ++i) av[i] = ap[w * MR + i];
      for (int j = 0; j < NR; ++j) {
        const uint64_t s = bp[w * 2 * NR + j], m = bp[w * 2 * NR + NR + j];
        for (int i = 0; i < MR; ++i)
          acc[i][j] += static_cast<uint64_t>(_mm_popcnt_u64((av[i] ^ s) & m));
      }
    }
    bgemm_detail::store_counts<MR, NR>(acc, c, ldc, mr,
                                       static_cast<int>(std::min<int64_t>(NR, ncols - q * NR)), first);
  }
}

// AVX-512 VPOPCNTDQ: VPTERNLOGQ (imm 0x28 = (A XOR B) AND C) + VPOPCNTQ + VPADDQ per 8
// pairs; MR rows x NV vectors of 8 columns (6 x 2: 12 accumulators + 4 B + 1 broadcast).
template <int MR, int NV>
LOWBIT_TARGET_AVX512 void micro_masked_avx512(const uint64_t* __restrict ap,
                                              const uint64_t* __restrict bp, int64_t kc,
                                              int64_t nq, int64_t bstride, int32_t* c,
                                              int64_t ldc, int mr, int64_t ncols, bool first) {
  constexpr int NR = 8 * NV;
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
    __m512i acc[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_si512();
    for (int64_t w = 0; w < kc; ++w) {
      __m512i sv[NV], mv[NV];
      for (int v = 0; v < NV; ++v) {
        sv[v] = _mm512_loadu_si512(bp + w * 2 * NR + 8 * v);
        mv[v] = _mm512_loadu_si512(bp + w * 2 * NR + NR + 8 * v);
      }
      for (int i = 0; i < MR; ++i) {
        const __m512i a = _mm512_set1_epi64(static_cast<long long>(ap[w * MR + i]));
        for (int v = 0; v < NV; ++v)
          acc[i][v] = _mm512_add_epi64(
              acc[i][v], _mm512_popcnt_epi64(_mm512_ternarylogic_epi64(a, sv[v], mv[v], 0x28)));
      }
    }
    alignas(64) uint64_t counts[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) _mm512_store_si512(&counts[i][8 * v], acc[i][v]);
    bgemm_detail::store_counts<MR, NR>(counts, c, ldc, mr,
                                       static_cast<int>(std::min<int64_t>(NR, ncols - q * NR)), first);
  }
}
#endif  // LOWBIT_X86_PATHS

}  // namespace bconv_detail
}  // namespace lowbit
