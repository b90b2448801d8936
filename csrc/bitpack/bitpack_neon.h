// aarch64 NEON bitpack (the "neon" path's row of bitpack.h's table): signs of 64 values ->
// one word, bit i = x_i >= 0 (bitpack.h's convention: LSB first, sign(0) = +1, NaN reported).
//
// NEON has no movemask.  Its replacement, used here and by bconv/finish_neon.h and
// bitpack/threshold_neon.h: lane masks (all-ones / zero) of 64 values become one word by
//   u32 masks: UZP1 (16 -> 8 u16 vectors), UZP1 (-> 4 u8 vectors, byte i of vector k = value
//              16 k + i), then as u8 masks;
//   u8 masks:  AND with the byte weights 2^(i mod 8), then three levels of pairwise byte adds
//              (ADDP): each level halves the vector count or, at the last, the bytes of one
//              vector; byte b of the result = sum of the 8 weighted bytes of values 8 b ..
//              8 b + 7 = output byte b (little endian), so lane 0 of the u64 view is the word.
// 8 + 4 + 4 + 3 + 1 = 20 instructions per 64 values from u32 masks, 8 from u8 masks.
//
// Per 64 values: float 4 LD1 (4 registers each), 16 FCMGE #0, 16 FMAX (NaN check: FMAX
// propagates NaN, one FCMEQ of the running maximum at the end), 20 narrowing: ~1 instruction
// per value; int32 the same without the NaN check; int8 4 loads, 4 CMGE #0, 8 narrowing.
// double stays on the portable loop (2 values per register: no gain worth the code).
// The scalar reference (pack_row_portable): ~11 instructions per value.
// A partial last word: its n < 64 values are copied into a buffer padded with -1 (bit 0, as
// bitpack.h's pack_tail), so the pad bits come out 0.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/target.h"

#if LOWBIT_NEON_PATH
#include <arm_neon.h>

namespace lowbit {
namespace neon_bits {

// 4 u8 lane masks (values 0..63) -> word.
inline uint64_t mask_word_u8(uint8x16_t b0, uint8x16_t b1, uint8x16_t b2, uint8x16_t b3) {
  const uint8x16_t wts = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  b0 = vandq_u8(b0, wts);
  b1 = vandq_u8(b1, wts);
  b2 = vandq_u8(b2, wts);
  b3 = vandq_u8(b3, wts);
  const uint8x16_t l2 = vpaddq_u8(vpaddq_u8(b0, b1), vpaddq_u8(b2, b3));
  return vgetq_lane_u64(vreinterpretq_u64_u8(vpaddq_u8(l2, l2)), 0);
}

// 16 u32 lane masks (values 0..63, 4 per mask) -> word.
inline uint64_t mask_word_u32(const uint32x4_t (&m)[16]) {
  uint8x16_t b[4];
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const uint16x8_t lo = vuzp1q_u16(vreinterpretq_u16_u32(m[4 * k]), vreinterpretq_u16_u32(m[4 * k + 1]));
    const uint16x8_t hi = vuzp1q_u16(vreinterpretq_u16_u32(m[4 * k + 2]), vreinterpretq_u16_u32(m[4 * k + 3]));
    b[k] = vuzp1q_u8(vreinterpretq_u8_u16(lo), vreinterpretq_u8_u16(hi));
  }
  return mask_word_u8(b[0], b[1], b[2], b[3]);
}

}  // namespace neon_bits

namespace bitpack_detail {

template <class T>
inline bool pack_row_portable(const T* x, int64_t k, uint64_t* out);  // bitpack.h

// 64 values -> word (x: 64 readable values).
template <class T>
inline uint64_t pack_word_neon(const T* x, bool& nan) {
  if constexpr (std::is_same_v<T, float>) {
    uint32x4_t m[16];
    float32x4_t mx = vdupq_n_f32(0.f);
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) {
      const float32x4_t v = vld1q_f32(x + 4 * k);
      m[k] = vcgezq_f32(v);  // x >= 0 (false for NaN)
      mx = vmaxq_f32(mx, v); // NaN in, NaN out
    }
    nan |= vminvq_u32(vceqq_f32(mx, mx)) == 0;
    return neon_bits::mask_word_u32(m);
  } else if constexpr (std::is_same_v<T, int32_t>) {
    uint32x4_t m[16];
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) m[k] = vcgezq_s32(vld1q_s32(x + 4 * k));
    return neon_bits::mask_word_u32(m);
  } else {
    static_assert(std::is_same_v<T, int8_t>, "float, int32_t, int8_t");
    return neon_bits::mask_word_u8(vcgezq_s8(vld1q_s8(x)), vcgezq_s8(vld1q_s8(x + 16)),
                                   vcgezq_s8(vld1q_s8(x + 32)), vcgezq_s8(vld1q_s8(x + 48)));
  }
}

// PackRowFn (bitpack.h): one row x[0..k) -> out[0..ceil(k/64)); true when x holds a NaN.
template <class T>
bool pack_row_neon(const T* x, int64_t k, uint64_t* out) {
  if constexpr (std::is_same_v<T, double>) {
    return pack_row_portable(x, k, out);
  } else {
    bool nan = false;
    const int64_t full = k / 64;
    for (int64_t w = 0; w < full; ++w) out[w] = pack_word_neon(x + w * 64, nan);
    if (k % 64) {  // the n < 64 values of the last word, padded with -1 (bit 0)
      const int64_t n = k % 64;
      T tmp[64];
      std::memcpy(tmp, x + full * 64, static_cast<size_t>(n) * sizeof(T));
      for (int64_t i = n; i < 64; ++i) tmp[i] = T(-1);
      out[full] = pack_word_neon(tmp, nan);
    }
    return nan;
  }
}

}  // namespace bitpack_detail
}  // namespace lowbit
#endif
