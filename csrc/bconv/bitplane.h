// Bit planes of unsigned 8-bit levels: x (rows, k) uint8 -> (rows, bits, ceil(k/64)) uint64,
// plane n = bit n of each level, packed along k like bitpack (element j*64 + i is bit i of
// word j, pad bits 0).  Input of the bit-plane products (bconv.h: kPlanesBinary for BNN's
// first layer on 8-bit pixels, kPlanesPlanes for DoReFa k-bit activations).  Levels must be
// < 2^bits (the Python wrapper checks); higher bits are ignored here.
//
// Paths: portable (shift and mask per element); avx2 (shift the bytes so bit n is each
// byte's sign bit, then VPMOVMSKB: 32 elements per 2 ops and plane); avx512 (VPTESTMB
// against 1 << n writes 64 mask bits in one op).  Only whole 64-element words use SIMD.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "common/target.h"
#include "common/threads.h"

namespace lowbit {
namespace bitplane_detail {

inline uint64_t plane_word_portable(const uint8_t* x, int64_t n, int bit) {
  uint64_t w = 0;
  for (int64_t i = 0; i < n; ++i) w |= static_cast<uint64_t>((x[i] >> bit) & 1) << i;
  return w;
}

// One row: x[0..k) -> out (bits, words).
inline void planes_row_portable(const uint8_t* x, int64_t k, int bits, uint64_t* out) {
  const int64_t words = (k + 63) / 64;
  for (int b = 0; b < bits; ++b)
    for (int64_t w = 0; w < words; ++w)
      out[b * words + w] = plane_word_portable(x + w * 64, std::min<int64_t>(64, k - w * 64), b);
}

#if LOWBIT_X86_PATHS
LOWBIT_TARGET_AVX2 inline void planes_row_avx2(const uint8_t* x, int64_t k, int bits, uint64_t* out) {
  const int64_t words = (k + 63) / 64, full = k / 64;
  for (int64_t w = 0; w < full; ++w) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + w * 64));
    const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + w * 64 + 32));
    for (int b = 0; b < bits; ++b) {
      // 16-bit shifts by 7 - b put bit b of both bytes of a lane on bit 7 / bit 15, the
      // bytes' sign bits; bits carried from the low byte land below bit 15.
      const __m128i sh = _mm_cvtsi32_si128(7 - b);
      const uint64_t m0 = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_sll_epi16(lo, sh)));
      const uint64_t m1 = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_sll_epi16(hi, sh)));
      out[b * words + w] = m0 | (m1 << 32);
    }
  }
  if (k % 64)
    for (int b = 0; b < bits; ++b)
      out[b * words + full] = plane_word_portable(x + full * 64, k % 64, b);
}

LOWBIT_TARGET_AVX512 inline void planes_row_avx512(const uint8_t* x, int64_t k, int bits, uint64_t* out) {
  const int64_t words = (k + 63) / 64, full = k / 64;
  for (int64_t w = 0; w < full; ++w) {
    const __m512i v = _mm512_loadu_si512(x + w * 64);
    for (int b = 0; b < bits; ++b)
      out[b * words + w] = _mm512_test_epi8_mask(v, _mm512_set1_epi8(static_cast<char>(1 << b)));
  }
  if (k % 64)
    for (int b = 0; b < bits; ++b)
      out[b * words + full] = plane_word_portable(x + full * 64, k % 64, b);
}
#endif

using PlanesRowFn = void (*)(const uint8_t*, int64_t, int, uint64_t*);

inline PlanesRowFn find_planes(const std::string& path) {
#if LOWBIT_X86_PATHS
  if (path == "avx2") return &planes_row_avx2;
  if (path == "avx512") return &planes_row_avx512;
#endif
  if (runs_portable_helpers(path)) return &planes_row_portable;
  return nullptr;
}

}  // namespace bitplane_detail

// x (rows, k) uint8 -> out (rows, bits, ceil(k/64)) uint64.  Caller checked path and bits
// in 1..8.
inline void pack_bitplanes(const uint8_t* x, int64_t rows, int64_t k, int bits, uint64_t* out,
                           const std::string& path, int threads) {
  const auto fn = bitplane_detail::find_planes(path);
  const int64_t per_row = bits * ((k + 63) / 64);
  parallel_for(rows, threads_for(threads, rows * k * bits, int64_t{1} << 17),
               [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) fn(x + r * k, k, bits, out + r * per_row);
  });
}

}  // namespace lowbit
