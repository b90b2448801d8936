// Checks the *logic* of the SIMD paths of csrc/bconv (the avx2 nibble look-up and popcnt
// micro-kernels, the avx512 VPOPCNTQ micro-kernel, the masked ternary kernels incl. the
// avx512 VPTERNLOGQ one, the avx2 / avx512 bit-plane packers)
// against the portable path, on SIMDe's plain-C implementations of the intrinsics
// (-DLOWBIT_SIMDE, see common/target.h; under it the nlut kernel runs its intrinsics loop,
// the twin of the inline-assembly loop of native builds).  Built and run by
// tests/runtime/test_simd_emulated_bconv.py.  Exit status 0 = all equal.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bconv/bconv.h"
#include "bconv/bitplane.h"

using namespace lowbit;
using namespace lowbit::bconv_detail;

static int failures = 0;
#define CHECK(cond, ...)                  \
  do {                                    \
    if (!(cond)) {                        \
      std::printf("FAIL: " __VA_ARGS__);  \
      std::printf("\n");                  \
      ++failures;                         \
    }                                     \
  } while (0)

static std::vector<uint64_t> random_words(std::mt19937_64& rng, int64_t rows, int64_t words, int64_t bits) {
  std::vector<uint64_t> v(rows * words);
  for (auto& x : v) x = rng();
  if (bits % 64)
    for (int64_t r = 0; r < rows; ++r) v[r * words + words - 1] &= (uint64_t{1} << (bits % 64)) - 1;
  return v;
}

// One conv through every kernel of the table (and 1 / 2 threads) == the portable kernel.
static void check_conv(std::mt19937_64& rng, XKind kind, int64_t n, int64_t h, int64_t w, int64_t c,
                       int64_t oc, int64_t k, int64_t stride, int64_t pad, int a_bits, int w_bits,
                       StageKind stage) {
  const int64_t cw = (c + 63) / 64, taps = k * k;
  const bool planar = kind == XKind::kPlanesBinary || kind == XKind::kPlanesPlanes;
  const int64_t planes = planar ? a_bits : 1;
  ConvShape s{n, h, w, planes, cw, k, k, stride, stride, pad, pad, 0, 0};
  s.oh = (h + 2 * pad - k) / stride + 1;
  s.ow = (w + 2 * pad - k) / stride + 1;
  // x: every (pixel, plane) row has c bits
  auto x = random_words(rng, n * h * w * planes, cw, c);
  XOp op;
  op.kind = kind; op.oc = oc; op.kbits = taps * c; op.a_bits = a_bits; op.w_bits = w_bits;
  op.pad_value = static_cast<int>(rng() % 3) - 1;
  const bool masked = kind == XKind::kTernaryMasked;
  const int64_t N = op_columns(op), W = taps * cw, rw = masked ? 2 * W : W;
  // weight columns: random rows (their tap pad bits 0); the zero column of kPlanesPlanes 0;
  // masked: a sign row then a mask row per column
  std::vector<uint64_t> cols(N * rw, 0);
  for (int64_t col = 0; col < N; ++col) {
    if (kind == XKind::kPlanesPlanes && col == N - 1) break;
    auto r = random_words(rng, masked ? 2 * taps : taps, cw, c);
    std::copy(r.begin(), r.end(), cols.begin() + col * rw);
  }
  std::vector<int32_t> tap_sums(oc * taps), w_pop(kind == XKind::kPlanesPlanes ? oc * w_bits : oc);
  // (random tables: every kernel must agree on whatever the finish step is given)
  for (auto& v : tap_sums) v = static_cast<int32_t>(rng() % 101) - 50;
  for (auto& v : w_pop) v = static_cast<int32_t>(rng() % 200);
  op.tap_sums = tap_sums.data();
  op.w_pop = w_pop.data();
  std::vector<int32_t> thr(oc);
  std::vector<uint8_t> flip(oc);
  std::vector<float> scale(oc), bias(oc);
  for (int64_t i = 0; i < oc; ++i) {
    thr[i] = static_cast<int32_t>(rng() % 41) - 20;
    flip[i] = rng() & 1;
    scale[i] = static_cast<float>(static_cast<int>(rng() % 200) - 100) / 37.0f;
    bias[i] = static_cast<float>(static_cast<int>(rng() % 200) - 100) / 11.0f;
  }
  const int64_t rows = n * s.oh * s.ow;
  const int64_t out_elems = stage == StageKind::kBits ? rows * ((oc + 63) / 64) : rows * oc;
  auto run = [&](const XKernel& kern, int threads) {
    std::vector<uint64_t> packed(packed_b_words(kern, N, W) + 1);
    pack_weights(kern, cols.data(), N, W, packed.data());
    std::vector<uint64_t> out(out_elems, 0x5A5A5A5A5A5A5A5AULL);  // 8 bytes per element: enough for all
    OutStage st;
    st.kind = stage; st.out = out.data(); st.thr = thr.data(); st.flip = flip.data();
    st.scale = scale.data(); st.bias = bias.data();
    xconv2d(kern, x.data(), s, packed.data(), op, st, threads);
    const size_t bytes = stage == StageKind::kBits ? out_elems * 8 : out_elems * 4;
    out.resize((bytes + 7) / 8);
    if (bytes % 8) out.back() &= (uint64_t{1} << (8 * (bytes % 8))) - 1;
    return out;
  };
  const auto want = run(*find_xkernel("portable", "", masked), 1);
  for (const XKernel& kern : kXKernels)
    for (int threads : {1, 2})
      if ((kern.format == Format::Masked) == masked)
      CHECK(run(kern, threads) == want, "xconv2d %s/%s kind=%d stage=%d c=%ld oc=%ld k=%ld s=%ld p=%ld t=%d",
            kern.path, kern.variant, static_cast<int>(kind), static_cast<int>(stage), (long)c, (long)oc,
            (long)k, (long)stride, (long)pad, threads);
}

static void check_bitplanes(std::mt19937_64& rng) {
  for (int64_t k : {1, 63, 64, 65, 128, 129, 300})
    for (int bits : {1, 3, 8}) {
      const int64_t rows = 3, words = (k + 63) / 64;
      std::vector<uint8_t> x(rows * k);
      for (auto& v : x) v = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      std::vector<uint64_t> want(rows * bits * words), got(rows * bits * words);
      pack_bitplanes(x.data(), rows, k, bits, want.data(), "portable", 1);
      for (const char* p : {"avx2", "avx512"}) {
        pack_bitplanes(x.data(), rows, k, bits, got.data(), p, 2);
        CHECK(got == want, "pack_bitplanes %s k=%ld bits=%d", p, (long)k, bits);
      }
    }
}

// Ternary through the masked kernels (kind 4) == through the (u, v) pairs on the portable
// binary kernel (kind 1): two derivations of the same integer.
static void check_ternary_forms(std::mt19937_64& rng, int64_t c, int64_t oc, int64_t k, int64_t pad) {
  const int64_t cw = (c + 63) / 64, taps = k * k, W = taps * cw, h = 5, w = 6;
  ConvShape s{1, h, w, 1, cw, k, k, 1, 1, pad, pad, h + 2 * pad - k + 1, w + 2 * pad - k + 1};
  auto x = random_words(rng, h * w, cw, c);
  auto sign = random_words(rng, oc * taps, cw, c), mask = random_words(rng, oc * taps, cw, c);
  std::vector<uint64_t> sm(oc * 2 * W), uv(2 * oc * W);
  std::vector<int32_t> popm(oc, 0), tap_sums(oc * taps, 0);
  const uint64_t last = c % 64 ? (uint64_t{1} << (c % 64)) - 1 : ~uint64_t{0};
  for (int64_t o = 0; o < oc; ++o)
    for (int64_t i = 0; i < W; ++i) {
      const uint64_t sv = sign[o * W + i] & mask[o * W + i], mv = mask[o * W + i];
      const uint64_t valid = (i % cw == cw - 1) ? last : ~uint64_t{0};
      sm[o * 2 * W + i] = sv;
      sm[o * 2 * W + W + i] = mv;
      uv[(2 * o) * W + i] = (sv | ~mv) & valid;
      uv[(2 * o + 1) * W + i] = sv;
      popm[o] += __builtin_popcountll(mv);
      tap_sums[o * taps + i / cw] += 2 * __builtin_popcountll(sv) - __builtin_popcountll(mv);
    }
  std::vector<int32_t> want(s.oh * s.ow * oc), got(s.oh * s.ow * oc);
  XOp op;
  op.kind = XKind::kTernary; op.oc = oc; op.kbits = taps * c; op.tap_sums = tap_sums.data(); op.pad_value = 0;
  OutStage st;
  st.kind = StageKind::kInt32; st.out = want.data();
  const XKernel& port = *find_xkernel("portable", "");
  std::vector<uint64_t> bp(packed_b_words(port, 2 * oc, W) + 1);
  pack_weights(port, uv.data(), 2 * oc, W, bp.data());
  xconv2d(port, x.data(), s, bp.data(), op, st, 1);
  op.kind = XKind::kTernaryMasked; op.w_pop = popm.data();
  for (const XKernel& kern : kXKernels) {
    if (kern.format != Format::Masked) continue;
    std::vector<uint64_t> mp(packed_b_words(kern, oc, W) + 1);
    pack_weights(kern, sm.data(), oc, W, mp.data());
    st.out = got.data();
    xconv2d(kern, x.data(), s, mp.data(), op, st, 2);
    CHECK(got == want, "ternary masked %s/%s != (u, v) form, c=%ld oc=%ld k=%ld", kern.path, kern.variant,
          (long)c, (long)oc, (long)k);
  }
}

int main() {
  std::mt19937_64 rng(11);
  const StageKind stages[] = {StageKind::kInt32, StageKind::kBits, StageKind::kFloat};
  // (c, oc, k, stride, pad): channel edges, K blocks of the nlut kernel (> 24 words), tails
  const int64_t cases[][5] = {{1, 3, 3, 1, 1},    {63, 65, 3, 2, 1},  {64, 64, 1, 1, 0},
                              {65, 130, 3, 1, 2}, {129, 33, 5, 2, 2}, {200, 70, 3, 1, 1}};
  for (const auto& cs : cases)
    for (StageKind st : stages) {
      check_conv(rng, XKind::kBinary, 1, 5, 6, cs[0], cs[1], cs[2], cs[3], cs[4], 1, 1, st);
      check_conv(rng, XKind::kTernary, 1, 5, 4, cs[0], cs[1], cs[2], cs[3], cs[4], 1, 1, st);
      check_conv(rng, XKind::kTernaryMasked, 1, 4, 5, cs[0], cs[1], cs[2], cs[3], cs[4], 1, 1, st);
    }
  check_conv(rng, XKind::kPlanesBinary, 2, 5, 5, 3, 17, 3, 1, 1, 8, 1, StageKind::kInt32);
  check_conv(rng, XKind::kPlanesBinary, 1, 4, 5, 65, 66, 3, 2, 1, 2, 1, StageKind::kBits);
  check_conv(rng, XKind::kPlanesPlanes, 1, 4, 4, 65, 9, 3, 1, 1, 2, 3, StageKind::kInt32);
  check_conv(rng, XKind::kPlanesPlanes, 1, 3, 3, 130, 70, 1, 1, 0, 3, 2, StageKind::kFloat);
  check_conv(rng, XKind::kBinary, 1, 1, 2, 1000, 300, 1, 1, 0, 1, 1, StageKind::kBits);  // dense-like
  for (int64_t c : {1, 64, 65, 130}) check_ternary_forms(rng, c, 37, 3, 1);
  check_ternary_forms(rng, 70, 20, 1, 0);
  check_bitplanes(rng);
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
