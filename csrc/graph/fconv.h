// The float conv / dense of the graph executor: im2col rows (NHWC, tap-major) + one Eigen
// GEMM (fgemm.h) per row chunk + the output program, optionally ending in packed bits.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "common/threads.h"
#include "graph/fconv_direct.h"
#include "graph/fgemm.h"
#include "graph/fsparse.h"
#include "graph/float_ops.h"
#include "graph/pool_ops.h"
#include "graph/spec.h"

namespace lowbit {
namespace graph {

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

// ---- float conv / dense: im2col rows + one GEMM per row chunk + output program ----------
// x (n, h, w, c) -> y (n, oh, ow, oc).  y = program(cols(x) B) with B (K = kh*kw*c, oc)
// row-major, or its transpose (oc, K) (b_trans: torch's dense layout); a dense layer is the
// 1x1 conv of a (1, 1, F) value.  Out-of-image taps read `pad` (0 for torch; a quantized
// layer's pad_value).  The input may first go through an operand transform (a quantized
// layer with float weights: "sign" -> ±1, "u8" levels, "dorefa" levels, "clip01"), and
// XNOR layers multiply row p by K[p] (kfac, from xnor.h's mean |x| and window average).
class FConvOp : public Op {
 public:
  FConvOp(const OpSpec& sp, const std::vector<Value>& vals) : Op(sp) {
    // residual = 1: a second input r of the output's shape, y = program(conv) + r (an add that
    // alone reads the conv's result, fused; JoinOp's sum)
    residual_ = sp.i("residual", 0) != 0;
    OpSpec first = sp;
    if (residual_ && sp.inputs.size() == 2) first.inputs.resize(1);
    in_ = only_input(first, vals, false);
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
    if (rows_supported(prog_)) rows_ = find_step_rows(sp.s("path", "portable"));
    gemm_ = find_fgemm(sp.s("path", "portable"));
    if (!gemm_) sp.fail("no float GEMM for path '" + sp.s("path") + "'");
    direct_ = kh_ == 1 && kw_ == 1 && sh_ == 1 && sw_ == 1 && ph_ == 0 && pw_ == 0 &&
              operand_ == Operand::kNone;
#if !defined(LOWBIT_LEAN)
    // a 1x1 conv with at most 8 output channels (detector heads): the small-oc kernel
    if (direct_ && !b_trans_ && oc_ <= 8 && sp.i("direct", 1)) {
      small_ = find_small_dense(sp.s("path", "portable"));
      if (small_) {
        small_kp_ = (K_ + 15) / 16 * 16;
        small_wt_.assign(static_cast<size_t>(oc_ * small_kp_), 0.f);
        for (int64_t t = 0; t < K_; ++t)
          for (int64_t o = 0; o < oc_; ++o) small_wt_[static_cast<size_t>(o * small_kp_ + t)] = B_[t * oc_ + o];
      }
    }
#endif
    copy_ = find_copy_runs(kw_ * in_.c, std::make_integer_sequence<int, 16>{});
    // few input channels (a first layer): the direct conv (fconv_direct.h); also any conv of
    // at most 64 output channels on few output pixels (use_direct) that the lane conv below
    // does not take; not when the plan says direct=0 (tests and benchmarks of the GEMM path)
    small_c_ = in_.c <= 4 && K_ <= 128;
    if (!direct_ && !b_trans_ && kh_ * kw_ > 1 && (small_c_ || oc_ <= 64) && sp.i("direct", 1)) {
      dconv_ = std::make_unique<DirectConv>();
      DirectConv& d = *dconv_;
      d.c = in_.c; d.kh = kh_; d.kw = kw_; d.sh = sh_; d.sw = sw_;
      d.hp = in_.h + 2 * ph_; d.wp = in_.w + 2 * pw_;
      d.oh = out.h; d.ow = out.w; d.oc = oc_;
      d.init(B_);
      dfn_ = find_direct(sp.s("path", "portable"));
    }
    // a dense layer with at most a quarter of its weights nonzero (a pruned Deep-Compression
    // layer): the sparse product (fsparse.h), unless the plan says sparse=0
    if (direct_ && b_trans_ && in_.h == 1 && in_.w == 1 && !xnor_ && sp.i("sparse", 1)) {
      auto sd = std::make_unique<SparseDense>();
      if (sd->init(B_, oc_, K_, 0.25)) {
        sparse_ = std::move(sd);
        sfn_ = find_sparse(sp.s("path", "portable"));
      }
    }
    // a stride-1 conv with at most half of its weights nonzero (a pruned Deep-Compression
    // conv): the sparse conv (fsparse.h, output pixels in the lanes, one multiply-add per
    // nonzero weight) instead of the direct conv / GEMM, which multiply every zero too.  (A
    // first layer, 1-4 input channels, stays on the direct conv: measured faster, the sparse
    // conv's transposes cost more than its saved multiply-adds there.)
    if (!b_trans_ && !direct_ && !small_c_ && sh_ == 1 && sw_ == 1 && sp.i("sparse", 1)) {
      auto sc = std::make_unique<SparseConv>();
      sc->c = in_.c; sc->kh = kh_; sc->kw = kw_; sc->hp = in_.h + 2 * ph_;
      sc->oh = out.h; sc->ow = out.w; sc->oc = oc_;
      if (sc->init(B_, 0.5)) {
        sconv_ = std::move(sc);
        scfn_ = find_sparse_conv(sp.s("path", "portable"));
        dconv_.reset();
      }
    }
    // other stride-1 convs with more than 4 input channels whose shifted input planes fit in
    // 64 KiB (LeNet-5's conv2: 38 KiB): the dense conv with output pixels in the lanes
    // (fsparse.h LaneConv; every lane busy whatever the channel count), at any batch size
    if (!sconv_ && !b_trans_ && !direct_ && !small_c_ && sh_ == 1 && sw_ == 1 && sp.i("direct", 1) &&
        in_.c * kw_ * (in_.h + 2 * ph_) * out.w <= 16384) {
      lconv_ = std::make_unique<LaneConv>();
      LaneConv& l = *lconv_;
      l.c = in_.c; l.kh = kh_; l.kw = kw_; l.hp = in_.h + 2 * ph_; l.oh = out.h; l.ow = out.w; l.oc = oc_;
      int64_t block = 1;
      lfn_ = find_lane_conv(sp.s("path", "portable"), &block);
      l.init(B_, block);
      dconv_.reset();
    }
    if (sp.i("pool", 0)) {
#if !defined(LOWBIT_LEAN)
      init_pool(sp);
#else  // (the runner's plan never fuses a pool: kept out of its 1 MiB)
      sp.fail("fused max pools are not compiled in (LOWBIT_LEAN)");
#endif
    }
    if (residual_) {
      const Value& r = vals.at(static_cast<size_t>(sp.inputs[1]));
      if (sp.i("bits_out", 0) || r.bits || r.h != out.h || r.w != out.w || r.c != out.c)
        sp.fail("the residual must be a float value of the output's shape (float output only)");
    }
    if (sp.i("bits_out", 0)) {  // a sign / BatchNorm-threshold read only by signs, fused
      out.bits = true;
      bits_ = std::make_unique<RowBits>(sp, oc_);
      // the direct conv compares in registers and writes the words itself (one per pixel)
      if (dconv_ && prog_.empty() && oc_ <= 64) {
        dconv_->init_bits(sp.has("t") ? sp.a<float>("t", 'f', oc_) : nullptr,
                          sp.has("t") ? sp.a<float>("s", 'f', oc_) : nullptr);
        dbits_ = true;
      }
    }
  }

  // Output rows per GEMM call: the chunk's im2col rows (~96 KiB) and, with bits out, its float
  // result (~32 KiB) stay in L2 / L1 between the GEMM and the packing.
  int64_t chunk_rows(int64_t M) const {
    if (sparse_) return std::min<int64_t>(M, 64);  // whole 16-row blocks
    if (sconv_ || lconv_) return out.h * out.w;      // one image
    int64_t r = (int64_t{96} << 10) / std::max<int64_t>(1, K_ * 4);
    if (bits_) r = std::min(r, (int64_t{32} << 10) / (oc_ * 4));
    return std::min(M, std::max<int64_t>(16, r));
  }
  // The direct conv runs a first layer at any batch, other convs (those the lane conv does
  // not take: stride 2, large input planes) while the call has at most kDirectRows output
  // pixels (on LeNet-5's conv2 at batch 1 it was 13 % faster than im2col + GEMM; at batch 64
  // the GEMM won: its packed weights stay in L1, the direct conv's 500 x 64 do not).
  static constexpr int64_t kDirectRows = 256;
  bool use_direct(int64_t n) const { return dconv_ && (small_c_ || n * out.h * out.w <= kDirectRows); }
  int workers(int64_t n, int threads) const {
    const int64_t M = n * out.h * out.w;
    return threads_for(threads, M * K_ * oc_, int64_t{1} << 18);
  }
  std::vector<int64_t> temps(int64_t n, int threads) const override {
    const int64_t M = n * out.h * out.w;
    std::vector<int64_t> t;
    const bool ud = use_direct(n);
    t.push_back(direct_ || ud || sconv_ || lconv_ ? 0 : workers(n, threads) * chunk_rows(M) * K_ * 4);   // cols
    t.push_back(operand_ != Operand::kNone ? n * in_.h * in_.w * in_.c * 4 : 0);  // operand
    t.push_back(xnor_ ? (n * in_.h * in_.w + M) * 4 : 0);                         // mean, kfac
    const bool rows = bits_ && !(dbits_ && ud);
    t.push_back(rows ? workers(n, threads) * chunk_rows(M) * oc_ * 4 : 0);       // float rows
    t.push_back(rows ? workers(n, threads) * bits_->stream_words(chunk_rows(M)) * 8 : 0);
    t.push_back(ud && (ph_ || pw_) ? n * dconv_->hp * dconv_->wp * in_.c * 4 : 0);  // padded x
    t.push_back(sparse_ ? workers(n, threads) * sparse_->scratch_floats() * 4
                : sconv_ || lconv_ ? workers(n, threads) * planes_scratch() * 4
                         : 0);   // sparse blocks / an image's planes and planar result
    t.push_back(pool_ ? threads_for(threads, n * conv_h_ * conv_w_ * K_ * oc_, int64_t{1} << 18) * pkh_ * conv_w_ * oc_ * 4
                      : 0);      // fused max pool: kh conv rows per worker
    return t;
  }

  void run(Ctx& c) override {
#if !defined(LOWBIT_LEAN)
    if (pool_) return run_pooled(c);
#endif
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
    const bool ud = use_direct(n), db = dbits_ && ud;
    if (ud && (ph_ || pw_)) {
      float* xp = static_cast<float*>(c.tmp[5]);
      pad_input(x, n, xp);
      x = xp;
    }
    const int64_t rows = chunk_rows(M);
    const int64_t chunks = (M + rows - 1) / rows;
    const int nw = workers(n, c.threads);
    float* y = bits_ ? nullptr : static_cast<float*>(c.out);
    float* cols_base = static_cast<float*>(c.tmp[0]);
    std::atomic<int> next{0};
    parallel_for(chunks, nw, [&](int64_t c0, int64_t c1) {
      const int slot = next.fetch_add(1);
      float* cols = direct_ || ud ? nullptr : cols_base + slot * rows * K_;
      float* ybuf = bits_ && !db ? static_cast<float*>(c.tmp[3]) + slot * rows * oc_ : nullptr;
      uint64_t* stream = static_cast<uint64_t*>(c.tmp[4]);
      if (stream) stream += slot * bits_->stream_words(rows);
      for (int64_t ch = c0; ch < c1; ++ch) {
        const int64_t r0 = ch * rows, nr = std::min(rows, M - r0);
        const float* A = x + r0 * K_;
        if (db) {  // conv + compare + pack in one pass
          dfn_(*dconv_, x, r0, nr, nullptr, static_cast<uint64_t*>(c.out) + r0);
          continue;
        }
        float* C = bits_ ? ybuf : y + r0 * oc_;
        if (ud) {
          dfn_(*dconv_, x, r0, nr, C, nullptr);
        } else if (sconv_ || lconv_) {  // chunk = image r0 / (oh*ow)
          float* planes = static_cast<float*>(c.tmp[6]) + slot * planes_scratch();
          to_planes(x + (r0 / (out.h * out.w)) * in_.h * in_.w * in_.c, planes);
          float* yt = planes + planes_scratch() - planar_floats();
          if (sconv_) scfn_(*sconv_, planes, yt, C);
          else lfn_(*lconv_, planes, yt, C);
        } else if (sparse_) {
          sfn_(*sparse_, A, K_, nr, C, oc_, static_cast<float*>(c.tmp[6]) + slot * sparse_->scratch_floats());
        } else {
          if (!direct_) {
            im2col(x, r0, nr, cols);
            A = cols;
          }
#if !defined(LOWBIT_LEAN)
          if (small_ && direct_) {
            small_(A, nr, K_, small_wt_.data(), small_kp_, oc_, C);
          } else
#endif
          gemm_(A, K_, B_, b_trans_ ? K_ : oc_, b_trans_, C, oc_, nr, K_, oc_);
        }
        const float* res = residual_ ? static_cast<const float*>(c.in[1]) + r0 * oc_ : nullptr;
        if ((!prog_.empty() || res) && rows_) {
          rows_(prog_.data(), static_cast<int64_t>(prog_.size()), nullptr, C, nr, oc_, 0, res, C);
        } else {
          if (!prog_.empty()) run_program_rows(prog_, C, nr, oc_, r0, kfac);
          if (res)
            for (int64_t j = 0; j < nr * oc_; ++j) C[j] = C[j] + res[j];
        }
        if (bits_) bits_->pack(C, nr, static_cast<uint64_t*>(c.out) + r0 * out.words(), stream);
      }
    });
  }

 private:
  // ---- a fused float max pool (pool = 1): a first layer's direct conv computes the kh conv
  // rows of one pooled row into an L1-sized scratch, the max pool (pool_ops.h's row kernel, or
  // the same loops) and the pool's own output program ("post": the BatchNorm + hardtanh that
  // alone read the pool) run on it there; the conv's full-size output never goes to memory.
  // Conv rows that no pool window reads are not computed (no one can read them).
#if !defined(LOWBIT_LEAN)
  void init_pool(const OpSpec& sp) {
    if (!dconv_ || !small_c_ || sp.i("bits_out", 0) || residual_ || xnor_ || operand_ != Operand::kNone)
      sp.fail("a fused max pool needs a first layer's direct conv with float output");
    pool_ = true;
    pkh_ = sp.i("pool.kh"); pkw_ = sp.i("pool.kw"); psh_ = sp.i("pool.sh"); psw_ = sp.i("pool.sw");
    conv_h_ = out.h; conv_w_ = out.w;
    out.h = window_out(sp, conv_h_, pkh_, psh_, 0);
    out.w = window_out(sp, conv_w_, pkw_, psw_, 0);
    post_ = read_program(sp, oc_, "post");
    if (program_uses_kfac(post_)) sp.fail("K factor step outside a layer");
    if (rows_supported(post_)) post_rows_ = find_step_rows(sp.s("path", "portable"));
#if LOWBIT_X86_PATHS && !defined(LOWBIT_SIMDE)
    if (sp.s("path") == "avx512") prow_ = &maxpool_row_avx512;
    if (sp.s("path") == "avx2") prow_ = &maxpool_row_avx2;
#endif
  }
  int64_t pool_scratch() const { return pkh_ * conv_w_ * oc_; }  // floats per worker

  void run_pooled(Ctx& c) {
    const float* x = static_cast<const float*>(c.in[0]);
    if (ph_ || pw_) {
      float* xp = static_cast<float*>(c.tmp[5]);
      pad_input(x, c.n, xp);
      x = xp;
    }
    const int64_t prows = c.n * out.h, C = oc_, ps = psw_ * C;
    float* y = static_cast<float*>(c.out);
    std::atomic<int> next{0};
    const int nw = threads_for(c.threads, c.n * conv_h_ * conv_w_ * K_ * oc_, int64_t{1} << 18);
    parallel_for(prows, nw, [&](int64_t r0, int64_t r1) {
      float* sc = static_cast<float*>(c.tmp[7]) + next.fetch_add(1) * pool_scratch();
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / out.h, py = r % out.h, nr = pkh_ * conv_w_;
        const int64_t row0 = (b * conv_h_ + py * psh_) * conv_w_;  // first conv pixel
        dfn_(*dconv_, x, row0, nr, sc, nullptr);
        if (!prog_.empty() && rows_) rows_(prog_.data(), static_cast<int64_t>(prog_.size()), nullptr, sc, nr, C, 0, nullptr, sc);
        else if (!prog_.empty()) run_program_rows(prog_, sc, nr, C, row0, nullptr);
        float* yo = y + r * out.w * C;
        if (prow_) {
          prow_(sc, ps, out.w, conv_w_ * C, C, pkh_, pkw_, C, yo);
        } else {
          for (int64_t ox = 0; ox < out.w; ++ox) {  // MaxPoolOp's loops
            float* o = yo + ox * C;
            for (int64_t i = 0; i < pkh_; ++i)
              for (int64_t j = 0; j < pkw_; ++j) {
                const float* t = sc + (i * conv_w_ + ox * psw_ + j) * C;
                if (i == 0 && j == 0) std::memcpy(o, t, static_cast<size_t>(C) * 4);
                else max_into(o, t, C);
              }
          }
        }
        if (post_.empty()) continue;
        if (post_rows_) {
          post_rows_(post_.data(), static_cast<int64_t>(post_.size()), nullptr, yo, out.w, C, 0, nullptr, yo);
        } else {
          for (int64_t ox = 0; ox < out.w; ++ox) run_program(post_, yo + ox * C, C, 0, nullptr);
        }
      }
    });
  }
#endif

  // one image x (h, w, c) -> its shifted planes xs[ch][j] (hp rows of ow floats):
  // xs[ch][j][iy][ox] = x[iy - ph][ox + j - pw][ch], `pad` outside the image (fsparse.h);
  // via padded planes (c, hp, wp) at xs + xs_floats.
  void to_planes(const float* x, float* xs) const {
    const int64_t C = in_.c, hp = in_.h + 2 * ph_, wp = in_.w + 2 * pw_, ow = out.w;
    float* pl = xs + xs_floats();
    for (int64_t j = 0; j < C * hp * wp; ++j) pl[j] = pad_;
    for (int64_t iy = 0; iy < in_.h; ++iy)
      for (int64_t ix = 0; ix < in_.w; ++ix) {
        const float* src = x + (iy * in_.w + ix) * C;
        float* d = pl + (iy + ph_) * wp + ix + pw_;
        for (int64_t ch = 0; ch < C; ++ch) d[ch * hp * wp] = src[ch];
      }
    for (int64_t ch = 0; ch < C; ++ch)
      for (int64_t j = 0; j < kw_; ++j)
        for (int64_t iy = 0; iy < hp; ++iy)
          std::memcpy(xs + ((ch * kw_ + j) * hp + iy) * ow, pl + (ch * hp + iy) * wp + j, static_cast<size_t>(ow) * 4);
    std::memset(xs + C * kw_ * hp * ow, 0, 16 * 4);  // masked-load slack
  }
  int64_t xs_floats() const { return in_.c * kw_ * (in_.h + 2 * ph_) * out.w + 16; }  // + load slack
  int64_t planar_floats() const { return sconv_ ? sconv_->out_floats() : lconv_->out_floats(); }
  int64_t planes_scratch() const {  // xs, the padded planes, the planar result (64-byte multiple)
    return (xs_floats() + in_.c * (in_.h + 2 * ph_) * (in_.w + 2 * pw_) + planar_floats() + 15) / 16 * 16;
  }

  // x (n, h, w, c) -> xp (n, h + 2 ph, w + 2 pw, c) with `pad` around (the direct conv's input).
  void pad_input(const float* x, int64_t n, float* xp) const {
    const int64_t C = in_.c, hp = dconv_->hp, wp = dconv_->wp, row = in_.w * C;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t iy = 0; iy < hp; ++iy) {
        float* d = xp + (b * hp + iy) * wp * C;
        const int64_t sy = iy - ph_;
        if (sy < 0 || sy >= in_.h) {
          for (int64_t j = 0; j < wp * C; ++j) d[j] = pad_;
          continue;
        }
        for (int64_t j = 0; j < pw_ * C; ++j) d[j] = pad_;
        std::memcpy(d + pw_ * C, x + (b * in_.h + sy) * row, static_cast<size_t>(row) * 4);
        for (int64_t j = pw_ * C + row; j < wp * C; ++j) d[j] = pad_;
      }
  }

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
  bool b_trans_, xnor_, direct_, residual_ = false, pool_ = false;
  SmallDenseFn small_ = nullptr;   // 1x1, oc <= 8: float_rows.h's small-oc kernel
  std::vector<float> small_wt_;    // its transposed, zero-padded weights
  int64_t small_kp_ = 0;
  int64_t pkh_ = 1, pkw_ = 1, psh_ = 1, psw_ = 1, conv_h_ = 0, conv_w_ = 0;  // fused max pool
  std::vector<Step> post_;         // the pool's output program
  StepRowsFn post_rows_ = nullptr;
  FloatPoolRowFn prow_ = nullptr;  // avx2 / avx512 float max (null: MaxPoolOp's loops)
  const float* B_;
  Operand operand_;
  std::vector<Step> prog_;
  StepRowsFn rows_ = nullptr;  // the program's row kernel (float_rows.h), when it has one
  fgemm_detail::GemmFn gemm_;
  std::unique_ptr<RowBits> bits_;
  CopyRunsFn copy_ = nullptr;  // runs of kw*c floats, when that is 1..16
  std::unique_ptr<DirectConv> dconv_;  // few input channels: the direct conv instead of im2col + GEMM
  DirectFn dfn_ = nullptr;
  bool dbits_ = false;  // the direct conv writes the bits (no program, oc <= 64)
  bool small_c_ = false;  // a first layer: the direct conv at every batch size
  std::unique_ptr<SparseDense> sparse_;  // mostly-zero dense weights: CSR product
  SparseFn sfn_ = nullptr;
  std::unique_ptr<SparseConv> sconv_;    // half-zero conv weights (stride 1): sparse conv
  std::unique_ptr<LaneConv> lconv_;      // other stride-1 convs, c > 4: output pixels in the lanes
  LaneConvFn lfn_ = nullptr;
  SparseConvFn scfn_ = nullptr;
};

}  // namespace graph
}  // namespace lowbit
