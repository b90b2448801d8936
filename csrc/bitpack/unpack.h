// unpack: (rows, ceil(K/64)) uint64 words + K -> (rows, K) of +1 / -1 as int8_t or float.
//
// The inverse of bitpack (bitpack.h): bit i of word j -> element j*64 + i, bit 1 -> +1,
// bit 0 -> -1.  Pad bits past K are never read.
//
// Paths: portable (shift and mask per element); avx2 (broadcast 32 bits, give each byte
// lane its own bit with a shuffle + AND, compare: 32 int8 or 8 floats per step); avx512
// (the word *is* a mask register: one masked blend writes 64 int8 or 16 floats).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/target.h"
#include "common/threads.h"

namespace lowbit {
namespace unpack_detail {

template <class T>
inline void unpack_bits_portable(uint64_t bits, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = ((bits >> i) & 1) ? T(1) : T(-1);
}

template <class T>
inline void unpack_row_portable(const uint64_t* words, int64_t k, T* out) {
  for (int64_t w = 0; w * 64 < k; ++w)
    unpack_bits_portable(words[w], std::min<int64_t>(64, k - w * 64), out + w * 64);
}

#if LOWBIT_X86_PATHS
template <class T>
LOWBIT_TARGET_AVX2 void unpack_row_avx2(const uint64_t* words, int64_t k, T* out) {
  const int64_t full = k / 64;
  if constexpr (std::is_same_v<T, int8_t>) {
    // Byte lane j (0..31) must test bit j of a 32-bit chunk: shuffle byte j/8 of the
    // chunk into lane j, AND with 1 << (j % 8), compare.  (+1/-1) = (set ? 2 : 0) - 1.
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i select = _mm256_set1_epi64x(0x8040201008040201LL);
    const __m256i two = _mm256_set1_epi8(2), one = _mm256_set1_epi8(1);
    for (int64_t w = 0; w < full; ++w) {
      for (int h = 0; h < 2; ++h) {
        const int chunk = static_cast<int>(static_cast<uint32_t>(words[w] >> (32 * h)));
        const __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32(chunk), spread);
        const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(b, select), select);
        const __m256i v = _mm256_sub_epi8(_mm256_and_si256(set, two), one);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + w * 64 + 32 * h), v);
      }
    }
  } else {  // float: 8 lanes test bits 0..7 of a byte
    const __m256i select = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256 plus = _mm256_set1_ps(1.0f), minus = _mm256_set1_ps(-1.0f);
    for (int64_t w = 0; w < full; ++w) {
      for (int q = 0; q < 8; ++q) {
        const int byte = static_cast<int>((words[w] >> (8 * q)) & 0xFF);
        const __m256i b = _mm256_and_si256(_mm256_set1_epi32(byte), select);
        const __m256 set = _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, select));
        _mm256_storeu_ps(out + w * 64 + 8 * q, _mm256_blendv_ps(minus, plus, set));
      }
    }
  }
  if (k % 64) unpack_bits_portable(words[full], k % 64, out + full * 64);
}

template <class T>
LOWBIT_TARGET_AVX512 void unpack_row_avx512(const uint64_t* words, int64_t k, T* out) {
  const int64_t full = k / 64;
  if constexpr (std::is_same_v<T, int8_t>) {
    const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1);
    for (int64_t w = 0; w < full; ++w)
      _mm512_storeu_si512(out + w * 64, _mm512_mask_blend_epi8(words[w], minus, plus));
  } else {
    const __m512 plus = _mm512_set1_ps(1.0f), minus = _mm512_set1_ps(-1.0f);
    for (int64_t w = 0; w < full; ++w)
      for (int q = 0; q < 4; ++q) {
        const uint16_t m = static_cast<uint16_t>(words[w] >> (16 * q));  // a __mmask16
        _mm512_storeu_ps(out + w * 64 + 16 * q, _mm512_mask_blend_ps(m, minus, plus));
      }
  }
  if (k % 64) unpack_bits_portable(words[full], k % 64, out + full * 64);
}
#endif  // LOWBIT_X86_PATHS

template <class T>
using UnpackRowFn = void (*)(const uint64_t*, int64_t, T*);

template <class T>
struct UnpackEntry {
  const char* path;
  UnpackRowFn<T> fn;
};

// Kernel selection: one row per compiled path.
template <class T>
inline const UnpackEntry<T>* unpack_table() {
  static const UnpackEntry<T> table[] = {
      {"portable", &unpack_row_portable<T>},
#if LOWBIT_X86_PATHS
      {"avx2", &unpack_row_avx2<T>},
      {"avx512", &unpack_row_avx512<T>},
#endif
#if LOWBIT_NEON_PATH
      {"neon", &unpack_row_portable<T>},
#endif
      {nullptr, nullptr},
  };
  return table;
}

template <class T>
inline UnpackRowFn<T> find_unpack(const std::string& path) {
  for (const UnpackEntry<T>* e = unpack_table<T>(); e->path; ++e)
    if (path == e->path) return e->fn;
  return nullptr;
}

}  // namespace unpack_detail

// words: (rows, ceil(k/64)) uint64; out: (rows, k) int8_t or float, +1 / -1.
template <class T>
void unpack(const uint64_t* words, int64_t rows, int64_t k, T* out, const std::string& path,
            int threads) {
  static_assert(std::is_same_v<T, int8_t> || std::is_same_v<T, float>, "int8 or float out");
  const auto fn = unpack_detail::find_unpack<T>(path);
  const int64_t nw = (k + 63) / 64;
  parallel_for(rows, threads_for(threads, rows * k, int64_t{1} << 16), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) fn(words + r * nw, k, out + r * k);
  });
}

}  // namespace lowbit
