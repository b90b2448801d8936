// Checks the *logic* of every SIMD kernel (avx2 and avx512 paths) against the portable path
// on a CPU that may lack the instructions, by building the kernels on SIMDe's plain-C
// implementations of the intrinsics (-DLOWBIT_SIMDE, see common/target.h).  Built and run by
// tests/runtime/test_simd_emulated.py when the SIMDe headers are installed (Debian:
// libsimde-dev).  Exit status 0 = all equal; prints the first mismatch otherwise.
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bgemm/bgemm.h"
#include "bitpack/bitpack.h"
#include "bitpack/unpack.h"

using namespace lowbit;

static int failures = 0;
#define CHECK(cond, ...)                  \
  do {                                    \
    if (!(cond)) {                        \
      std::printf("FAIL: " __VA_ARGS__);  \
      std::printf("\n");                  \
      ++failures;                         \
    }                                     \
  } while (0)

template <class T>
static void check_pack(std::mt19937_64& rng, const char* simd) {
  const int64_t ks[] = {1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000};
  for (int64_t k : ks) {
    const int64_t rows = 3, w = (k + 63) / 64;
    std::vector<T> x(rows * k);
    for (auto& v : x) v = static_cast<T>(static_cast<int64_t>(rng() % 7) - 3);  // has zeros
    if constexpr (std::is_floating_point_v<T>) x[k / 2] = T(-0.0);
    std::vector<uint64_t> want(rows * w), got(rows * w);
    const bool nan_p = bitpack<T>(x.data(), rows, k, want.data(), "portable", 1);
    const bool nan_s = bitpack<T>(x.data(), rows, k, got.data(), simd, 1);
    CHECK(!nan_p && !nan_s && want == got, "bitpack %s k=%ld sizeof=%zu", simd, (long)k, sizeof(T));
    if constexpr (std::is_floating_point_v<T>) {
      for (int64_t where : {int64_t{0}, k - 1, (k / 64) * 64 - 1}) {
        if (where < 0) continue;
        auto y = x;
        y[k + where] = std::numeric_limits<T>::quiet_NaN();  // row 1
        CHECK(bitpack<T>(y.data(), rows, k, got.data(), simd, 1), "NaN missed %s k=%ld", simd, (long)k);
      }
    }
    std::vector<int8_t> u8p(rows * k), u8s(rows * k);
    std::vector<float> ufp(rows * k), ufs(rows * k);
    unpack<int8_t>(want.data(), rows, k, u8p.data(), "portable", 1);
    unpack<int8_t>(want.data(), rows, k, u8s.data(), simd, 1);
    unpack<float>(want.data(), rows, k, ufp.data(), "portable", 1);
    unpack<float>(want.data(), rows, k, ufs.data(), simd, 1);
    CHECK(u8p == u8s && ufp == ufs, "unpack %s k=%ld", simd, (long)k);
  }
}

static void check_bgemm(std::mt19937_64& rng) {
  const int64_t shapes[][3] = {{1, 1, 1},    {3, 7, 31},  {7, 3, 64},     {17, 33, 65},
                               {6, 32, 129}, {13, 70, 1000}, {5, 40, 40000}, {2, 300, 2000}};
  for (const auto& s : shapes) {
    const int64_t M = s[0], N = s[1], K = s[2], W = (K + 63) / 64;
    std::vector<uint64_t> a(M * W), b(N * W);
    for (auto& v : a) v = rng();
    for (auto& v : b) v = rng();
    if (K % 64) {  // pad bits are 0
      const uint64_t keep = (uint64_t{1} << (K % 64)) - 1;
      for (int64_t i = 0; i < M; ++i) a[i * W + W - 1] &= keep;
      for (int64_t i = 0; i < N; ++i) b[i * W + W - 1] &= keep;
    }
    std::vector<int32_t> want(M * N), got(M * N);
    bgemm(*bgemm_detail::find_kernel("portable", ""), a.data(), b.data(), M, N, W,
          static_cast<int32_t>(K), want.data(), 1);
    for (const auto& kern : bgemm_detail::kKernels) {
      for (int threads : {1, 2}) {
        std::fill(got.begin(), got.end(), -12345);
        bgemm(kern, a.data(), b.data(), M, N, W, static_cast<int32_t>(K), got.data(), threads);
        CHECK(want == got, "bgemm %s/%s %ldx%ldx%ld threads=%d", kern.path, kern.variant,
              (long)M, (long)N, (long)K, threads);
      }
    }
  }
}

int main() {
  std::mt19937_64 rng(7);
  for (const char* simd : {"avx2", "avx512"}) {
    check_pack<float>(rng, simd);
    check_pack<double>(rng, simd);
    check_pack<int8_t>(rng, simd);
    check_pack<int32_t>(rng, simd);
  }
  check_bgemm(rng);
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
