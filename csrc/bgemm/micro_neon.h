// aarch64 NEON micro-kernels (the "neon" CPU path; every aarch64 CPU has Advanced SIMD, so
// it is always available there).  Contract: bgemm/micro.h (MicroFn).
//
// Tile MR x NR = 4 x 8.  Per K word w: the 8 B words of the panel are 4 q-registers b[j]
// (words 2j, 2j+1); each of the 4 A words is broadcast (LD1R) and, against each b[j],
//     x = a XOR b[j]           EOR     (two word pairs)
//     y = VCNT(x)              CNT     (16 byte counts, each <= 8)
//     acc[i][j] += pairs(y)    UADALP  (byte pairs added into 8 u16 lanes)
// so 3 vector ops per 2 word pairs; with the 2 LDP (B) and 4 LD1R (A) loads: 54 instructions
// per 32 word pairs (the portable SWAR kernel: ~13 per pair).  All loops over i, j are fully
// unrolled (#pragma GCC unroll): 16 accumulators + 4 B + 1 A + 1 temporary = 22 of the 32
// q-registers, nothing spills (GCC -O2 does not unroll these loops by itself and kept the
// accumulators of a plain 4 x 4 version in memory: 2.3x more instructions per pair).
//
// Why u16 lanes are safe.  Lane l of acc[i][j] holds bytes 2l, 2l+1 of the counts: lanes
// 0..3 belong to column 2j (its 8 bytes), lanes 4..7 to column 2j+1, and one word adds
// <= 2 * 8 = 16 to a lane.  The store sums each column's 4 lanes with two pairwise adds
// (ADDP), so a column total is <= 64 per word: kc <= 1023 words never overflows u16 (kc_max
// is 512, i.e. <= 32768).
//
// Store.  Row i:  p = ADDP(acc[i][0], acc[i][1]), q = ADDP(acc[i][2], acc[i][3]) hold each
// column as 2 adjacent lanes; r = ADDP(p, q) = the 8 column counts of row i (u16), widened
// to 2 x 4 int32 (UXTL, UXTL2) and stored (first K block) or added (later blocks): 9
// instructions per row, instead of 8 lane moves + 8 scalar stores.
//
// Why not accumulate the VCNT bytes in u8 for up to 31 words and UADALP once: it is one ADD
// instead of one UADALP per vector, the same instruction count, and it needs a second set of
// 16 accumulators (the tile would have to shrink).  On real cores UADALP has a lower
// throughput than ADD, so it may pay there; under qemu (instructions) it cannot.
//
// Masked (ternary sign / mask pairs, bconv/micro_masked.h): (a XOR s) AND m, one AND more:
// 16 accumulators + 4 s + 4 m + A + temporary = 26 registers.
//
// Reference twin: micro_portable (bgemm/micro.h) computes the same counts; kernel_test.cpp
// compares both on word-edge K and partial tiles.
#pragma once

#include <algorithm>
#include <cstdint>

#include "bgemm/micro.h"
#include "common/target.h"

#if LOWBIT_NEON_PATH
#include <arm_neon.h>

namespace lowbit {
namespace bgemm_detail {

constexpr int kNeonMR = 4, kNeonNR = 8;

// acc[i][0..3] (u16 lanes as above) -> the 8 column counts of row i as u16.
inline uint16x8_t neon_row_counts(uint16x8_t a0, uint16x8_t a1, uint16x8_t a2, uint16x8_t a3) {
  return vpaddq_u16(vpaddq_u16(a0, a1), vpaddq_u16(a2, a3));
}

// Counts of a 4 x 8 tile into c (row stride ldc): first = store, else add; only mr rows and
// nr columns (tails: the rest are counts of zero padding, dropped).
inline void neon_store_4x8(const uint16x8_t (&acc)[kNeonMR][kNeonNR / 2], int32_t* c, int64_t ldc,
                           int mr, int nr, bool first) {
  uint16x8_t r[kNeonMR];
#pragma GCC unroll 4
  for (int i = 0; i < kNeonMR; ++i) r[i] = neon_row_counts(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
  if (mr == kNeonMR && nr == kNeonNR) {
#pragma GCC unroll 4
    for (int i = 0; i < kNeonMR; ++i) {
      int32x4_t lo = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(r[i])));
      int32x4_t hi = vreinterpretq_s32_u32(vmovl_high_u16(r[i]));
      int32_t* ci = c + i * ldc;
      if (!first) {
        lo = vaddq_s32(lo, vld1q_s32(ci));
        hi = vaddq_s32(hi, vld1q_s32(ci + 4));
      }
      vst1q_s32(ci, lo);
      vst1q_s32(ci + 4, hi);
    }
    return;
  }
  uint16_t t[kNeonMR][kNeonNR];
  for (int i = 0; i < kNeonMR; ++i) vst1q_u16(t[i], r[i]);
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) c[i * ldc + j] = first ? t[i][j] : c[i * ldc + j] + t[i][j];
}

template <int MR, int NR>
void micro_neon(const uint64_t* __restrict ap, const uint64_t* __restrict bp, int64_t kc,
                int64_t nq, int64_t bstride, int32_t* c, int64_t ldc, int mr, int64_t ncols,
                bool first) {
  static_assert(MR == kNeonMR && NR == kNeonNR, "the NEON tile is 4 x 8");
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
    uint16x8_t acc[MR][NR / 2];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NR / 2; ++j) acc[i][j] = vdupq_n_u16(0);
    const uint64_t* a = ap;
    const uint64_t* b = bp;
    for (int64_t w = 0; w < kc; ++w, a += MR, b += NR) {
      uint8x16_t bv[NR / 2];
#pragma GCC unroll 4
      for (int j = 0; j < NR / 2; ++j) bv[j] = vreinterpretq_u8_u64(vld1q_u64(b + 2 * j));
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) {
        const uint8x16_t av = vreinterpretq_u8_u64(vld1q_dup_u64(a + i));
#pragma GCC unroll 4
        for (int j = 0; j < NR / 2; ++j) acc[i][j] = vpadalq_u8(acc[i][j], vcntq_u8(veorq_u8(av, bv[j])));
      }
    }
    neon_store_4x8(acc, c, ldc, mr, static_cast<int>(std::min<int64_t>(NR, ncols - q * NR)), first);
  }
}

// B panel per K word: NR sign words, then NR mask words (bconv_detail::pack_b_masked).
template <int MR, int NR>
void micro_masked_neon(const uint64_t* __restrict ap, const uint64_t* __restrict bp, int64_t kc,
                       int64_t nq, int64_t bstride, int32_t* c, int64_t ldc, int mr,
                       int64_t ncols, bool first) {
  static_assert(MR == kNeonMR && NR == kNeonNR, "the NEON tile is 4 x 8");
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
    uint16x8_t acc[MR][NR / 2];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NR / 2; ++j) acc[i][j] = vdupq_n_u16(0);
    const uint64_t* a = ap;
    const uint64_t* b = bp;
    for (int64_t w = 0; w < kc; ++w, a += MR, b += 2 * NR) {
      uint8x16_t s[NR / 2], m[NR / 2];
#pragma GCC unroll 4
      for (int j = 0; j < NR / 2; ++j) {
        s[j] = vreinterpretq_u8_u64(vld1q_u64(b + 2 * j));
        m[j] = vreinterpretq_u8_u64(vld1q_u64(b + NR + 2 * j));
      }
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) {
        const uint8x16_t av = vreinterpretq_u8_u64(vld1q_dup_u64(a + i));
#pragma GCC unroll 4
        for (int j = 0; j < NR / 2; ++j)
          acc[i][j] = vpadalq_u8(acc[i][j], vcntq_u8(vandq_u8(veorq_u8(av, s[j]), m[j])));
      }
    }
    neon_store_4x8(acc, c, ldc, mr, static_cast<int>(std::min<int64_t>(NR, ncols - q * NR)), first);
  }
}

// Word A panel (bconv driver's PackAFn) for MR = 4: rows (4, kn) -> (kn, 4).  Two words of
// each row per step: ZIP1 / ZIP2 of rows (0, 1) and (2, 3) give (r0 w, r1 w), (r0 w+1, r1 w+1),
// ... = 8 panel words in 4 loads, 4 zips, 4 stores (the scalar loop: a load and a store per
// word).  Reference twin: bconv_detail::pack_a_words.
inline void pack_a_words_neon4(const uint64_t* rows, int64_t kn, int mr_full, uint64_t* dst) {
  if (mr_full != 4) {  // (the table pairs this packer with 4-row kernels only)
    for (int i = 0; i < mr_full; ++i)
      for (int64_t w = 0; w < kn; ++w) dst[w * mr_full + i] = rows[i * kn + w];
    return;
  }
  const uint64_t *r0 = rows, *r1 = rows + kn, *r2 = rows + 2 * kn, *r3 = rows + 3 * kn;
  int64_t w = 0;
  for (; w + 2 <= kn; w += 2, dst += 8) {
    const uint64x2_t x0 = vld1q_u64(r0 + w), x1 = vld1q_u64(r1 + w);
    const uint64x2_t x2 = vld1q_u64(r2 + w), x3 = vld1q_u64(r3 + w);
    vst1q_u64(dst, vzip1q_u64(x0, x1));
    vst1q_u64(dst + 2, vzip1q_u64(x2, x3));
    vst1q_u64(dst + 4, vzip2q_u64(x0, x1));
    vst1q_u64(dst + 6, vzip2q_u64(x2, x3));
  }
  if (w < kn) {
    dst[0] = r0[w];
    dst[1] = r1[w];
    dst[2] = r2[w];
    dst[3] = r3[w];
  }
}

}  // namespace bgemm_detail
}  // namespace lowbit
#endif
