// Sparse float dense layer for the graph executor: a dense layer whose weight matrix is mostly
// zeros (a Deep-Compression file's pruned fc layers, decoded to dense float32 at load) is
// multiplied over its nonzero weights only, kept at plan time in CSR form per output
// (fconv.h picks it when at most a quarter of the weights are nonzero).
//
// Sums: y[n] = sum of x[k] w[n, k] over the nonzero w[n, k] of output n; zero weights add
// nothing (0 x = ±0 for finite x; for an infinite or NaN x the dense product gives NaN, this
// one does not: the graph input refuses non-finite values, an overflow inside a model can
// still make one).  The order of the sum differs from the dense GEMM's and between paths
// (within a few ulps: tests, 1e-5 relative like every float layer).
//
// Paths: portable (the reference twin: one scalar sum per output), avx2 and avx512: blocks of
// 8 / 16 rows are transposed so that one vector holds one input feature of 8 / 16 rows, and
// each nonzero weight is one broadcast multiply-add into 8 accumulators; rows outside whole
// blocks (batch 1) are scalar fused multiply-adds into 4 accumulators per output.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "graph/fconv_direct.h"  // LOWBIT_TARGET_*_FMA

namespace lowbit {
namespace graph {

struct SparseDense {
  int64_t K = 0, N = 0;
  std::vector<int32_t> ptr, idx;  // CSR of the (N, K) weight matrix
  std::vector<float> val;

  // Counts the nonzeros of W (N, K) row-major; builds the CSR if their share is <= max_density.
  bool init(const float* W, int64_t n, int64_t k, double max_density) {
    int64_t nnz = 0;
    for (int64_t j = 0; j < n * k; ++j) nnz += W[j] != 0.f;
    if (static_cast<double>(nnz) > max_density * static_cast<double>(n * k) || n * k == 0) return false;
    N = n; K = k;
    ptr.assign(static_cast<size_t>(n + 1), 0);
    idx.reserve(static_cast<size_t>(nnz));
    val.reserve(static_cast<size_t>(nnz));
    for (int64_t o = 0; o < n; ++o) {
      for (int64_t j = 0; j < k; ++j)
        if (W[o * k + j] != 0.f) {
          idx.push_back(static_cast<int32_t>(j));
          val.push_back(W[o * k + j]);
        }
      ptr[static_cast<size_t>(o + 1)] = static_cast<int32_t>(idx.size());
    }
    return true;
  }
  // scratch floats per worker: a transposed block of 16 rows and its 16 x N result
  int64_t scratch_floats() const { return (K + N) * 16; }
};

// C rows 0 .. m of A (m, K) (row stride lda) times the sparse weights -> C (row stride ldc).
using SparseFn = void (*)(const SparseDense& s, const float* A, int64_t lda, int64_t m, float* C,
                          int64_t ldc, float* scratch);

namespace sparse_detail {

inline void sparse_row_portable(const SparseDense& s, const float* a, float* c) {
  const int32_t* ptr = s.ptr.data();
  const int32_t* idx = s.idx.data();
  const float* val = s.val.data();
  for (int64_t o = 0; o < s.N; ++o) {
    float acc = 0.f;
    for (int32_t j = ptr[o]; j < ptr[o + 1]; ++j) acc = acc + a[idx[j]] * val[j];
    c[o] = acc;
  }
}

inline void sparse_portable(const SparseDense& s, const float* A, int64_t lda, int64_t m, float* C,
                            int64_t ldc, float*) {
  for (int64_t i = 0; i < m; ++i) sparse_row_portable(s, A + i * lda, C + i * ldc);
}

#if LOWBIT_X86_PATHS
// One block of up to L rows (L = 16 (avx512) / 8 (avx2) floats per vector): at (K, L) = the
// block transposed (zero lanes past `rows`), ct (N, L) = its result, written back as rows.
#define LOWBIT_SPARSE_BLOCK(NAME, TARGET, VEC, L, FMA, SET1, LOAD, STORE, ZERO, ADD)              \
  TARGET static inline void NAME(const SparseDense& s, const float* A, int64_t lda, int64_t rows,  \
                                 float* C, int64_t ldc, float* at, float* ct) {                    \
    const int64_t K = s.K, N = s.N;                                                                \
    for (int64_t r = 0; r < L; ++r)                                                                \
      for (int64_t k = 0; k < K; ++k) at[k * L + r] = r < rows ? A[r * lda + k] : 0.f;             \
    const int32_t* ptr = s.ptr.data();                                                             \
    const int32_t* idx = s.idx.data();                                                             \
    const float* val = s.val.data();                                                               \
    for (int64_t o = 0; o < N; ++o) {                                                              \
      VEC acc[8];                                                                                  \
      for (int q = 0; q < 8; ++q) acc[q] = ZERO();                                                 \
      int32_t j = ptr[o];                                                                          \
      const int32_t e = ptr[o + 1];                                                                \
      for (; j + 8 <= e; j += 8)                                                                   \
        for (int q = 0; q < 8; ++q) acc[q] = FMA(SET1(val[j + q]), LOAD(at + int64_t{idx[j + q]} * L), acc[q]); \
      for (int q = 0; j < e; ++j, ++q) acc[q] = FMA(SET1(val[j]), LOAD(at + int64_t{idx[j]} * L), acc[q]); \
      const VEC s01 = ADD(acc[0], acc[1]), s23 = ADD(acc[2], acc[3]);                              \
      const VEC s45 = ADD(acc[4], acc[5]), s67 = ADD(acc[6], acc[7]);                              \
      STORE(ct + o * L, ADD(ADD(s01, s23), ADD(s45, s67)));                                        \
    }                                                                                              \
    for (int64_t r = 0; r < rows; ++r)                                                             \
      for (int64_t o = 0; o < N; ++o) C[r * ldc + o] = ct[o * L + r];                              \
  }
LOWBIT_SPARSE_BLOCK(block16_avx512, LOWBIT_TARGET_AVX512_FMA, __m512, 16, _mm512_fmadd_ps, _mm512_set1_ps,
                    _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps, _mm512_add_ps)
LOWBIT_SPARSE_BLOCK(block8_avx2, LOWBIT_TARGET_AVX2_FMA, __m256, 8, _mm256_fmadd_ps, _mm256_set1_ps,
                    _mm256_loadu_ps, _mm256_storeu_ps, _mm256_setzero_ps, _mm256_add_ps)
#undef LOWBIT_SPARSE_BLOCK

// One row (batch 1): scalar multiply-adds into 4 accumulators per output (a gather per 16
// nonzeros measured slower on this AMD core: the loads, not the arithmetic, bound it).
#define LOWBIT_SPARSE_ROW(NAME, TARGET)                                                           \
  TARGET static inline void NAME(const SparseDense& s, const float* a, float* c) {                 \
    const int32_t* ptr = s.ptr.data();                                                             \
    const int32_t* idx = s.idx.data();                                                             \
    const float* val = s.val.data();                                                               \
    for (int64_t o = 0; o < s.N; ++o) {                                                            \
      float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;                                                \
      int32_t j = ptr[o];                                                                          \
      const int32_t e = ptr[o + 1];                                                                \
      for (; j + 4 <= e; j += 4) {                                                                 \
        a0 = __builtin_fmaf(a[idx[j]], val[j], a0);                                                \
        a1 = __builtin_fmaf(a[idx[j + 1]], val[j + 1], a1);                                        \
        a2 = __builtin_fmaf(a[idx[j + 2]], val[j + 2], a2);                                        \
        a3 = __builtin_fmaf(a[idx[j + 3]], val[j + 3], a3);                                        \
      }                                                                                            \
      for (; j < e; ++j) a0 = __builtin_fmaf(a[idx[j]], val[j], a0);                               \
      c[o] = (a0 + a1) + (a2 + a3);                                                                \
    }                                                                                              \
  }
LOWBIT_SPARSE_ROW(sparse_row_avx512, LOWBIT_TARGET_AVX512_FMA)
LOWBIT_SPARSE_ROW(sparse_row_avx2, LOWBIT_TARGET_AVX2_FMA)
#undef LOWBIT_SPARSE_ROW

LOWBIT_TARGET_AVX512_FMA inline void sparse_avx512(const SparseDense& s, const float* A, int64_t lda, int64_t m,
                                                   float* C, int64_t ldc, float* scratch) {
  int64_t i = 0;
  for (; i + 1 < m; i += 16) {  // blocks of 16 rows, the last one partial (2 rows and up)
    if (m - i <= 8) {  // a few rows: 8 lanes waste less
      block8_avx2(s, A + i * lda, lda, m - i, C + i * ldc, ldc, scratch, scratch + s.K * 16);
      i = m;
      break;
    }
    block16_avx512(s, A + i * lda, lda, std::min<int64_t>(16, m - i), C + i * ldc, ldc, scratch, scratch + s.K * 16);
  }
  if (i < m) sparse_row_avx512(s, A + i * lda, C + i * ldc);
}

LOWBIT_TARGET_AVX2_FMA inline void sparse_avx2(const SparseDense& s, const float* A, int64_t lda, int64_t m,
                                               float* C, int64_t ldc, float* scratch) {
  int64_t i = 0;
  for (; i + 1 < m; i += 8)
    block8_avx2(s, A + i * lda, lda, std::min<int64_t>(8, m - i), C + i * ldc, ldc, scratch, scratch + s.K * 16);
  if (i < m) sparse_row_avx2(s, A + i * lda, C + i * ldc);
}
#endif

}  // namespace sparse_detail

// ---- sparse conv (stride 1): output pixels in the vector lanes --------------------------
// One image at a time.  The input is laid out as shifted planes xs[ch][j] (hp rows of ow
// floats: xs[ch][j][iy][ox] = padded x[iy][ox + j][ch]), so that for a tap (i, j, ch) the
// inputs of all oh*ow output pixels, flattened, are one contiguous run of xs[ch][j] starting
// at row i.  Each output channel then adds, per nonzero weight, one broadcast multiply-add
// into its pixel vectors (blocks of up to 8 vectors of 16 (avx512) / 8 (avx2) pixels; the
// last one's lanes past the image read the planes' 16-float slack and are not stored): work
// proportional to the nonzero weights, full lanes at any width.  The
// result (oc, oh*ow) is transposed to NHWC rows.  Sums: each output adds its nonzero taps in
// tap order (kh, kw, c), one rounding per multiply-add (portable: two).
struct SparseConv {
  int64_t c = 1, kh = 1, kw = 1, hp = 0, oh = 0, ow = 0, oc = 0;
  std::vector<int32_t> ptr, off;  // per output channel: its nonzero taps' offsets in xs
  std::vector<float> val;

  // B: (K, oc) row-major, K = kh*kw*c tap-major.  Builds the lists if at most max_density of
  // the weights are nonzero.
  bool init(const float* B, double max_density) {
    const int64_t K = kh * kw * c;
    int64_t nnz = 0;
    for (int64_t j = 0; j < K * oc; ++j) nnz += B[j] != 0.f;
    if (K * oc == 0 || static_cast<double>(nnz) > max_density * static_cast<double>(K * oc)) return false;
    ptr.assign(static_cast<size_t>(oc + 1), 0);
    for (int64_t o = 0; o < oc; ++o) {
      for (int64_t i = 0; i < kh; ++i)
        for (int64_t j = 0; j < kw; ++j)
          for (int64_t ch = 0; ch < c; ++ch) {
            const float w = B[((i * kw + j) * c + ch) * oc + o];
            if (w == 0.f) continue;
            off.push_back(static_cast<int32_t>((ch * kw + j) * hp * ow + i * ow));
            val.push_back(w);
          }
      ptr[static_cast<size_t>(o + 1)] = static_cast<int32_t>(off.size());
    }
    return true;
  }
  int64_t plane_floats() const { return c * kw * hp * ow + 16; }  // xs (+ masked-load slack)
  int64_t out_floats() const { return oc * oh * ow; }
};

// xs: one image's shifted planes; yt: (oc, oh*ow) scratch; y: the image's (oh*ow, oc) rows.
using SparseConvFn = void (*)(const SparseConv& s, const float* xs, float* yt, float* y);

namespace sparse_detail {

inline void planes_to_rows(const SparseConv& s, const float* yt, float* y) {
  const int64_t hw = s.oh * s.ow;
  for (int64_t p = 0; p < hw; ++p)
    for (int64_t o = 0; o < s.oc; ++o) y[p * s.oc + o] = yt[o * hw + p];
}

#if LOWBIT_X86_PATHS && !defined(LOWBIT_SIMDE)
// yt (oc, P) -> y (P, oc): 16 x 16 blocks transposed in registers (unpack / shuffle), the
// channel and pixel tails element by element.
LOWBIT_TARGET_AVX512_FMA static inline void transpose_avx512(const float* yt, int64_t oc, int64_t P, float* y) {
  const int64_t oc16 = oc / 16 * 16, P16 = P / 16 * 16;
  for (int64_t o0 = 0; o0 < oc16; o0 += 16)
    for (int64_t p0 = 0; p0 < P16; p0 += 16) {
      __m512 r[16], t[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(yt + (o0 + i) * P + p0);
      for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
      }
      for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
      }
      // r[4q + j] (q = row group of 4, j = 0..3) holds, per 128-bit lane L, the 4 values of
      // pixels 4L + j' ... ; combine the 128-bit lanes across the 4 groups
      for (int j = 0; j < 4; ++j) {
        const __m512 a = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), b = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
        const __m512 c = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88), d = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
        t[j] = _mm512_shuffle_f32x4(a, c, 0x88);
        t[8 + j] = _mm512_shuffle_f32x4(a, c, 0xDD);
        t[4 + j] = _mm512_shuffle_f32x4(b, d, 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(b, d, 0xDD);
      }
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(y + (p0 + i) * oc + o0, t[i]);
    }
  for (int64_t p = 0; p < P; ++p) {  // tails
    const int64_t o_start = p < P16 ? oc16 : 0;
    for (int64_t o = o_start; o < oc; ++o) y[p * oc + o] = yt[o * P + p];
  }
}
#endif

inline void sparse_conv_portable(const SparseConv& s, const float* xs, float* yt, float* y) {
  const int64_t P = s.oh * s.ow;
  for (int64_t o = 0; o < s.oc; ++o)
    for (int64_t p = 0; p < P; ++p) {
      float acc = 0.f;
      for (int32_t j = s.ptr[o]; j < s.ptr[o + 1]; ++j) acc = acc + xs[s.off[j] + p] * s.val[j];
      yt[o * P + p] = acc;
    }
  planes_to_rows(s, yt, y);
}

#if LOWBIT_X86_PATHS && !defined(LOWBIT_SIMDE)
template <int G>
LOWBIT_TARGET_AVX512_FMA static inline void sconv_block512(const SparseConv& s, const float* xs, int64_t o,
                                                           int64_t p0, int64_t P, __mmask16 k, float* yt) {
  __m512 acc[G];
  for (int g = 0; g < G; ++g) acc[g] = _mm512_setzero_ps();
  const float* base = xs + p0;
  for (int32_t j = s.ptr[o]; j < s.ptr[o + 1]; ++j) {
    const __m512 w = _mm512_set1_ps(s.val[j]);
    const float* src = base + s.off[j];
    for (int g = 0; g < G; ++g) acc[g] = _mm512_fmadd_ps(w, _mm512_loadu_ps(src + 16 * g), acc[g]);
  }
  float* d = yt + o * P + p0;
  for (int g = 0; g + 1 < G; ++g) _mm512_storeu_ps(d + 16 * g, acc[g]);
  _mm512_mask_storeu_ps(d + 16 * (G - 1), k, acc[G - 1]);
}

LOWBIT_TARGET_AVX512_FMA inline void sparse_conv_avx512(const SparseConv& s, const float* xs, float* yt, float* y) {
  const int64_t P = s.oh * s.ow;
  for (int64_t p0 = 0; p0 < P; p0 += 128) {
    const int64_t n = P - p0 < 128 ? P - p0 : 128, G = (n + 15) / 16, tail = n - 16 * (G - 1);
    const __mmask16 k = static_cast<__mmask16>(tail == 16 ? 0xFFFF : (1u << tail) - 1);
    for (int64_t o = 0; o < s.oc; ++o) switch (G) {
        case 8: sconv_block512<8>(s, xs, o, p0, P, k, yt); break;
        case 7: sconv_block512<7>(s, xs, o, p0, P, k, yt); break;
        case 6: sconv_block512<6>(s, xs, o, p0, P, k, yt); break;
        case 5: sconv_block512<5>(s, xs, o, p0, P, k, yt); break;
        case 4: sconv_block512<4>(s, xs, o, p0, P, k, yt); break;
        case 3: sconv_block512<3>(s, xs, o, p0, P, k, yt); break;
        case 2: sconv_block512<2>(s, xs, o, p0, P, k, yt); break;
        default: sconv_block512<1>(s, xs, o, p0, P, k, yt); break;
      }
  }
  transpose_avx512(yt, s.oc, s.oh * s.ow, y);
}

template <int G>
LOWBIT_TARGET_AVX2_FMA static inline void sconv_block256(const SparseConv& s, const float* xs, int64_t o,
                                                         int64_t p0, int64_t P, __m256i mask, float* yt) {
  __m256 acc[G];
  for (int g = 0; g < G; ++g) acc[g] = _mm256_setzero_ps();
  const float* base = xs + p0;
  for (int32_t j = s.ptr[o]; j < s.ptr[o + 1]; ++j) {
    const __m256 w = _mm256_set1_ps(s.val[j]);
    const float* src = base + s.off[j];
    for (int g = 0; g < G; ++g) acc[g] = _mm256_fmadd_ps(w, _mm256_loadu_ps(src + 8 * g), acc[g]);
  }
  float* d = yt + o * P + p0;
  for (int g = 0; g + 1 < G; ++g) _mm256_storeu_ps(d + 8 * g, acc[g]);
  _mm256_maskstore_ps(d + 8 * (G - 1), mask, acc[G - 1]);
}

LOWBIT_TARGET_AVX2_FMA inline void sparse_conv_avx2(const SparseConv& s, const float* xs, float* yt, float* y) {
  const int64_t P = s.oh * s.ow;
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t p0 = 0; p0 < P; p0 += 64) {
    const int64_t n = P - p0 < 64 ? P - p0 : 64, G = (n + 7) / 8, tail = n - 8 * (G - 1);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(tail)), lanes);
    for (int64_t o = 0; o < s.oc; ++o) switch (G) {
        case 8: sconv_block256<8>(s, xs, o, p0, P, mask, yt); break;
        case 7: sconv_block256<7>(s, xs, o, p0, P, mask, yt); break;
        case 6: sconv_block256<6>(s, xs, o, p0, P, mask, yt); break;
        case 5: sconv_block256<5>(s, xs, o, p0, P, mask, yt); break;
        case 4: sconv_block256<4>(s, xs, o, p0, P, mask, yt); break;
        case 3: sconv_block256<3>(s, xs, o, p0, P, mask, yt); break;
        case 2: sconv_block256<2>(s, xs, o, p0, P, mask, yt); break;
        default: sconv_block256<1>(s, xs, o, p0, P, mask, yt); break;
      }
  }
  planes_to_rows(s, yt, y);
}
#endif

}  // namespace sparse_detail

// ---- dense conv with the output pixels in the lanes (stride 1, more than 4 input channels) --
// The same shifted input planes as the sparse conv; per block of up to 64 (avx512) / 32
// (avx2) output pixels and 6 (avx512) / 2 (avx2) output channels, every tap loads the block's
// input vectors once and multiplies them into the channels' accumulators (weights broadcast):
// all lanes busy whatever the channel count (LeNet-5's conv2 has 50: 78 % of the lanes of an
// output-channels-in-lanes kernel).  Sums: acc = 0, then acc += x_t w_t for t in tap order
// (kh, kw, c), one rounding per multiply-add (portable: two): the direct conv's order.
struct LaneConv {
  int64_t c = 1, kh = 1, kw = 1, hp = 0, oh = 0, ow = 0, oc = 0;
  int64_t ob = 6;                 // output channels per block (the packed weights' group)
  std::vector<int32_t> toff;      // per tap (kh, kw, c order): offset in the shifted planes
  std::vector<float> wpk;         // (ceil(oc/ob), K, ob): zero for channels past oc

  void init(const float* B, int64_t block) {  // B: (K, oc) row-major, tap-major
    ob = block;
    const int64_t K = kh * kw * c, nb = (oc + ob - 1) / ob;
    toff.clear();
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j)
        for (int64_t ch = 0; ch < c; ++ch) toff.push_back(static_cast<int32_t>((ch * kw + j) * hp * ow + i * ow));
    wpk.assign(static_cast<size_t>(nb * K * ob), 0.f);
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t t = 0; t < K; ++t)
        for (int64_t q = 0; q < ob && b * ob + q < oc; ++q)
          wpk[static_cast<size_t>((b * K + t) * ob + q)] = B[t * oc + b * ob + q];
  }
  int64_t plane_floats() const { return c * kw * hp * ow + 16; }
  int64_t out_floats() const { return (oc + ob - 1) / ob * ob * oh * ow; }  // (padded oc, pixels)
};

using LaneConvFn = void (*)(const LaneConv& s, const float* xs, float* yt, float* y);

namespace sparse_detail {

inline void lane_to_rows(const LaneConv& s, const float* yt, float* y) {
  const int64_t P = s.oh * s.ow;
  for (int64_t p = 0; p < P; ++p)
    for (int64_t o = 0; o < s.oc; ++o) y[p * s.oc + o] = yt[o * P + p];
}

inline void lane_conv_portable(const LaneConv& s, const float* xs, float* yt, float* y) {
  const int64_t P = s.oh * s.ow, K = static_cast<int64_t>(s.toff.size()), nb = (s.oc + s.ob - 1) / s.ob;
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t q = 0; q < s.ob; ++q)
      for (int64_t p = 0; p < P; ++p) {
        float acc = 0.f;
        for (int64_t t = 0; t < K; ++t) acc = acc + xs[s.toff[static_cast<size_t>(t)] + p] * s.wpk[static_cast<size_t>((b * K + t) * s.ob + q)];
        yt[(b * s.ob + q) * P + p] = acc;
      }
  lane_to_rows(s, yt, y);
}

#if LOWBIT_X86_PATHS && !defined(LOWBIT_SIMDE)
template <int G>
LOWBIT_TARGET_AVX512_FMA static inline void lane_block512(const LaneConv& s, const float* xs, int64_t b,
                                                          int64_t p0, int64_t P, __mmask16 k, float* yt) {
  constexpr int B = 6;
  __m512 acc[B][G];
  for (int q = 0; q < B; ++q)
    for (int g = 0; g < G; ++g) acc[q][g] = _mm512_setzero_ps();
  const int64_t K = static_cast<int64_t>(s.toff.size());
  const int32_t* toff = s.toff.data();
  const float* w = s.wpk.data() + b * K * B;
  const float* base = xs + p0;
  for (int64_t t = 0; t < K; ++t, w += B) {
    const float* src = base + toff[t];
    __m512 in[G];  // (unmasked: lanes past the block read the planes' slack, never stored; a
                   // masked load here made GCC keep the accumulators in memory)
    for (int g = 0; g < G; ++g) in[g] = _mm512_loadu_ps(src + 16 * g);
    for (int q = 0; q < B; ++q) {
      const __m512 wq = _mm512_set1_ps(w[q]);
      for (int g = 0; g < G; ++g) acc[q][g] = _mm512_fmadd_ps(wq, in[g], acc[q][g]);
    }
  }
  for (int q = 0; q < B; ++q) {
    float* d = yt + (b * B + q) * P + p0;
    for (int g = 0; g + 1 < G; ++g) _mm512_storeu_ps(d + 16 * g, acc[q][g]);
    _mm512_mask_storeu_ps(d + 16 * (G - 1), k, acc[q][G - 1]);
  }
}

LOWBIT_TARGET_AVX512_FMA inline void lane_conv_avx512(const LaneConv& s, const float* xs, float* yt, float* y) {
  const int64_t P = s.oh * s.ow, nb = (s.oc + 5) / 6;
  for (int64_t p0 = 0; p0 < P; p0 += 64) {
    const int64_t n = P - p0 < 64 ? P - p0 : 64, G = (n + 15) / 16, tail = n - 16 * (G - 1);
    const __mmask16 k = static_cast<__mmask16>(tail == 16 ? 0xFFFF : (1u << tail) - 1);
    for (int64_t b = 0; b < nb; ++b) switch (G) {
        case 4: lane_block512<4>(s, xs, b, p0, P, k, yt); break;
        case 3: lane_block512<3>(s, xs, b, p0, P, k, yt); break;
        case 2: lane_block512<2>(s, xs, b, p0, P, k, yt); break;
        default: lane_block512<1>(s, xs, b, p0, P, k, yt); break;
      }
  }
  transpose_avx512(yt, s.oc, s.oh * s.ow, y);
}

template <int G>
LOWBIT_TARGET_AVX2_FMA static inline void lane_block256(const LaneConv& s, const float* xs, int64_t b,
                                                        int64_t p0, int64_t P, __m256i mask, float* yt) {
  constexpr int B = 2;
  __m256 acc[B][G];
  for (int q = 0; q < B; ++q)
    for (int g = 0; g < G; ++g) acc[q][g] = _mm256_setzero_ps();
  const int64_t K = static_cast<int64_t>(s.toff.size());
  const int32_t* toff = s.toff.data();
  const float* w = s.wpk.data() + b * K * B;
  const float* base = xs + p0;
  for (int64_t t = 0; t < K; ++t, w += B) {
    const float* src = base + toff[t];
    __m256 in[G];
    for (int g = 0; g < G; ++g) in[g] = _mm256_loadu_ps(src + 8 * g);
    for (int q = 0; q < B; ++q) {
      const __m256 wq = _mm256_broadcast_ss(w + q);
      for (int g = 0; g < G; ++g) acc[q][g] = _mm256_fmadd_ps(wq, in[g], acc[q][g]);
    }
  }
  for (int q = 0; q < B; ++q) {
    float* d = yt + (b * B + q) * P + p0;
    for (int g = 0; g + 1 < G; ++g) _mm256_storeu_ps(d + 8 * g, acc[q][g]);
    _mm256_maskstore_ps(d + 8 * (G - 1), mask, acc[q][G - 1]);
  }
}

LOWBIT_TARGET_AVX2_FMA inline void lane_conv_avx2(const LaneConv& s, const float* xs, float* yt, float* y) {
  const int64_t P = s.oh * s.ow, nb = (s.oc + 1) / 2;
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t p0 = 0; p0 < P; p0 += 32) {
    const int64_t n = P - p0 < 32 ? P - p0 : 32, G = (n + 7) / 8, tail = n - 8 * (G - 1);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(tail)), lanes);
    for (int64_t b = 0; b < nb; ++b) switch (G) {
        case 4: lane_block256<4>(s, xs, b, p0, P, mask, yt); break;
        case 3: lane_block256<3>(s, xs, b, p0, P, mask, yt); break;
        case 2: lane_block256<2>(s, xs, b, p0, P, mask, yt); break;
        default: lane_block256<1>(s, xs, b, p0, P, mask, yt); break;
      }
  }
  lane_to_rows(s, yt, y);
}
#endif

}  // namespace sparse_detail

// The kernel of a path and its output-channel block (the packed weights' layout).
inline LaneConvFn find_lane_conv(const std::string& path, int64_t* block) {
#if LOWBIT_X86_PATHS && !defined(LOWBIT_SIMDE)
  if (path == "avx2") { *block = 2; return &sparse_detail::lane_conv_avx2; }
  if (path == "avx512") { *block = 6; return &sparse_detail::lane_conv_avx512; }
#endif
  *block = 1;
  return &sparse_detail::lane_conv_portable;
}

inline SparseConvFn find_sparse_conv(const std::string& path) {
#if LOWBIT_X86_PATHS && !defined(LOWBIT_SIMDE)
  if (path == "avx2") return &sparse_detail::sparse_conv_avx2;
  if (path == "avx512") return &sparse_detail::sparse_conv_avx512;
#endif
  return &sparse_detail::sparse_conv_portable;
}

inline SparseFn find_sparse(const std::string& path) {
#if LOWBIT_X86_PATHS
  if (path == "avx2") return &sparse_detail::sparse_avx2;
  if (path == "avx512") return &sparse_detail::sparse_avx512;
#endif
  return &sparse_detail::sparse_portable;
}

}  // namespace graph
}  // namespace lowbit
