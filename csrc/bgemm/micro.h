// bgemm micro-kernels: the common contract and the portable (plain C++) kernel.
//
// The maths.  Rows a (of A) and b (of B) hold K values in {-1, +1}, packed as bits (bit 1 =
// +1).  At one position a_i * b_i = +1 when the bits agree and -1 when they differ, i.e.
// a_i * b_i = 1 - 2 * (bit_a XOR bit_b).  Summed over the K positions:
//     dot(a, b) = K - 2 * popcount(a XOR b)
// with popcount over all ceil(K/64) words.  The pad bits past K are 0 in *both* operands,
// so their XOR is 0 and adds nothing: no mask is needed for K % 64 != 0.
//
// Register blocking.  A micro-kernel computes MR x NR tiles of popcount(a XOR b).  Its
// operands are packed panels (bgemm.h): ap = (kc, MR) words, bp = (kc, NR) words, so the
// words at one K position of all MR rows (NR columns) are adjacent.  Each K step loads MR +
// NR words and does MR * NR XOR-popcount-adds: each loaded word is reused NR (MR) times
// from a register.
//
// Contract (MicroFn): one A panel against nq consecutive B panels (bstride words apart),
// writing the tiles left to right from c = &C[m0][n0] (row stride ldc).  Only the first
// mr <= MR rows and the first ncols columns are written (tails: the panels are zero-padded
// and the extra results are dropped).  first = true stores the counts (first K block),
// false adds them (later K blocks).  The driver turns counts into K - 2 * count once all
// K blocks are done (bgemm.h, finalize_rows), so the hot loop spends no ALU op on it.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/target.h"

namespace lowbit {
namespace bgemm_detail {

using MicroFn = void (*)(const uint64_t* ap, const uint64_t* bp, int64_t kc, int64_t nq,
                         int64_t bstride, int32_t* c, int64_t ldc, int mr, int64_t ncols,
                         bool first);

// Shared epilogue for kernels whose accumulators are plain integers.
template <int MR, int NR>
inline void store_counts(const uint64_t (&acc)[MR][NR], int32_t* c, int64_t ldc, int mr,
                         int nr, bool first) {
  if (mr == MR && nr == NR) {  // full tile: constant trip counts, unrolled
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) {
        const int32_t v = static_cast<int32_t>(acc[i][j]);
        c[i * ldc + j] = first ? v : c[i * ldc + j] + v;
      }
    return;
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) {
      const int32_t v = static_cast<int32_t>(acc[i][j]);
      c[i * ldc + j] = first ? v : c[i * ldc + j] + v;
    }
}

// Sum of the 8 bytes of x when each byte is <= 248: add byte pairs into 16-bit lanes
// (<= 496 each), then one multiply sums the four lanes into the top 16 bits (<= 1984).
inline uint64_t sum_bytes(uint64_t x) {
  const uint64_t m = 0x00FF00FF00FF00FFULL;
  x = (x & m) + ((x >> 8) & m);
  return (x * 0x0001000100010001ULL) >> 48;
}

// Portable: SWAR popcount in plain C++ (any CPU, no POPCNT instruction).  The last step of
// popcount_swar (multiply + shift) is hoisted out of the K loop: per-byte counts (<= 8 per
// word) are added as bytes for up to 31 words (<= 248, no carry between bytes) and summed
// once.  2 x 2 tile: 4 byte accumulators + 4 operands + 3 masks fit the 15 usable
// registers of baseline x86-64.
template <int MR, int NR>
void micro_portable(const uint64_t* __restrict ap, const uint64_t* __restrict bp, int64_t kc,
                    int64_t nq, int64_t bstride, int32_t* c, int64_t ldc, int mr,
                    int64_t ncols, bool first) {
  const uint64_t m1 = 0x5555555555555555ULL, m2 = 0x3333333333333333ULL,
                 m4 = 0x0F0F0F0F0F0F0F0FULL;
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
    uint64_t acc[MR][NR] = {};
    for (int64_t w0 = 0; w0 < kc; w0 += 31) {
      const int64_t w1 = std::min<int64_t>(kc, w0 + 31);
      uint64_t bytes[MR][NR] = {};
      for (int64_t w = w0; w < w1; ++w)
        for (int i = 0; i < MR; ++i)
          for (int j = 0; j < NR; ++j) {
            uint64_t x = ap[w * MR + i] ^ bp[w * NR + j];
            x = x - ((x >> 1) & m1);                 // 2-bit counts
            x = (x & m2) + ((x >> 2) & m2);          // 4-bit counts
            bytes[i][j] += (x + (x >> 4)) & m4;      // 8-bit counts, accumulated
          }
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc[i][j] += sum_bytes(bytes[i][j]);
    }
    store_counts<MR, NR>(acc, c, ldc, mr, static_cast<int>(std::min<int64_t>(NR, ncols - q * NR)),
                         first);
  }
}

}  // namespace bgemm_detail
}  // namespace lowbit
