// Pooling, upsampling and the joins (add, concat) of the graph executor, on NHWC values.
// Sums add a window's taps row by row, one after another, in float32 (torch's CPU kernels
// and lowbit.runtime.float_ops do the same), so a window whose values cancel gives exactly 0.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bconv/maxpool.h"
#include "common/threads.h"
#include "graph/float_ops.h"
#include "graph/float_rows.h"
#include "graph/spec.h"

namespace lowbit {
namespace graph {

// o = np.maximum(o, t): NaN wins (a != a is NaN); a select the compiler vectorises.
inline void max_into(float* __restrict o, const float* __restrict t, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float a = o[j], b = t[j];
    o[j] = (a >= b || a != a) ? a : b;
  }
}

// One output row of a float max pool: n pixels, pixel q's window starting at x + q * ps,
// o[q * C .. q * C + C) = max over the kh x kw taps (row stride `rs` floats, tap stride `ts`)
// with max_into's NaN rule, 16 / 8 channels per compare.
using FloatPoolPixelFn = void (*)(const float* x, int64_t rs, int64_t ts, int64_t kh, int64_t kw, int64_t C,
                                  float* o);
using FloatPoolRowFn = void (*)(const float* x, int64_t ps, int64_t n, int64_t rs, int64_t ts, int64_t kh,
                                int64_t kw, int64_t C, float* o);
#if LOWBIT_X86_PATHS && !defined(LOWBIT_SIMDE)
LOWBIT_TARGET_AVX512 static inline void maxpool_pixel_avx512(const float* x, int64_t rs, int64_t ts, int64_t kh,
                                                             int64_t kw, int64_t C, float* o) {
  for (int64_t c = 0; c < C; c += 16) {
    const int64_t m = C - c < 16 ? C - c : 16;
    const __mmask16 k = static_cast<__mmask16>(m == 16 ? 0xFFFF : (1u << m) - 1);
    __m512 v = _mm512_maskz_loadu_ps(k, x + c);
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = i == 0 ? 1 : 0; j < kw; ++j) {
        const __m512 t = _mm512_maskz_loadu_ps(k, x + i * rs + j * ts + c);
        const __mmask16 keep = _mm512_cmp_ps_mask(v, t, _CMP_GE_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        v = _mm512_mask_blend_ps(keep, t, v);
      }
    _mm512_mask_storeu_ps(o + c, k, v);
  }
}
LOWBIT_TARGET_AVX2 static inline void maxpool_pixel_avx2(const float* x, int64_t rs, int64_t ts, int64_t kh,
                                                         int64_t kw, int64_t C, float* o) {
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    __m256 v = _mm256_loadu_ps(x + c);
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = i == 0 ? 1 : 0; j < kw; ++j) {
        const __m256 t = _mm256_loadu_ps(x + i * rs + j * ts + c);
        const __m256 keep = _mm256_or_ps(_mm256_cmp_ps(v, t, _CMP_GE_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        v = _mm256_blendv_ps(t, v, keep);
      }
    _mm256_storeu_ps(o + c, v);
  }
  for (; c < C; ++c) {  // the last few channels: max_into's rule
    float v = x[c];
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = i == 0 ? 1 : 0; j < kw; ++j) {
        const float t = x[i * rs + j * ts + c];
        v = (v >= t || v != v) ? v : t;
      }
    o[c] = v;
  }
}
LOWBIT_TARGET_AVX512 inline void maxpool_row_avx512(const float* x, int64_t ps, int64_t n, int64_t rs, int64_t ts,
                                                    int64_t kh, int64_t kw, int64_t C, float* o) {
  for (int64_t q = 0; q < n; ++q) maxpool_pixel_avx512(x + q * ps, rs, ts, kh, kw, C, o + q * C);
}
LOWBIT_TARGET_AVX2 inline void maxpool_row_avx2(const float* x, int64_t ps, int64_t n, int64_t rs, int64_t ts,
                                                int64_t kh, int64_t kw, int64_t C, float* o) {
  for (int64_t q = 0; q < n; ++q) maxpool_pixel_avx2(x + q * ps, rs, ts, kh, kw, C, o + q * C);
}
#endif

// Max pooling (no padding): float max, or OR of packed ±1 bits (bconv/maxpool.h).  A float
// max pool may carry the output program of the elementwise ops that alone read it (a stem's
// BatchNorm + hardtanh), run on each output row while it is in cache.
class MaxPoolOp : public Op {
 public:
  MaxPoolOp(const OpSpec& sp, const std::vector<Value>& vals) : Op(sp) {
    if (sp.inputs.size() != 1) sp.fail("expected one input");
    in_ = vals.at(static_cast<size_t>(sp.inputs[0]));
    kh_ = sp.i("kh"); kw_ = sp.i("kw"); sh_ = sp.i("sh"); sw_ = sp.i("sw");
    out = in_;
    out.h = window_out(sp, in_.h, kh_, sh_, 0);
    out.w = window_out(sp, in_.w, kw_, sw_, 0);
    if (sp.has("flip")) {  // bits of a decreasing threshold: max pools them as AND
      if (!in_.bits) sp.fail("flip applies to bits");
      const uint8_t* f = sp.a<uint8_t>("flip", 'b', in_.c);
      flipw_.assign(static_cast<size_t>(in_.words()), 0);
      for (int64_t o = 0; o < in_.c; ++o)
        if (f[o]) flipw_[static_cast<size_t>(o / 64)] |= uint64_t{1} << (o % 64);
    }
#if LOWBIT_X86_PATHS && !defined(LOWBIT_SIMDE)
    if (sp.s("path") == "avx512") row_ = &maxpool_row_avx512;
    if (sp.s("path") == "avx2") row_ = &maxpool_row_avx2;
#endif
    prog_ = read_program(sp, out.c);
    if (!prog_.empty() && in_.bits) sp.fail("an output program needs a float max pool");
    if (program_uses_kfac(prog_)) sp.fail("K factor step outside a layer");
    if (rows_supported(prog_)) rows_ = find_step_rows(sp.s("path", "portable"));
  }
  // the program on one output row y[0 .. out.w * C)
  void program_row(float* y, int64_t C) const {
    if (prog_.empty()) return;
    if (rows_) {
      rows_(prog_.data(), static_cast<int64_t>(prog_.size()), nullptr, y, out.w, C, 0, nullptr, y);
      return;
    }
    for (int64_t ox = 0; ox < out.w; ++ox) run_program(prog_, y + ox * C, C, 0, nullptr);
  }
  void run(Ctx& c) override {
    if (in_.bits && !flipw_.empty()) {  // OR of (bits ^ flip), then ^ flip: AND where flipped
      const uint64_t* x = static_cast<const uint64_t*>(c.in[0]);
      uint64_t* y = static_cast<uint64_t*>(c.out);
      const int64_t nw = in_.words();
      for (int64_t r = 0; r < c.n * out.h; ++r) {
        const int64_t b = r / out.h, oy = r % out.h;
        for (int64_t ox = 0; ox < out.w; ++ox) {
          uint64_t* o = y + (r * out.w + ox) * nw;
          for (int64_t k = 0; k < nw; ++k) o[k] = 0;
          for (int64_t i = 0; i < kh_; ++i)
            for (int64_t j = 0; j < kw_; ++j) {
              const uint64_t* t = x + ((b * in_.h + oy * sh_ + i) * in_.w + ox * sw_ + j) * nw;
              for (int64_t k = 0; k < nw; ++k) o[k] |= t[k] ^ flipw_[static_cast<size_t>(k)];
            }
          for (int64_t k = 0; k < nw; ++k) o[k] ^= flipw_[static_cast<size_t>(k)];
        }
      }
      return;
    }
    if (in_.bits) {
      binary_maxpool2d(static_cast<const uint64_t*>(c.in[0]), c.n, in_.h, in_.w, in_.words(), kh_, kw_,
                       sh_, sw_, 0, 0, out.h, out.w, static_cast<uint64_t*>(c.out), c.threads);
      return;
    }
    const float* x = static_cast<const float*>(c.in[0]);
    float* y = static_cast<float*>(c.out);
    const int64_t C = in_.c;
    parallel_for(c.n * out.h, threads_for(c.threads, c.n * out.h * out.w * C * kh_ * kw_, int64_t{1} << 16),
                 [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / out.h, oy = r % out.h;
        if (row_) {
          row_(x + (b * in_.h + oy * sh_) * in_.w * C, sw_ * C, out.w, in_.w * C, C, kh_, kw_, C, y + r * out.w * C);
          program_row(y + r * out.w * C, C);
          continue;
        }
        for (int64_t ox = 0; ox < out.w; ++ox) {
          float* o = y + (r * out.w + ox) * C;
          for (int64_t i = 0; i < kh_; ++i)
            for (int64_t j = 0; j < kw_; ++j) {
              const float* t = x + ((b * in_.h + oy * sh_ + i) * in_.w + ox * sw_ + j) * C;
              if (i == 0 && j == 0) {
                std::memcpy(o, t, static_cast<size_t>(C) * 4);
              } else {
                max_into(o, t, C);
              }
            }
        }
        program_row(y + r * out.w * C, C);
      }
    });
  }

 private:
  Value in_;
  int64_t kh_, kw_, sh_, sw_;
  std::vector<uint64_t> flipw_;
  FloatPoolRowFn row_ = nullptr;  // avx2 / avx512 float max (null: portable loops)
  std::vector<Step> prog_;        // fused output program (float pools)
  StepRowsFn rows_ = nullptr;     // its row kernel (null: run_program)
};

// torch AvgPool2d: window sum over the zero-padded input / window size (count_include_pad)
// or / its in-image part.  global=1: the mean over all of h, w (adaptive average to 1x1).
class AvgPoolOp : public Op {
 public:
  AvgPoolOp(const OpSpec& sp, const std::vector<Value>& vals) : Op(sp) {
    in_ = only_input(sp, vals, false);
    if (sp.i("global", 0)) {
      kh_ = in_.h; kw_ = in_.w; sh_ = sw_ = 1; ph_ = pw_ = 0; include_pad_ = true;
    } else {
      kh_ = sp.i("kh"); kw_ = sp.i("kw"); sh_ = sp.i("sh"); sw_ = sp.i("sw");
      ph_ = sp.i("ph"); pw_ = sp.i("pw"); include_pad_ = sp.i("count_include_pad") != 0;
    }
    out = in_;
    out.h = window_out(sp, in_.h, kh_, sh_, ph_);
    out.w = window_out(sp, in_.w, kw_, sw_, pw_);
  }
  void run(Ctx& c) override {
    const float* x = static_cast<const float*>(c.in[0]);
    float* y = static_cast<float*>(c.out);
    const int64_t C = in_.c;
    parallel_for(c.n * out.h, threads_for(c.threads, c.n * out.h * out.w * C * kh_ * kw_, int64_t{1} << 16),
                 [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / out.h, oy = r % out.h;
        for (int64_t ox = 0; ox < out.w; ++ox) {
          float* o = y + (r * out.w + ox) * C;
          int64_t count = 0;
          bool first = true;
          for (int64_t i = 0; i < kh_; ++i)
            for (int64_t j = 0; j < kw_; ++j) {
              const int64_t iy = oy * sh_ - ph_ + i, ix = ox * sw_ - pw_ + j;
              const bool inside = iy >= 0 && iy < in_.h && ix >= 0 && ix < in_.w;
              count += inside;
              const float* t = inside ? x + ((b * in_.h + iy) * in_.w + ix) * C : nullptr;
              for (int64_t ch = 0; ch < C; ++ch) {
                const float v = t ? t[ch] : 0.f;
                o[ch] = first ? v : o[ch] + v;
              }
              first = false;
            }
          const float d = static_cast<float>(include_pad_ ? kh_ * kw_ : count);
          for (int64_t ch = 0; ch < C; ++ch) o[ch] = o[ch] / d;
        }
      }
    });
  }

 private:
  Value in_;
  int64_t kh_, kw_, sh_, sw_, ph_, pw_;
  bool include_pad_;
};

// Nearest-neighbour upsampling by integer factors.
class UpsampleOp : public Op {
 public:
  UpsampleOp(const OpSpec& sp, const std::vector<Value>& vals) : Op(sp) {
    in_ = only_input(sp, vals, false);
    fh_ = sp.i("fh"); fw_ = sp.i("fw");
    if (fh_ < 1 || fw_ < 1) sp.fail("scale must be >= 1");
    out = in_;
    out.h = in_.h * fh_; out.w = in_.w * fw_;
  }
  void run(Ctx& c) override {
    const float* x = static_cast<const float*>(c.in[0]);
    float* y = static_cast<float*>(c.out);
    const int64_t C = in_.c;
    for (int64_t b = 0; b < c.n; ++b)
      for (int64_t oy = 0; oy < out.h; ++oy)
        for (int64_t ox = 0; ox < out.w; ++ox)
          std::memcpy(y + ((b * out.h + oy) * out.w + ox) * C,
                      x + ((b * in_.h + oy / fh_) * in_.w + ox / fw_) * C, static_cast<size_t>(C) * 4);
  }

 private:
  Value in_;
  int64_t fh_, fw_;
};

// add: ((x0 + x1) + x2) + ... of equal shapes; concat: along channels.
class JoinOp : public Op {
 public:
  JoinOp(const OpSpec& sp, const std::vector<Value>& vals) : Op(sp) {
    concat_ = sp.kind == "concat";
    if (sp.inputs.size() < 2) sp.fail("expected two or more inputs");
    for (int v : sp.inputs) {
      const Value& x = vals.at(static_cast<size_t>(v));
      if (x.bits) sp.fail("expected float inputs");
      ins_.push_back(x);
    }
    out = ins_[0];
    if (concat_) out.c = 0;
    for (const Value& x : ins_) {
      if (x.h != out.h || x.w != out.w || (!concat_ && x.c != out.c)) sp.fail("input shapes differ");
      if (concat_) out.c += x.c;
    }
    if (!concat_ && ins_.size() == 2) rows_ = find_step_rows(sp.s("path", "portable"));
  }
  void run(Ctx& c) override {
    float* y = static_cast<float*>(c.out);
    const int64_t rows = c.n * out.h * out.w, C = out.c;
    parallel_for(rows, threads_for(c.threads, rows * C * static_cast<int64_t>(ins_.size()), int64_t{1} << 16),
                 [&](int64_t r0, int64_t r1) {
      if (rows_) {  // x0 + x1: the row kernel with no steps and x1 as the residual
        rows_(nullptr, 0, nullptr, static_cast<const float*>(c.in[0]) + r0 * C, r1 - r0, C, 0,
              static_cast<const float*>(c.in[1]) + r0 * C, y + r0 * C);
        return;
      }
      for (int64_t r = r0; r < r1; ++r) {
        float* o = y + r * C;
        if (concat_) {
          int64_t off = 0;
          for (size_t k = 0; k < ins_.size(); ++k) {
            const int64_t ck = ins_[k].c;
            std::memcpy(o + off, static_cast<const float*>(c.in[k]) + r * ck, static_cast<size_t>(ck) * 4);
            off += ck;
          }
          continue;
        }
        const float* a = static_cast<const float*>(c.in[0]) + r * C;
        const float* b = static_cast<const float*>(c.in[1]) + r * C;
        for (int64_t j = 0; j < C; ++j) o[j] = a[j] + b[j];
        for (size_t k = 2; k < ins_.size(); ++k) {
          const float* t = static_cast<const float*>(c.in[k]) + r * C;
          for (int64_t j = 0; j < C; ++j) o[j] += t[j];
        }
      }
    });
  }

 private:
  bool concat_;
  std::vector<Value> ins_;
  StepRowsFn rows_ = nullptr;  // two-input add
};

}  // namespace graph
}  // namespace lowbit
