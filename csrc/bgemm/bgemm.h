// bgemm: packed XNOR-popcount matrix product.
//
//   a: (M, W) uint64, b: (N, W) uint64, W = ceil(K/64), packed by bitpack (pad bits 0)
//   out: (M, N) int32,  out[m][n] = K - 2 * popcount(a[m] XOR b[n])  =  dot of the ±1 rows
//
// Structure (GotoBLAS style, see micro.h for the maths and the micro-kernel contract):
//   1. pack A into panels of MR rows, (ceil(M/MR), W, MR), and B into panels of NR rows,
//      (ceil(N/NR), W, NR), zero-padded: a micro-kernel then walks two contiguous streams;
//   2. cache blocking: K in blocks of kc <= kc_max words (A and B micro-panels stay in L1);
//      B panels in blocks of about kL2Bytes (re-read from L2 by every A panel);
//   3. threads: the (block of B panels) x (chunk of A panels) work items are split over
//      `threads` with parallel_for; items write disjoint tiles of C.
//
// Kernel selection: kKernels below, one row per (path, variant); the first row of a path is
// its default.  Adding a path or a variant = one micro-kernel + one row.
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

// Order matters: the first row of each path is the one used unless a variant is named.
inline const Kernel kKernels[] = {
    {"portable", "swar-2x2", 2, 2, 512, &micro_portable<2, 2>},
#if LOWBIT_X86_PATHS
    {"avx2", "popcnt-2x4", 2, 4, 512, &micro_avx2_popcnt<2, 4>},
    {"avx2", "popcnt-3x3", 3, 3, 512, &micro_avx2_popcnt<3, 3>},
    {"avx2", "lut-2x2", 2, 8, 512, &micro_avx2_lut<2, 2>},
    {"avx2", "lut-3x2", 3, 8, 512, &micro_avx2_lut<3, 2>},
    {"avx2", "lut-4x1", 4, 4, 512, &micro_avx2_lut<4, 1>},
    {"avx2", "hyb-2x4+4", 2, 8, 512, &micro_avx2_hybrid<2, 4, 1>},
    {"avx2", "hyb-2x4+8", 2, 12, 512, &micro_avx2_hybrid<2, 4, 2>},
    {"avx2", "hyb-2x3+4", 2, 7, 512, &micro_avx2_hybrid<2, 3, 1>},
    {"avx2", "hyb-3x3+4", 3, 7, 512, &micro_avx2_hybrid<3, 3, 1>},
    {"avx2", "hyb-2x2+4", 2, 6, 512, &micro_avx2_hybrid<2, 2, 1>},
    {"avx512", "vpopcntq-6x32", 6, 32, 256, &micro_avx512<6, 4>},
#endif
};

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
        if (row < rows) {
          const uint64_t* s = src + row * W;
          for (int64_t w = 0; w < W; ++w) d[w * R + r] = s[w];
        } else {
          for (int64_t w = 0; w < W; ++w) d[w * R + r] = 0;
        }
      }
    }
  });
}

constexpr int64_t kL2Bytes = 256 * 1024;  // budget for one block of packed B panels

}  // namespace bgemm_detail

// See the top of the file.  `kern` comes from bgemm_detail::find_kernel and its path was
// checked against the CPU by the caller.  Returns nothing; out is fully written.
inline void bgemm(const bgemm_detail::Kernel& kern, const uint64_t* a, const uint64_t* b,
                  int64_t M, int64_t N, int64_t W, int32_t K, int32_t* out, int threads) {
  using namespace bgemm_detail;
  if (M <= 0 || N <= 0) return;
  if (W == 0) {  // K == 0: empty dot products
    for (int64_t i = 0; i < M * N; ++i) out[i] = K;
    return;
  }
  const int MR = kern.mr, NR = kern.nr;
  const int64_t mp = (M + MR - 1) / MR, np = (N + NR - 1) / NR;
  Buffer ap = alloc_words(mp * W * MR), bp = alloc_words(np * W * NR);
  pack_panels(a, M, W, MR, ap.get(), threads);
  pack_panels(b, N, W, NR, bp.get(), threads);

  // K blocks of (nearly) equal size kc <= kc_max.
  const int64_t kblocks = (W + kern.kc_max - 1) / kern.kc_max;
  const int64_t kc = (W + kblocks - 1) / kblocks;
  // B panels per cache block, and the number of such blocks.
  const int64_t per_block = std::max<int64_t>(1, kL2Bytes / (NR * kc * 8));
  const int64_t nblocks = (np + per_block - 1) / per_block;
  // Chunks of A panels: 1 for a single thread, else enough items to balance the threads.
  int64_t mchunks = 1;
  if (threads > 1) mchunks = std::min<int64_t>(mp, std::max<int64_t>(1, (4 * threads + nblocks - 1) / nblocks));

  parallel_for(nblocks * mchunks, threads, [&](int64_t i0, int64_t i1) {
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t nb = item / mchunks, mc = item % mchunks;
      const int64_t q0 = nb * per_block, q1 = std::min(np, q0 + per_block);
      const int64_t p0 = mc * mp / mchunks, p1 = (mc + 1) * mp / mchunks;
      for (int64_t k0 = 0; k0 < W; k0 += kc) {
        const int64_t kn = std::min(kc, W - k0);
        for (int64_t p = p0; p < p1; ++p) {
          const uint64_t* apan = ap.get() + p * W * MR + k0 * MR;
          const int mr = static_cast<int>(std::min<int64_t>(MR, M - p * MR));
          kern.micro(apan, bp.get() + q0 * W * NR + k0 * NR, kn, q1 - q0, W * NR,
                     out + p * MR * N + q0 * NR, N, mr, N - q0 * NR, K, k0 == 0);
        }
      }
    }
  });
}

}  // namespace lowbit
