// binary_maxpool2d: max pooling of ±1 activations on packed bits (a word OR).
#pragma once

#include <cstdint>

#include "common/threads.h"

namespace lowbit {

// Max pooling of ±1 activations on packed NHWC words: max over a window of ±1 values is +1
// iff any is +1, i.e. the OR of the bits.  Out-of-image taps are skipped (padding acts as
// -inf, like torch's max_pool2d).  Pad bits stay 0 (OR of zeros).  x (n, h, w, cw) ->
// out (n, oh, ow, cw).  Memory-bound word ORs: one plain C++ loop for every path (the
// compiler vectorizes the inner OR for the baseline ISA).
inline void binary_maxpool2d(const uint64_t* x, int64_t n, int64_t h, int64_t w, int64_t cw,
                             int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                             int64_t pw, int64_t oh, int64_t ow, uint64_t* out, int threads) {
  parallel_for(n * oh, threads_for(threads, n * oh * ow * cw * kh * kw, int64_t{1} << 16),
               [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / oh, y = r % oh;
      for (int64_t xo = 0; xo < ow; ++xo) {
        uint64_t* o = out + (r * ow + xo) * cw;
        for (int64_t c = 0; c < cw; ++c) o[c] = 0;
        for (int64_t i = 0; i < kh; ++i) {
          const int64_t iy = y * sh - ph + i;
          if (iy < 0 || iy >= h) continue;
          for (int64_t j = 0; j < kw; ++j) {
            const int64_t ix = xo * sw - pw + j;
            if (ix < 0 || ix >= w) continue;
            const uint64_t* src = x + ((b * h + iy) * w + ix) * cw;
            for (int64_t c = 0; c < cw; ++c) o[c] |= src[c];
          }
        }
      }
    }
  });
}

}  // namespace lowbit
