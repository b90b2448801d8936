// Kernel check for cross builds (make cross-test runs it under qemu-aarch64): every bitwise
// micro-kernel of every path this CPU runs (portable, neon / avx2, avx512) against a scalar
// reference, on the word edges K = 1, 31, 32, 33, 63, 64, 65, 127, 128, 129 bits (and K past
// one K block), with M, N that leave partial register tiles:
//   bgemm          dot(a, b) = K - 2 popcount(a ^ b)
//   xconv2d dense  binary (Words / Nlut layouts) and ternary (masked sign/mask layouts)
// Prints one line per kernel and "kernel_test: OK" (exit 0) or the first mismatch (exit 1).
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "bconv/bconv.h"
#include "bgemm/bgemm.h"
#include "common/target.h"

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
  std::printf("kernel_test: OK (%d cases)\n", checked);
  return 0;
}
