// aarch64 NEON output stage of a binary layer with packed-bit outputs (the "neon" path's
// finish in bconv.h: kBinary counts -> kBits words), straight from the XOR counts:
//
//   acc_j = (K - c_j) - c_j + corr_j             (bconv.h: dot = K - 2 popcount, plus the
//                                                 padding correction of a border pixel)
//   bit_j = (acc_j < lt_j) XOR notflip_j         (OutStage::lt / notflip: acc >= thr or
//                                                 acc <= thr folded into one "<" compare)
//
// 4 channels per q-register: 2 SUB (no 2 c: c may be 2^30), an ADD for border pixels, one
// CMGT, i.e. ~1 instruction per channel.  The 16 lane masks of 64 channels become one word
// in 20 instructions (bitpack_neon.h, neon_bits::mask_word_u32, NEON's "movemask").
// Scalar loop (binary_bits_row_ref, the reference twin): ~18 instructions per channel.
//
// A partial last word (n mod 64 channels) of 16, 32 or 48 channels is read in place (whole
// groups of 16; the missing groups are zero masks), any other through zero-padded copies,
// and masked to its valid bits (pad bits 0, bitpack.h's convention).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/target.h"

namespace lowbit {
namespace bconv_detail {

// Reference twin (plain C++, the formula of bconv.h's finish + stage_row).
inline void binary_bits_row_ref(const int32_t* cnt, int32_t K, const int32_t* corr, const int32_t* lt,
                                const uint64_t* notflip, int64_t n, uint64_t* out) {
  for (int64_t w = 0; w * 64 < n; ++w) {
    const int64_t m = std::min<int64_t>(64, n - 64 * w);
    uint64_t below = 0;
    for (int64_t j = 0; j < m; ++j) {
      const int64_t c = 64 * w + j;
      int32_t acc = (K - cnt[c]) - cnt[c];
      if (corr) acc += corr[c];
      below |= static_cast<uint64_t>(acc < lt[c]) << j;
    }
    const uint64_t valid = m == 64 ? ~uint64_t{0} : (uint64_t{1} << m) - 1;
    out[w] = (below ^ notflip[w]) & valid;
  }
}

}  // namespace bconv_detail
}  // namespace lowbit

#if LOWBIT_NEON_PATH
#include <arm_neon.h>

#include "bitpack/bitpack_neon.h"

namespace lowbit {
namespace bconv_detail {

// 16 G channels (G = 1..4 groups of 16) -> the word of "acc < lt" bits (bits >= 16 G: 0).
template <bool CORR, int G = 4>
inline uint64_t below_word_neon(const int32_t* cnt, int32_t K, const int32_t* corr, const int32_t* lt) {
  const int32x4_t vk = vdupq_n_s32(K);
  uint32x4_t m[16];
#pragma GCC unroll 16
  for (int k = 4 * G; k < 16; ++k) m[k] = vdupq_n_u32(0);
#pragma GCC unroll 16
  for (int k = 0; k < 4 * G; ++k) {
    const int32x4_t c = vld1q_s32(cnt + 4 * k);
    int32x4_t acc = vsubq_s32(vsubq_s32(vk, c), c);
    if (CORR) acc = vaddq_s32(acc, vld1q_s32(corr + 4 * k));
    m[k] = vcltq_s32(acc, vld1q_s32(lt + 4 * k));
  }
  return neon_bits::mask_word_u32(m);
}

// One output row: channels 0 .. n-1 (counts, corrections, thresholds from channel 0 of the
// range, which starts at a multiple of 64) -> out[0 .. ceil(n/64)).  corr may be null.
inline void binary_bits_row_neon(const int32_t* cnt, int32_t K, const int32_t* corr, const int32_t* lt,
                                 const uint64_t* notflip, int64_t n, uint64_t* out) {
  int64_t w = 0;
  for (; 64 * w + 64 <= n; ++w) {
    const int64_t o = 64 * w;
    const uint64_t below = corr ? below_word_neon<true>(cnt + o, K, corr + o, lt + o)
                                : below_word_neon<false>(cnt + o, K, nullptr, lt + o);
    out[w] = below ^ notflip[w];
  }
  if (64 * w == n) return;
  const int64_t o = 64 * w, m = n - o;
  if (m % 16 == 0) {  // 16, 32 or 48 channels: whole groups, read in place
    uint64_t below;
    if (corr) below = m == 16 ? below_word_neon<true, 1>(cnt + o, K, corr + o, lt + o)
                    : m == 32 ? below_word_neon<true, 2>(cnt + o, K, corr + o, lt + o)
                              : below_word_neon<true, 3>(cnt + o, K, corr + o, lt + o);
    else below = m == 16 ? below_word_neon<false, 1>(cnt + o, K, nullptr, lt + o)
               : m == 32 ? below_word_neon<false, 2>(cnt + o, K, nullptr, lt + o)
                         : below_word_neon<false, 3>(cnt + o, K, nullptr, lt + o);
    out[w] = (below ^ notflip[w]) & ((uint64_t{1} << m) - 1);
    return;
  }
  {  // any other partial last word: zero-padded copies, then the valid bits only
    alignas(16) int32_t c[64] = {}, cr[64] = {}, t[64] = {};
    std::memcpy(c, cnt + o, static_cast<size_t>(m) * 4);
    std::memcpy(t, lt + o, static_cast<size_t>(m) * 4);
    if (corr) std::memcpy(cr, corr + o, static_cast<size_t>(m) * 4);
    const uint64_t below = below_word_neon<true>(c, K, cr, t);
    out[w] = (below ^ notflip[w]) & ((uint64_t{1} << m) - 1);
  }
}

}  // namespace bconv_detail
}  // namespace lowbit
#endif
