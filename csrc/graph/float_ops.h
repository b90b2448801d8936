// Float ops of the graph executor on NHWC values (spec.h): the input normalisation,
// elementwise programs, the float <-> bits conversions (signs, BatchNorm thresholds), flatten,
// and the helpers the float conv (fconv.h) and the quantized layers (qlayer.h) share.  Each op
// reproduces the Python executor (lowbit.runtime.float_ops / ops) with the same float32
// roundings.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "bitpack/bitpack.h"
#include "bitpack/threshold.h"
#include "bitpack/unpack.h"
#include "common/threads.h"
#include "graph/float_rows.h"
#include "graph/spec.h"

namespace lowbit {
namespace graph {

inline const Value& only_input(const OpSpec& sp, const std::vector<Value>& vals, bool bits) {
  if (sp.inputs.size() != 1) sp.fail("expected one input");
  const Value& v = vals.at(static_cast<size_t>(sp.inputs[0]));
  if (v.bits != bits) sp.fail(bits ? "expected a bits input" : "expected a float input");
  return v;
}

inline int64_t window_out(const OpSpec& sp, int64_t size, int64_t k, int64_t s, int64_t p) {
  if (k < 1 || s < 1 || p < 0 || size + 2 * p < k) sp.fail("window does not fit its input");
  return (size + 2 * p - k) / s + 1;
}

// ---- the graph input: uint8 pixels through the normalisation table, or normalised floats ----
// Host input (n, c, h, w) (NCHW, or (n, F)); out (n, h, w, c), or with ph / pw > 0 (a conv with
// zero padding is its only reader) (n, h + 2 ph, w + 2 pw, c) with zeros around: the conv then
// runs unpadded on it and needs no padded copy of its own.
class InputOp : public Op {
 public:
  InputOp(const OpSpec& sp) : Op(sp) {
    ih_ = sp.i("h"); iw_ = sp.i("w"); out.c = sp.i("c");
    ph_ = sp.i("ph", 0); pw_ = sp.i("pw", 0);
    if (ih_ < 1 || iw_ < 1 || out.c < 1 || ph_ < 0 || pw_ < 0) sp.fail("bad input shape");
    out.h = ih_ + 2 * ph_; out.w = iw_ + 2 * pw_;
    table_ = sp.a<float>("table", 'f', out.c * 256);
    rows_ = find_input_rows(sp.s("path", "portable"));
    rows_f32_ = find_input_rows_f32(sp.s("path", "portable"));
  }
  const void* host = nullptr;
  bool host_u8 = true;
  std::atomic<bool> nonfinite{false};  // float input held NaN / inf (the caller refuses it)
  int64_t host_elems() const { return ih_ * iw_ * out.c; }  // per image
  void run(Ctx& c) override {
    nonfinite.store(false);
    const int64_t hw = ih_ * iw_, C = out.c, padded = ph_ || pw_;
    float* o = static_cast<float*>(c.out);
    parallel_for(c.n, threads_for(c.threads, c.n * hw * C, int64_t{1} << 16), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        float* img = o + b * out.h * out.w * C;
        if (padded) {  // the zero border
          std::memset(img, 0, static_cast<size_t>(ph_ * out.w * C) * 4);
          std::memset(img + (ph_ + ih_) * out.w * C, 0, static_cast<size_t>(ph_ * out.w * C) * 4);
          for (int64_t y = 0; y < ih_; ++y) {
            float* row = img + (ph_ + y) * out.w * C;
            std::memset(row, 0, static_cast<size_t>(pw_ * C) * 4);
            std::memset(row + (pw_ + iw_) * C, 0, static_cast<size_t>(pw_ * C) * 4);
          }
        }
        // image row y (or the whole image when unpadded) -> its place
        const int64_t rows = padded ? ih_ : 1, run = padded ? iw_ : hw;
        for (int64_t y = 0; y < rows; ++y) {
          float* dst = img + ((ph_ + y) * out.w + pw_) * C;
          if (host_u8) {  // table look-ups, NCHW -> NHWC (float_rows.h)
            rows_(static_cast<const uint8_t*>(host) + b * C * hw + y * iw_, run, hw, C, table_, dst);
            continue;
          }
          if (rows_f32_(static_cast<const float*>(host) + b * C * hw + y * iw_, run, hw, C, dst))
            nonfinite.store(true);
        }
      }
    });
  }

 private:
  const float* table_;
  InputRowsFn rows_ = nullptr;
  InputRowsF32Fn rows_f32_ = nullptr;
  int64_t ih_ = 1, iw_ = 1, ph_ = 0, pw_ = 0;
};

// Operand transforms of a quantized layer with float weights (fconv.h) and of bit-plane
// inputs (qlayer.h).
enum class Operand : int { kNone = 0, kSign = 1, kLevelsU8 = 2, kLevelsDorefa = 3, kClip01 = 4 };

inline float operand_value(Operand t, float x, float a, float b) {
  switch (t) {
    case Operand::kSign: return x >= 0.f ? 1.f : -1.f;
    case Operand::kLevelsU8: {  // clip(round((x * std + mean) * 255), 0, 255)
      float y = x * a; y = y + b; y = y * 255.f; y = std::nearbyint(y);
      return y < 0.f ? 0.f : (y > 255.f ? 255.f : y);
    }
    case Operand::kLevelsDorefa: {  // round(clip(x, 0, 1) * (2^bits - 1))
      const float y = x < 0.f ? 0.f : (x > 1.f ? 1.f : x);
      return std::nearbyint(y * a);
    }
    case Operand::kClip01: return x < 0.f ? 0.f : (x > 1.f ? 1.f : x);
    default: return x;
  }
}

// operand_value over an array, one loop per transform (so each loop vectorises).
inline void transform_operand(Operand t, const float* x, int64_t n, float a, float b, float* y) {
  switch (t) {
    case Operand::kSign: for (int64_t i = 0; i < n; ++i) y[i] = x[i] >= 0.f ? 1.f : -1.f; return;
    case Operand::kLevelsU8: for (int64_t i = 0; i < n; ++i) y[i] = operand_value(Operand::kLevelsU8, x[i], a, b); return;
    case Operand::kLevelsDorefa: for (int64_t i = 0; i < n; ++i) y[i] = operand_value(Operand::kLevelsDorefa, x[i], a, b); return;
    case Operand::kClip01: for (int64_t i = 0; i < n; ++i) y[i] = operand_value(Operand::kClip01, x[i], a, b); return;
    default: std::memcpy(y, x, static_cast<size_t>(n) * 4);
  }
}

// XNOR-Net's K: kfac[pixel] = window average (count_include_pad, zero padding) of the
// channel mean of |x| (lowbit.runtime.ops.QLayer._operand).  x (n, h, w, c) float;
// mean: scratch (n, h, w); kfac (n, oh, ow).
inline void xnor_kfac(const float* x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh,
                      int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t oh,
                      int64_t ow, float* mean, float* kfac) {
  const float inv_c = static_cast<float>(c);
  for (int64_t p = 0; p < n * h * w; ++p) {
    const float* r = x + p * c;
    float s = 0.f;
    for (int64_t j = 0; j < c; ++j) s += std::fabs(r[j]);
    mean[p] = s / inv_c;
  }
  const float area = static_cast<float>(kh * kw);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t y = 0; y < oh; ++y)
      for (int64_t xo = 0; xo < ow; ++xo) {
        float s = 0.f;
        for (int64_t i = 0; i < kh; ++i) {
          const int64_t iy = y * sh - ph + i;
          for (int64_t j = 0; j < kw; ++j) {
            const int64_t ix = xo * sw - pw + j;
            s += (iy < 0 || iy >= h || ix < 0 || ix >= w) ? 0.f : mean[(b * h + iy) * w + ix];
          }
        }
        kfac[(b * oh + y) * ow + xo] = s / area;
      }
}

// Rows of c floats -> packed bits: signs (x >= 0), or a per-channel float threshold (a
// BatchNorm read only by signs, lowbit.codec.fold.fold_float_threshold): bit = s (x - t) >= 0,
// s = ±1.  Whole words: x >= t / x <= t compared straight into bits (bitpack/threshold.h;
// equal for finite x: the float32 difference has the exact one's sign and is 0 only at
// x = t).  Otherwise s (x - t) >= 0  <=>  s x - s t >= 0 exactly (negation is exact and
// x - t = -(t - x) in round-to-nearest; infinite thresholds stay infinite): the rows are
// rewritten in place as s x - s t and packed by the SIMD bitpack kernel.  NaN gives bit 0.
class RowBits {
 public:
  RowBits(const OpSpec& sp, int64_t c) : c_(c) {
    if (sp.has("t")) {
      const float* t = sp.a<float>("t", 'f', c);
      const float* s = sp.a<float>("s", 'f', c);
      s_.assign(s, s + c);
      st_.resize(static_cast<size_t>(c));
      for (int64_t j = 0; j < c; ++j) {
        if (s[j] != 1.f && s[j] != -1.f) sp.fail("threshold signs must be +1 or -1");
        st_[static_cast<size_t>(j)] = s[j] * t[j];
      }
    }
    pack_ = bitpack_detail::find_pack<float>(sp.s("path", "portable"));
    if (!pack_) sp.fail("no bitpack kernel for path '" + sp.s("path") + "'");
    if (!s_.empty() && c % 64 == 0) {  // whole words: compare with t directly (threshold.h)
      thr_ = threshold_detail::find_threshold(sp.s("path", "portable"));
      t_.assign(sp.a<float>("t", 'f', c), sp.a<float>("t", 'f', c) + c);
      flipw_.assign(static_cast<size_t>(c / 64), 0);
      for (int64_t j = 0; j < c; ++j)
        if (s_[static_cast<size_t>(j)] < 0.f) flipw_[static_cast<size_t>(j / 64)] |= uint64_t{1} << (j % 64);
    }
  }
  // rows (n, c) floats (rewritten when thresholded) -> out (n, ceil(c/64)) words.  stream:
  // scratch of stream_words(n) words.  When c is not a multiple of 64 (a first layer's 20
  // channels), the block is packed as one bit stream by the SIMD kernel and each row's c bits
  // are cut out of it: no scalar loop and no call per short row.
  void pack(float* rows, int64_t n, uint64_t* out, uint64_t* stream) const {
    if (thr_) {
      const int64_t nw = c_ / 64;
      for (int64_t r = 0; r < n; ++r) thr_(rows + r * c_, t_.data(), flipw_.data(), c_, out + r * nw);
      return;
    }
    if (!s_.empty())
      for (int64_t r = 0; r < n; ++r) {
        float* row = rows + r * c_;
        for (int64_t j = 0; j < c_; ++j) row[j] = row[j] * s_[static_cast<size_t>(j)] - st_[static_cast<size_t>(j)];
      }
    const int64_t nw = (c_ + 63) / 64;
    if (c_ % 64 == 0) {
      for (int64_t r = 0; r < n; ++r) pack_(rows + r * c_, c_, out + r * nw);
      return;
    }
    const int64_t total = n * c_, sw = (total + 63) / 64;
    pack_(rows, total, stream);
    stream[sw] = 0;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t w = 0; w < nw; ++w) {
        const int64_t o = r * c_ + 64 * w, q = o / 64, sh = o % 64;
        const int64_t m = std::min<int64_t>(64, c_ - 64 * w);
        uint64_t v = stream[q] >> sh;
        if (sh) v |= stream[q + 1] << (64 - sh);
        out[r * nw + w] = m == 64 ? v : v & ((uint64_t{1} << m) - 1);
      }
  }
  int64_t stream_words(int64_t n) const { return c_ % 64 ? (n * c_ + 63) / 64 + 1 : 0; }
  bool thresholded() const { return !s_.empty(); }

 private:
  int64_t c_;
  std::vector<float> s_, st_, t_;
  std::vector<uint64_t> flipw_;
  bitpack_detail::PackRowFn<float> pack_ = nullptr;
  threshold_detail::ThresholdRowFn thr_ = nullptr;
};

// ---- elementwise: one output program per pixel row -------------------------------------
class EwOp : public Op {
 public:
  EwOp(const OpSpec& sp, const std::vector<Value>& vals) : Op(sp) {
    out = only_input(sp, vals, false);
    prog_ = read_program(sp, out.c);
    if (program_uses_kfac(prog_)) sp.fail("K factor step outside a layer");
    if (rows_supported(prog_)) rows_ = find_step_rows(sp.s("path", "portable"));
  }
  void run(Ctx& c) override {
    const int64_t rows = c.n * out.h * out.w, C = out.c;
    const float* x = static_cast<const float*>(c.in[0]);
    float* y = static_cast<float*>(c.out);
    parallel_for(rows, threads_for(c.threads, rows * C, int64_t{1} << 16), [&](int64_t r0, int64_t r1) {
      if (rows_) {
        rows_(prog_.data(), static_cast<int64_t>(prog_.size()), nullptr, x + r0 * C, r1 - r0, C, 0, nullptr, y + r0 * C);
        return;
      }
      if (y != x) std::memcpy(y + r0 * C, x + r0 * C, static_cast<size_t>((r1 - r0) * C) * 4);
      for (int64_t r = r0; r < r1; ++r) run_program(prog_, y + r * C, C, r, nullptr);
    });
  }

 private:
  std::vector<Step> prog_;
  StepRowsFn rows_ = nullptr;
};

// ---- float -> bits: sign (x >= 0) or a per-channel float threshold (RowBits) -------------
class ToBitsOp : public Op {
 public:
  ToBitsOp(const OpSpec& sp, const std::vector<Value>& vals) : Op(sp), bits_(sp, only_input(sp, vals, false).c) {
    out = only_input(sp, vals, false);
    out.bits = true;
  }
  static constexpr int64_t kRows = 256;  // rows per block
  std::vector<int64_t> temps(int64_t, int threads) const override {
    return {threads * kRows * out.c * 4, threads * bits_.stream_words(kRows) * 8};
  }
  void run(Ctx& c) override {
    const int64_t rows = c.n * out.h * out.w, C = out.c, nw = out.words();
    const int64_t blocks = (rows + kRows - 1) / kRows;
    const float* x = static_cast<const float*>(c.in[0]);
    uint64_t* y = static_cast<uint64_t*>(c.out);
    std::atomic<int> slot{0};
    parallel_for(blocks, threads_for(c.threads, rows * C, int64_t{1} << 16), [&](int64_t b0, int64_t b1) {
      const int k = slot.fetch_add(1);
      float* z = static_cast<float*>(c.tmp[0]) + k * kRows * C;
      uint64_t* stream = static_cast<uint64_t*>(c.tmp[1]);
      if (stream) stream += k * bits_.stream_words(kRows);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * kRows, nr = std::min(kRows, rows - r0);
        std::memcpy(z, x + r0 * C, static_cast<size_t>(nr * C) * 4);
        bits_.pack(z, nr, y + r0 * nw, stream);
      }
    });
  }

 private:
  RowBits bits_;
};

// ---- bits -> ±1 floats: NHWC (same dims), or flat in torch's (c, h, w) order ------------
class ToFloatOp : public Op {
 public:
  ToFloatOp(const OpSpec& sp, const std::vector<Value>& vals) : Op(sp) {
    in_ = only_input(sp, vals, true);
    flat_ = sp.i("flat", 0) != 0;
    out = in_;
    out.bits = false;
    if (flat_) { out.c = in_.c * in_.h * in_.w; out.h = out.w = 1; }
    unpack_ = unpack_detail::find_unpack<float>(sp.s("path", "portable"));
    if (!unpack_) sp.fail("no unpack kernel for path '" + sp.s("path") + "'");
  }
  std::vector<int64_t> temps(int64_t n, int) const override {
    return {flat_ ? n * in_.h * in_.w * in_.c * 4 : 0};
  }
  void run(Ctx& c) override {
    const int64_t hw = in_.h * in_.w, C = in_.c, nw = in_.words();
    const uint64_t* x = static_cast<const uint64_t*>(c.in[0]);
    float* nhwc = flat_ ? static_cast<float*>(c.tmp[0]) : static_cast<float*>(c.out);
    for (int64_t r = 0; r < c.n * hw; ++r) unpack_(x + r * nw, C, nhwc + r * C);
    if (!flat_) return;
    float* y = static_cast<float*>(c.out);  // (n, c, h, w) order
    for (int64_t b = 0; b < c.n; ++b)
      for (int64_t p = 0; p < hw; ++p)
        for (int64_t ch = 0; ch < C; ++ch) y[(b * C + ch) * hw + p] = nhwc[(b * hw + p) * C + ch];
  }

 private:
  Value in_;
  bool flat_;
  unpack_detail::UnpackRowFn<float> unpack_;
};

// ---- flatten (NHWC -> torch's (c, h, w) order) and its inverse --------------------------
class FlattenOp : public Op {
 public:
  FlattenOp(const OpSpec& sp, const std::vector<Value>& vals) : Op(sp) {
    in_ = only_input(sp, vals, false);
    inverse_ = sp.i("inverse", 0) != 0;
    if (inverse_) {  // (1, 1, c*h*w) in (c, h, w) order -> (h, w, c)
      out.h = sp.i("h"); out.w = sp.i("w"); out.c = sp.i("c");
      if (in_.h != 1 || in_.w != 1 || out.h * out.w * out.c != in_.c) sp.fail("unflatten size mismatch");
    } else {
      out.c = in_.c * in_.h * in_.w;
    }
  }
  void run(Ctx& c) override {
    const Value& s = inverse_ ? out : in_;  // the spatial side
    const int64_t hw = s.h * s.w, C = s.c;
    const float* x = static_cast<const float*>(c.in[0]);
    float* y = static_cast<float*>(c.out);
    for (int64_t b = 0; b < c.n; ++b)
      for (int64_t p = 0; p < hw; ++p)
        for (int64_t ch = 0; ch < C; ++ch) {
          const int64_t hwc = (b * hw + p) * C + ch, chw = (b * C + ch) * hw + p;
          if (inverse_) y[hwc] = x[chw]; else y[chw] = x[hwc];
        }
  }

 private:
  Value in_;
  bool inverse_;
};

}  // namespace graph
}  // namespace lowbit
