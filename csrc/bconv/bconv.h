// Bitwise conv2d (and dense = 1x1 conv on a 1x1 image) on packed NHWC activations, with
// fused output stages.  Driver and kernels: driver.h.  Numpy twins: lowbit.runtime.ref.
//
// Layouts (docs/design.md): activations (N, H, W, P, Cw) uint64, Cw = ceil(C/64) words per
// pixel and bit plane, P = 1 for ±1 activations (bit 1 = +1), P = a_bits for unsigned
// a_bits-bit activations (plane n = bit n of the level, 0/1).  Weights are packed along C per
// tap, (OC, KH, KW, Cw), and reach the kernel already laid out by pack_weights as the B
// matrix of an implicit im2col product: row (oh, ow) of A is the KH*KW*Cw words of the
// receptive field (tap-major, the same order as a weight row), out-of-image taps are words
// of 0.  Pad bits (channels C .. 64*Cw-1 of each tap's last word) are 0 in both operands,
// so they add popcount(0 XOR 0) = 0 to every count: K = KH*KW*C real bits.
//
// Kinds (what a column is and how counts become the integer accumulator `acc`):
//
//  kBinary   cols = OC.  a, w in {-1,+1}^K:  acc = K - 2 * popcount(a XOR w).
//
//  kTernary  cols = 2*OC, (u, v) of each channel adjacent.  w in {-1,0,+1} is stored as
//            two planes, sign s and nonzero mask m (the model file's format).  A ternary
//            weight is the mean of two binary ones: w = (u + v) / 2 with u = s OR NOT m,
//            v = s AND m (w=+1: u=v=+1; w=-1: u=v=-1; w=0: u=+1, v=-1), so
//              acc = a.w = (a.u + a.v) / 2 = K - popcount(a XOR u) - popcount(a XOR v),
//            which equals popcount(m) - 2 popcount((a XOR s) AND m) (the masked form) and
//            reuses every binary micro-kernel unchanged, on every path.  (Cost: 2 binary
//            products per ternary one; the masked form would be 4/3 of a binary product on
//            scalar POPCNT, 1 with AVX-512 VPTERNLOG - a possible later variant.)
//
//  kTernaryMasked  cols = OC, ternary weights through the masked micro-kernels
//            (micro_masked.h, Format::Masked: each B word a (sign, mask) pair):
//              acc = pop(m) - 2 popcount((a XOR s) AND m), pop(m) of the whole weight row.
//            The default for ternary layers (4 integer ops per word pair instead of 2 x 3).
//
//  kPlanesBinary  rows = (pixel, plane n), n < a_bits (a_bits rows per pixel, adjacent);
//            cols = OC.  Unsigned a = sum_n 2^n p_n with 0/1 planes p_n, w in {-1,+1}
//            (bit b_w = 1 <-> +1).  For one plane, over the K positions:
//              sum_i p_i w_i = #(p=1, w=+1) - #(p=1, w=-1) = 2 pop(p AND b) - pop(p)
//                            = pop(b) - pop(p XOR b)       [pop(p XOR b) = pop p + pop b - 2 pop(p AND b)]
//            so acc = sum_n 2^n (pop(b) - pop(p_n XOR b)), pop(b) of the whole weight row.
//            This is BNN's first layer from 8-bit input (Algorithm 4: the 2^(n-1)
//            XnorDotProduct terms of the paper are these, with 0/1 planes against ±1
//            weights - not an XNOR of two ±1 vectors) and DoReFa's k-bit activations
//            against 1-bit weights.  Out-of-image taps are planes of 0 = activation 0:
//            zero padding is exact without correction (0 AND b = 0 and pop(b) - pop(0 XOR
//            b) = 0 tap by tap).
//
//  kPlanesPlanes  rows as above; cols = (oc, plane k) for k < w_bits, then one column of
//            zeros (col OC*w_bits).  Unsigned a (a_bits) times unsigned w (w_bits), DoReFa:
//              a.w = sum_n sum_k 2^(n+k) pop(p_n AND q_k),
//              pop(p AND q) = (pop(p) + pop(q) - pop(p XOR q)) / 2,
//            pop(q) per (oc, k) is precomputed, pop(p_n) is the count against the zero
//            column (pop(p XOR 0) = pop(p)).  Zero padding exact as above.
//
// Padding correction (kBinary, kTernary, kTernaryMasked).  An out-of-image tap reads words of 0, i.e.
// activations -1, contributing -S[oc][tap] with S = sum of the tap's weights
// (binary: 2 pop(w_tap) - C; ternary: 2 pop(s AND m) - pop(m)).  Training's padding value
// pv in {-1, 0, +1} contributes pv * S, so acc += (pv + 1) * sum_{taps outside} S[oc][tap].
// The set of taps outside depends only on (valid kh range of the output row, valid kw range
// of the output column): the distinct patterns are enumerated and a table
// corr[row pattern][col pattern][oc] is built once per call (Larq Compute Engine style);
// interior pixels (the full pattern) get 0.  pv = -1 needs no correction at all.
//
// Output stages, applied to acc while a chunk of rows is in cache:
//   kInt32  out (M, OC) int32 = acc;
//   kBits   out (M, ceil(OC/64)) uint64, bit oc = flip[oc] ? acc <= thr[oc] : acc >= thr[oc]
//           (pad bits 0): sign(BatchNorm(.)) folded into integer thresholds (ref.py derives
//           thr / flip exactly from the float formula; constant channels use thresholds
//           outside [-K, K]);
//   kFloat  out (M, OC) float32 = float(acc) * scale[oc] + bias[oc], two float32 roundings
//           (no FMA: this file is compiled for baseline x86-64), bias optional.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "bconv/driver.h"
#include "bconv/finish_neon.h"
#include "bconv/finish_x86.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace lowbit {

enum class XKind { kBinary = 0, kTernary = 1, kPlanesBinary = 2, kPlanesPlanes = 3, kTernaryMasked = 4 };
enum class StageKind { kInt32 = 0, kBits = 1, kFloat = 2, kRows = 3 };

struct ConvShape {
  int64_t n, h, w, planes, cw;  // input (n, h, w, planes, cw) words
  int64_t kh, kw, sh, sw, ph, pw;
  int64_t oh, ow;
};

struct XOp {
  XKind kind;
  int64_t oc;                  // output channels
  int64_t kbits;               // KH * KW * C
  int a_bits = 1, w_bits = 1;  // planes
  const int32_t* tap_sums = nullptr;  // kBinary / kTernary: (oc, kh*kw)
  int pad_value = 0;                  // -1, 0, +1 (kBinary / kTernary)
  const int32_t* w_pop = nullptr;     // kPlanesBinary, kTernaryMasked: (oc); kPlanesPlanes: (oc, w_bits)
};

struct OutStage {
  StageKind kind;
  void* out;
  const int32_t* thr = nullptr;
  const uint8_t* flip = nullptr;
  const float* scale = nullptr;
  const float* bias = nullptr;
  // kBits, derived once per call by xconv2d (prepare_bits): bit = (acc < lt[oc]) XOR
  // NOT flip[oc], i.e. lt = thr where acc >= thr is asked (bit = NOT(acc < thr)) and lt =
  // thr + 1 (saturated) where acc <= thr is asked (bit = acc < thr + 1).  flipw holds NOT
  // flip as bits, one word per 64 channels.
  const int32_t* lt = nullptr;
  const uint64_t* notflip = nullptr;
  // kRows: rows(ctx, pixel, oc0, n, acc) gets the int32 accumulators of channels
  // oc0 .. oc0+n-1 of one output pixel while they are in cache (the graph executor's fused
  // float stage, qlayer.h); kBinary / kTernary / kTernaryMasked layers only.
  void (*rows)(void* ctx, int64_t pixel, int64_t oc0, int64_t n, const int32_t* acc) = nullptr;
  // kRows, optional: a kBinary layer without padding corrections hands over whole blocks of
  // XOR counts instead, block(ctx, row0, nrows, oc0, n, counts, ldc, K): acc = (K - c) - c.
  void (*block)(void* ctx, int64_t row0, int64_t nrows, int64_t oc0, int64_t n, const int32_t* counts,
                int64_t ldc, int32_t K) = nullptr;
  void* ctx = nullptr;
};

namespace bconv_detail {

// Number of B columns of an op.
inline int64_t op_columns(const XOp& op) {
  switch (op.kind) {
    case XKind::kTernary: return 2 * op.oc;
    case XKind::kPlanesPlanes: return op.oc * op.w_bits + 1;
    default: return op.oc;
  }
}

// acc values for channels oc0 .. oc0+n-1 of output row `row` -> the stage's output.
// oc0 is a multiple of 64 (bits) and n reaches a multiple of 64 or the last channel.
inline void stage_row(const OutStage& st, int64_t OC, int64_t row, int64_t oc0, int64_t n,
                      const int32_t* acc) {
  switch (st.kind) {
    case StageKind::kRows:
      st.rows(st.ctx, row, oc0, n, acc);
      return;
    case StageKind::kInt32:
      std::memcpy(static_cast<int32_t*>(st.out) + row * OC + oc0, acc, static_cast<size_t>(n) * 4);
      return;
    case StageKind::kFloat: {
      float* o = static_cast<float*>(st.out) + row * OC + oc0;
      const float* sc = st.scale + oc0;
      if (st.bias) {
        const float* bi = st.bias + oc0;
        for (int64_t j = 0; j < n; ++j) {
          const float prod = static_cast<float>(acc[j]) * sc[j];
          o[j] = prod + bi[j];
        }
      } else {
        for (int64_t j = 0; j < n; ++j) o[j] = static_cast<float>(acc[j]) * sc[j];
      }
      return;
    }
    case StageKind::kBits: {
      const int64_t words = (OC + 63) / 64;
      uint64_t* o = static_cast<uint64_t*>(st.out) + row * words + oc0 / 64;
      const int32_t* lt = st.lt + oc0;
      for (int64_t j0 = 0; j0 < n; j0 += 64) {
        const int64_t m = std::min<int64_t>(64, n - j0);
        uint64_t below = 0;  // bit j: acc < lt
#if defined(__SSE2__)
        if (m == 64) {  // 16 channels per step: 4 compares, 2 packs, 1 movemask
          for (int q = 0; q < 4; ++q) {
            const auto* a = reinterpret_cast<const __m128i*>(acc + j0 + 16 * q);
            const auto* t = reinterpret_cast<const __m128i*>(lt + j0 + 16 * q);
            __m128i c[4];
            for (int r = 0; r < 4; ++r) c[r] = _mm_cmpgt_epi32(_mm_loadu_si128(t + r), _mm_loadu_si128(a + r));
            const __m128i b = _mm_packs_epi16(_mm_packs_epi32(c[0], c[1]), _mm_packs_epi32(c[2], c[3]));
            below |= static_cast<uint64_t>(static_cast<uint16_t>(_mm_movemask_epi8(b))) << (16 * q);
          }
        } else
#endif
        {
          for (int64_t j = 0; j < m; ++j)
            below |= static_cast<uint64_t>(acc[j0 + j] < lt[j0 + j]) << j;
        }
        const uint64_t valid = m == 64 ? ~uint64_t{0} : (uint64_t{1} << m) - 1;
        o[j0 / 64] = (below ^ st.notflip[(oc0 + j0) / 64]) & valid;
      }
      return;
    }
  }
}

// Per-output-pixel padding correction table (see the top of the file).
struct PadCorrection {
  std::vector<int32_t> rowpat, colpat;  // pattern id per output row / column
  std::vector<int32_t> table;           // (row patterns, col patterns, oc); empty: none
  int64_t ncp = 0, oc = 0;
  std::vector<uint8_t> zero;            // per (row pattern, col pattern): all zero

  const int32_t* at(int64_t oh, int64_t ow) const {
    if (table.empty()) return nullptr;
    const int64_t id = rowpat[oh] * ncp + colpat[ow];
    return zero[id] ? nullptr : table.data() + id * oc;
  }
};

// Valid [lo, hi) kernel range per output position along one axis.
inline std::vector<std::pair<int64_t, int64_t>> valid_ranges(int64_t out, int64_t in, int64_t k,
                                                             int64_t s, int64_t p) {
  std::vector<std::pair<int64_t, int64_t>> r(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    const int64_t start = o * s - p;  // input index of tap 0
    const int64_t lo = std::clamp<int64_t>(-start, 0, k);
    const int64_t hi = std::clamp<int64_t>(in - start, lo, k);
    r[static_cast<size_t>(o)] = {lo, hi};
  }
  return r;
}

inline PadCorrection make_correction(const ConvShape& s, const XOp& op) {
  PadCorrection pc;
  if (op.kind != XKind::kBinary && op.kind != XKind::kTernary && op.kind != XKind::kTernaryMasked)
    return pc;
  if (op.pad_value == -1 || (s.ph == 0 && s.pw == 0)) return pc;
  const auto rows = valid_ranges(s.oh, s.h, s.kh, s.sh, s.ph);
  const auto cols = valid_ranges(s.ow, s.w, s.kw, s.sw, s.pw);
  std::map<std::pair<int64_t, int64_t>, int32_t> rid, cid;
  std::vector<std::pair<int64_t, int64_t>> rlist, clist;
  for (const auto& r : rows) {
    auto it = rid.find(r);
    if (it == rid.end()) { it = rid.emplace(r, static_cast<int32_t>(rlist.size())).first; rlist.push_back(r); }
    pc.rowpat.push_back(it->second);
  }
  for (const auto& c : cols) {
    auto it = cid.find(c);
    if (it == cid.end()) { it = cid.emplace(c, static_cast<int32_t>(clist.size())).first; clist.push_back(c); }
    pc.colpat.push_back(it->second);
  }
  pc.ncp = static_cast<int64_t>(clist.size());
  pc.oc = op.oc;
  const int64_t taps = s.kh * s.kw;
  pc.table.assign(static_cast<size_t>(rlist.size() * clist.size() * op.oc), 0);
  pc.zero.assign(rlist.size() * clist.size(), 1);
  const int32_t factor = op.pad_value + 1;
  for (size_t ri = 0; ri < rlist.size(); ++ri)
    for (size_t ci = 0; ci < clist.size(); ++ci) {
      const auto [r0, r1] = rlist[ri];
      const auto [c0, c1] = clist[ci];
      if (r0 == 0 && r1 == s.kh && c0 == 0 && c1 == s.kw) continue;  // interior
      const size_t id = ri * clist.size() + ci;
      pc.zero[id] = 0;
      int32_t* t = pc.table.data() + id * op.oc;
      for (int64_t o = 0; o < op.oc; ++o) {
        int64_t sum = 0;
        for (int64_t kh = 0; kh < s.kh; ++kh)
          for (int64_t kw = 0; kw < s.kw; ++kw)
            if (kh < r0 || kh >= r1 || kw < c0 || kw >= c1) sum += op.tap_sums[o * taps + kh * s.kw + kw];
        t[o] = static_cast<int32_t>(factor * sum);
      }
    }
  return pc;
}

}  // namespace bconv_detail

// x: (n, h, w, planes, cw) words; bpacked: pack_weights of the op's B columns, each
// kh*kw*cw words.  out per stage (rows = n*oh*ow).  Caller validated everything.
inline void xconv2d(const bconv_detail::XKernel& kern, const uint64_t* x, const ConvShape& s,
                    const uint64_t* bpacked, const XOp& op, const OutStage& st, int threads) {
  using namespace bconv_detail;
  const int64_t pixels = s.n * s.oh * s.ow;
  const int64_t planes = s.planes;
  const int64_t M = pixels * planes;
  const int64_t W = s.kh * s.kw * s.cw;
  const int64_t N = op_columns(op);
  if (pixels == 0 || op.oc == 0) return;
  const PadCorrection pc = make_correction(s, op);
  // kBits: thresholds as "acc < lt" plus the inverted flip bits (see OutStage)
  std::vector<int32_t> lt;
  std::vector<uint64_t> notflip;
  OutStage stage = st;
  if (st.kind == StageKind::kBits) {
    lt.resize(static_cast<size_t>(op.oc));
    notflip.assign(static_cast<size_t>((op.oc + 63) / 64), 0);
    for (int64_t o = 0; o < op.oc; ++o) {
      const bool f = st.flip[o] != 0;
      lt[o] = f ? (st.thr[o] == INT32_MAX ? INT32_MAX : st.thr[o] + 1) : st.thr[o];
      // saturating thr + 1 = INT32_MAX: acc < INT32_MAX holds for every |acc| <= 2^30
      if (!f) notflip[o / 64] |= uint64_t{1} << (o % 64);
    }
    stage.lt = lt.data();
    stage.notflip = notflip.data();
  }

  // A row r = (pixel r / planes, plane r % planes): words [k0, k0 + kn) of its receptive
  // field, tap-major; out-of-image taps are 0.  Rows come in runs of consecutive indices:
  // one division per run, then the position is stepped.
  const int64_t cw = s.cw, seg = s.kw * cw;  // words per kernel row
#if !defined(LOWBIT_LEAN)
  // Whole-K panels of ±1 rows straight into pack_a_words' layout (panel[w * mr + i] = word w
  // of row r + i, rows nrows .. mr-1 zero): no row-major copy and transpose per panel (the
  // gather + pack cost more than the XOR-popcounts on the detector's 32 / 64-channel convs).
  const int64_t taps_w = s.kh * seg;
  auto gather_panel = [&](int64_t r, int64_t nrows, int mr, uint64_t* panel) {
    int64_t ow = r % s.ow, oh = (r / s.ow) % s.oh, n = r / (s.ow * s.oh);
    for (int64_t i = 0; i < nrows; ++i) {
      const int64_t ih0 = oh * s.sh - s.ph, iw0 = ow * s.sw - s.pw;
      uint64_t* d = panel + i;
      if (ih0 >= 0 && ih0 + s.kh <= s.h && iw0 >= 0 && iw0 + s.kw <= s.w) {  // interior
        const uint64_t* src = x + ((n * s.h + ih0) * s.w + iw0) * cw;
        for (int64_t kh = 0; kh < s.kh; ++kh, src += s.w * cw, d += seg * mr)
          for (int64_t j = 0; j < seg; ++j) d[j * mr] = src[j];
      } else {
        for (int64_t kh = 0; kh < s.kh; ++kh) {
          const int64_t ih = ih0 + kh;
          for (int64_t kw = 0; kw < s.kw; ++kw) {
            const int64_t iw = iw0 + kw;
            if (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w) {
              const uint64_t* src = x + ((n * s.h + ih) * s.w + iw) * cw;
              for (int64_t j = 0; j < cw; ++j, d += mr) *d = src[j];
            } else {
              for (int64_t j = 0; j < cw; ++j, d += mr) *d = 0;
            }
          }
        }
      }
      if (++ow == s.ow) {
        ow = 0;
        if (++oh == s.oh) { oh = 0; ++n; }
      }
    }
    for (int64_t i = nrows; i < mr; ++i)
      for (int64_t w = 0; w < taps_w; ++w) panel[w * mr + i] = 0;
  };
  const bool panels = planes == 1 && kern.pack_a == &pack_a_words;
#endif
  auto gather = [&](int64_t r, int64_t nrows, int64_t k0, int64_t kn, uint64_t* dst, uint64_t* panel,
                    int mr) -> bool {
#if !defined(LOWBIT_LEAN)
    if (panel && panels && k0 == 0 && kn == s.kh * seg) {
      gather_panel(r, nrows, mr, panel);
      return true;
    }
#else
    (void)panel; (void)mr;
#endif
    int64_t pix = r / planes, plane = r % planes;
    int64_t ow = pix % s.ow, oh = (pix / s.ow) % s.oh, n = pix / (s.ow * s.oh);
    const int64_t k1 = k0 + kn;
    const bool whole = k0 == 0 && k1 == s.kh * seg;
    for (int64_t i = 0; i < nrows; ++i, dst += kn) {
      const int64_t ih0 = oh * s.sh - s.ph, iw0 = ow * s.sw - s.pw;
      if (whole) {  // the common case (one K block): per kernel row, zeros | a run | zeros
        const int64_t kwlo = std::clamp<int64_t>(-iw0, 0, s.kw);
        const int64_t kwhi = std::clamp<int64_t>(s.w - iw0, kwlo, s.kw);
        for (int64_t kh = 0; kh < s.kh; ++kh) {
          uint64_t* d = dst + kh * seg;
          const int64_t ih = ih0 + kh;
          if (ih < 0 || ih >= s.h) {
            for (int64_t j = 0; j < seg; ++j) d[j] = 0;
            continue;
          }
          for (int64_t j = 0; j < kwlo * cw; ++j) d[j] = 0;
          const uint64_t* src = x + ((n * s.h + ih) * s.w + iw0 + kwlo) * planes * cw + plane * cw;
          if (planes == 1) {
            for (int64_t j = 0; j < (kwhi - kwlo) * cw; ++j) d[kwlo * cw + j] = src[j];
          } else {
            for (int64_t kw = kwlo; kw < kwhi; ++kw, src += planes * cw)
              for (int64_t j = 0; j < cw; ++j) d[kw * cw + j] = src[j];
          }
          for (int64_t j = kwhi * cw; j < seg; ++j) d[j] = 0;
        }
      } else
      for (int64_t kh = k0 / seg; kh * seg < k1; ++kh) {
        const int64_t ih = ih0 + kh;
        const bool row_ok = ih >= 0 && ih < s.h;
        const uint64_t* src_row = x + ((n * s.h + (row_ok ? ih : 0)) * s.w) * planes * cw + plane * cw;
        for (int64_t kw = 0; kw < s.kw; ++kw) {
          const int64_t t0 = kh * seg + kw * cw;  // first word of this tap
          const int64_t a = std::max(t0, k0), b = std::min(t0 + cw, k1);
          if (a >= b) continue;
          const int64_t iw = iw0 + kw;
          uint64_t* d = dst + (a - k0);
          if (row_ok && iw >= 0 && iw < s.w) {
            const uint64_t* src = src_row + iw * planes * cw + (a - t0);
            for (int64_t j = 0; j < b - a; ++j) d[j] = src[j];
          } else {
            for (int64_t j = 0; j < b - a; ++j) d[j] = 0;
          }
        }
      }
      if (++plane == planes) {  // next row: next plane, or next pixel
        plane = 0;
        if (++ow == s.ow) {
          ow = 0;
          if (++oh == s.oh) { oh = 0; ++n; }
        }
      }
    }
    return false;
  };

  const int64_t OC = op.oc;
  const int32_t K = static_cast<int32_t>(op.kbits);
  const bool neon_bits = st.kind == StageKind::kBits && std::strcmp(kern.path, "neon") == 0;
  (void)neon_bits;
  // avx2 / avx512: counts -> bits in SIMD registers (finish_x86.h)
  const BitsRowFn x86_bits =
      st.kind == StageKind::kBits && op.kind == XKind::kBinary ? find_bits_row(kern.path) : nullptr;
  auto finish = [&](int64_t row0, int64_t nrows, int64_t col0, int64_t ncols,
                    const int32_t* counts, int64_t ldc) {
    constexpr int64_t kTmp = 256;  // a multiple of 64
    alignas(64) int32_t acc[kTmp];
    switch (op.kind) {
      case XKind::kBinary:
      case XKind::kTernary:
      case XKind::kTernaryMasked: {
        const bool ternary = op.kind == XKind::kTernary, masked = op.kind == XKind::kTernaryMasked;
        const int64_t oc0 = ternary ? col0 / 2 : col0, noc = ternary ? ncols / 2 : ncols;
        if (st.kind == StageKind::kRows && st.block && !ternary && !masked && pc.table.empty()) {
          st.block(st.ctx, row0, nrows, oc0, noc, counts, ldc, K);
          return;
        }
        int64_t ow = row0 % s.ow, oh = (row0 / s.ow) % s.oh;  // rows are pixels (planes == 1)
        for (int64_t i = 0; i < nrows; ++i) {
          const int64_t pix = row0 + i;
          const int32_t* corr = pc.at(oh, ow);
          const int32_t* cnt = counts + i * ldc;
          if (++ow == s.ow) { ow = 0; if (++oh == s.oh) oh = 0; }
#if LOWBIT_NEON_PATH
          if (neon_bits && op.kind == XKind::kBinary) {  // neon path: counts -> bits (finish_neon.h)
            binary_bits_row_neon(cnt, K, corr ? corr + oc0 : nullptr, stage.lt + oc0, stage.notflip + oc0 / 64,
                                 noc, static_cast<uint64_t*>(st.out) + pix * ((OC + 63) / 64) + oc0 / 64);
            continue;
          }
#endif
          if (x86_bits) {
            x86_bits(cnt, K, corr ? corr + oc0 : nullptr, stage.lt + oc0, stage.notflip + oc0 / 64, noc,
                     static_cast<uint64_t*>(st.out) + pix * ((OC + 63) / 64) + oc0 / 64);
            continue;
          }
          for (int64_t j0 = 0; j0 < noc; j0 += kTmp) {
            const int64_t m = std::min(kTmp, noc - j0);
            // int32 out: write the accumulators in place, no temporary
            int32_t* a = st.kind == StageKind::kInt32
                             ? static_cast<int32_t*>(st.out) + pix * OC + oc0 + j0 : acc;
            if (masked) {
              const int32_t* c = cnt + j0;
              const int32_t* pm = op.w_pop + oc0 + j0;
              for (int64_t j = 0; j < m; ++j) a[j] = (pm[j] - c[j]) - c[j];  // no 2*c: c may be 2^30
            } else if (!ternary) {
              const int32_t* c = cnt + j0;
              for (int64_t j = 0; j < m; ++j) a[j] = (K - c[j]) - c[j];
            } else {
              const int32_t* c = cnt + 2 * j0;
              for (int64_t j = 0; j < m; ++j) a[j] = K - c[2 * j] - c[2 * j + 1];
            }
            if (corr) {
              const int32_t* cr = corr + oc0 + j0;
              for (int64_t j = 0; j < m; ++j) a[j] += cr[j];
            }
            if (st.kind != StageKind::kInt32) stage_row(stage, OC, pix, oc0 + j0, m, acc);
          }
        }
        return;
      }
      case XKind::kPlanesBinary: {
        // rows come in groups of `planes` (row_group), chunk starts are multiples of it
        for (int64_t i = 0; i < nrows; i += planes) {
          const int64_t pix = (row0 + i) / planes;
          for (int64_t j0 = 0; j0 < ncols; j0 += kTmp) {
            const int64_t m = std::min(kTmp, ncols - j0);
            for (int64_t j = 0; j < m; ++j) {
              const int64_t col = col0 + j0 + j;
              int64_t v = 0;
              for (int64_t p = 0; p < planes; ++p)
                v += (int64_t{op.w_pop[col]} - counts[(i + p) * ldc + j0 + j]) * (int64_t{1} << p);
              acc[j] = static_cast<int32_t>(v);
            }
            stage_row(stage, OC, pix, col0 + j0, m, acc);
          }
        }
        return;
      }
      case XKind::kPlanesPlanes: {
        const int64_t wb = op.w_bits, zero_col = OC * wb;  // col0 == 0: columns never split
        for (int64_t i = 0; i < nrows; i += planes) {
          const int64_t pix = (row0 + i) / planes;
          for (int64_t j0 = 0; j0 < OC; j0 += kTmp) {
            const int64_t m = std::min(kTmp, OC - j0);
            for (int64_t j = 0; j < m; ++j) {
              const int64_t o = j0 + j;
              int64_t v = 0;
              for (int64_t p = 0; p < planes; ++p) {
                const int32_t* cnt = counts + (i + p) * ldc;
                const int64_t pa = cnt[zero_col];
                for (int64_t q = 0; q < wb; ++q)
                  v += ((pa + op.w_pop[o * wb + q] - cnt[o * wb + q]) / 2) * (int64_t{1} << (p + q));
              }
              acc[j] = static_cast<int32_t>(v);
            }
            stage_row(stage, OC, pix, j0, m, acc);
          }
        }
        return;
      }
    }
  };

  if (W == 0) {  // no input channels: every count is 0
    std::vector<int32_t> zeros(static_cast<size_t>(N), 0);
    for (int64_t r = 0; r < M; r += planes) finish(r, planes, 0, N, zeros.data(), 0);
    // (ldc 0: every row reads the same zero counts)
    return;
  }
  const int64_t col_align = op.kind == XKind::kPlanesPlanes ? 0
                            : op.kind == XKind::kTernary    ? 128
                                                            : 64;
  xgemm(kern, M, N, W, bpacked, gather, finish, threads, planes, col_align);
}

}  // namespace lowbit
