// Kernel check for cross builds (make cross-test runs it under qemu-aarch64): every bitwise
// micro-kernel of every path this CPU runs (portable, neon / avx2, avx512) against a scalar
// reference, on the word edges K = 1, 31, 32, 33, 63, 64, 65, 127, 128, 129 bits (and K past
// one K block), with M, N that leave partial register tiles:
//   bgemm          dot(a, b) = K - 2 popcount(a ^ b)
//   xconv2d dense  binary (Words / Nlut layouts) and ternary (masked sign/mask layouts)
// On aarch64 also every NEON helper against its plain C++ reference twin (exact equality,
// on word-edge sizes 1, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 127, 128, 129, ...):
//   xconv2d bits   a 3x3 conv (padding corrections, stride 1 / 2) with a kBits stage: the
//                  neon path (finish_neon.h) == the portable path, ties and saturated
//                  thresholds included
//   finish rows    binary_bits_row_neon == binary_bits_row_ref
//   bitpack        pack_row_neon == pack_row_portable (float with NaN / -0, int32, int8)
//   threshold      threshold_row_neon == threshold_row_portable (ties, NaN, infinities)
//   direct conv    direct_neon == direct_portable, floats bit for bit and bits out
//   A packing      pack_a_words_neon4 == pack_a_words
// Prints one line per kernel and "kernel_test: OK" (exit 0) or the first mismatch (exit 1).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "bconv/bconv.h"
#include "bgemm/bgemm.h"
#include "bitpack/bitpack.h"
#include "bitpack/threshold.h"
#include "common/target.h"
#include "graph/fconv_direct.h"

using namespace lowbit;

static std::mt19937_64 rng(12345);

static std::vector<uint64_t> rand_rows(int64_t rows, int64_t k) {
  const int64_t w = (k + 63) / 64;
  std::vector<uint64_t> v(static_cast<size_t>(rows * w));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < w; ++j) {
      uint64_t x = rng();
      if (j == w - 1 && k % 64) x &= (1ull << (k % 64)) - 1;
      v[static_cast<size_t>(r * w + j)] = x;
    }
  return v;
}

static int pc(uint64_t x) { return static_cast<int>(popcount_swar(x)); }

#if LOWBIT_NEON_PATH
static const int64_t kEdges[] = {1, 2, 3, 4, 5, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 127, 128, 129, 200};

#define CHECK(cond, ...)                   \
  do {                                     \
    if (!(cond)) {                         \
      std::printf(__VA_ARGS__);            \
      std::printf("\n");                   \
      return 1;                            \
    }                                      \
  } while (0)

// A binary 3x3 conv with a kBits stage on the portable and the neon path: the same words.
static int test_xconv_bits(int& checked) {
  const bconv_detail::XKernel* port = bconv_detail::find_xkernel("portable", "");
  const bconv_detail::XKernel* neon = bconv_detail::find_xkernel("neon", "");
  const int64_t cs[] = {1, 33, 64, 65};
  const int64_t ocs[] = {1, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 127, 128, 129};
  for (int64_t C : cs)
    for (int64_t OC : ocs)
      for (int stride = 1; stride <= 2; ++stride)
        for (int pv = 0; pv <= 1; ++pv) {
          const int64_t H = 5, Wd = 6, cw = (C + 63) / 64, taps = 9;
          ConvShape sh{1, H, Wd, 1, cw, 3, 3, stride, stride, 1, 1, (H + 2 - 3) / stride + 1, (Wd + 2 - 3) / stride + 1};
          const auto x = rand_rows(H * Wd, C);          // (h, w, cw) words
          const auto w = rand_rows(OC * taps, C);       // (oc, tap, cw) words
          std::vector<int32_t> tap_sums(static_cast<size_t>(OC * taps));
          for (int64_t o = 0; o < OC * taps; ++o) {
            int p = 0;
            for (int64_t j = 0; j < cw; ++j) p += pc(w[o * cw + j]);
            tap_sums[o] = 2 * p - static_cast<int32_t>(C);
          }
          const int32_t K = static_cast<int32_t>(taps * C);
          std::vector<int32_t> thr(static_cast<size_t>(OC));
          std::vector<uint8_t> flip(static_cast<size_t>(OC));
          for (int64_t o = 0; o < OC; ++o) {
            thr[o] = static_cast<int32_t>(rng() % (2 * K + 3)) - K - 1;  // ties with acc happen
            flip[o] = rng() & 1;
            if (o % 7 == 3) thr[o] = (o & 8) ? std::numeric_limits<int32_t>::max() : -K - 5;  // constant channels
          }
          XOp op{XKind::kBinary, OC, K};
          op.tap_sums = tap_sums.data();
          op.pad_value = pv;
          const int64_t M = sh.oh * sh.ow, words = (OC + 63) / 64;
          std::vector<uint64_t> got[2];
          const bconv_detail::XKernel* ks[2] = {port, neon};
          for (int k = 0; k < 2; ++k) {
            std::vector<uint64_t> packed(static_cast<size_t>(bconv_detail::packed_b_words(*ks[k], OC, taps * cw)) + 8);
            bconv_detail::pack_weights(*ks[k], w.data(), OC, taps * cw, packed.data());
            got[k].assign(static_cast<size_t>(M * words), ~uint64_t{0});
            OutStage st{StageKind::kBits, got[k].data(), thr.data(), flip.data()};
            xconv2d(*ks[k], x.data(), sh, packed.data(), op, st, 1);
          }
          for (int64_t i = 0; i < M * words; ++i)
            CHECK(got[0][i] == got[1][i], "xconv bits C=%lld OC=%lld stride=%d pv=%d word %lld: neon %016llx portable %016llx",
                  (long long)C, (long long)OC, stride, pv, (long long)i, (unsigned long long)got[1][i], (unsigned long long)got[0][i]);
          ++checked;
        }
  std::printf("xconv2d bits     neon == portable       ok\n");
  return 0;
}

static int test_finish_rows(int& checked) {
  for (int64_t n : kEdges)
    for (int with_corr = 0; with_corr <= 1; ++with_corr) {
      const int32_t K = 576;
      std::vector<int32_t> cnt(n), corr(n), lt(n);
      std::vector<uint64_t> notflip((n + 63) / 64), a((n + 63) / 64, 1), b((n + 63) / 64, 2);
      for (int64_t j = 0; j < n; ++j) {
        cnt[j] = static_cast<int32_t>(rng() % (K + 1));
        corr[j] = static_cast<int32_t>(rng() % 41) - 20;
        lt[j] = (j % 5 == 0) ? (K - cnt[j] - cnt[j] + (with_corr ? corr[j] : 0)) + static_cast<int32_t>(rng() % 3) - 1
                             : static_cast<int32_t>(rng() % (2 * K + 1)) - K;  // ties at j % 5 == 0
        if (j % 11 == 7) lt[j] = std::numeric_limits<int32_t>::max();
      }
      for (auto& f : notflip) f = rng();
      const int32_t* cr = with_corr ? corr.data() : nullptr;
      bconv_detail::binary_bits_row_ref(cnt.data(), K, cr, lt.data(), notflip.data(), n, a.data());
      bconv_detail::binary_bits_row_neon(cnt.data(), K, cr, lt.data(), notflip.data(), n, b.data());
      for (size_t w = 0; w < a.size(); ++w)
        CHECK(a[w] == b[w], "finish row n=%lld corr=%d word %zu: neon %016llx ref %016llx", (long long)n, with_corr, w,
              (unsigned long long)b[w], (unsigned long long)a[w]);
      ++checked;
    }
  std::printf("finish rows      neon == reference      ok\n");
  return 0;
}

template <class T>
static int test_bitpack_type(const char* name, int& checked) {
  for (int64_t k : kEdges)
    for (int nan_at = -1; nan_at < 2; ++nan_at) {
      if (nan_at >= 0 && !std::is_floating_point_v<T>) continue;
      std::vector<T> x(static_cast<size_t>(k));
      for (int64_t i = 0; i < k; ++i) {
        const int r = static_cast<int>(rng() % 7) - 3;  // zeros included
        x[i] = static_cast<T>(r);
      }
      if constexpr (std::is_floating_point_v<T>) {
        if (k > 2) x[1] = T(-0.0);
        if (nan_at >= 0) x[static_cast<size_t>(nan_at == 0 ? 0 : k - 1)] = std::numeric_limits<T>::quiet_NaN();
      }
      const int64_t words = (k + 63) / 64;
      std::vector<uint64_t> a(words, 1), b(words, 2);
      const bool na = bitpack_detail::pack_row_portable(x.data(), k, a.data());
      const bool nb = bitpack_detail::pack_row_neon(x.data(), k, b.data());
      CHECK(na == nb, "bitpack %s k=%lld: NaN flag neon %d portable %d", name, (long long)k, nb, na);
      if (!na)
        for (int64_t w = 0; w < words; ++w)
          CHECK(a[w] == b[w], "bitpack %s k=%lld word %lld: neon %016llx portable %016llx", name, (long long)k,
                (long long)w, (unsigned long long)b[w], (unsigned long long)a[w]);
      ++checked;
    }
  std::printf("bitpack %-8s neon == portable       ok\n", name);
  return 0;
}

static int test_threshold(int& checked) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t c : kEdges) {
    std::vector<float> x(c), t(c);
    std::vector<uint64_t> flipw((c + 63) / 64), a((c + 63) / 64, 1), b((c + 63) / 64, 2);
    for (int64_t j = 0; j < c; ++j) {
      x[j] = static_cast<float>(static_cast<int>(rng() % 9) - 4) * 0.5f;
      t[j] = static_cast<float>(static_cast<int>(rng() % 9) - 4) * 0.5f;  // ties x == t
      if (j % 13 == 5) x[j] = nan;
      if (j % 17 == 9) t[j] = (j & 1) ? inf : -inf;
    }
    for (auto& f : flipw) f = rng();
    threshold_detail::threshold_row_portable(x.data(), t.data(), flipw.data(), c, a.data());
    threshold_detail::threshold_row_neon(x.data(), t.data(), flipw.data(), c, b.data());
    for (size_t w = 0; w < a.size(); ++w)
      CHECK(a[w] == b[w], "threshold c=%lld word %zu: neon %016llx portable %016llx", (long long)c, w,
            (unsigned long long)b[w], (unsigned long long)a[w]);
    ++checked;
  }
  std::printf("threshold row    neon == portable       ok\n");
  return 0;
}

static int test_direct(int& checked) {
  const int64_t ocs[] = {1, 3, 4, 5, 15, 16, 17, 20, 31, 32, 33, 63, 64, 65, 100};
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int64_t c = 1; c <= 3; c += 2)
    for (int64_t OC : ocs)
      for (int stride = 1; stride <= 2; ++stride)
        for (int bits = 0; bits <= 1; ++bits) {
          if (bits && OC > 64) continue;
          graph::DirectConv d;
          d.c = c; d.kh = 3; d.kw = 3; d.sh = stride; d.sw = stride;
          const int64_t H = 7, Wd = 9;
          d.hp = H + 2; d.wp = Wd + 2;
          d.oh = (d.hp - 3) / stride + 1; d.ow = (d.wp - 3) / stride + 1; d.oc = OC;
          std::vector<float> B(static_cast<size_t>(9 * c * OC)), xp(static_cast<size_t>(d.hp * d.wp * c));
          for (auto& v : B) v = u(rng);
          for (auto& v : xp) v = u(rng);
          d.init(B.data());
          std::vector<float> thr(OC), sgn(OC);
          for (int64_t j = 0; j < OC; ++j) {
            thr[j] = (j % 4 == 0) ? 0.f : u(rng);
            sgn[j] = (rng() & 1) ? 1.f : -1.f;
          }
          if (bits) d.init_bits(thr.data(), sgn.data());
          const int64_t M = d.oh * d.ow;
          std::vector<float> ya(static_cast<size_t>(M * OC), 7.f), yb(static_cast<size_t>(M * OC), 8.f);
          std::vector<uint64_t> ba(M, 1), bb(M, 2);
          // two calls (rows split mid output row) as the executor's chunks do
          const int64_t split = M / 2 + 1;
          for (int64_t r0 : {int64_t{0}, split}) {
            const int64_t nr = r0 ? M - split : split;
            if (nr <= 0) continue;
            graph::direct_detail::direct_portable(d, xp.data(), r0, nr, bits ? nullptr : ya.data() + r0 * OC,
                                                  bits ? ba.data() + r0 : nullptr);
            graph::direct_detail::direct_neon(d, xp.data(), r0, nr, bits ? nullptr : yb.data() + r0 * OC,
                                              bits ? bb.data() + r0 : nullptr);
          }
          if (bits) {
            for (int64_t i = 0; i < M; ++i)
              CHECK(ba[i] == bb[i], "direct bits c=%lld OC=%lld stride=%d pixel %lld: neon %016llx portable %016llx",
                    (long long)c, (long long)OC, stride, (long long)i, (unsigned long long)bb[i], (unsigned long long)ba[i]);
          } else {
            CHECK(std::memcmp(ya.data(), yb.data(), ya.size() * 4) == 0, "direct floats c=%lld OC=%lld stride=%d differ",
                  (long long)c, (long long)OC, stride);
          }
          ++checked;
        }
  std::printf("direct conv      neon == portable       ok (floats bit for bit)\n");
  return 0;
}

static int test_pack_a(int& checked) {
  for (int64_t kn = 1; kn <= 19; ++kn) {
    auto rows = rand_rows(4, 64 * kn);
    std::vector<uint64_t> a(4 * kn, 1), b(4 * kn, 2);
    bconv_detail::pack_a_words(rows.data(), kn, 4, a.data());
    bgemm_detail::pack_a_words_neon4(rows.data(), kn, 4, b.data());
    CHECK(a == b, "pack_a kn=%lld differs", (long long)kn);
    ++checked;
  }
  std::printf("A panel packing  neon == portable       ok\n");
  return 0;
}
#endif

int main() {
  const int64_t ks[] = {1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 40000};
  const int64_t ms[] = {1, 3, 5, 8, 13};
  const int64_t ns[] = {1, 2, 3, 5, 17};
  int checked = 0;
  for (const auto& kern : bgemm_detail::kKernels) {
    if (!path_available(kern.path)) continue;
    for (int64_t K : ks)
      for (int64_t M : ms)
        for (int64_t N : ns) {
          const int64_t W = (K + 63) / 64;
          auto a = rand_rows(M, K), b = rand_rows(N, K);
          std::vector<int32_t> out(static_cast<size_t>(M * N));
          bgemm(kern, a.data(), b.data(), M, N, W, static_cast<int32_t>(K), out.data(), 1);
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              int64_t cnt = 0;
              for (int64_t w = 0; w < W; ++w) cnt += pc(a[i * W + w] ^ b[j * W + w]);
              if (out[i * N + j] != K - 2 * cnt) {
                std::printf("bgemm %s/%s K=%lld M=%lld N=%lld (%lld,%lld): got %d want %lld\n", kern.path, kern.variant,
                            (long long)K, (long long)M, (long long)N, (long long)i, (long long)j, out[i * N + j], (long long)(K - 2 * cnt));
                return 1;
              }
            }
          ++checked;
        }
    std::printf("bgemm  %-8s %-22s ok\n", kern.path, kern.variant);
  }
  for (const auto& kern : bconv_detail::kXKernels) {
    if (!path_available(kern.path)) continue;
    const bool masked = kern.format == bconv_detail::Format::Masked;
    for (int64_t K : ks)
      for (int64_t M : ms)
        for (int64_t N : ns) {
          const int64_t W = (K + 63) / 64;
          auto x = rand_rows(M, K), s = rand_rows(N, K), m = rand_rows(N, K);
          std::vector<uint64_t> rows;
          std::vector<int32_t> w_pop;
          XOp op{masked ? XKind::kTernaryMasked : XKind::kBinary, N, K};
          if (masked) {
            for (int64_t j = 0; j < N; ++j) {
              int p = 0;
              for (int64_t w = 0; w < W; ++w) rows.push_back(s[j * W + w] & m[j * W + w]);
              for (int64_t w = 0; w < W; ++w) { rows.push_back(m[j * W + w]); p += pc(m[j * W + w]); }
              w_pop.push_back(p);
            }
            op.w_pop = w_pop.data();
          } else {
            rows = s;
          }
          std::vector<uint64_t> packed(static_cast<size_t>(bconv_detail::packed_b_words(kern, N, W)) + 8);
          bconv_detail::pack_weights(kern, rows.data(), N, W, packed.data());
          ConvShape sh{M, 1, 1, 1, W, 1, 1, 1, 1, 0, 0, 1, 1};
          std::vector<int32_t> out(static_cast<size_t>(M * N));
          OutStage st{StageKind::kInt32, out.data()};
          xconv2d(kern, x.data(), sh, packed.data(), op, st, 1);
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              int64_t want = 0;
              for (int64_t w = 0; w < W; ++w) {
                const uint64_t xa = x[i * W + w];
                if (masked) want += pc(m[j * W + w]) - 2 * pc((xa ^ s[j * W + w]) & m[j * W + w]);
                else want += 0;
              }
              if (!masked) {
                int64_t cnt = 0;
                for (int64_t w = 0; w < W; ++w) cnt += pc(x[i * W + w] ^ s[j * W + w]);
                want = K - 2 * cnt;
              }
              if (out[i * N + j] != want) {
                std::printf("xconv %s/%s K=%lld M=%lld N=%lld (%lld,%lld): got %d want %lld\n", kern.path, kern.variant,
                            (long long)K, (long long)M, (long long)N, (long long)i, (long long)j, out[i * N + j], (long long)want);
                return 1;
              }
            }
          ++checked;
        }
    std::printf("xconv2d %-8s %-22s ok\n", kern.path, kern.variant);
  }
#if LOWBIT_NEON_PATH
  if (test_xconv_bits(checked) || test_finish_rows(checked) || test_bitpack_type<float>("float", checked) ||
      test_bitpack_type<int32_t>("int32", checked) || test_bitpack_type<int8_t>("int8", checked) ||
      test_bitpack_type<double>("double", checked) || test_threshold(checked) || test_direct(checked) ||
      test_pack_a(checked))
    return 1;
#endif
  std::printf("kernel_test: OK (%d cases)\n", checked);
  return 0;
}
