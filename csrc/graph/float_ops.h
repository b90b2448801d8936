// Float ops of the graph executor on NHWC values (spec.h): the float conv / dense (im2col +
// Eigen GEMM, fgemm.h, with a fused output program), elementwise programs, pooling,
// upsampling, add, concat, flatten, the input normalisation, and the float <-> bits
// conversions.  Each reproduces the Python executor (lowbit.runtime.float_ops / ops) op for
// op; where numpy's order of float additions is defined (pooling sums add a window's taps row
// by row, add sums its inputs left to right) the same order is used here.
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
#include "graph/fgemm.h"
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
// Host input (n, c, h, w) (NCHW, or (n, F)); out (n, h, w, c).
class InputOp : public Op {
 public:
  InputOp(const OpSpec& sp) : Op(sp) {
    out.h = sp.i("h"); out.w = sp.i("w"); out.c = sp.i("c");
    if (out.h < 1 || out.w < 1 || out.c < 1) sp.fail("bad input shape");
    table_ = sp.a<float>("table", 'f', out.c * 256);
  }
  const void* host = nullptr;
  bool host_u8 = true;
  std::atomic<bool> nonfinite{false};  // float input held NaN / inf (the caller refuses it)
  void run(Ctx& c) override {
    nonfinite.store(false);
    const int64_t hw = out.h * out.w, C = out.c;
    float* o = static_cast<float*>(c.out);
    parallel_for(c.n, threads_for(c.threads, c.n * hw * C, int64_t{1} << 16), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t ch = 0; ch < C; ++ch) {
          float* dst = o + b * hw * C + ch;
          if (host_u8) {
            const uint8_t* src = static_cast<const uint8_t*>(host) + (b * C + ch) * hw;
            const float* t = table_ + ch * 256;
            for (int64_t p = 0; p < hw; ++p) dst[p * C] = t[src[p]];
          } else {
            const float* src = static_cast<const float*>(host) + (b * C + ch) * hw;
            bool bad = false;
            for (int64_t p = 0; p < hw; ++p) {
              dst[p * C] = src[p];
              bad |= !(std::fabs(src[p]) <= 3.402823466e38f);  // NaN or inf
            }
            if (bad) nonfinite.store(true);
          }
        }
    });
  }

 private:
  const float* table_;
};

// ---- float conv / dense: im2col rows + one GEMM per row chunk + output program ----------
// x (n, h, w, c) -> y (n, oh, ow, oc).  y = program(cols(x) B) with B (K = kh*kw*c, oc)
// row-major, or its transpose (oc, K) (b_trans: torch's dense layout); a dense layer is the
// 1x1 conv of a (1, 1, F) value.  Out-of-image taps read `pad` (0 for torch; a quantized
// layer's pad_value).  The input may first go through an operand transform (a quantized
// layer with float weights: "sign" -> ±1, "u8" levels, "dorefa" levels, "clip01"), and
// XNOR layers multiply row p by K[p] (kfac, from xnor.h's mean |x| and window average).
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

// dst[0..n) = src[0..n): whole 8-float blocks, then the rest (the runs are short: a kernel
// row of a few channels).
inline void copy_floats(float* __restrict dst, const float* __restrict src, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) std::memcpy(dst + j, src + j, 32);
  for (; j < n; ++j) dst[j] = src[j];
}

// `count` runs of N floats: run p from src + p * sstride to dst + p * dstride.  N is a
// compile-time constant, so each run is a few inline moves (im2col of a first layer copies
// runs of 3 or 5 floats; a library call per run cost more than the copy).
template <int N>
void copy_runs(float* __restrict dst, int64_t dstride, const float* __restrict src, int64_t sstride,
               int64_t count) {
  for (int64_t p = 0; p < count; ++p) std::memcpy(dst + p * dstride, src + p * sstride, N * sizeof(float));
}
inline void copy_runs_any(float* __restrict dst, int64_t dstride, const float* __restrict src,
                          int64_t sstride, int64_t count, int64_t n) {
  for (int64_t p = 0; p < count; ++p) copy_floats(dst + p * dstride, src + p * sstride, n);
}
using CopyRunsFn = void (*)(float*, int64_t, const float*, int64_t, int64_t);
template <int... N>
CopyRunsFn find_copy_runs(int64_t n, std::integer_sequence<int, N...>) {
  CopyRunsFn fn = nullptr;
  ((n == N + 1 ? (fn = &copy_runs<N + 1>, 0) : 0), ...);
  return fn;
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

// One row of c floats -> packed bits: signs (x >= 0), or a per-channel float threshold (a
// BatchNorm read only by signs, lowbit.codec.fold.fold_float_threshold): bit = s (x - t) >= 0.
// s (x - t) >= 0  <=>  s x - s t >= 0 exactly (s = ±1: negation is exact and x - t = -(t - x)
// in round-to-nearest; infinite thresholds stay infinite), so the row is rewritten in place
// as s x - s t and packed by the SIMD bitpack kernel.  NaN gives bit 0.
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

class FConvOp : public Op {
 public:
  FConvOp(const OpSpec& sp, const std::vector<Value>& vals) : Op(sp) {
    in_ = only_input(sp, vals, false);
    kh_ = sp.i("kh"); kw_ = sp.i("kw"); sh_ = sp.i("sh"); sw_ = sp.i("sw");
    ph_ = sp.i("ph"); pw_ = sp.i("pw");
    pad_ = static_cast<float>(sp.f("pad"));
    oc_ = sp.i("oc");
    if (oc_ < 1) sp.fail("oc must be >= 1");
    K_ = kh_ * kw_ * in_.c;
    b_trans_ = sp.i("b_trans") != 0;
    B_ = sp.a<float>("weight", 'f', K_ * oc_);
    operand_ = static_cast<Operand>(sp.i("operand", 0));
    if (sp.i("operand", 0) < 0 || sp.i("operand", 0) > 4) sp.fail("bad operand transform");
    op_a_ = sp.floats.count("operand.a") ? static_cast<float>(sp.f("operand.a")) : 0.f;
    op_b_ = sp.floats.count("operand.b") ? static_cast<float>(sp.f("operand.b")) : 0.f;
    xnor_ = sp.i("xnor", 0) != 0;
    out.h = window_out(sp, in_.h, kh_, sh_, ph_);
    out.w = window_out(sp, in_.w, kw_, sw_, pw_);
    out.c = oc_;
    prog_ = read_program(sp, oc_);
    if (program_uses_kfac(prog_) != xnor_) sp.fail("K factor step without xnor (or the reverse)");
    gemm_ = find_fgemm(sp.s("path", "portable"));
    if (!gemm_) sp.fail("no float GEMM for path '" + sp.s("path") + "'");
    direct_ = kh_ == 1 && kw_ == 1 && sh_ == 1 && sw_ == 1 && ph_ == 0 && pw_ == 0 &&
              operand_ == Operand::kNone;
    copy_ = find_copy_runs(kw_ * in_.c, std::make_integer_sequence<int, 16>{});
    if (sp.i("bits_out", 0)) {  // a sign / BatchNorm-threshold read only by signs, fused
      out.bits = true;
      bits_ = std::make_unique<RowBits>(sp, oc_);
    }
  }

  // Output rows per GEMM call: the chunk's im2col rows (~96 KiB) and, with bits out, its float
  // result (~32 KiB) stay in L2 / L1 between the GEMM and the packing.
  int64_t chunk_rows(int64_t M) const {
    int64_t r = (int64_t{96} << 10) / std::max<int64_t>(1, K_ * 4);
    if (bits_) r = std::min(r, (int64_t{32} << 10) / (oc_ * 4));
    return std::min(M, std::max<int64_t>(16, r));
  }
  int workers(int64_t n, int threads) const {
    const int64_t M = n * out.h * out.w;
    return threads_for(threads, M * K_ * oc_, int64_t{1} << 18);
  }
  std::vector<int64_t> temps(int64_t n, int threads) const override {
    const int64_t M = n * out.h * out.w;
    std::vector<int64_t> t;
    t.push_back(direct_ ? 0 : workers(n, threads) * chunk_rows(M) * K_ * 4);   // cols
    t.push_back(operand_ != Operand::kNone ? n * in_.h * in_.w * in_.c * 4 : 0);  // operand
    t.push_back(xnor_ ? (n * in_.h * in_.w + M) * 4 : 0);                         // mean, kfac
    t.push_back(bits_ ? workers(n, threads) * chunk_rows(M) * oc_ * 4 : 0);       // float rows
    t.push_back(bits_ ? workers(n, threads) * bits_->stream_words(chunk_rows(M)) * 8 : 0);
    return t;
  }

  void run(Ctx& c) override {
    const float* x = static_cast<const float*>(c.in[0]);
    const int64_t n = c.n, M = n * out.h * out.w;
    float* kfac = nullptr;
    if (xnor_) {
      float* mean = static_cast<float*>(c.tmp[2]);
      kfac = mean + n * in_.h * in_.w;
      xnor_kfac(x, n, in_.h, in_.w, in_.c, kh_, kw_, sh_, sw_, ph_, pw_, out.h, out.w, mean, kfac);
    }
    if (operand_ != Operand::kNone) {
      float* t = static_cast<float*>(c.tmp[1]);
      transform_operand(operand_, x, n * in_.h * in_.w * in_.c, op_a_, op_b_, t);
      x = t;
    }
    const int64_t rows = chunk_rows(M);
    const int64_t chunks = (M + rows - 1) / rows;
    const int nw = workers(n, c.threads);
    float* y = bits_ ? nullptr : static_cast<float*>(c.out);
    float* cols_base = static_cast<float*>(c.tmp[0]);
    std::atomic<int> next{0};
    parallel_for(chunks, nw, [&](int64_t c0, int64_t c1) {
      const int slot = next.fetch_add(1);
      float* cols = direct_ ? nullptr : cols_base + slot * rows * K_;
      float* ybuf = bits_ ? static_cast<float*>(c.tmp[3]) + slot * rows * oc_ : nullptr;
      uint64_t* stream = static_cast<uint64_t*>(c.tmp[4]);
      if (stream) stream += slot * bits_->stream_words(rows);
      for (int64_t ch = c0; ch < c1; ++ch) {
        const int64_t r0 = ch * rows, nr = std::min(rows, M - r0);
        const float* A = x + r0 * K_;
        if (!direct_) {
          im2col(x, r0, nr, cols);
          A = cols;
        }
        float* C = bits_ ? ybuf : y + r0 * oc_;
        gemm_(A, K_, B_, b_trans_ ? K_ : oc_, b_trans_, C, oc_, nr, K_, oc_);
        if (!prog_.empty())
          for (int64_t r = 0; r < nr; ++r) run_program(prog_, C + r * oc_, oc_, r0 + r, kfac);
        if (bits_) bits_->pack(C, nr, static_cast<uint64_t*>(c.out) + r0 * out.words(), stream);
      }
    });
  }

 private:
  // rows r0 .. r0+nr of the (M, K) patch matrix; tap-major (kh, kw, c) like conv_matrix.
  // Runs of output pixels along one output row share their input rows: per (image, output
  // row, kernel row) the source row is found once; the interior pixels copy their kw*c
  // window in one call (copy_runs), border pixels pad around the valid part.
  void im2col(const float* x, int64_t r0, int64_t nr, float* dst) const {
    const int64_t C = in_.c, seg = kw_ * C;
    // output columns whose window lies inside the image: [ox_lo, ox_hi)
    const int64_t ox_lo = std::min(out.w, (pw_ + sw_ - 1) / sw_);
    const int64_t room = in_.w + pw_ - kw_;  // < 0: no interior column
    const int64_t ox_hi = room < 0 ? ox_lo : std::max(ox_lo, std::min(out.w, room / sw_ + 1));
    int64_t r = r0;
    while (r < r0 + nr) {
      const int64_t ox0 = r % out.w, oy = (r / out.w) % out.h, b = r / (out.w * out.h);
      const int64_t run = std::min(out.w - ox0, r0 + nr - r);  // pixels left on this output row
      for (int64_t i = 0; i < kh_; ++i) {
        const int64_t iy = oy * sh_ - ph_ + i;
        float* d = dst + (r - r0) * K_ + i * seg;
        if (iy < 0 || iy >= in_.h) {
          for (int64_t p = 0; p < run; ++p, d += K_)
            for (int64_t j = 0; j < seg; ++j) d[j] = pad_;
          continue;
        }
        const float* row = x + (b * in_.h + iy) * in_.w * C;
        const int64_t a = std::clamp(ox_lo, ox0, ox0 + run), e = std::clamp(ox_hi, ox0, ox0 + run);
        for (int64_t ox = ox0; ox < ox0 + run; ++ox) {
          if (ox == a && e > a) {  // the interior in one go
            float* di = d + (a - ox0) * K_;
            const float* si = row + (a * sw_ - pw_) * C;
            if (copy_) copy_(di, K_, si, sw_ * C, e - a);
            else copy_runs_any(di, K_, si, sw_ * C, e - a, seg);
            ox = e - 1;
            continue;
          }
          float* dd = d + (ox - ox0) * K_;
          const int64_t ix0 = ox * sw_ - pw_;
          const int64_t lo = std::clamp<int64_t>(-ix0, 0, kw_);
          const int64_t hi = std::clamp<int64_t>(in_.w - ix0, lo, kw_);
          for (int64_t j = 0; j < lo * C; ++j) dd[j] = pad_;
          copy_floats(dd + lo * C, row + (ix0 + lo) * C, (hi - lo) * C);
          for (int64_t j = hi * C; j < seg; ++j) dd[j] = pad_;
        }
      }
      r += run;
    }
  }

  Value in_;
  int64_t kh_, kw_, sh_, sw_, ph_, pw_, oc_, K_;
  float pad_, op_a_ = 0.f, op_b_ = 0.f;
  bool b_trans_, xnor_, direct_;
  const float* B_;
  Operand operand_;
  std::vector<Step> prog_;
  fgemm_detail::GemmFn gemm_;
  std::unique_ptr<RowBits> bits_;
  CopyRunsFn copy_ = nullptr;  // runs of kw*c floats, when that is 1..16
};

// ---- elementwise: one output program per pixel row -------------------------------------
class EwOp : public Op {
 public:
  EwOp(const OpSpec& sp, const std::vector<Value>& vals) : Op(sp) {
    out = only_input(sp, vals, false);
    prog_ = read_program(sp, out.c);
    if (program_uses_kfac(prog_)) sp.fail("K factor step outside a layer");
  }
  void run(Ctx& c) override {
    const int64_t rows = c.n * out.h * out.w, C = out.c;
    const float* x = static_cast<const float*>(c.in[0]);
    float* y = static_cast<float*>(c.out);
    parallel_for(rows, threads_for(c.threads, rows * C, int64_t{1} << 16), [&](int64_t r0, int64_t r1) {
      if (y != x) std::memcpy(y + r0 * C, x + r0 * C, static_cast<size_t>((r1 - r0) * C) * 4);
      for (int64_t r = r0; r < r1; ++r) run_program(prog_, y + r * C, C, r, nullptr);
    });
  }

 private:
  std::vector<Step> prog_;
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
