// Row kernels of the graph executor's float stages (third executor round): an output program
// over blocks of rows in SIMD registers, optionally from int32 accumulators and with a fused
// residual add, and the signs of float rows packed to bits.  The extension is compiled for
// baseline x86-64, so the generic loops of spec.h / float_ops.h run 4 floats (SSE2) per
// instruction and dispatch each step per short row; on the detector these stages (the float
// stage of every binary conv, the sign packing of its input, the adds, the stem's BatchNorm)
// took about 40 % of the inference.
//
// Exactness: every step is the same IEEE float32 / float64 operation in the same order per
// element as run_step (spec.h): x * v, x + v, f32(f64(x) * a + b) (multiply, then add, then
// one rounding to float32: no FMA), np.round (round half to even), relu and clamp with the
// NaN rules of spec.h; an int32 accumulator converts to float32 as static_cast does (round to
// nearest: exact for |acc| < 2^24); the residual is added last, x + r, as JoinOp's
// a[j] + b[j] with the program's value as a (float addition is commutative, so the order of
// the two operands does not matter).  So the SIMD kernels give the portable twins' bits.
//
// Paths: portable (the reference twins: plain loops, any CPU) and avx512 (16 lanes, masked
// tails).  avx2 / neon run the portable twins.  LOWBIT_LEAN (the standalone runner, kept
// under its 1 MiB budget) compiles only the twins, and so does the SIMDe emulation build
// (SIMDe lacks the masked float64 loads and conversions used here): the avx512 kernels are
// checked against the twins natively, on every path, by tests/runtime/test_native.py
// (word / lane edges, NaN and inf inputs).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/target.h"
#include "graph/spec.h"

namespace lowbit {
namespace graph {

// The steps the row kernels run (the others: run_program).
inline bool rows_supported(const std::vector<Step>& prog) {
  for (const Step& st : prog)
    switch (st.code) {
      case StepCode::kRound: case StepCode::kMulC: case StepCode::kMulS: case StepCode::kAddC:
      case StepCode::kBn: case StepCode::kRelu: case StepCode::kClamp: break;
      default: return false;
    }
  return true;
}

// Integer accumulators of a block of rows: row r at p + r * ld; kbits >= 0: p holds the XOR
// counts of a binary layer and acc = (kbits - p) - p (bconv.h's finish, exact in int32).
struct AccRows {
  const int32_t* p;
  int64_t ld;
  int32_t kbits;
};

// y[r * c + j] for r < rows, j < c: v = acc ? float(acc of row r, channel j) : x[r * c + j],
// then the program's steps (channel vectors indexed oc0 + j), then + res[r * c + j] when res
// is not null.  x may be y (in place); x / res / y rows are c apart.
using StepRowsFn = void (*)(const Step* prog, int64_t nsteps, const AccRows* acc, const float* x,
                            int64_t rows, int64_t c, int64_t oc0, const float* res, float* y);

// Rows (rows, c) of floats -> (rows, ceil(c / 64)) words, bit j = x_j >= 0 (NaN: 0; the
// bitpack convention, pad bits 0).
using SignRowsFn = void (*)(const float* x, int64_t rows, int64_t c, uint64_t* out);

// Host pixels (c planes of uint8, `plane` apart, NCHW; hw pixels of each) -> (hw, c) floats
// through the per-channel normalisation tables table[ch * 256 + u] (the graph input; the
// values are copied, so every path gives the table's bits).
using InputRowsFn = void (*)(const uint8_t* src, int64_t hw, int64_t plane, int64_t c, const float* table,
                             float* dst);

// The same for normalised float32 input (copied as it is); returns true when it held a NaN
// or an infinity (the caller refuses the input).
using InputRowsF32Fn = bool (*)(const float* src, int64_t hw, int64_t plane, int64_t c, float* dst);

namespace rows_detail {

inline bool input_rows_f32_portable(const float* src, int64_t hw, int64_t plane, int64_t c, float* dst) {
  bool bad = false;
  for (int64_t ch = 0; ch < c; ++ch) {
    const float* s = src + ch * plane;
    for (int64_t p = 0; p < hw; ++p) {
      dst[p * c + ch] = s[p];
      bad |= !(std::fabs(s[p]) <= 3.402823466e38f);  // NaN or inf
    }
  }
  return bad;
}

inline void input_rows_portable(const uint8_t* src, int64_t hw, int64_t plane, int64_t c, const float* table,
                                float* dst) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const uint8_t* s = src + ch * plane;
    const float* t = table + ch * 256;
    for (int64_t p = 0; p < hw; ++p) dst[p * c + ch] = t[s[p]];
  }
}

inline void step_rows_portable(const Step* prog, int64_t nsteps, const AccRows* acc, const float* x,
                               int64_t rows, int64_t c, int64_t oc0, const float* res, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    float* o = y + r * c;
    if (acc) {
      const int32_t* a = acc->p + r * acc->ld;
      for (int64_t j = 0; j < c; ++j) o[j] = static_cast<float>(acc->kbits >= 0 ? (acc->kbits - a[j]) - a[j] : a[j]);
    } else if (x != y) {
      std::memcpy(o, x + r * c, static_cast<size_t>(c) * 4);
    }
    for (int64_t k = 0; k < nsteps; ++k) {
      Step st = prog[k];  // channel vectors shifted to channel oc0
      if (st.v) st.v += oc0;
      if (st.a) { st.a += oc0; st.b += oc0; }
      run_step(st, o, c, 0, nullptr);
    }
    if (res)
      for (int64_t j = 0; j < c; ++j) o[j] = o[j] + res[r * c + j];
  }
}

inline void sign_rows_portable(const float* x, int64_t rows, int64_t c, uint64_t* out) {
  const int64_t nw = (c + 63) / 64;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t w = 0; w < nw; ++w) {
      const int64_t m = c - 64 * w < 64 ? c - 64 * w : 64;
      const float* p = x + r * c + 64 * w;
      uint64_t word = 0;
      for (int64_t j = 0; j < m; ++j) word |= static_cast<uint64_t>(p[j] >= 0.f) << j;
      out[r * nw + w] = word;
    }
}

#if LOWBIT_X86_PATHS && !defined(LOWBIT_LEAN) && !defined(LOWBIT_SIMDE)
// f32(f64(x) * a + b) on 16 lanes given as two halves of float64 (lanes 0-7, 8-15).
LOWBIT_TARGET_AVX512 static inline __m512 bn16(__m512d lo, __m512d hi, const double* a, const double* b,
                                               __mmask16 k) {
  const __mmask8 k0 = static_cast<__mmask8>(k), k1 = static_cast<__mmask8>(k >> 8);
  lo = _mm512_add_pd(_mm512_mul_pd(lo, _mm512_maskz_loadu_pd(k0, a)), _mm512_maskz_loadu_pd(k0, b));
  hi = _mm512_add_pd(_mm512_mul_pd(hi, _mm512_maskz_loadu_pd(k1, a + 8)), _mm512_maskz_loadu_pd(k1, b + 8));
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo))),
                                             _mm256_castps_pd(_mm512_cvtpd_ps(hi)), 1));
}

LOWBIT_TARGET_AVX512 static inline __m512 relu16(__m512 v) {  // x >= 0 || isnan(x) ? x : 0
  const __mmask16 keep = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_maskz_mov_ps(keep, v);
}

LOWBIT_TARGET_AVX512 static inline __m512 clamp16(__m512 v, __m512 lo, __m512 hi) {  // x < lo ? lo : x; > hi ? hi
  v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, lo, _CMP_LT_OQ), v, lo);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, hi, _CMP_GT_OQ), v, hi);
}

// 16 lanes (mask k) of one block: the steps on v, channel vectors from channel ch.
LOWBIT_TARGET_AVX512 static inline __m512 steps16(const Step* prog, int64_t nsteps, __m512 v, int64_t ch,
                                                  __mmask16 k) {
  for (int64_t s = 0; s < nsteps; ++s) {
    const Step& st = prog[s];
    switch (st.code) {
      case StepCode::kRound:
        v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        break;
      case StepCode::kMulC: v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, st.v + ch)); break;
      case StepCode::kMulS: v = _mm512_mul_ps(v, _mm512_set1_ps(st.s)); break;
      case StepCode::kAddC: v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, st.v + ch)); break;
      case StepCode::kBn:
        v = bn16(_mm512_cvtps_pd(_mm512_castps512_ps256(v)),
                 _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))), st.a + ch,
                 st.b + ch, k);
        break;
      case StepCode::kRelu: v = relu16(v); break;
      case StepCode::kClamp: v = clamp16(v, _mm512_set1_ps(st.lo), _mm512_set1_ps(st.hi)); break;
      default: break;  // not reached (rows_supported)
    }
  }
  return v;
}

// The common programs, BatchNorm then nothing / relu / clamp (TAIL 0 / 1 / 2), without a
// dispatch per block, from int32 accumulators (ACC: f32(acc) first, as run_step sees it) or
// floats.
LOWBIT_TARGET_AVX512 static inline __m512 acc16(const int32_t* p, int32_t kbits, __mmask16 k) {
  __m512i q = _mm512_maskz_loadu_epi32(k, p);
  if (kbits >= 0) q = _mm512_sub_epi32(_mm512_sub_epi32(_mm512_set1_epi32(kbits), q), q);
  return _mm512_cvtepi32_ps(q);
}

template <bool ACC, int TAIL>
LOWBIT_TARGET_AVX512 static inline void bn_run(const Step* prog, const int32_t* acc, int32_t kbits, const float* x,
                                               int64_t n, int64_t c, int64_t ch0, const float* res, float* y) {
  const double* a = prog[0].a + ch0;
  const double* b = prog[0].b + ch0;
  const __m512 lo = _mm512_set1_ps(TAIL == 2 ? prog[1].lo : 0.f), hi = _mm512_set1_ps(TAIL == 2 ? prog[1].hi : 0.f);
  for (int64_t j = 0, ch = 0; j < n; j += 16, ch += 16) {
    if (ch == c) ch = 0;  // flat runs: c is a multiple of 16
    const int64_t m = n - j < 16 ? n - j : 16;
    const __mmask16 k = static_cast<__mmask16>(m == 16 ? 0xFFFF : (1u << m) - 1);
    const __m512 f = ACC ? acc16(acc + j, kbits, k) : _mm512_maskz_loadu_ps(k, x + j);
    __m512 v = bn16(_mm512_cvtps_pd(_mm512_castps512_ps256(f)),
                    _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))), a + ch, b + ch, k);
    if (TAIL == 1) v = relu16(v);
    if (TAIL == 2) v = clamp16(v, lo, hi);
    if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, res + j));
    _mm512_mask_storeu_ps(y + j, k, v);
  }
}

// When c is a multiple of 16 the rows are one run (block j's channels start at j mod c);
// otherwise each row is its own run with a masked last block.
LOWBIT_TARGET_AVX512 inline void step_rows_avx512(const Step* prog, int64_t nsteps, const AccRows* acc,
                                                  const float* x, int64_t rows, int64_t c, int64_t oc0,
                                                  const float* res, float* y) {
  const bool flat = c % 16 == 0 && (!acc || acc->ld == c);
  const int32_t kb = acc ? acc->kbits : -1;
  const int64_t run = flat ? rows * c : c, runs = flat ? 1 : rows;
  int tail = -1;  // BatchNorm first: 0 alone, 1 + relu, 2 + clamp
  if (nsteps >= 1 && nsteps <= 2 && prog[0].code == StepCode::kBn)
    tail = nsteps == 1 ? 0 : prog[1].code == StepCode::kRelu ? 1 : prog[1].code == StepCode::kClamp ? 2 : -1;
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t base = r * c;
    const int32_t* ar = acc ? acc->p + r * acc->ld : nullptr;
    const float* xr = acc ? nullptr : x + base;
    const float* rr = res ? res + base : nullptr;
    float* yr = y + base;
    if (tail >= 0) {
      if (acc) {
        if (tail == 0) bn_run<true, 0>(prog, ar, kb, xr, run, c, oc0, rr, yr);
        else if (tail == 1) bn_run<true, 1>(prog, ar, kb, xr, run, c, oc0, rr, yr);
        else bn_run<true, 2>(prog, ar, kb, xr, run, c, oc0, rr, yr);
      } else {
        if (tail == 0) bn_run<false, 0>(prog, ar, kb, xr, run, c, oc0, rr, yr);
        else if (tail == 1) bn_run<false, 1>(prog, ar, kb, xr, run, c, oc0, rr, yr);
        else bn_run<false, 2>(prog, ar, kb, xr, run, c, oc0, rr, yr);
      }
      continue;
    }
    for (int64_t j = 0; j < run; j += 16) {
      const int64_t m = run - j < 16 ? run - j : 16;
      const __mmask16 k = static_cast<__mmask16>(m == 16 ? 0xFFFF : (1u << m) - 1);
      __m512 v = acc ? acc16(ar + j, kb, k) : _mm512_maskz_loadu_ps(k, xr + j);
      v = steps16(prog, nsteps, v, oc0 + (flat ? j % c : j), k);
      if (rr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, rr + j));
      _mm512_mask_storeu_ps(yr + j, k, v);
    }
  }
}

// 16 pixels per step: one gather from each channel's table, then (3 channels) the three
// vectors interleaved into 48 NHWC floats by two-source permutes.
// Permutes that interleave three 16-lane channel vectors a, b, c into 48 NHWC floats: output
// vector q = blend(mc[q], permutex2var(a, ab[q], b), permutexvar(cc[q], c)).
struct Interleave3 {
  __m512i ab[3], cc[3];
  __mmask16 mc[3];
};

LOWBIT_TARGET_AVX512 static inline Interleave3 interleave3() {
  Interleave3 r;
  alignas(64) int32_t iab[3][16], ic[3][16];
  for (int q = 0; q < 3; ++q) {
    r.mc[q] = 0;
    for (int l = 0; l < 16; ++l) {
      const int e = 16 * q + l, px = e / 3, ch = e % 3;
      iab[q][l] = ch == 0 ? px : ch == 1 ? 16 + px : 0;
      ic[q][l] = ch == 2 ? px : 0;
      if (ch == 2) r.mc[q] = static_cast<__mmask16>(r.mc[q] | (1u << l));
    }
    r.ab[q] = _mm512_load_si512(iab[q]);
    r.cc[q] = _mm512_load_si512(ic[q]);
  }
  return r;
}

LOWBIT_TARGET_AVX512 static inline void store3(const Interleave3& il, const __m512* v, float* dst) {
  for (int q = 0; q < 3; ++q) {
    const __m512 ab = _mm512_permutex2var_ps(v[0], il.ab[q], v[1]);
    _mm512_storeu_ps(dst + 16 * q, _mm512_mask_blend_ps(il.mc[q], ab, _mm512_permutexvar_ps(il.cc[q], v[2])));
  }
}

LOWBIT_TARGET_AVX512 inline bool input_rows_f32_avx512(const float* src, int64_t hw, int64_t plane, int64_t c,
                                                       float* dst) {
  if (c != 1 && c != 3) return input_rows_f32_portable(src, hw, plane, c, dst);
  const __m512 big = _mm512_set1_ps(3.402823466e38f);
  const Interleave3 il = interleave3();
  __mmask16 ok = 0xFFFF;  // lanes that stayed finite
  int64_t p = 0;
  for (; p + 16 <= hw; p += 16) {
    __m512 v[3];
    for (int64_t ch = 0; ch < c; ++ch) {
      v[ch] = _mm512_loadu_ps(src + ch * plane + p);
      ok &= _mm512_cmp_ps_mask(_mm512_abs_ps(v[ch]), big, _CMP_LE_OQ);
    }
    if (c == 1) _mm512_storeu_ps(dst + p, v[0]);
    else store3(il, v, dst + 3 * p);
  }
  const bool tail = input_rows_f32_portable(src + p, hw - p, plane, c, dst + p * c);
  return tail || ok != 0xFFFF;
}

LOWBIT_TARGET_AVX512 inline void input_rows_avx512(const uint8_t* src, int64_t hw, int64_t plane, int64_t c,
                                                   const float* table, float* dst) {
  if (c != 1 && c != 3) {
    input_rows_portable(src, hw, plane, c, table, dst);
    return;
  }
  int64_t p = 0;
  if (c == 1) {
    for (; p + 16 <= hw; p += 16) {
      const __m512i u = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + p)));
      _mm512_storeu_ps(dst + p, _mm512_i32gather_ps(u, table, 4));
    }
  } else {
    const Interleave3 il = interleave3();
    for (; p + 16 <= hw; p += 16) {
      __m512 v[3];
      for (int ch = 0; ch < 3; ++ch) {
        const __m512i u = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + ch * plane + p)));
        v[ch] = _mm512_i32gather_ps(u, table + ch * 256, 4);
      }
      store3(il, v, dst + 3 * p);
    }
  }
  for (; p < hw; ++p)  // the last pixels
    for (int64_t ch = 0; ch < c; ++ch) dst[p * c + ch] = table[ch * 256 + src[ch * plane + p]];
}

LOWBIT_TARGET_AVX512 inline void sign_rows_avx512(const float* x, int64_t rows, int64_t c, uint64_t* out) {
  const int64_t nw = (c + 63) / 64;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t w = 0; w < nw; ++w) {
      const int64_t m = c - 64 * w < 64 ? c - 64 * w : 64;
      const float* p = x + r * c + 64 * w;
      uint64_t word = 0;
      for (int64_t q = 0; 16 * q < m; ++q) {
        const int64_t n = m - 16 * q < 16 ? m - 16 * q : 16;
        const __mmask16 k = static_cast<__mmask16>(n == 16 ? 0xFFFF : (1u << n) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(k, p + 16 * q);
        word |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(k, v, zero, _CMP_GE_OQ)) << (16 * q);
      }
      out[r * nw + w] = word;
    }
}
#endif

}  // namespace rows_detail

inline StepRowsFn find_step_rows(const std::string& path) {
#if LOWBIT_X86_PATHS && !defined(LOWBIT_LEAN) && !defined(LOWBIT_SIMDE)
  if (path == "avx512") return &rows_detail::step_rows_avx512;
#endif
  (void)path;
  return &rows_detail::step_rows_portable;
}

// A 1x1 conv / dense with few output channels (a detector's heads: 2-4): y[p][o] = sum_k
// x[p][k] w[k][o] for rows p < m, K = k, oc <= 8, weights transposed and zero padded to
// whole 16-float chunks (wt: oc rows of kp floats).  The float GEMM's job (Eigen spends most of
// such a call packing); it sums in its own order, like any GEMM (within 1e-5 of torch).
using SmallDenseFn = void (*)(const float* x, int64_t m, int64_t k, const float* wt, int64_t kp, int64_t oc,
                              float* y);

#if LOWBIT_X86_PATHS && !defined(LOWBIT_LEAN) && !defined(LOWBIT_SIMDE)
namespace rows_detail {
template <int OC>  // accumulators in registers, the output channels unrolled
LOWBIT_TARGET_AVX512 static inline void small_dense_oc(const float* x, int64_t m, int64_t k, const float* wt,
                                                       int64_t kp, float* y) {
  for (int64_t p = 0; p < m; ++p) {
    const float* xr = x + p * k;
    __m512 acc[OC];
    for (int o = 0; o < OC; ++o) acc[o] = _mm512_setzero_ps();
    for (int64_t j = 0; j < k; j += 16) {
      const int64_t n = k - j < 16 ? k - j : 16;
      const __m512 v = _mm512_maskz_loadu_ps(static_cast<__mmask16>(n == 16 ? 0xFFFF : (1u << n) - 1), xr + j);
      for (int o = 0; o < OC; ++o) acc[o] = _mm512_fmadd_ps(v, _mm512_loadu_ps(wt + o * kp + j), acc[o]);
    }
    for (int o = 0; o < OC; ++o) y[p * OC + o] = _mm512_reduce_add_ps(acc[o]);
  }
}

LOWBIT_TARGET_AVX512 inline void small_dense_avx512(const float* x, int64_t m, int64_t k, const float* wt,
                                                    int64_t kp, int64_t oc, float* y) {
  switch (oc) {
    case 1: return small_dense_oc<1>(x, m, k, wt, kp, y);
    case 2: return small_dense_oc<2>(x, m, k, wt, kp, y);
    case 3: return small_dense_oc<3>(x, m, k, wt, kp, y);
    case 4: return small_dense_oc<4>(x, m, k, wt, kp, y);
    case 5: return small_dense_oc<5>(x, m, k, wt, kp, y);
    case 6: return small_dense_oc<6>(x, m, k, wt, kp, y);
    case 7: return small_dense_oc<7>(x, m, k, wt, kp, y);
    default: return small_dense_oc<8>(x, m, k, wt, kp, y);
  }
}
}  // namespace rows_detail
#endif

// The small-oc kernel of `path`, or null (the float GEMM then).
inline SmallDenseFn find_small_dense(const std::string& path) {
#if LOWBIT_X86_PATHS && !defined(LOWBIT_LEAN) && !defined(LOWBIT_SIMDE)
  if (path == "avx512") return &rows_detail::small_dense_avx512;
#endif
  (void)path;
  return nullptr;
}

inline InputRowsF32Fn find_input_rows_f32(const std::string& path) {
#if LOWBIT_X86_PATHS && !defined(LOWBIT_LEAN) && !defined(LOWBIT_SIMDE)
  if (path == "avx512") return &rows_detail::input_rows_f32_avx512;
#endif
  (void)path;
  return &rows_detail::input_rows_f32_portable;
}

inline InputRowsFn find_input_rows(const std::string& path) {
#if LOWBIT_X86_PATHS && !defined(LOWBIT_LEAN) && !defined(LOWBIT_SIMDE)
  if (path == "avx512") return &rows_detail::input_rows_avx512;
#endif
  (void)path;
  return &rows_detail::input_rows_portable;
}

inline SignRowsFn find_sign_rows(const std::string& path) {
#if LOWBIT_X86_PATHS && !defined(LOWBIT_LEAN) && !defined(LOWBIT_SIMDE)
  if (path == "avx512") return &rows_detail::sign_rows_avx512;
#endif
  (void)path;
  return &rows_detail::sign_rows_portable;
}

}  // namespace graph
}  // namespace lowbit
