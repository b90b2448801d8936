// aarch64 NEON threshold row (the "neon" path of bitpack/threshold.h): per-channel float
// thresholds of a row straight to packed bits,
//   bit j = flip[j] ? x[j] <= t[j] : x[j] >= t[j]      (NaN -> 0).
// Per 16 channels: 4 + 4 loads, 4 FCMGE and 4 FCMGE with swapped operands (x <= t), so two
// lane-mask sets ge and le; each set becomes 16 bits of a word with the narrowing
// "movemask" of bitpack_neon.h (for up to 64 channels at once), and the flips select per bit,
// as the AVX2 kernel does:  bits = (ge AND NOT f) OR (le AND f).  NaN compares false in both.
// Channels past the last whole group of 16 go through the portable loop (the reference
// twin, threshold_bits_portable).  ~2.3 instructions per channel (portable: ~9).
#pragma once

#include <cstdint>

#include "bitpack/bitpack_neon.h"
#include "common/target.h"

#if LOWBIT_NEON_PATH
#include <arm_neon.h>

namespace lowbit {
namespace threshold_detail {

inline uint64_t threshold_bits_portable(const float* x, const float* t, uint64_t flip, int64_t n);  // threshold.h

inline void threshold_row_neon(const float* x, const float* t, const uint64_t* flipw, int64_t c,
                               uint64_t* out) {
  for (int64_t w = 0; w * 64 < c; ++w) {
    const int64_t n = c - w * 64 < 64 ? c - w * 64 : 64, groups = n / 16;
    const float* xw = x + w * 64;
    const float* tw = t + w * 64;
    uint32x4_t ge[16], le[16];
    for (int k = 0; k < 16; ++k) ge[k] = le[k] = vdupq_n_u32(0);
    for (int64_t q = 0; q < 4 * groups; ++q) {
      const float32x4_t a = vld1q_f32(xw + 4 * q), b = vld1q_f32(tw + 4 * q);
      ge[q] = vcgeq_f32(a, b);
      le[q] = vcleq_f32(a, b);
    }
    const uint64_t f = flipw[w];
    uint64_t bits = (neon_bits::mask_word_u32(ge) & ~f) | (neon_bits::mask_word_u32(le) & f);
    const int64_t j = 16 * groups;
    if (j < n) bits |= threshold_bits_portable(xw + j, tw + j, f >> j, n - j) << j;
    out[w] = bits;
  }
}

}  // namespace threshold_detail
}  // namespace lowbit
#endif
