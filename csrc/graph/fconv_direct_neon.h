// aarch64 NEON twin of the direct float convolution (graph/fconv_direct.h: a first layer with
// few input channels): output channels in the vector lanes, 4 per q-register.
//
// Block: P = 4 output pixels x V <= 4 vectors (16 channels).  Per tap t the V weight vectors
// are loaded once (LDP) and each pixel's input value is read as a scalar and multiplied in
// by element (FMUL v, w, x.s[0]: no broadcast instruction):
//     acc[p][v] = acc[p][v] + (x_p,t * w_t,v)          FMUL + FADD
// 16 accumulators + 4 weights + the products: ~24 of the 32 q-registers.  Per tap: 2 LDP,
// 4 scalar loads, 32 arithmetic ops for 64 multiply-adds (direct_portable: ~4 per one).
//
// Exactness: FMUL then FADD rounds the product and the sum like direct_portable (the
// reference twin; the build has -ffp-contract=off, so the pair is never fused), in the same
// tap order from acc = 0, lane by lane: the result equals the portable path's bit for bit,
// and so the x86 portable executor's (fused multiply-add would save 16 instructions per tap
// but differ in the last bits, as the AVX paths do).
//
// Bits out (fconv_direct.h, DirectConv::init_bits): per 4 channels, y >= t and y <= t lane
// masks (FCMGE / FCMGE with swapped operands; both false for NaN), BSL by the flipped lanes,
// AND with the lane weights 1, 2, 4, 8 and ADDV give 4 bits of the pixel's word.
//
// Written as a template on the DirectConv type so that fconv_direct.h can include this
// header before it defines DirectConv (the body is only instantiated in find_direct).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/target.h"

#if LOWBIT_NEON_PATH
#include <arm_neon.h>

namespace lowbit {
namespace graph {
namespace direct_detail {

// P pixels (x: the first one's window origin, step floats apart) x V vectors of channels
// g .. g + 4V; the block's last m <= 4V channels are stored.
template <int V, int P, class D>
inline void block_neon(const D& d, const float* x, int64_t step, int64_t g, int64_t m, float* y,
                       uint64_t* bits) {
  float32x4_t acc[P][V];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[p][v] = vdupq_n_f32(0.f);
  const int64_t K = static_cast<int64_t>(d.off.size());
  const int32_t* off = d.off.data();
  const float* wt = d.w + g;
  for (int64_t t = 0; t < K; ++t, wt += d.ocp) {
    float32x4_t w[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) w[v] = vld1q_f32(wt + 4 * v);
    const float* xt = x + off[t];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      const float xv = xt[p * step];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[p][v] = vaddq_f32(acc[p][v], vmulq_n_f32(w[v], xv));
    }
  }
  if (bits) {  // bits g .. g+m of each pixel's word (the caller zeroed the words)
    // lane mask of the flipped channels (x <= t asked) and the lane weights 1, 2, 4, 8
    const uint32x4_t lane_w = {1u, 2u, 4u, 8u};
    uint32x4_t t_flip[V];
    float32x4_t t[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      t[v] = vld1q_f32(d.t + g + 4 * v);
      const uint32x4_t f = vdupq_n_u32(static_cast<uint32_t>((d.flip >> (g + 4 * v)) & 0xF));
      t_flip[v] = vtstq_u32(f, lane_w);
    }
    const uint64_t keep = m == 64 ? ~uint64_t{0} : (uint64_t{1} << m) - 1;  // pad lanes: t = 0, y = 0
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      uint64_t part = 0;
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) {
        // ge / le: all-ones lanes where y >= t / y <= t (both false for NaN)
        const uint32x4_t sel = vbslq_u32(t_flip[v], vcleq_f32(acc[p][v], t[v]), vcgeq_f32(acc[p][v], t[v]));
        part |= static_cast<uint64_t>(vaddvq_u32(vandq_u32(sel, lane_w))) << (4 * v);
      }
      bits[p] |= (part & keep) << g;
    }
    return;
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    float* yp = y + p * d.oc + g;
    if (m == 4 * V) {
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) vst1q_f32(yp + 4 * v, acc[p][v]);
    } else {  // channel tail: through a buffer (a full vector would spill into the next row)
      float tmp[4 * V];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) vst1q_f32(tmp + 4 * v, acc[p][v]);
      std::memcpy(yp, tmp, static_cast<size_t>(m) * 4);
    }
  }
}

template <int V, class D>
inline void run_neon(const D& d, const float* origin, int64_t run, int64_t step, int64_t g, int64_t m,
                     float* y, uint64_t* bits) {
  int64_t p = 0;
  for (; p + 4 <= run; p += 4)
    block_neon<V, 4>(d, origin + p * step, step, g, m, y ? y + p * d.oc : y, bits ? bits + p : bits);
  for (; p < run; ++p)
    block_neon<V, 1>(d, origin + p * step, step, g, m, y ? y + p * d.oc : y, bits ? bits + p : bits);
}

// DirectFn contract (fconv_direct.h): output rows r0 .. r0+nr of the padded input xp, as
// floats to y or (bits not null, oc <= 64) as one word of threshold bits per row.
template <class D>
void direct_neon(const D& d, const float* xp, int64_t r0, int64_t nr, float* y, uint64_t* bits) {
  const int64_t step = d.sw * d.c, oc = d.oc;
  for (int64_t r = r0, run; r < r0 + nr; r += run) {
    // the run of output pixels from r on one output row, and its first window's origin
    const int64_t ox = r % d.ow, oy = (r / d.ow) % d.oh, b = r / (d.ow * d.oh);
    const float* origin = xp + ((b * d.hp + oy * d.sh) * d.wp + ox * d.sw) * d.c;
    run = std::min(d.ow - ox, r0 + nr - r);
    float* yr = bits ? nullptr : y + (r - r0) * oc;
    uint64_t* br = bits ? bits + (r - r0) : nullptr;
    if (br) std::memset(br, 0, static_cast<size_t>(run) * 8);
    for (int64_t g = 0; g < oc; g += 16) {  // groups of up to 4 vectors (ocp pads to 16)
      const int64_t m = std::min<int64_t>(16, oc - g);
      switch ((m + 3) / 4) {
        case 1: run_neon<1>(d, origin, run, step, g, m, yr, br); break;
        case 2: run_neon<2>(d, origin, run, step, g, m, yr, br); break;
        case 3: run_neon<3>(d, origin, run, step, g, m, yr, br); break;
        default: run_neon<4>(d, origin, run, step, g, m, yr, br); break;
      }
    }
  }
}

}  // namespace direct_detail
}  // namespace graph
}  // namespace lowbit
#endif
