// Nibble look-up XNOR-popcount micro-kernel for AVX2 CPUs ("nlut-2x64"), and its packers.
//
// Why another AVX2 kernel.  The scalar popcnt kernel (bgemm/micro_avx2.h) spends 3 integer
// ops per 64-bit word pair (XOR, POPCNT, ADD) and tops out at ~150 binary GMAC/s on Zen 1,
// its 4 integer ALUs.  The vector pipes are idle meanwhile.  Mula's nibble look-up (the
// "lut" bgemm variant) spends 8 vector ops per 4 word pairs because it XORs, splits nibbles
// and counts for every pair.  Here the XOR and the nibble split are moved out of the hot loop:
//
//   popcount(a XOR w) summed over K bits = sum over nibbles of popcount(a_nib XOR w_nib),
//
// and for a fixed activation nibble a_nib the map w_nib -> popcount(a_nib XOR w_nib) is a
// 16-entry table, i.e. one VPSHUFB control-free look-up: VPSHUFB(table(a_nib), w_nibbles)
// returns popcount(a_nib XOR w_nib) for 16 weight nibbles at once (16 output channels).
//
// Layouts (K is walked one *byte* of the packed row per step s, s = 0 .. 8*kc-1):
//   * weights (B), resident (packed once per layer, 1 bit per weight): "byte-transposed
//     bits": per panel of 64 output channels, per K word k, per byte j < 8 of the word,
//     64 bytes = byte j of word k of channels p*64 + 0 .. p*64 + 63 (channels past N: 0),
//     i.e. 8 * 64 bytes per word per panel (kNlutBResidentBytesPerWord);
//   * weights (B), micro layout (what the micro-kernel reads): for each step s and each
//     group g of 16 output channels, 32 bytes: bytes 0..15 = low nibble of byte s of channels
//     g*16 .. g*16+15, bytes 16..31 = high nibble of the same bytes (one nibble per byte: 2x
//     the bits).  It is never resident: the driver (driver.h xgemm) expands each L1 block of
//     B panels x K words into it in a per-thread scratch right before the micro-kernel runs
//     on the block (expand_b_nlut, GotoBLAS-style packing of B per cache block), so the
//     expansion (2 bytes written per resident byte) is shared by all rows of a row chunk;
//   * activations (A), packed per panel of P = 2 rows: per step, per row, the uint16 offset
//     32 * (byte s of the row) into kNibbleLut;
//   * kNibbleLut[v] (32 bytes) = {popcount(i XOR (v & 15)) for i < 16,
//                                 popcount(i XOR (v >> 4)) for i < 16}:
//     the low 128-bit lane serves the low nibble of the activation byte, the high lane the
//     high nibble, matching the two lanes of the weight vector.
// One step for a tile of 2 rows x 64 channels: 2 table loads, 4 weight-vector loads,
// 8 VPSHUFB + 8 VPADDB on 256-bit registers = 1024 binary MACs.  Each byte lane of an
// accumulator is one (row, channel, nibble parity) count, <= 4 per step, so bytes are
// flushed to 16-bit sums every 63 steps (63 * 4 = 252 < 256); within one K block of
// kc <= 1023 words the 16-bit sums stay < 2^16 (8 * 8 * 1023 = 65472).
//
// Pad bits: the packed operands' pad bits are 0 in both, so their nibbles add
// popcount(0 XOR 0) = 0.  Rows past the end (tails) are packed as 0 bytes; their results are
// dropped by the micro-kernel contract (bgemm/micro.h).
//
// Measured on the development machine (AMD EPYC Zen 1, 2.2 GHz): a register-only loop of
// VPSHUFB + VPADDB reaches ~260 binary GMAC/s, the full 2x64 step ~200 GMAC/s from L1,
// versus ~150 for the popcnt kernel.  The expanded weight panel of one K block is kept in L1
// (kc <= 24 words: 24 KiB per 64 channels), the activation stream is 4 bytes per step.  GCC's
// register allocation of the intrinsics loop costs ~30% (it copies every accumulator once
// per step), so the native build runs the same loop written in inline assembly; SIMDe test
// builds (LOWBIT_SIMDE) run the intrinsics twin, which the emulation test checks.
#pragma once

#include <algorithm>
#include <cstdint>

#include "bgemm/micro.h"
#include "common/target.h"

namespace lowbit {
namespace bconv_detail {

struct NibbleLut {
  alignas(64) uint8_t t[256][32];
  constexpr NibbleLut() : t() {
    for (int v = 0; v < 256; ++v)
      for (int i = 0; i < 16; ++i) {
        const int lo = i ^ (v & 15), hi = i ^ (v >> 4);
        t[v][i] = static_cast<uint8_t>((lo & 1) + ((lo >> 1) & 1) + ((lo >> 2) & 1) + (lo >> 3));
        t[v][16 + i] = static_cast<uint8_t>((hi & 1) + ((hi >> 1) & 1) + ((hi >> 2) & 1) + (hi >> 3));
      }
  }
};
inline constexpr NibbleLut kNibbleLut{};

constexpr int kNlutP = 2;             // rows per tile
constexpr int kNlutG = 4;             // groups of 16 channels per tile
constexpr int kNlutNR = 16 * kNlutG;  // 64 channels per tile
// Bytes of the micro layout of B per K word per panel of 64 channels: 8 steps x 4 groups x
// 32 bytes (the expanded scratch; 2 bits per weight).
constexpr int kNlutBBytesPerWord = 8 * kNlutG * 32;
// Bytes of the resident layout of B per K word per panel: 8 bytes x 64 channels (1 bit per
// weight).
constexpr int kNlutBResidentBytesPerWord = 8 * kNlutNR;
// Bytes of packed A per K word per panel of 2 rows: 8 steps x 2 rows x uint16.
constexpr int kNlutABytesPerWord = 8 * kNlutP * 2;

// B: src (N, W) words -> dst resident panels (ceil(N/64), W, 8, 64) bytes: dst byte
// ((p * W + k) * 8 + j) * 64 + c = byte j of word k of channel p*64 + c.  Portable C++
// (weights are packed once per layer).
inline void pack_b_nlut(const uint64_t* src, int64_t N, int64_t W, uint64_t* dst_words) {
  auto* dst = reinterpret_cast<uint8_t*>(dst_words);
  const int64_t np = (N + kNlutNR - 1) / kNlutNR;
  for (int64_t p = 0; p < np; ++p)
    for (int64_t k = 0; k < W; ++k) {
      uint8_t* d = dst + (p * W + k) * kNlutBResidentBytesPerWord;
      for (int c = 0; c < kNlutNR; ++c) {
        const int64_t row = p * kNlutNR + c;
        const uint64_t word = row < N ? src[row * W + k] : 0;
        for (int j = 0; j < 8; ++j) d[j * kNlutNR + c] = static_cast<uint8_t>(word >> (8 * j));
      }
    }
}

#if LOWBIT_X86_PATHS
// Resident B -> micro layout for one cache block: src = panel b0, word k0 of the resident
// layout, src_stride words between resident panels; dst = `panels` micro panels of kn words
// each (kn * kNlutBBytesPerWord bytes apart, contiguous).  Per 16 resident bytes (byte j of
// one word of a group of 16 channels): one 128-bit broadcast load [x | x], a variable shift
// by [0 | 4] bits per 32-bit lane, AND 0x0f -> [low nibbles | high nibbles], one 32-byte
// store: no cross-lane shuffle.  The intrinsics also build under SIMDe (LOWBIT_SIMDE).
LOWBIT_TARGET_AVX2 inline void expand_b_nlut(const uint64_t* src, int64_t src_stride,
                                             int64_t panels, int64_t kn, uint64_t* dst) {
  const __m256i shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  for (int64_t q = 0; q < panels; ++q) {
    const auto* s = reinterpret_cast<const __m128i*>(src + q * src_stride);
    auto* d = reinterpret_cast<__m256i*>(dst) + q * kn * (kNlutBBytesPerWord / 32);
    // 32 resident 16-byte groups per word (8 bytes j x 4 channel groups g) map in order to
    // 32 micro 32-byte vectors (step j, group g): the same index i = j * 4 + g.
    for (int64_t i = 0; i < kn * 32; ++i) {
      const __m256i x = _mm256_broadcastsi128_si256(_mm_loadu_si128(s + i));
      _mm256_storeu_si256(d + i, _mm256_and_si256(_mm256_srlv_epi32(x, shift), low4));
    }
  }
}

// A: rows (2, kn) words (row-major, row i at rows + i*kn) -> dst (8*kn, 2) uint16 offsets.
LOWBIT_TARGET_AVX2 inline void pack_a_nlut(const uint64_t* rows, int64_t kn, uint64_t* dst_words) {
  auto* dst = reinterpret_cast<__m256i*>(dst_words);
  for (int64_t w = 0; w < kn; ++w) {
    const __m128i r0 = _mm_cvtsi64_si128(static_cast<long long>(rows[w]));
    const __m128i r1 = _mm_cvtsi64_si128(static_cast<long long>(rows[kn + w]));
    const __m128i x = _mm_unpacklo_epi8(r0, r1);  // r0 byte 0, r1 byte 0, r0 byte 1, ...
    _mm256_storeu_si256(dst + w, _mm256_slli_epi16(_mm256_cvtepu8_epi16(x), 5));
  }
}

// 16-bit sums += (low lane + high lane) of a byte accumulator (16 channels).
LOWBIT_TARGET_AVX2 static inline void nlut_flush(__m256i acc, uint16_t* wide) {
  const __m256i s = _mm256_add_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(acc)),
                                     _mm256_cvtepu8_epi16(_mm256_extracti128_si256(acc, 1)));
  auto* p = reinterpret_cast<__m256i*>(wide);
  _mm256_store_si256(p, _mm256_add_epi16(_mm256_load_si256(p), s));
}

// n >= 1 steps of the 2 x 64 tile: acc[i*4 + g] += VPSHUFB(lut[a[2s+i]], b[4s+g]).
LOWBIT_TARGET_AVX2 static inline void nlut_steps(const uint16_t* a, const uint8_t* b, int64_t n,
                                                 uint8_t (*accm)[32]) {
#if defined(LOWBIT_SIMDE) || !(defined(__GNUC__) || defined(__clang__))
  const auto* tab = reinterpret_cast<const uint8_t*>(kNibbleLut.t);
  __m256i acc[8];
  for (auto& v : acc) v = _mm256_setzero_si256();
  for (int64_t s = 0; s < n; ++s) {
    const __m256i t0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(tab + a[2 * s]));
    const __m256i t1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(tab + a[2 * s + 1]));
    for (int g = 0; g < 4; ++g) {
      const __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 * s + 32 * g));
      acc[g] = _mm256_add_epi8(acc[g], _mm256_shuffle_epi8(t0, idx));
      acc[4 + g] = _mm256_add_epi8(acc[4 + g], _mm256_shuffle_epi8(t1, idx));
    }
  }
  for (int i = 0; i < 8; ++i) _mm256_store_si256(reinterpret_cast<__m256i*>(accm[i]), acc[i]);
#else
  // The loop above, register-allocated by hand: ymm0-7 accumulators (row-major 2 x 4),
  // ymm8-11 weight vectors, ymm12-13 tables, ymm14-15 products.
  const uint8_t* tab = &kNibbleLut.t[0][0];
  __asm__ volatile(
      "vpxor %%ymm0, %%ymm0, %%ymm0\n\t"
      "vpxor %%ymm1, %%ymm1, %%ymm1\n\t"
      "vpxor %%ymm2, %%ymm2, %%ymm2\n\t"
      "vpxor %%ymm3, %%ymm3, %%ymm3\n\t"
      "vpxor %%ymm4, %%ymm4, %%ymm4\n\t"
      "vpxor %%ymm5, %%ymm5, %%ymm5\n\t"
      "vpxor %%ymm6, %%ymm6, %%ymm6\n\t"
      "vpxor %%ymm7, %%ymm7, %%ymm7\n\t"
      "1:\n\t"
      "movzwl (%[a]), %%eax\n\t"
      "movzwl 2(%[a]), %%edx\n\t"
      "vmovdqa (%[tab],%%rax), %%ymm12\n\t"
      "vmovdqa (%[tab],%%rdx), %%ymm13\n\t"
      "vmovdqu (%[b]), %%ymm8\n\t"
      "vmovdqu 32(%[b]), %%ymm9\n\t"
      "vmovdqu 64(%[b]), %%ymm10\n\t"
      "vmovdqu 96(%[b]), %%ymm11\n\t"
      "vpshufb %%ymm8, %%ymm12, %%ymm14\n\t"
      "vpaddb %%ymm14, %%ymm0, %%ymm0\n\t"
      "vpshufb %%ymm9, %%ymm12, %%ymm15\n\t"
      "vpaddb %%ymm15, %%ymm1, %%ymm1\n\t"
      "vpshufb %%ymm8, %%ymm13, %%ymm14\n\t"
      "vpaddb %%ymm14, %%ymm4, %%ymm4\n\t"
      "vpshufb %%ymm9, %%ymm13, %%ymm15\n\t"
      "vpaddb %%ymm15, %%ymm5, %%ymm5\n\t"
      "vpshufb %%ymm10, %%ymm12, %%ymm14\n\t"
      "vpaddb %%ymm14, %%ymm2, %%ymm2\n\t"
      "vpshufb %%ymm11, %%ymm12, %%ymm12\n\t"
      "vpaddb %%ymm12, %%ymm3, %%ymm3\n\t"
      "vpshufb %%ymm10, %%ymm13, %%ymm15\n\t"
      "vpaddb %%ymm15, %%ymm6, %%ymm6\n\t"
      "vpshufb %%ymm11, %%ymm13, %%ymm13\n\t"
      "vpaddb %%ymm13, %%ymm7, %%ymm7\n\t"
      "add $4, %[a]\n\t"
      "add $128, %[b]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "vmovdqa %%ymm0, (%[m])\n\t"
      "vmovdqa %%ymm1, 32(%[m])\n\t"
      "vmovdqa %%ymm2, 64(%[m])\n\t"
      "vmovdqa %%ymm3, 96(%[m])\n\t"
      "vmovdqa %%ymm4, 128(%[m])\n\t"
      "vmovdqa %%ymm5, 160(%[m])\n\t"
      "vmovdqa %%ymm6, 192(%[m])\n\t"
      "vmovdqa %%ymm7, 224(%[m])\n\t"
      : [a] "+r"(a), [b] "+r"(b), [n] "+r"(n)
      : [tab] "r"(tab), [m] "r"(&accm[0][0])
      : "rax", "rdx", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
        "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
#endif
}

// MicroFn contract (bgemm/micro.h), with this file's layouts: ap = (8*kc, 2) uint16, bp =
// panels of the micro layout (8*kc, 4, 32) bytes, bstride words apart (the expanded scratch
// of expand_b_nlut, not the resident weights).  kc counts 64-bit K words.  No alignment
// is required of ap / bp (packed weights may live in a numpy array).
LOWBIT_TARGET_AVX2 inline void micro_avx2_nlut(const uint64_t* __restrict ap,
                                               const uint64_t* __restrict bp, int64_t kc,
                                               int64_t nq, int64_t bstride, int32_t* c,
                                               int64_t ldc, int mr, int64_t ncols, bool first) {
  const auto* a = reinterpret_cast<const uint16_t*>(ap);
  const int64_t steps = 8 * kc;
  for (int64_t q = 0; q < nq; ++q, bp += bstride, c += kNlutNR) {
    const auto* b = reinterpret_cast<const uint8_t*>(bp);
    alignas(32) uint16_t wide[kNlutP][kNlutNR] = {};
    alignas(32) uint8_t accm[8][32];
    for (int64_t s0 = 0; s0 < steps; s0 += 63) {
      const int64_t n = std::min<int64_t>(63, steps - s0);
      nlut_steps(a + 2 * s0, b + 128 * s0, n, accm);
      for (int i = 0; i < kNlutP; ++i)
        for (int g = 0; g < kNlutG; ++g)
          nlut_flush(_mm256_load_si256(reinterpret_cast<const __m256i*>(accm[i * 4 + g])),
                     &wide[i][16 * g]);
    }
    const int nr = static_cast<int>(std::min<int64_t>(kNlutNR, ncols - q * kNlutNR));
    if (mr == kNlutP && nr == kNlutNR) {
      for (int i = 0; i < kNlutP; ++i)
        for (int v = 0; v < kNlutNR / 8; ++v) {
          auto* p = reinterpret_cast<__m256i*>(c + i * ldc + 8 * v);
          const __m256i counts = _mm256_cvtepu16_epi32(
              _mm_load_si128(reinterpret_cast<const __m128i*>(&wide[i][8 * v])));
          _mm256_storeu_si256(p, first ? counts : _mm256_add_epi32(_mm256_loadu_si256(p), counts));
        }
    } else {
      for (int i = 0; i < mr; ++i)
        for (int j = 0; j < nr; ++j)
          c[i * ldc + j] = first ? int32_t{wide[i][j]} : c[i * ldc + j] + int32_t{wide[i][j]};
    }
  }
}
#endif  // LOWBIT_X86_PATHS

}  // namespace bconv_detail
}  // namespace lowbit
