// Direct float convolution for layers with few input channels (a first layer: 1-4 channels,
// 3x3 / 5x5 windows), used by fconv.h instead of im2col + GEMM: with K = kh*kw*c of 9..100
// the GEMM spends most of its time packing a thin patch matrix.  Here the output channels
// are the vector lanes: for a block of P output pixels of one output row, every tap t
// broadcasts the P input values and multiplies them into the tap's weight vectors
// (V vectors of 16 (AVX-512) or 8 (AVX2) channels), P x V accumulators in registers, and the
// block's rows are stored once.  The input is read from a padded copy (pad rows / columns
// hold the layer's pad value), so there are no border cases.
//
// Sums: acc = 0, then acc += x_t w_t for t = 0 .. K-1 in the patch matrix's tap order (kh,
// kw, c); the AVX paths fuse each multiply-add (one rounding, as Eigen's product does),
// the portable path rounds the product and the sum (the build has -ffp-contract=off).  Both
// are within a few ulps of torch's conv (tests: 1e-5 relative), like the GEMM they replace.
//
// Paths: portable (the reference twin: plain loops over the channels), avx2, avx512, neon
// (fconv_direct_neon.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common/target.h"
#include "graph/fconv_direct_neon.h"  // direct_neon (aarch64)

// The AVX kernels need FMA too (the avx2 path's float GEMM already does: fgemm_avx2.cpp).
#if defined(LOWBIT_SIMDE)
#define LOWBIT_TARGET_AVX2_FMA
#define LOWBIT_TARGET_AVX512_FMA
#elif LOWBIT_X86_PATHS
#define LOWBIT_TARGET_AVX2_FMA __attribute__((target("avx2,fma,popcnt")))
#define LOWBIT_TARGET_AVX512_FMA __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,avx2,fma,popcnt")))
#endif

namespace lowbit {
namespace graph {

// The geometry and the packed weights of one direct conv.
struct DirectConv {
  int64_t c = 1, kh = 1, kw = 1, sh = 1, sw = 1;
  int64_t hp = 0, wp = 0;   // padded input height / width
  int64_t oh = 0, ow = 0, oc = 0;
  int64_t ocp = 0;          // oc rounded up to 16: the packed weights' row length
  std::vector<int32_t> off; // K tap offsets (floats) from a window's origin in the padded input
  std::vector<float> wbuf;  // K x ocp weights (zero in the pad lanes), 64-byte aligned inside
  const float* w = nullptr;
  // Bits out (oc <= 64, no output program): bit j of a pixel's word = flip_j ? y_j <= t_j :
  // y_j >= t_j (a sign: t = 0, no flips; NaN -> 0), as bitpack/threshold.h.
  std::vector<float> tbuf;  // ocp thresholds (0 in the pad lanes), 64-byte aligned inside
  const float* t = nullptr;
  uint64_t flip = 0;

  // thresholds t (oc) and signs s (oc, ±1), or null for a sign
  void init_bits(const float* thr, const float* sgn) {
    tbuf.assign(static_cast<size_t>(ocp + 16), 0.f);
    float* base = tbuf.data();
    while (reinterpret_cast<uintptr_t>(base) % 64) ++base;
    flip = 0;
    for (int64_t j = 0; j < oc && thr; ++j) {
      base[j] = thr[j];
      if (sgn[j] < 0.f) flip |= uint64_t{1} << j;
    }
    t = base;
  }

  // B: (K, oc) row-major, K = kh*kw*c tap-major.
  void init(const float* B) {
    const int64_t K = kh * kw * c;
    ocp = (oc + 15) / 16 * 16;
    wbuf.assign(static_cast<size_t>(K * ocp + 16), 0.f);
    float* base = wbuf.data();
    while (reinterpret_cast<uintptr_t>(base) % 64) ++base;
    for (int64_t t = 0; t < K; ++t) std::memcpy(base + t * ocp, B + t * oc, static_cast<size_t>(oc) * 4);
    w = base;
    off.clear();
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j)
        for (int64_t ch = 0; ch < c; ++ch) off.push_back(static_cast<int32_t>((i * wp + j) * c + ch));
  }
};

// Output rows r0 .. r0+nr of the (n*oh*ow, oc) result of a padded input xp (n, hp, wp, c),
// written to y (row stride oc), or, when bits is not null, as one word per row to bits
// (init_bits; oc <= 64).
using DirectFn = void (*)(const DirectConv& d, const float* xp, int64_t r0, int64_t nr, float* y,
                          uint64_t* bits);

namespace direct_detail {

// The runs of output pixels r0 .. r0+nr that lie on one output row: `next` gives the run
// starting at row r (its length and the padded input's window origin of its first pixel).
inline int64_t next_run(const DirectConv& d, const float* xp, int64_t r, int64_t end, const float** origin) {
  const int64_t ox = r % d.ow, oy = (r / d.ow) % d.oh, b = r / (d.ow * d.oh);
  *origin = xp + ((b * d.hp + oy * d.sh) * d.wp + ox * d.sw) * d.c;
  return std::min(d.ow - ox, end - r);
}

inline void direct_portable(const DirectConv& d, const float* xp, int64_t r0, int64_t nr, float* y,
                            uint64_t* bits) {
  const int64_t K = static_cast<int64_t>(d.off.size()), oc = d.oc, step = d.sw * d.c;
  float acc[64];
  for (int64_t r = r0, run; r < r0 + nr; r += run) {
    const float* origin;
    run = next_run(d, xp, r, r0 + nr, &origin);
    const int64_t row = r - r0;
    for (int64_t p = 0; p < run; ++p) {
      const float* x = origin + p * step;
      for (int64_t g = 0; g < oc; g += 64) {
        const int64_t m = oc - g < 64 ? oc - g : 64;
        for (int64_t o = 0; o < m; ++o) acc[o] = 0.f;
        for (int64_t t = 0; t < K; ++t) {
          const float xv = x[d.off[static_cast<size_t>(t)]];
          const float* wt = d.w + t * d.ocp + g;
          for (int64_t o = 0; o < m; ++o) acc[o] = acc[o] + xv * wt[o];
        }
        if (bits) {
          uint64_t word = 0;
          for (int64_t o = 0; o < m; ++o) {
            const bool f = (d.flip >> o) & 1;
            word |= static_cast<uint64_t>(f ? acc[o] <= d.t[o] : acc[o] >= d.t[o]) << o;
          }
          bits[row + p] = word;
        } else {
          std::memcpy(y + (row + p) * oc + g, acc, static_cast<size_t>(m) * 4);
        }
      }
    }
  }
}

#if LOWBIT_X86_PATHS
// P pixels x V vectors of 16 channels (channels g .. g+16V of the packed weights); the last
// vector stores `last` lanes.
template <int V, int P, bool BITS>
LOWBIT_TARGET_AVX512_FMA static inline void block512(const DirectConv& d, const float* x, int64_t step,
                                                 int64_t g, __mmask16 last, float* y, uint64_t* bits) {
  __m512 acc[P][V];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) acc[p][v] = _mm512_setzero_ps();
  const int64_t K = static_cast<int64_t>(d.off.size());
  const int32_t* off = d.off.data();
  const float* wt = d.w + g;
  for (int64_t t = 0; t < K; ++t, wt += d.ocp) {
    __m512 w[V];
    for (int v = 0; v < V; ++v) w[v] = _mm512_load_ps(wt + 16 * v);
    const float* xt = x + off[t];
    for (int p = 0; p < P; ++p) {
      const __m512 xb = _mm512_set1_ps(xt[p * step]);
      for (int v = 0; v < V; ++v) acc[p][v] = _mm512_fmadd_ps(xb, w[v], acc[p][v]);
    }
  }
  if (BITS) {  // g = 0, V <= 4
    __m512 t[V];
    for (int v = 0; v < V; ++v) t[v] = _mm512_load_ps(d.t + 16 * v);
    for (int p = 0; p < P; ++p) {
      uint64_t word = 0;
      for (int v = 0; v < V; ++v) {
        const uint64_t f = (d.flip >> (16 * v)) & 0xFFFF;
        const uint64_t ge = _mm512_cmp_ps_mask(acc[p][v], t[v], _CMP_GE_OQ);
        const uint64_t le = _mm512_cmp_ps_mask(acc[p][v], t[v], _CMP_LE_OQ);
        word |= ((ge & ~f) | (le & f)) << (16 * v);
      }
      bits[p] = word & ((uint64_t{last} << (16 * (V - 1))) | ((uint64_t{1} << (16 * (V - 1))) - 1));
    }
    return;
  }
  for (int p = 0; p < P; ++p) {
    float* yp = y + p * d.oc + g;
    for (int v = 0; v + 1 < V; ++v) _mm512_storeu_ps(yp + 16 * v, acc[p][v]);
    _mm512_mask_storeu_ps(yp + 16 * (V - 1), last, acc[p][V - 1]);
  }
}

template <int V, int P, bool BITS>
LOWBIT_TARGET_AVX512_FMA static inline void run512(const DirectConv& d, const float* origin, int64_t run,
                                               int64_t step, int64_t g, __mmask16 last, float* y,
                                               uint64_t* bits) {
  int64_t p = 0;
  for (; p + P <= run; p += P) block512<V, P, BITS>(d, origin + p * step, step, g, last, y + p * d.oc, bits + p);
  for (; p + 4 <= run; p += 4) block512<V, 4, BITS>(d, origin + p * step, step, g, last, y + p * d.oc, bits + p);
  for (; p < run; ++p) block512<V, 1, BITS>(d, origin + p * step, step, g, last, y + p * d.oc, bits + p);
}

template <bool BITS>
LOWBIT_TARGET_AVX512_FMA static inline void direct_avx512_impl(const DirectConv& d, const float* xp,
                                                           int64_t r0, int64_t nr, float* y, uint64_t* bits) {
  const int64_t step = d.sw * d.c, oc = d.oc;
  for (int64_t r = r0, run; r < r0 + nr; r += run) {
    const float* origin;
    run = next_run(d, xp, r, r0 + nr, &origin);
    float* yr = BITS ? nullptr : y + (r - r0) * oc;
    uint64_t* br = BITS ? bits + (r - r0) : nullptr;
    for (int64_t g = 0; g < oc; g += 64) {  // groups of up to 4 vectors
      const int64_t m = oc - g < 64 ? oc - g : 64, V = (m + 15) / 16, tail = m - 16 * (V - 1);
      const __mmask16 last = static_cast<__mmask16>(tail == 16 ? 0xFFFF : (1u << tail) - 1);
      switch (V) {
        case 1: run512<1, 12, BITS>(d, origin, run, step, g, last, yr, br); break;
        case 2: run512<2, 12, BITS>(d, origin, run, step, g, last, yr, br); break;
        case 3: run512<3, 8, BITS>(d, origin, run, step, g, last, yr, br); break;
        default: run512<4, 6, BITS>(d, origin, run, step, g, last, yr, br); break;
      }
    }
  }
}

// AVX2: vectors of 8 channels, groups of up to 2 vectors (16 registers).
template <int V, int P, bool BITS>
LOWBIT_TARGET_AVX2_FMA static inline void block256(const DirectConv& d, const float* x, int64_t step,
                                               int64_t g, int tail, float* y, uint64_t* bits) {
  __m256 acc[P][V];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) acc[p][v] = _mm256_setzero_ps();
  const int64_t K = static_cast<int64_t>(d.off.size());
  const int32_t* off = d.off.data();
  const float* wt = d.w + g;
  for (int64_t t = 0; t < K; ++t, wt += d.ocp) {
    __m256 w[V];
    for (int v = 0; v < V; ++v) w[v] = _mm256_load_ps(wt + 8 * v);
    const float* xt = x + off[t];
    for (int p = 0; p < P; ++p) {
      const __m256 xb = _mm256_broadcast_ss(xt + p * step);
      for (int v = 0; v < V; ++v) acc[p][v] = _mm256_fmadd_ps(xb, w[v], acc[p][v]);
    }
  }
  if (BITS) {  // this group's 8 V bits of each pixel's word (|= into words the caller zeroed)
    __m256 t[V];
    for (int v = 0; v < V; ++v) t[v] = _mm256_load_ps(d.t + g + 8 * v);
    const uint64_t keep = (uint64_t{1} << (8 * (V - 1) + tail)) - 1;
    for (int p = 0; p < P; ++p) {
      uint64_t part = 0;
      for (int v = 0; v < V; ++v) {
        const uint64_t f = (d.flip >> (g + 8 * v)) & 0xFF;
        const uint64_t ge = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(acc[p][v], t[v], _CMP_GE_OQ)));
        const uint64_t le = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(acc[p][v], t[v], _CMP_LE_OQ)));
        part |= ((ge & ~f) | (le & f)) << (8 * v);
      }
      bits[p] |= (part & keep) << g;
    }
    return;
  }
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), lanes);
  for (int p = 0; p < P; ++p) {
    float* yp = y + p * d.oc + g;
    for (int v = 0; v + 1 < V; ++v) _mm256_storeu_ps(yp + 8 * v, acc[p][v]);
    if (tail == 8) _mm256_storeu_ps(yp + 8 * (V - 1), acc[p][V - 1]);
    else _mm256_maskstore_ps(yp + 8 * (V - 1), mask, acc[p][V - 1]);
  }
}

template <int V, int P, bool BITS>
LOWBIT_TARGET_AVX2_FMA static inline void run256(const DirectConv& d, const float* origin, int64_t run,
                                             int64_t step, int64_t g, int tail, float* y, uint64_t* bits) {
  int64_t p = 0;
  for (; p + P <= run; p += P) block256<V, P, BITS>(d, origin + p * step, step, g, tail, y + p * d.oc, bits + p);
  for (; p + 2 <= run; p += 2) block256<V, 2, BITS>(d, origin + p * step, step, g, tail, y + p * d.oc, bits + p);
  for (; p < run; ++p) block256<V, 1, BITS>(d, origin + p * step, step, g, tail, y + p * d.oc, bits + p);
}

template <bool BITS>
LOWBIT_TARGET_AVX2_FMA static inline void direct_avx2_impl(const DirectConv& d, const float* xp, int64_t r0,
                                                       int64_t nr, float* y, uint64_t* bits) {
  const int64_t step = d.sw * d.c, oc = d.oc;
  for (int64_t r = r0, run; r < r0 + nr; r += run) {
    const float* origin;
    run = next_run(d, xp, r, r0 + nr, &origin);
    float* yr = BITS ? nullptr : y + (r - r0) * oc;
    uint64_t* br = BITS ? bits + (r - r0) : nullptr;
    if (BITS) std::memset(br, 0, static_cast<size_t>(run) * 8);
    for (int64_t g = 0; g < oc; g += 16) {
      const int64_t m = oc - g < 16 ? oc - g : 16;
      const int tail = static_cast<int>(m > 8 ? m - 8 : m);
      if (m > 8) run256<2, 6, BITS>(d, origin, run, step, g, tail, yr, br);
      else run256<1, 12, BITS>(d, origin, run, step, g, tail, yr, br);
    }
  }
}

LOWBIT_TARGET_AVX512_FMA inline void direct_avx512(const DirectConv& d, const float* xp, int64_t r0,
                                               int64_t nr, float* y, uint64_t* bits) {
  if (bits) direct_avx512_impl<true>(d, xp, r0, nr, y, bits);
  else direct_avx512_impl<false>(d, xp, r0, nr, y, bits);
}
LOWBIT_TARGET_AVX2_FMA inline void direct_avx2(const DirectConv& d, const float* xp, int64_t r0, int64_t nr,
                                           float* y, uint64_t* bits) {
  if (bits) direct_avx2_impl<true>(d, xp, r0, nr, y, bits);
  else direct_avx2_impl<false>(d, xp, r0, nr, y, bits);
}
#endif

}  // namespace direct_detail

inline DirectFn find_direct(const std::string& path) {
#if LOWBIT_X86_PATHS
  if (path == "avx2") return &direct_detail::direct_avx2;
  if (path == "avx512") return &direct_detail::direct_avx512;
#endif
#if LOWBIT_NEON_PATH
  if (path == "neon") return &direct_detail::direct_neon<DirectConv>;
#endif
  return &direct_detail::direct_portable;
}

}  // namespace graph
}  // namespace lowbit
