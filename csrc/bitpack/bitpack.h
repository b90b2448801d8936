// bitpack: signs of a (rows, K) array -> (rows, ceil(K/64)) uint64 words.
//
// Convention (docs/design.md, binding for every kernel):
//   element j*64 + i of a row is bit i (LSB first) of word j;
//   bit 1 <-> +1 <-> x >= 0  (so sign(0) = +1, and -0.0 >= 0 gives +1 too);
//   bit 0 <-> -1 <-> x < 0;
//   pad bits K .. 64*ceil(K/64)-1 of the last word are 0;
//   NaN has no sign: the kernels report it and the caller refuses the input.
// Supported element types: float, double, int8_t, int32_t.
//
// Paths: portable (plain C++), avx2 (compare + movemask, 8 floats / 32 int8 per
// instruction), avx512 (compare into a mask register, 16 floats / 64 int8 per
// instruction).  Only whole 64-element words use SIMD; the last partial word of a row goes
// through the portable loop, which writes zero pad bits.  neon (bitpack_neon.h): compares
// and a narrowing "movemask"; it packs a partial last word from a copy padded with -1.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "common/target.h"
#include "common/threads.h"
#include "bitpack/bitpack_neon.h"

namespace lowbit {
namespace bitpack_detail {

// ---- portable: the reference loop, also used for every path's partial last word ------
template <class T>
inline uint64_t pack_word_portable(const T* x, int64_t n, bool& nan) {
  uint64_t bits = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    bits |= static_cast<uint64_t>(v >= T(0)) << i;
    if constexpr (std::is_floating_point_v<T>) nan |= (v != v);
  }
  return bits;
}

// One row x[0..k) -> out[0..ceil(k/64)).  Returns true when x holds a NaN.
template <class T>
inline bool pack_row_portable(const T* x, int64_t k, uint64_t* out) {
  bool nan = false;
  const int64_t full = k / 64;
  for (int64_t w = 0; w < full; ++w) out[w] = pack_word_portable(x + w * 64, 64, nan);
  if (k % 64) out[full] = pack_word_portable(x + full * 64, k % 64, nan);
  return nan;
}

// The partial last word of a float row on the SIMD paths: the n < 64 values copied into a
// word of -1 (bit 0) and packed as a whole word (a first-layer row of 20 channels would
// otherwise go through the scalar loop).
template <class T, class Word>
inline uint64_t pack_tail(const T* x, int64_t n, bool& nan, Word word) {
  if constexpr (std::is_same_v<T, float>) {
    float tmp[64];
    for (int64_t i = 0; i < n; ++i) tmp[i] = x[i];
    for (int64_t i = n; i < 64; ++i) tmp[i] = -1.f;
    return word(tmp, nan);
  } else {
    return pack_word_portable(x, n, nan);
  }
}

#if LOWBIT_X86_PATHS
// ---- avx2: movemask gathers the sign / compare bits of a vector into an int ------------
template <class T>
LOWBIT_TARGET_AVX2 static inline uint64_t pack_word_avx2(const T* x, bool& nan) {
  uint64_t bits = 0;
  if constexpr (std::is_same_v<T, float>) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 bad = zero;
    for (int q = 0; q < 8; ++q) {
      const __m256 v = _mm256_loadu_ps(x + 8 * q);
      const uint64_t m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GE_OQ)));
      bits |= m << (8 * q);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    nan |= _mm256_movemask_ps(bad) != 0;
  } else if constexpr (std::is_same_v<T, double>) {
    const __m256d zero = _mm256_setzero_pd();
    __m256d bad = zero;
    for (int q = 0; q < 16; ++q) {
      const __m256d v = _mm256_loadu_pd(x + 4 * q);
      const uint64_t m = static_cast<unsigned>(_mm256_movemask_pd(_mm256_cmp_pd(v, zero, _CMP_GE_OQ)));
      bits |= m << (4 * q);
      bad = _mm256_or_pd(bad, _mm256_cmp_pd(v, v, _CMP_UNORD_Q));
    }
    nan |= _mm256_movemask_pd(bad) != 0;
  } else if constexpr (std::is_same_v<T, int32_t>) {
    // movemask_ps reads the sign bit of each int32: 1 = negative, so invert.
    for (int q = 0; q < 8; ++q) {
      const __m256 v = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 8 * q)));
      bits |= static_cast<uint64_t>(static_cast<unsigned>(_mm256_movemask_ps(v))) << (8 * q);
    }
    bits = ~bits;
  } else {  // int8_t: movemask_epi8 reads the sign bit of each byte
    const auto* p = reinterpret_cast<const __m256i*>(x);
    const uint64_t lo = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_loadu_si256(p)));
    const uint64_t hi = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_loadu_si256(p + 1)));
    bits = ~(lo | (hi << 32));
  }
  return bits;
}

template <class T>
LOWBIT_TARGET_AVX2 bool pack_row_avx2(const T* x, int64_t k, uint64_t* out) {
  bool nan = false;
  const int64_t full = k / 64;
  for (int64_t w = 0; w < full; ++w) out[w] = pack_word_avx2(x + w * 64, nan);
  if (k % 64)
    out[full] = pack_tail(x + full * 64, k % 64, nan, [](const T* p, bool& b) LOWBIT_TARGET_AVX2 { return pack_word_avx2(p, b); });
  return nan;
}

// ---- avx512: compares write straight into mask registers ------------------------------
template <class T>
LOWBIT_TARGET_AVX512 static inline uint64_t pack_word_avx512(const T* x, bool& nan) {
  uint64_t bits = 0;
  if constexpr (std::is_same_v<T, float>) {
    const __m512 zero = _mm512_setzero_ps();
    unsigned bad = 0;
    for (int q = 0; q < 4; ++q) {
      const __m512 v = _mm512_loadu_ps(x + 16 * q);
      bits |= static_cast<uint64_t>(_mm512_cmp_ps_mask(v, zero, _CMP_GE_OQ)) << (16 * q);
      bad |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
    nan |= bad != 0;
  } else if constexpr (std::is_same_v<T, double>) {
    const __m512d zero = _mm512_setzero_pd();
    unsigned bad = 0;
    for (int q = 0; q < 8; ++q) {
      const __m512d v = _mm512_loadu_pd(x + 8 * q);
      bits |= static_cast<uint64_t>(_mm512_cmp_pd_mask(v, zero, _CMP_GE_OQ)) << (8 * q);
      bad |= _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q);
    }
    nan |= bad != 0;
  } else if constexpr (std::is_same_v<T, int32_t>) {
    const __m512i zero = _mm512_setzero_si512();
    for (int q = 0; q < 4; ++q) {
      const __m512i v = _mm512_loadu_si512(x + 16 * q);
      bits |= static_cast<uint64_t>(_mm512_cmpge_epi32_mask(v, zero)) << (16 * q);
    }
  } else {  // int8_t, AVX512BW: 64 bytes -> 64 mask bits in one compare
    bits = _mm512_cmpge_epi8_mask(_mm512_loadu_si512(x), _mm512_setzero_si512());
  }
  return bits;
}

template <class T>
LOWBIT_TARGET_AVX512 bool pack_row_avx512(const T* x, int64_t k, uint64_t* out) {
  bool nan = false;
  const int64_t full = k / 64;
  for (int64_t w = 0; w < full; ++w) out[w] = pack_word_avx512(x + w * 64, nan);
  if (k % 64)
    out[full] = pack_tail(x + full * 64, k % 64, nan, [](const T* p, bool& b) LOWBIT_TARGET_AVX512 { return pack_word_avx512(p, b); });
  return nan;
}
#endif  // LOWBIT_X86_PATHS

template <class T>
using PackRowFn = bool (*)(const T*, int64_t, uint64_t*);

template <class T>
struct PackEntry {
  const char* path;
  PackRowFn<T> fn;
};

// Kernel selection: one row per compiled path.
template <class T>
inline const PackEntry<T>* pack_table() {
  static const PackEntry<T> table[] = {
      {"portable", &pack_row_portable<T>},
#if LOWBIT_X86_PATHS
      {"avx2", &pack_row_avx2<T>},
      {"avx512", &pack_row_avx512<T>},
#endif
#if LOWBIT_NEON_PATH
      {"neon", &pack_row_neon<T>},  // bitpack_neon.h (double: the portable loop)
#endif
      {nullptr, nullptr},
  };
  return table;
}

template <class T>
inline PackRowFn<T> find_pack(const std::string& path) {
  for (const PackEntry<T>* e = pack_table<T>(); e->path; ++e)
    if (path == e->path) return e->fn;
  return nullptr;
}

}  // namespace bitpack_detail

// x: (rows, k) row-major T; out: (rows, ceil(k/64)) uint64.  The caller has checked that
// `path` is compiled and available on this CPU.  Returns true when x holds a NaN (the
// output is then incomplete and must be discarded).
template <class T>
bool bitpack(const T* x, int64_t rows, int64_t k, uint64_t* out, const std::string& path,
             int threads) {
  const auto fn = bitpack_detail::find_pack<T>(path);
  const int64_t words = (k + 63) / 64;
  std::atomic<bool> nan{false};
  // grain: 64 Ki values per thread (~30 us)
  parallel_for(rows, threads_for(threads, rows * k, int64_t{1} << 16), [&](int64_t r0, int64_t r1) {
    bool local = false;
    for (int64_t r = r0; r < r1; ++r) local |= fn(x + r * k, k, out + r * words);
    if (local) nan.store(true, std::memory_order_relaxed);
  });
  return nan.load();
}

}  // namespace lowbit
