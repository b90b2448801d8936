// threshold_row: per-channel float thresholds of a row straight to packed bits,
//   bit j = flip[j] ? x[j] <= t[j] : x[j] >= t[j]      (NaN -> 0),
// the sign of a BatchNorm read only by signs (lowbit.codec.fold.fold_float_threshold gives t
// and the direction).  For finite x this is s (x - t) >= 0 with s = -1 where flipped: the
// float32 difference x - t has the sign of the exact difference and is 0 only when x = t.
// Row layout and pad bits as bitpack.h (c channels -> ceil(c/64) words, pad bits 0).
// Paths: portable (a plain loop), avx2 (two compares + movemask per 8 channels), avx512
// (two compares into mask registers per 16 channels; masked loads for the tail), neon
// (threshold_neon.h).
#pragma once

#include <cstdint>
#include <string>

#include "common/target.h"
#include "bitpack/threshold_neon.h"

namespace lowbit {
namespace threshold_detail {

// flipw: ceil(c/64) words, bit j of word w = flip of channel 64 w + j.
using ThresholdRowFn = void (*)(const float* x, const float* t, const uint64_t* flipw, int64_t c,
                                uint64_t* out);

inline uint64_t threshold_bits_portable(const float* x, const float* t, uint64_t flip, int64_t n) {
  uint64_t bits = 0;
  for (int64_t j = 0; j < n; ++j) {
    const bool f = (flip >> j) & 1;
    bits |= static_cast<uint64_t>(f ? x[j] <= t[j] : x[j] >= t[j]) << j;
  }
  return bits;
}

inline void threshold_row_portable(const float* x, const float* t, const uint64_t* flipw, int64_t c,
                                   uint64_t* out) {
  for (int64_t w = 0; w * 64 < c; ++w) {
    const int64_t n = c - w * 64 < 64 ? c - w * 64 : 64;
    out[w] = threshold_bits_portable(x + w * 64, t + w * 64, flipw[w], n);
  }
}

#if LOWBIT_X86_PATHS
LOWBIT_TARGET_AVX2 static inline void threshold_row_avx2(const float* x, const float* t,
                                                         const uint64_t* flipw, int64_t c,
                                                         uint64_t* out) {
  for (int64_t w = 0; w * 64 < c; ++w) {
    const int64_t n = c - w * 64 < 64 ? c - w * 64 : 64;
    uint64_t ge = 0, le = 0;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      const __m256 a = _mm256_loadu_ps(x + w * 64 + j), b = _mm256_loadu_ps(t + w * 64 + j);
      ge |= static_cast<uint64_t>(static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GE_OQ)))) << j;
      le |= static_cast<uint64_t>(static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_LE_OQ)))) << j;
    }
    const uint64_t f = flipw[w];
    uint64_t bits = (ge & ~f) | (le & f);
    if (j < n) bits |= threshold_bits_portable(x + w * 64 + j, t + w * 64 + j, f >> j, n - j) << j;
    out[w] = bits;
  }
}

LOWBIT_TARGET_AVX512 static inline void threshold_row_avx512(const float* x, const float* t,
                                                             const uint64_t* flipw, int64_t c,
                                                             uint64_t* out) {
  for (int64_t w = 0; w * 64 < c; ++w) {
    const int64_t n = c - w * 64 < 64 ? c - w * 64 : 64;
    uint64_t ge = 0, le = 0;
    for (int64_t j = 0; j < n; j += 16) {
      const int64_t m = n - j < 16 ? n - j : 16;
      const __mmask16 k = static_cast<__mmask16>(m == 16 ? 0xFFFF : (1u << m) - 1);
      const __m512 a = _mm512_maskz_loadu_ps(k, x + w * 64 + j), b = _mm512_maskz_loadu_ps(k, t + w * 64 + j);
      ge |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(k, a, b, _CMP_GE_OQ)) << j;
      le |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(k, a, b, _CMP_LE_OQ)) << j;
    }
    const uint64_t f = flipw[w];
    out[w] = (ge & ~f) | (le & f);
  }
}

LOWBIT_TARGET_AVX2 inline void threshold_row_avx2_fn(const float* x, const float* t, const uint64_t* f,
                                                     int64_t c, uint64_t* o) {
  threshold_row_avx2(x, t, f, c, o);
}
LOWBIT_TARGET_AVX512 inline void threshold_row_avx512_fn(const float* x, const float* t, const uint64_t* f,
                                                         int64_t c, uint64_t* o) {
  threshold_row_avx512(x, t, f, c, o);
}
#endif

// The row function of a compiled path (the caller checked the CPU runs it).
inline ThresholdRowFn find_threshold(const std::string& path) {
#if LOWBIT_NEON_PATH
  if (path == "neon") return &threshold_row_neon;  // threshold_neon.h
#endif
#if LOWBIT_X86_PATHS
  if (path == "avx2") return &threshold_row_avx2_fn;
  if (path == "avx512") return &threshold_row_avx512_fn;
#endif
  if (path == "portable" || path == "avx2" || path == "avx512" || runs_portable_helpers(path))
    return &threshold_row_portable;
  return nullptr;
}

}  // namespace threshold_detail
}  // namespace lowbit
