// x86 output stage of a binary layer with packed-bit outputs (bconv.h's finish on the avx2 /
// avx512 paths: kBinary counts -> kBits words), straight from the XOR counts, as
// finish_neon.h does for aarch64 (binary_bits_row_ref there is the reference twin):
//
//   acc_j = (K - c_j) - c_j + corr_j
//   bit_j = (acc_j < lt_j) XOR notflip_j
//
// avx512: 16 channels per compare straight into a mask register (masked loads for a partial
// last group); avx2: 8 channels per compare + movemask.  The generic finish (baseline SSE2:
// an int32 row through memory, then compares and packs) cost ~20 % of binary VGG-small.
#pragma once

#include <cstdint>

#include "bconv/finish_neon.h"  // binary_bits_row_ref
#include "common/target.h"

namespace lowbit {
namespace bconv_detail {

using BitsRowFn = void (*)(const int32_t* cnt, int32_t K, const int32_t* corr, const int32_t* lt,
                           const uint64_t* notflip, int64_t n, uint64_t* out);

#if LOWBIT_X86_PATHS
LOWBIT_TARGET_AVX512 inline void binary_bits_row_avx512(const int32_t* cnt, int32_t K, const int32_t* corr,
                                                        const int32_t* lt, const uint64_t* notflip,
                                                        int64_t n, uint64_t* out) {
#if defined(LOWBIT_SIMDE)  // (SIMDe lacks the masked loads: the emulation test checks avx2's)
  binary_bits_row_ref(cnt, K, corr, lt, notflip, n, out);
#else
  const __m512i vk = _mm512_set1_epi32(K);
  for (int64_t w = 0; w * 64 < n; ++w) {
    uint64_t below = 0;
    for (int q = 0; q < 4; ++q) {
      const int64_t o = 64 * w + 16 * q;
      if (o >= n) break;
      const int64_t m = n - o < 16 ? n - o : 16;
      const __mmask16 k = static_cast<__mmask16>(m == 16 ? 0xFFFF : (1u << m) - 1);
      const __m512i c = _mm512_maskz_loadu_epi32(k, cnt + o);
      __m512i acc = _mm512_sub_epi32(_mm512_sub_epi32(vk, c), c);
      if (corr) acc = _mm512_add_epi32(acc, _mm512_maskz_loadu_epi32(k, corr + o));
      const __mmask16 b = _mm512_mask_cmplt_epi32_mask(k, acc, _mm512_maskz_loadu_epi32(k, lt + o));
      below |= static_cast<uint64_t>(b) << (16 * q);
    }
    const int64_t m = n - 64 * w < 64 ? n - 64 * w : 64;
    const uint64_t valid = m == 64 ? ~uint64_t{0} : (uint64_t{1} << m) - 1;
    out[w] = (below ^ notflip[w]) & valid;
  }
#endif
}

LOWBIT_TARGET_AVX2 inline void binary_bits_row_avx2(const int32_t* cnt, int32_t K, const int32_t* corr,
                                                    const int32_t* lt, const uint64_t* notflip, int64_t n,
                                                    uint64_t* out) {
  const __m256i vk = _mm256_set1_epi32(K);
  int64_t w = 0;
  for (; 64 * w + 64 <= n; ++w) {
    uint64_t below = 0;
    for (int q = 0; q < 8; ++q) {
      const int64_t o = 64 * w + 8 * q;
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cnt + o));
      __m256i acc = _mm256_sub_epi32(_mm256_sub_epi32(vk, c), c);
      if (corr) acc = _mm256_add_epi32(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(corr + o)));
      const __m256i lo = _mm256_cmpgt_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(lt + o)), acc);
      below |= static_cast<uint64_t>(static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(lo)))) << (8 * q);
    }
    out[w] = below ^ notflip[w];
  }
  if (64 * w < n)  // a partial last word: the reference loop
    binary_bits_row_ref(cnt + 64 * w, K, corr ? corr + 64 * w : nullptr, lt + 64 * w, notflip + w, n - 64 * w,
                        out + w);
}
#endif

// The row function of a compiled x86 path, or null (the generic finish).
inline BitsRowFn find_bits_row(const char* path) {
#if LOWBIT_X86_PATHS
  if (path[0] == 'a' && path[1] == 'v' && path[2] == 'x') {
    if (path[3] == '5') return &binary_bits_row_avx512;
    if (path[3] == '2') return &binary_bits_row_avx2;
  }
#endif
  (void)path;
  return nullptr;
}

}  // namespace bconv_detail
}  // namespace lowbit
