// aarch64 NEON micro-kernels (the "neon" CPU path; every aarch64 CPU has Advanced SIMD, so
// it is always available there).  Contract: bgemm/micro.h (MicroFn).
//
// Per K word w: the NR B words of the panel are NR/2 128-bit registers; each A word is
// broadcast (ld1r) and XORed with them, VCNT counts the bits per byte, UADALP adds byte
// pairs into 16-bit lanes.  3 vector ops per 2 word pairs (portable SWAR: ~10 scalar ops per
// pair).  16-bit lanes hold <= 16 per word, so kc <= 4096 words never overflows (kc_max 512).
// At the end two pairwise widening adds give each column's 64-bit count.
// Masked (ternary sign/mask pairs, bconv/micro_masked.h): (a ^ s) & m, one AND more.
#pragma once

#include <algorithm>
#include <cstdint>

#include "bgemm/micro.h"
#include "common/target.h"

#if LOWBIT_NEON_PATH
#include <arm_neon.h>

namespace lowbit {
namespace bgemm_detail {

template <int MR, int NR>
inline void neon_store(const uint16x8_t (&acc)[MR][NR / 2], int32_t* c, int64_t ldc, int mr,
                       int nr, bool first) {
  uint64_t out[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR / 2; ++j) {
      const uint64x2_t s = vpaddlq_u32(vpaddlq_u16(acc[i][j]));
      out[i][2 * j] = vgetq_lane_u64(s, 0);
      out[i][2 * j + 1] = vgetq_lane_u64(s, 1);
    }
  store_counts<MR, NR>(out, c, ldc, mr, nr, first);
}

template <int MR, int NR>
void micro_neon(const uint64_t* __restrict ap, const uint64_t* __restrict bp, int64_t kc,
                int64_t nq, int64_t bstride, int32_t* c, int64_t ldc, int mr, int64_t ncols,
                bool first) {
  static_assert(NR % 2 == 0, "NR: pairs of words");
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
    uint16x8_t acc[MR][NR / 2];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR / 2; ++j) acc[i][j] = vdupq_n_u16(0);
    for (int64_t w = 0; w < kc; ++w) {
      uint8x16_t b[NR / 2];
      for (int j = 0; j < NR / 2; ++j) b[j] = vreinterpretq_u8_u64(vld1q_u64(bp + w * NR + 2 * j));
      for (int i = 0; i < MR; ++i) {
        const uint8x16_t a = vreinterpretq_u8_u64(vld1q_dup_u64(ap + w * MR + i));
        for (int j = 0; j < NR / 2; ++j) acc[i][j] = vpadalq_u8(acc[i][j], vcntq_u8(veorq_u8(a, b[j])));
      }
    }
    neon_store<MR, NR>(acc, c, ldc, mr, static_cast<int>(std::min<int64_t>(NR, ncols - q * NR)), first);
  }
}

// B panel per K word: NR sign words, then NR mask words (bconv_detail::pack_b_masked).
template <int MR, int NR>
void micro_masked_neon(const uint64_t* __restrict ap, const uint64_t* __restrict bp, int64_t kc,
                       int64_t nq, int64_t bstride, int32_t* c, int64_t ldc, int mr,
                       int64_t ncols, bool first) {
  static_assert(NR % 2 == 0, "NR: pairs of words");
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
    uint16x8_t acc[MR][NR / 2];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR / 2; ++j) acc[i][j] = vdupq_n_u16(0);
    for (int64_t w = 0; w < kc; ++w) {
      uint8x16_t s[NR / 2], m[NR / 2];
      for (int j = 0; j < NR / 2; ++j) {
        s[j] = vreinterpretq_u8_u64(vld1q_u64(bp + w * 2 * NR + 2 * j));
        m[j] = vreinterpretq_u8_u64(vld1q_u64(bp + w * 2 * NR + NR + 2 * j));
      }
      for (int i = 0; i < MR; ++i) {
        const uint8x16_t a = vreinterpretq_u8_u64(vld1q_dup_u64(ap + w * MR + i));
        for (int j = 0; j < NR / 2; ++j)
          acc[i][j] = vpadalq_u8(acc[i][j], vcntq_u8(vandq_u8(veorq_u8(a, s[j]), m[j])));
      }
    }
    neon_store<MR, NR>(acc, c, ldc, mr, static_cast<int>(std::min<int64_t>(NR, ncols - q * NR)), first);
  }
}

}  // namespace bgemm_detail
}  // namespace lowbit
#endif
