// A quantized conv / dense layer of the graph executor on the bitwise kernels (bconv.h,
// driver.h): the input's levels (packed ±1 bits, XNOR signs + K, or unsigned bit planes),
// an exact integer accumulator, then either packed bits (sign(BatchNorm) folded into integer
// thresholds, fused in the driver; a max pool between accumulator and BN runs on the bits as
// OR for increasing and AND for decreasing channels) or floats through an output program
// (y = ((acc * sw) * sx) * K + bias, then whatever elementwise ops were fused after it).
// Semantics: lowbit.runtime.ops.QLayer (the Python executor, the living spec).
//
// A float output may end with a fused residual add (attribute residual = 1, the second input:
// y = program(acc) + r, JoinOp's sum).  Without an accumulator record, the float stage runs
// inside the bitwise driver's finish on each pixel's accumulators while they are in cache
// (StageKind::kRows), through the row kernels of float_rows.h.
//
// A dense layer is a conv with h = w = kh = kw = 1 on a (1, 1, F) value; a "spatial" dense
// (binary dense fed by flattened bits) is a conv whose kernel is its whole input.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bconv/bconv.h"
#include "bconv/bitplane.h"
#include "bconv/maxpool.h"
#include "bitpack/bitpack.h"
#include "common/target.h"
#include "graph/float_ops.h"
#include "graph/float_rows.h"
#include "graph/spec.h"

namespace lowbit {
namespace graph {

enum class QSource : int { kBits = 0, kSign = 1, kXnor = 2, kLevelsU8 = 3, kLevelsDorefa = 4 };

class QLayerOp : public Op {
 public:
  QLayerOp(const OpSpec& sp, const std::vector<Value>& vals) : Op(sp) {
    residual_ = sp.i("residual", 0) != 0;
    if (sp.inputs.size() != (residual_ ? 2u : 1u)) sp.fail(residual_ ? "expected two inputs" : "expected one input");
    in_ = vals.at(static_cast<size_t>(sp.inputs[0]));
    src_ = static_cast<QSource>(sp.i("source"));
    if (sp.i("source") < 0 || sp.i("source") > 4) sp.fail("bad input source");
    if ((src_ == QSource::kBits) != in_.bits) sp.fail("input kind does not match its source");
    const std::string path = sp.s("path"), variant = sp.s("variant");
    if (!path_available(path)) sp.fail("kernel path '" + path + "' does not run on this CPU");
    kind_ = static_cast<XKind>(sp.i("xkind"));
    if (sp.i("xkind") < 0 || sp.i("xkind") > 4) sp.fail("bad kernel kind");
    kern_ = bconv_detail::find_xkernel(path, variant, kind_ == XKind::kTernaryMasked);
    if (!kern_ || (kern_->format == bconv_detail::Format::Masked) != (kind_ == XKind::kTernaryMasked))
      sp.fail("no kernel variant '" + variant + "' for path '" + path + "' and this layer kind");
    planar_ = kind_ == XKind::kPlanesBinary || kind_ == XKind::kPlanesPlanes;
    if (planar_ != (src_ == QSource::kLevelsU8 || src_ == QSource::kLevelsDorefa))
      sp.fail("bit-plane kernels need level inputs (and only they)");
    geometry(sp);
    weights(sp, path);
    stage(sp);
    if (residual_) {
      const Value& r = vals.at(static_cast<size_t>(sp.inputs[1]));
      if (bits_out_ || r.bits || r.h != out.h || r.w != out.w || r.c != out.c)
        sp.fail("the residual must be a float value of the output's shape (float output only)");
    }
    rows_ = find_step_rows(path);
    rows_ok_ = !bits_out_ && rows_supported(prog_);
    if (src_ == QSource::kSign) sign_rows_ = find_sign_rows(path);
    if (src_ == QSource::kSign || src_ == QSource::kXnor) {
      pack_ = bitpack_detail::find_pack<float>(path);
    } else if (planar_) {
      planes_fn_ = bitplane_detail::find_planes(path);
      lv_a_ = static_cast<float>(sp.f("levels.a"));
      lv_b_ = static_cast<float>(sp.f("levels.b"));
    }
  }

  std::vector<int64_t> temps(int64_t n, int) const override {
    const int64_t pix = n * in_.h * in_.w, opix = n * out_h_ * out_w_;
    const int64_t acc = opix * op_.oc * 4;
    const bool need_acc = !bits_out_ || kind_ == XKind::kPlanesPlanes;
    return {src_ == QSource::kBits ? 0 : pix * shape_.planes * shape_.cw * 8,     // operand
            planar_ ? pix * in_.c : 0,                                             // levels
            src_ == QSource::kXnor ? (pix + opix) * 4 : 0,                          // mean, K
            need_acc ? acc : 0,                                                    // acc
            kind_ == XKind::kPlanesPlanes ? acc : 0,                               // ones acc
            bits_out_ && pool_ ? opix * ((op_.oc + 63) / 64) * 8 : 0};             // pre-pool
  }

  void run(Ctx& c) override {
    const uint64_t* xw = operand(c);
    ConvShape s = shape_;
    s.n = c.n;
    const int64_t rows = c.n * out_h_ * out_w_, oc = op_.oc;
    int32_t* acc = static_cast<int32_t*>(c.tmp[3]);
    const float* res = residual_ ? static_cast<const float*>(c.in[1]) : nullptr;
#if !defined(LOWBIT_LEAN)  // (the runner: the accumulator path below, the same bits)
    if (!bits_out_ && !c.record && rows_ok_ && kind_ != XKind::kPlanesPlanes) {
      // the float stage (+ residual) in the driver's finish, per pixel (kRows)
      RowsCtx ctx{this, static_cast<float*>(c.out), res};
      OutStage st;
      st.kind = StageKind::kRows;
      st.rows = &QLayerOp::rows_stage;
      st.block = &QLayerOp::block_stage;
      st.ctx = &ctx;
      xconv2d(*kern_, xw, s, packed_, op_, st, c.threads);
      return;
    }
#endif
    if (c.record) {
      record_.resize(static_cast<size_t>(rows * oc));
      accumulate(c, xw, s, record_.data());
      if (acc) std::memcpy(acc, record_.data(), static_cast<size_t>(rows * oc) * 4);
    } else if (acc) {
      accumulate(c, xw, s, acc);
    }
    if (!bits_out_) {
      const float* kfac = src_ == QSource::kXnor ? static_cast<float*>(c.tmp[2]) + c.n * in_.h * in_.w : nullptr;
      float* y = static_cast<float*>(c.out);
      parallel_for(rows, threads_for(c.threads, rows * oc, int64_t{1} << 16), [&](int64_t r0, int64_t r1) {
        if (rows_ok_) {
          const AccRows a{acc + r0 * oc, oc, -1};
          rows_(prog_.data(), static_cast<int64_t>(prog_.size()), &a, nullptr, r1 - r0, oc, 0,
                res ? res + r0 * oc : nullptr, y + r0 * oc);
          return;
        }
        for (int64_t r = r0; r < r1; ++r) {
          float* o = y + r * oc;
          const int32_t* a = acc + r * oc;
          for (int64_t j = 0; j < oc; ++j) o[j] = static_cast<float>(a[j]);
          run_program(prog_, o, oc, r, kfac);
          if (res)
            for (int64_t j = 0; j < oc; ++j) o[j] = o[j] + res[r * oc + j];
        }
      });
      return;
    }
    uint64_t* bits = pool_ ? static_cast<uint64_t*>(c.tmp[5]) : static_cast<uint64_t*>(c.out);
    if (kind_ == XKind::kPlanesPlanes) {
      threshold(acc, rows, bits);
    } else {
      OutStage st;
      st.kind = StageKind::kBits; st.out = bits; st.thr = thr_; st.flip = flip_;
      xconv2d(*kern_, xw, s, packed_, op_, st, c.threads);
    }
    if (pool_) pool(c, bits);
  }

  const std::vector<int32_t>* recorded() const override { return &record_; }

 private:
  struct RowsCtx {
    const QLayerOp* op;
    float* y;
    const float* res;
  };
  // kRows stage: channels oc0 .. oc0+n-1 of output pixel `pix`
  static void rows_stage(void* p, int64_t pix, int64_t oc0, int64_t n, const int32_t* acc) {
    const RowsCtx& c = *static_cast<const RowsCtx*>(p);
    const QLayerOp& q = *c.op;
    const int64_t at = pix * q.op_.oc + oc0;
    const AccRows a{acc, n, -1};
    q.rows_(q.prog_.data(), static_cast<int64_t>(q.prog_.size()), &a, nullptr, 1, n, oc0,
            c.res ? c.res + at : nullptr, c.y + at);
  }
  // kRows stage of a binary layer without padding corrections: XOR counts of nrows pixels
  // from row0 (ldc apart), channels oc0 .. oc0+n-1
  static void block_stage(void* p, int64_t row0, int64_t nrows, int64_t oc0, int64_t n, const int32_t* counts,
                          int64_t ldc, int32_t kbits) {
    const RowsCtx& c = *static_cast<const RowsCtx*>(p);
    const QLayerOp& q = *c.op;
    const int64_t oc = q.op_.oc, at = row0 * oc + oc0;
    const AccRows a{counts, ldc, kbits};
    if (n == oc) {
      q.rows_(q.prog_.data(), static_cast<int64_t>(q.prog_.size()), &a, nullptr, nrows, n, oc0,
              c.res ? c.res + at : nullptr, c.y + at);
      return;
    }
    for (int64_t i = 0; i < nrows; ++i) {  // a column range: rows are oc apart in y
      const AccRows ai{counts + i * ldc, ldc, kbits};
      q.rows_(q.prog_.data(), static_cast<int64_t>(q.prog_.size()), &ai, nullptr, 1, n, oc0,
              c.res ? c.res + at + i * oc : nullptr, c.y + at + i * oc);
    }
  }

  void geometry(const OpSpec& sp) {
    ConvShape& s = shape_;
    s.kh = sp.i("kh"); s.kw = sp.i("kw"); s.sh = sp.i("sh"); s.sw = sp.i("sw");
    s.ph = sp.i("ph"); s.pw = sp.i("pw");
    if (sp.i("c") != in_.c) sp.fail("in_channels " + std::to_string(sp.i("c")) + " but the input has " +
                                    std::to_string(in_.c));
    s.h = in_.h; s.w = in_.w; s.cw = in_.words();
    s.planes = planar_ ? sp.i("a_bits") : 1;
    if (planar_ && (s.planes < 1 || s.planes > 8)) sp.fail("a_bits must be 1..8 for bit planes");
    out_h_ = window_out(sp, s.h, s.kh, s.sh, s.ph);
    out_w_ = window_out(sp, s.w, s.kw, s.sw, s.pw);
    s.oh = out_h_; s.ow = out_w_;
  }

  void weights(const OpSpec& sp, const std::string&) {
    XOp& op = op_;
    op.kind = kind_;
    op.oc = sp.i("oc");
    op.kbits = shape_.kh * shape_.kw * in_.c;
    op.a_bits = static_cast<int>(shape_.planes);
    op.w_bits = static_cast<int>(sp.i("w_bits", 1));
    op.pad_value = static_cast<int>(sp.i("pad_value", 0));
    if (op.oc < 1 || op.kbits > (int64_t{1} << 30)) sp.fail("bad output channels or kernel size");
    const int64_t taps = shape_.kh * shape_.kw, W = taps * shape_.cw;
    if (kind_ == XKind::kPlanesPlanes && (op.w_bits < 1 || op.w_bits > 8)) sp.fail("w_bits must be 1..8");
    if (!planar_) {
      if (op.pad_value < -1 || op.pad_value > 1) sp.fail("pad_value must be -1, 0 or 1");
      if (op.pad_value != -1 && (shape_.ph > 0 || shape_.pw > 0))
        op.tap_sums = sp.a<int32_t>("tap_sums", 'i', op.oc * taps);
      if (kind_ == XKind::kTernaryMasked) op.w_pop = sp.a<int32_t>("w_pop", 'i', op.oc);
    } else {
      op.w_pop = sp.a<int32_t>("w_pop", 'i', kind_ == XKind::kPlanesPlanes ? op.oc * op.w_bits : op.oc);
      const int64_t amax = (int64_t{1} << op.a_bits) - 1;
      const int64_t wmax = kind_ == XKind::kPlanesPlanes ? (int64_t{1} << op.w_bits) - 1 : 1;
      if (amax * wmax * op.kbits >= (int64_t{1} << 31)) sp.fail("accumulator may overflow int32");
    }
    packed_ = sp.a<uint64_t>("packed", 'u', bconv_detail::packed_b_words(*kern_, bconv_detail::op_columns(op), W));
    if (kind_ == XKind::kPlanesPlanes) {  // Wl = step * u + offset: acc = step a.u + offset sum(a)
      ones_ = op;
      ones_.kind = XKind::kPlanesBinary;
      ones_.oc = 1;
      ones_.w_bits = 1;
      ones_.w_pop = sp.a<int32_t>("ones.w_pop", 'i', 1);
      ones_packed_ = sp.a<uint64_t>("ones.packed", 'u', bconv_detail::packed_b_words(*kern_, 1, W));
      step_ = sp.i("step"); offset_ = sp.i("offset");
    }
    out.h = out_h_; out.w = out_w_; out.c = op.oc;
  }

  void stage(const OpSpec& sp) {
    bits_out_ = sp.i("bits_out") != 0;
    out.bits = bits_out_;
    if (!bits_out_) {
      prog_ = read_program(sp, op_.oc);
      if (program_uses_kfac(prog_) != (src_ == QSource::kXnor)) sp.fail("K factor step mismatch");
      return;
    }
    thr_ = sp.a<int32_t>("thr", 'i', op_.oc);
    flip_ = sp.a<uint8_t>("flip", 'b', op_.oc);
    for (int64_t o = 0; o < op_.oc; ++o)
      if (flip_[o] > 1) sp.fail("flip must be 0 or 1");
    flipw_.assign(static_cast<size_t>((op_.oc + 63) / 64), 0);
    for (int64_t o = 0; o < op_.oc; ++o)
      if (flip_[o]) flipw_[static_cast<size_t>(o / 64)] |= uint64_t{1} << (o % 64);
    if (sp.i("pool", 0)) {
      pool_ = true;
      pkh_ = sp.i("pool.kh"); pkw_ = sp.i("pool.kw"); psh_ = sp.i("pool.sh"); psw_ = sp.i("pool.sw");
      out.h = window_out(sp, out_h_, pkh_, psh_, 0);
      out.w = window_out(sp, out_w_, pkw_, psw_, 0);
    }
  }

  // The kernel operand: the input's words, or the input packed here (signs / bit planes).
  const uint64_t* operand(Ctx& c) {
    if (src_ == QSource::kBits) return static_cast<const uint64_t*>(c.in[0]);
    const float* x = static_cast<const float*>(c.in[0]);
    const int64_t pix = c.n * in_.h * in_.w, C = in_.c;
    uint64_t* w = static_cast<uint64_t*>(c.tmp[0]);
    if (src_ == QSource::kXnor) {
      float* mean = static_cast<float*>(c.tmp[2]);
      xnor_kfac(x, c.n, in_.h, in_.w, C, shape_.kh, shape_.kw, shape_.sh, shape_.sw, shape_.ph,
                shape_.pw, out_h_, out_w_, mean, mean + pix);
    }
    if (!planar_) {
      parallel_for(pix, threads_for(c.threads, pix * C, int64_t{1} << 16), [&](int64_t r0, int64_t r1) {
        if (sign_rows_) {  // signs of whole blocks of rows (float_rows.h)
          sign_rows_(x + r0 * C, r1 - r0, C, w + r0 * shape_.cw);
          return;
        }
        for (int64_t r = r0; r < r1; ++r) pack_(x + r * C, C, w + r * shape_.cw);
      });
      return w;
    }
    uint8_t* lv = static_cast<uint8_t*>(c.tmp[1]);
    const Operand t = src_ == QSource::kLevelsU8 ? Operand::kLevelsU8 : Operand::kLevelsDorefa;
    for (int64_t i = 0; i < pix * C; ++i) lv[i] = static_cast<uint8_t>(operand_value(t, x[i], lv_a_, lv_b_));
    const int64_t per = shape_.planes * shape_.cw;
    const int bits = static_cast<int>(shape_.planes);
    parallel_for(pix, threads_for(c.threads, pix * C * bits, int64_t{1} << 17), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) planes_fn_(lv + r * C, C, bits, w + r * per);
    });
    return w;
  }

  // int32 accumulators (rows, oc) into acc.
  void accumulate(Ctx& c, const uint64_t* xw, const ConvShape& s, int32_t* acc) {
    OutStage st;
    st.kind = StageKind::kInt32;
    st.out = acc;
    xconv2d(*kern_, xw, s, packed_, op_, st, c.threads);
    if (kind_ != XKind::kPlanesPlanes) return;
    int32_t* a2 = static_cast<int32_t*>(c.tmp[4]);
    st.out = a2;
    xconv2d(*kern_, xw, s, ones_packed_, ones_, st, c.threads);
    const int64_t rows = c.n * out_h_ * out_w_, oc = op_.oc;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < oc; ++j)
        acc[r * oc + j] = static_cast<int32_t>(step_ * acc[r * oc + j] + offset_ * a2[r]);
  }

  void threshold(const int32_t* acc, int64_t rows, uint64_t* bits) const {
    const int64_t oc = op_.oc, nw = (oc + 63) / 64;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t w0 = 0; w0 < nw; ++w0) {
        uint64_t word = 0;
        for (int64_t j = 0; j < std::min<int64_t>(64, oc - w0 * 64); ++j) {
          const int64_t o = w0 * 64 + j;
          const int32_t a = acc[r * oc + o];
          word |= static_cast<uint64_t>(flip_[o] ? a <= thr_[o] : a >= thr_[o]) << j;
        }
        bits[r * nw + w0] = word;
      }
  }

  // max pool of the accumulator before its BN, on bits: OR where BN increases, AND (= OR of
  // the inverted bits) where it decreases (flip).
  void pool(Ctx& c, uint64_t* bits) const {
    const int64_t nw = (op_.oc + 63) / 64, rows = c.n * out_h_ * out_w_;
    auto invert = [&](uint64_t* b, int64_t n) {
      for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < nw; ++j) b[r * nw + j] ^= flipw_[static_cast<size_t>(j)];
    };
    const bool any_flip = std::any_of(flipw_.begin(), flipw_.end(), [](uint64_t w) { return w != 0; });
    if (any_flip) invert(bits, rows);
    uint64_t* y = static_cast<uint64_t*>(c.out);
    binary_maxpool2d(bits, c.n, out_h_, out_w_, nw, pkh_, pkw_, psh_, psw_, 0, 0, out.h, out.w, y, c.threads);
    if (any_flip) invert(y, c.n * out.h * out.w);
  }

  Value in_;
  QSource src_;
  XKind kind_;
  bool planar_ = false, bits_out_ = false, pool_ = false, residual_ = false, rows_ok_ = false;
  StepRowsFn rows_ = nullptr;
  SignRowsFn sign_rows_ = nullptr;
  const bconv_detail::XKernel* kern_ = nullptr;
  ConvShape shape_{};
  XOp op_{}, ones_{};
  int64_t out_h_ = 1, out_w_ = 1, pkh_ = 1, pkw_ = 1, psh_ = 1, psw_ = 1, step_ = 1, offset_ = 0;
  const uint64_t* packed_ = nullptr;
  const uint64_t* ones_packed_ = nullptr;
  const int32_t* thr_ = nullptr;
  const uint8_t* flip_ = nullptr;
  std::vector<uint64_t> flipw_;
  std::vector<Step> prog_;
  bitpack_detail::PackRowFn<float> pack_ = nullptr;
  bitplane_detail::PlanesRowFn planes_fn_ = nullptr;
  float lv_a_ = 0.f, lv_b_ = 0.f;
  std::vector<int32_t> record_;
};

}  // namespace graph
}  // namespace lowbit
