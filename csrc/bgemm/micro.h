// bgemm micro-kernels: the common contract and the portable (plain C++) kernel.
//
// The maths.  Rows a (of A) and b (of B) hold K values in {-1, +1}, packed as bits (bit 1 =
// +1).  For one position, a_i * b_i = +1 when the bits agree and -1 when they differ, i.e.
// a_i * b_i = 1 - 2 * (bit_a XOR bit_b).  Summed over the K positions:
//     dot(a, b) = K - 2 * popcount(a XOR b)
// where popcount runs over all ceil(K/64) words.  The pad bits past K are 0 in *both*
// operands, so their XOR is 0 and they add nothing: no mask is needed for K % 64 != 0.
//
// Register blocking.  A micro-kernel computes an MR x NR tile of C.  Its operands are
// packed panels (bgemm.h): ap = (kc, MR) words, bp = (kc, NR) words, so the words for one K
// position of all MR rows (NR columns) are adjacent.  Each step loads MR + NR words and does
// MR * NR XOR-popcount-adds: every loaded word is reused NR (MR) times from a register.
//
// Contract: c points at C[m0][n0] (row stride ldc); only the first mr <= MR rows and
// nr <= NR columns are written (tails: the panels are zero-padded, the extra results are
// dropped).  first = true writes C = K - 2 * popcount (first K block); false subtracts
// 2 * popcount from what is there (later K blocks).
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/target.h"

namespace lowbit {
namespace bgemm_detail {

using MicroFn = void (*)(const uint64_t* ap, const uint64_t* bp, int64_t kc, int64_t nq,
                         int64_t bstride, int32_t* c, int64_t ldc, int mr, int64_t ncols,
                         int32_t k, bool first);

// Shared epilogue for kernels whose accumulators are plain integers.
template <int MR, int NR>
inline void store_tile(const uint64_t (&acc)[MR][NR], int32_t* c, int64_t ldc, int mr, int nr,
                       int32_t k, bool first) {
  if (mr == MR && nr == NR) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) {
        const int32_t twice = 2 * static_cast<int32_t>(acc[i][j]);
        c[i * ldc + j] = first ? k - twice : c[i * ldc + j] - twice;
      }
    return;
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) {
      const int32_t twice = 2 * static_cast<int32_t>(acc[i][j]);
      c[i * ldc + j] = first ? k - twice : c[i * ldc + j] - twice;
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
// popcount_swar (multiply, shift) is hoisted out of the K loop: the per-byte counts (<= 8
// per word) are added as bytes for up to 31 words (<= 248, no carry between bytes), then
// summed once.  2 x 2 tile: 4 byte accumulators + 4 operands + 3 masks fit the 15 usable
// registers of baseline x86-64.
template <int MR, int NR>
void micro_portable(const uint64_t* __restrict ap, const uint64_t* __restrict bp, int64_t kc,
                    int64_t nq, int64_t bstride, int32_t* c, int64_t ldc, int mr, int64_t ncols, int32_t k, bool first) {
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += NR) {
  const int nr = static_cast<int>(std::min<int64_t>(NR, ncols - q * NR));
  const uint64_t m1 = 0x5555555555555555ULL, m2 = 0x3333333333333333ULL,
                 m4 = 0x0F0F0F0F0F0F0F0FULL;
  uint64_t acc[MR][NR] = {};
  for (int64_t w0 = 0; w0 < kc; w0 += 31) {
    const int64_t w1 = std::min<int64_t>(kc, w0 + 31);
    uint64_t bytes[MR][NR] = {};
    for (int64_t w = w0; w < w1; ++w) {
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) {
          uint64_t x = ap[w * MR + i] ^ bp[w * NR + j];
          x = x - ((x >> 1) & m1);
          x = (x & m2) + ((x >> 2) & m2);
          bytes[i][j] += (x + (x >> 4)) & m4;
        }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += sum_bytes(bytes[i][j]);
  }
  store_tile<MR, NR>(acc, c, ldc, mr, nr, k, first);
  }
}

}  // namespace bgemm_detail
}  // namespace lowbit
