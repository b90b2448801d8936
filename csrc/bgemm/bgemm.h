// bgemm: packed XNOR-popcount matrix product.
//
//   a: (M, W) uint64, b: (N, W) uint64, W = ceil(K/64), packed by bitpack (pad bits 0)
//   out: (M, N) int32,  out[m][n] = K - 2 * popcount(a[m] XOR b[n])  =  dot of the ±1 rows
//
// Structure (GotoBLAS style; micro.h has the maths and the micro-kernel contract):
//   1. pack B into panels of NR rows, (ceil(N/NR), W, NR), once per call, and each panel
//      of MR rows of A, (kc, MR), just before it is used against a block of B panels; both
//      zero-padded, so a micro-kernel walks two contiguous streams;
//   2. cache blocking: K in blocks of kc <= kc_max words (an A and a B micro-panel stay in
//      L1); B panels in blocks of about kL2Bytes, re-read from L2 by every A panel;
//   3. threads: (block of B panels) x (chunk of A panels) work items split over `threads`
//      by parallel_for; items write disjoint parts of C;
//   4. the micro-kernels leave popcounts in C; finalize_rows turns them into K - 2 * count
//      while the rows are still in L1.
//
// Kernel selection: kKernels, one row per (path, variant); the first row of a path is its
// default.  A new path or variant = one micro-kernel + one row.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

#include "bgemm/micro.h"
#include "bgemm/micro_avx2.h"
#include "bgemm/micro_avx512.h"
#include "bgemm/micro_neon.h"
#include "common/target.h"
#include "common/threads.h"

namespace lowbit {
namespace bgemm_detail {

struct Kernel {
  const char* path;     // table key: "portable", "avx2", "avx512"
  const char* variant;  // e.g. "popcnt-2x4"; the first row of a path is its default
  int mr, nr;           // register tile
  int64_t kc_max;       // words per K block
  MicroFn micro;
};

inline const Kernel kKernels[] = {
    {"portable", "swar-2x2", 2, 2, 512, &micro_portable<2, 2>},
#if LOWBIT_X86_PATHS
    {"avx2", "popcnt-2x4", 2, 4, 512, &micro_avx2_popcnt<2, 4>},
    {"avx2", "hybrid-2x8", 2, 8, 512, &micro_avx2_lut<2, 4, 1>},
    {"avx2", "lut-2x8", 2, 8, 512, &micro_avx2_lut<2, 0, 2>},
    {"avx512", "vpopcntq-6x32", 6, 32, 256, &micro_avx512<6, 4>},
#endif
#if LOWBIT_NEON_PATH
    {"neon", "vcnt-4x8", 4, 8, 512, &micro_neon<4, 8>},
#endif
};

// The row for `path` (its default when variant is empty), or nullptr.
inline const Kernel* find_kernel(const std::string& path, const std::string& variant) {
  for (const Kernel& kern : kKernels)
    if (path == kern.path && (variant.empty() || variant == kern.variant)) return &kern;
  return nullptr;
}

struct FreeDeleter {
  void operator()(uint64_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint64_t, FreeDeleter>;

inline Buffer alloc_words(int64_t n) {
  const size_t bytes = ((static_cast<size_t>(n) * 8 + 63) / 64) * 64;  // aligned_alloc rule
  auto* p = static_cast<uint64_t*>(std::aligned_alloc(64, bytes ? bytes : 64));
  if (!p) throw std::bad_alloc();
  return Buffer(p);
}

// Grow-only scratch for the packed B panels, one per calling thread: a fresh allocation of
// this size is an mmap, and its page faults cost 5-15% of a 3 ms product.  Holds on to the
// largest packed B the thread has used.
inline uint64_t* scratch_b(int64_t words) {
  thread_local Buffer buffer;
  thread_local int64_t capacity = 0;
  if (capacity < words) {
    buffer.reset();
    buffer = alloc_words(words);
    capacity = words;
  }
  return buffer.get();
}

// src: (rows, W) row-major -> dst: (ceil(rows/R), W, R); dst[p][w][r] = src[p*R + r][w],
// 0 for r past the last row.
inline void pack_panels(const uint64_t* src, int64_t rows, int64_t W, int R, uint64_t* dst,
                        int threads) {
  const int64_t panels = (rows + R - 1) / R;
  parallel_for(panels, threads, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      uint64_t* d = dst + p * W * R;
      for (int r = 0; r < R; ++r) {
        const int64_t row = p * R + r;
        const uint64_t* s = src + row * W;
        for (int64_t w = 0; w < W; ++w) d[w * R + r] = row < rows ? s[w] : 0;
      }
    }
  });
}

// One panel of A, just in time: dst (kn, R) = rows p*R .. p*R+R-1, words k0 .. k0+kn-1 of
// src (rows, W); 0 for rows past the end.  It then stays in L1 for all the B panels.
inline void pack_panel(const uint64_t* src, int64_t rows, int64_t W, int R, int64_t p,
                       int64_t k0, int64_t kn, uint64_t* dst) {
  for (int r = 0; r < R; ++r) {
    const int64_t row = p * R + r;
    const uint64_t* s = src + row * W + k0;
    for (int64_t w = 0; w < kn; ++w) dst[w * R + r] = row < rows ? s[w] : 0;
  }
}

// c[i][j] = k - 2 * c[i][j] for i < rows, j < cols (row stride ldc).
inline void finalize_rows(int32_t* c, int64_t ldc, int64_t rows, int64_t cols, int32_t k) {
  for (int64_t i = 0; i < rows; ++i) {
    int32_t* r = c + i * ldc;
    for (int64_t j = 0; j < cols; ++j)  // in 64 bits: 2 * count may be 2^31 when k = 2^30
      r[j] = static_cast<int32_t>(int64_t{k} - 2 * int64_t{r[j]});
  }
}

constexpr int64_t kL2Bytes = 256 * 1024;  // budget for one block of packed B panels
constexpr int64_t kApanelWords = 4096;     // one packed A panel (kc, MR), on the stack: 32 KiB

}  // namespace bgemm_detail

// See the top of the file.  `kern` comes from bgemm_detail::find_kernel and the caller
// checked its path against the CPU.  out is fully written.
inline void bgemm(const bgemm_detail::Kernel& kern, const uint64_t* a, const uint64_t* b,
                  int64_t M, int64_t N, int64_t W, int32_t K, int32_t* out, int threads) {
  using namespace bgemm_detail;
  if (M <= 0 || N <= 0) return;
  if (W == 0) {  // K == 0: empty dot products
    std::fill(out, out + M * N, K);
    return;
  }
  const int MR = kern.mr, NR = kern.nr;
  const int64_t mp = (M + MR - 1) / MR, np = (N + NR - 1) / NR;
  uint64_t* const bp = scratch_b(np * W * NR);
  pack_panels(b, N, W, NR, bp, threads);

  // K blocks of (nearly) equal size kc <= kc_max (and small enough for the A panel buffer).
  const int64_t kc_max = std::min<int64_t>(kern.kc_max, kApanelWords / MR);
  const int64_t kblocks = (W + kc_max - 1) / kc_max;
  const int64_t kc = (W + kblocks - 1) / kblocks;
  // B panels per cache block, and the number of such blocks.
  const int64_t per_block = std::max<int64_t>(1, kL2Bytes / (NR * kc * 8));
  const int64_t nblocks = (np + per_block - 1) / per_block;
  // Chunks of A panels: 1 for one thread, else enough items (~4 per thread) to balance.
  int64_t mchunks = 1;
  if (threads > 1)
    mchunks = std::min<int64_t>(mp, std::max<int64_t>(1, (4 * threads + nblocks - 1) / nblocks));

  parallel_for(nblocks * mchunks, threads, [&](int64_t i0, int64_t i1) {
    alignas(64) uint64_t apan[kApanelWords];  // this thread's packed A panel, (kc, MR)
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t nb = item / mchunks, mc = item % mchunks;
      const int64_t q0 = nb * per_block, q1 = std::min(np, q0 + per_block);
      const int64_t p0 = mc * mp / mchunks, p1 = (mc + 1) * mp / mchunks;
      const int64_t col0 = q0 * NR, ncols = std::min(N, q1 * NR) - col0;
      for (int64_t k0 = 0; k0 < W; k0 += kc) {
        const int64_t kn = std::min(kc, W - k0);
        const bool last = k0 + kn == W;
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t row0 = p * MR;
          const int mr = static_cast<int>(std::min<int64_t>(MR, M - row0));
          int32_t* c = out + row0 * N + col0;
          pack_panel(a, M, W, MR, p, k0, kn, apan);
          kern.micro(apan, bp + q0 * W * NR + k0 * NR, kn,
                     q1 - q0, W * NR, c, N, mr, ncols, k0 == 0);
          if (last) finalize_rows(c, N, mr, ncols, K);
        }
      }
    }
  });
}

}  // namespace lowbit
