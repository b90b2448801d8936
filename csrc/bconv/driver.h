// xgemm: the XOR-popcount product driver behind every binary / ternary / bit-plane layer.
//
//   rows r < M  (a conv output pixel, a dense input row, or (pixel, bit plane)): W words,
//               produced on demand by a Gather functor (implicit im2col: no patch matrix);
//   cols n < N  (an output channel, or (channel, plane)): W words of packed weights, packed
//               once per layer into the kernel's panel layout (pack_weights);
//   counts[r][n] = popcount(row_r XOR col_n) over the W words.
// The caller's Finish functor turns a block of counts into outputs (K - 2 * count plus a
// padding correction, thresholds to packed bits, float affine, ...; see bconv.h).
//
// It is bgemm (bgemm/bgemm.h) with three changes:
//   1. A is gathered, not read from a matrix: conv2d needs no im2col buffer;
//   2. the kernel table adds a layout per row (Format): the word-panel micro-kernels of bgemm
//      are reused as they are, and the AVX2 nibble look-up kernel (nlut_avx2.h) brings its
//      own packers;
//   3. the counts of a block of rows stay in a per-thread buffer (L2-sized) until every
//      K block is done, and Finish consumes them there: fused output stages, no int32
//      round trip through memory.
//
// Work split.  Rows are cut into chunks (a multiple of MR, sized so that the chunk's counts
// and packed A stay in L2), columns into ranges of whole 64-column groups (so that a packed
// bit output word is never shared) when there are too few row chunks for the threads.  An
// item = (row chunk, column range); items run on `threads` threads via parallel_for.  Inside
// an item: for each K block, the chunk's A panels are gathered + packed once, then for each
// block of B panels (L2-sized for word kernels, L1-sized for nlut) every A panel runs the
// micro-kernel against it.
//
// Resident vs micro layout of B.  Word kernels read the resident packed weights directly.
// The nlut kernel keeps its weights resident at 1 bit per weight (byte-transposed bits,
// nlut_avx2.h) and reads a 2-bit nibble layout: its XKernel row has an expand_b function,
// and for each (item, K block, B block) the block's panels [b0, b1) x words [k0, k0 + kn)
// are expanded from the resident weights into a per-thread L1-sized scratch (GotoBLAS-style
// packing of B per cache block) before the A panels of the chunk run against it.  bstride /
// packed_b_words describe the resident layout; the block size (per_block) and the scratch the
// micro layout (xb_bytes_per_word).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <numeric>
#include <string>
#include <vector>

#include "bconv/micro_masked.h"
#include "bconv/nlut_avx2.h"
#include "bgemm/bgemm.h"
#include "common/target.h"
#include "common/threads.h"

namespace lowbit {
namespace bconv_detail {

// Words: bgemm's word panels; Nlut: nlut_avx2.h; Masked: word panels with a (sign, mask)
// pair per B word (micro_masked.h), for ternary layers only.
enum class Format { Words, Nlut, Masked };

// rows (MR, kn) row-major words -> the micro-kernel's A panel.
using PackAFn = void (*)(const uint64_t* rows, int64_t kn, int mr_full, uint64_t* dst);
// src (N, W) words -> the resident B panels (ceil(N/NR) panels of W words each).
using PackBFn = void (*)(const uint64_t* src, int64_t N, int64_t W, int nr, uint64_t* dst);
// Resident B (panel b0, word k0; src_stride words between panels) -> `panels` micro-kernel
// panels of kn words, contiguous (kn * xb_bytes_per_word bytes apart).
using ExpandBFn = void (*)(const uint64_t* src, int64_t src_stride, int64_t panels, int64_t kn,
                           uint64_t* dst);

struct XKernel {
  const char* path;     // "portable", "avx2", "avx512"
  const char* variant;  // first row of a path = its default
  Format format;
  int mr, nr;
  int64_t kc_max;             // K words per block
  int64_t b_block_bytes;      // micro-layout B bytes per cache block (L2 for words, L1 for nlut)
  int64_t a_bytes_per_word;   // packed A bytes per K word per panel
  int64_t b_bytes_per_word;   // resident packed B bytes per K word per panel
  bgemm_detail::MicroFn micro;
  PackAFn pack_a;
  PackBFn pack_b;
  ExpandBFn expand_b = nullptr;   // null: the micro-kernel reads the resident layout
  int64_t xb_bytes_per_word = 0;  // micro-layout B bytes per K word per panel (expand_b only)
};

// Micro-layout B bytes per K word per panel (what a cache block of B holds).
inline int64_t micro_b_bytes_per_word(const XKernel& k) {
  return k.expand_b ? k.xb_bytes_per_word : k.b_bytes_per_word;
}

// Word layouts (bgemm's): A panel (kn, MR), B panels (W, NR).
inline void pack_a_words(const uint64_t* rows, int64_t kn, int mr_full, uint64_t* dst) {
  for (int i = 0; i < mr_full; ++i)
    for (int64_t w = 0; w < kn; ++w) dst[w * mr_full + i] = rows[i * kn + w];
}
inline void pack_b_words(const uint64_t* src, int64_t N, int64_t W, int nr, uint64_t* dst) {
  bgemm_detail::pack_panels(src, N, W, nr, dst, 1);
}
#if LOWBIT_X86_PATHS
LOWBIT_TARGET_AVX2 inline void pack_a_nlut_fn(const uint64_t* rows, int64_t kn, int, uint64_t* dst) {
  pack_a_nlut(rows, kn, dst);
}
inline void pack_b_nlut_fn(const uint64_t* src, int64_t N, int64_t W, int, uint64_t* dst) {
  pack_b_nlut(src, N, W, dst);
}
#endif

constexpr int64_t kL1BlockBytes = 24 * 1024;
constexpr int64_t kL2BlockBytes = 256 * 1024;

inline const XKernel kXKernels[] = {
    {"portable", "swar-2x2", Format::Words, 2, 2, 512, kL2BlockBytes, 2 * 8, 2 * 8,
     &bgemm_detail::micro_portable<2, 2>, &pack_a_words, &pack_b_words},
    {"portable", "masked-swar-2x2", Format::Masked, 2, 2, 512, kL2BlockBytes, 2 * 8, 2 * 2 * 8,
     &micro_masked_portable<2, 2>, &pack_a_words, &pack_b_masked},
#if LOWBIT_X86_PATHS
    {"avx2", "nlut-2x64", Format::Nlut, kNlutP, kNlutNR, 24, kL1BlockBytes, kNlutABytesPerWord,
     kNlutBResidentBytesPerWord, &micro_avx2_nlut, &pack_a_nlut_fn, &pack_b_nlut_fn,
     &expand_b_nlut, kNlutBBytesPerWord},
    {"avx2", "popcnt-2x4", Format::Words, 2, 4, 512, kL2BlockBytes, 2 * 8, 4 * 8,
     &bgemm_detail::micro_avx2_popcnt<2, 4>, &pack_a_words, &pack_b_words},
    {"avx512", "vpopcntq-6x32", Format::Words, 6, 32, 256, kL2BlockBytes, 6 * 8, 32 * 8,
     &bgemm_detail::micro_avx512<6, 4>, &pack_a_words, &pack_b_words},
    {"avx2", "masked-popcnt-2x4", Format::Masked, 2, 4, 512, kL2BlockBytes, 2 * 8, 2 * 4 * 8,
     &micro_masked_popcnt<2, 4>, &pack_a_words, &pack_b_masked},
    {"avx512", "masked-vpternlog-6x16", Format::Masked, 6, 16, 256, kL2BlockBytes, 6 * 8,
     2 * 16 * 8, &micro_masked_avx512<6, 2>, &pack_a_words, &pack_b_masked},
#endif
#if LOWBIT_NEON_PATH
    {"neon", "vcnt-4x8", Format::Words, 4, 8, 512, kL2BlockBytes, 4 * 8, 8 * 8,
     &bgemm_detail::micro_neon<4, 8>, &bgemm_detail::pack_a_words_neon4, &pack_b_words},
    {"neon", "masked-vcnt-4x8", Format::Masked, 4, 8, 512, kL2BlockBytes, 4 * 8, 2 * 8 * 8,
     &bgemm_detail::micro_masked_neon<4, 8>, &bgemm_detail::pack_a_words_neon4, &pack_b_masked},
#endif
};

// The row for (path, variant); an empty variant picks the path's first row of the wanted
// kind of layout (masked = ternary-only kernels, or the others).
inline const XKernel* find_xkernel(const std::string& path, const std::string& variant,
                                   bool masked = false) {
  for (const XKernel& k : kXKernels)
    if (path == k.path && (variant.empty() ? (k.format == Format::Masked) == masked
                                           : variant == k.variant))
      return &k;
  return nullptr;
}

// Words of resident packed B for N columns of W words.
inline int64_t packed_b_words(const XKernel& kern, int64_t N, int64_t W) {
  const int64_t np = (N + kern.nr - 1) / kern.nr;
  return np * W * kern.b_bytes_per_word / 8;
}

inline void pack_weights(const XKernel& kern, const uint64_t* src, int64_t N, int64_t W,
                         uint64_t* dst) {
  if (N > 0 && W > 0) kern.pack_b(src, N, W, kern.nr, dst);
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

inline void* alloc_bytes(int64_t n) {
  const size_t bytes = ((static_cast<size_t>(n) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes ? bytes : 64);
  if (!p) throw std::bad_alloc();
  return p;
}

// Grow-only scratch owned by the calling thread, shared out to the workers of one call
// (each takes a disjoint slot): no fresh allocation (mmap + page faults) per call.
inline uint8_t* call_scratch(int64_t bytes) {
  thread_local std::unique_ptr<void, FreeDeleter> buffer;
  thread_local int64_t capacity = 0;
  if (capacity < bytes) {
    buffer.reset();
    buffer.reset(alloc_bytes(bytes));
    capacity = bytes;
  }
  return static_cast<uint8_t*>(buffer.get());
}

struct Plan {
  int64_t kc, kblocks;       // K words per block, number of blocks
  int64_t per_block;         // B panels per cache block
  int64_t chunk_rows;        // rows per item (multiple of MR and of row_group)
  int64_t nchunks;
  int64_t col_range;         // columns per item (multiple of col_align, or all N)
  int64_t nranges;
  int64_t counts_bytes, apack_bytes, rows_bytes, bexp_bytes, slot_bytes;
};

// row_group: chunk_rows is a multiple of it (bit-plane rows of one pixel stay together).
// col_align: column ranges are multiples of it (0: never split columns).
inline Plan make_plan(const XKernel& kern, int64_t M, int64_t N, int64_t W, int threads,
                      int64_t row_group, int64_t col_align) {
  Plan p{};
  const int MR = kern.mr, NR = kern.nr;
  const int64_t kc_max = std::max<int64_t>(1, kern.kc_max);
  p.kblocks = std::max<int64_t>(1, (W + kc_max - 1) / kc_max);
  p.kc = std::max<int64_t>(1, (W + p.kblocks - 1) / p.kblocks);
  p.per_block = std::max<int64_t>(1, kern.b_block_bytes / (p.kc * micro_b_bytes_per_word(kern)));
  const int64_t np = (N + NR - 1) / NR;

  // Column ranges: only when the rows alone cannot feed the threads.
  const int64_t unit = MR * row_group / std::gcd<int64_t>(MR, row_group);  // lcm
  const int64_t row_units = (M + unit - 1) / unit;
  p.col_range = np * NR;
  p.nranges = 1;
  if (threads > 1 && col_align > 0 && row_units < 2 * threads) {
    const int64_t align = col_align * NR / std::gcd<int64_t>(col_align, NR);  // lcm
    const int64_t aligned_cols = (np * NR + align - 1) / align;
    const int64_t want = std::min<int64_t>(aligned_cols, 2 * threads);
    if (want > 1) {
      p.col_range = ((aligned_cols + want - 1) / want) * align;
      p.nranges = (np * NR + p.col_range - 1) / p.col_range;
    }
  }
  // Row chunks: counts (rows x col_range int32) <= 128 KiB (256 KiB for expand_b kernels:
  // fewer chunks, fewer expansions of B) and packed A <= 128 KiB, at least one unit; then
  // enough chunks (about 4 per thread) to balance.
  const int64_t counts_budget = (kern.expand_b ? 256 : 128) * 1024;
  const int64_t by_counts = counts_budget / std::max<int64_t>(1, p.col_range * 4);
  const int64_t by_apack = (128 * 1024) / std::max<int64_t>(1, p.kc * kern.a_bytes_per_word / MR);
  int64_t rows = std::max<int64_t>(unit, (std::min(by_counts, by_apack) / unit) * unit);
  if (threads > 1) {
    const int64_t want = (4 * threads + p.nranges - 1) / p.nranges;
    const int64_t balanced = ((row_units + want - 1) / want) * unit;
    rows = std::max<int64_t>(unit, std::min(rows, balanced));
  }
  p.chunk_rows = std::min(rows, row_units * unit);
  p.nchunks = (M + p.chunk_rows - 1) / p.chunk_rows;
  const int64_t panels = (p.chunk_rows + MR - 1) / MR;
  p.counts_bytes = ((p.chunk_rows * p.col_range * 4 + 63) / 64) * 64;
  p.apack_bytes = ((panels * p.kc * kern.a_bytes_per_word + 63) / 64) * 64;
  p.rows_bytes = ((MR * p.kc * 8 + 63) / 64) * 64;
  // expand_b kernels: one expanded B block (per_block panels x kc words, micro layout).
  p.bexp_bytes = kern.expand_b ? ((p.per_block * p.kc * kern.xb_bytes_per_word + 63) / 64) * 64 : 0;
  p.slot_bytes = p.counts_bytes + p.apack_bytes + p.rows_bytes + p.bexp_bytes;
  return p;
}

}  // namespace bconv_detail

// gather(row, nrows, k0, kn, dst, panel, MR): for i < nrows, dst[i*kn .. i*kn+kn) = words
// k0 .. k0+kn-1 of row `row + i` (consecutive rows, so a gather can step through them without
// divisions), returning false; or, when it can, the packed A panel itself written to `panel`
// (rows nrows .. MR-1 zero), returning true.
// finish(row0, nrows, col0, ncols, counts, ldc): counts[i * ldc + j] = popcount of row
// row0 + i against column col0 + j (raw XOR counts, complete over K); called once per item.
// N >= 1, M >= 1, W >= 1.  bpacked from pack_weights(kern, ...).
template <class Gather, class Finish>
void xgemm(const bconv_detail::XKernel& kern, int64_t M, int64_t N, int64_t W,
           const uint64_t* bpacked, Gather&& gather, Finish&& finish, int threads,
           int64_t row_group = 1, int64_t col_align = 64) {
  using namespace bconv_detail;
  threads = threads_for(threads, M * N * W, int64_t{1} << 17);  // >= 128 Ki word pairs each
  const Plan plan = make_plan(kern, M, N, W, threads, row_group, col_align);
  const int MR = kern.mr, NR = kern.nr;
  const int64_t items = plan.nchunks * plan.nranges;
  const int nslots = static_cast<int>(std::min<int64_t>(std::max(threads, 1), items));
  uint8_t* scratch = call_scratch(plan.slot_bytes * nslots);
  std::atomic<int> next_slot{0};
  const int64_t bstride = W * kern.b_bytes_per_word / 8;  // words between resident B panels

  parallel_for(items, threads, [&](int64_t i0, int64_t i1) {
    uint8_t* slot = scratch + plan.slot_bytes * next_slot.fetch_add(1);
    auto* counts = reinterpret_cast<int32_t*>(slot);
    auto* apack = reinterpret_cast<uint64_t*>(slot + plan.counts_bytes);
    auto* rowbuf = reinterpret_cast<uint64_t*>(slot + plan.counts_bytes + plan.apack_bytes);
    auto* bexp = reinterpret_cast<uint64_t*>(slot + plan.counts_bytes + plan.apack_bytes +
                                             plan.rows_bytes);
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t chunk = item / plan.nranges, range = item % plan.nranges;
      const int64_t row0 = chunk * plan.chunk_rows;
      const int64_t nrows = std::min(plan.chunk_rows, M - row0);
      const int64_t col0 = range * plan.col_range;
      const int64_t ncols = std::min(plan.col_range, N - col0);
      const int64_t q0 = col0 / NR, q1 = (col0 + ncols + NR - 1) / NR;
      const int64_t panels = (nrows + MR - 1) / MR;
      const int64_t ldc = plan.col_range;
      for (int64_t k0 = 0; k0 < W; k0 += plan.kc) {
        const int64_t kn = std::min(plan.kc, W - k0);
        const int64_t apw = kn * kern.a_bytes_per_word / 8;  // words per packed A panel
        for (int64_t p = 0; p < panels; ++p) {
          const int64_t valid = std::min<int64_t>(MR, nrows - p * MR);
          if (gather(row0 + p * MR, valid, k0, kn, rowbuf, apack + p * apw, MR)) continue;
          if (valid < MR)
            std::memset(rowbuf + valid * kn, 0, static_cast<size_t>((MR - valid) * kn) * 8);
          kern.pack_a(rowbuf, kn, MR, apack + p * apw);
        }
        for (int64_t b0 = q0; b0 < q1; b0 += plan.per_block) {
          const int64_t b1 = std::min(q1, b0 + plan.per_block);
          const int64_t bcols = std::min(col0 + ncols, b1 * NR) - b0 * NR;
          const uint64_t* bp = bpacked + b0 * bstride + k0 * kern.b_bytes_per_word / 8;
          int64_t bps = bstride;
          if (kern.expand_b) {  // resident -> micro layout, this block only (L1 scratch)
            kern.expand_b(bp, bstride, b1 - b0, kn, bexp);
            bp = bexp;
            bps = kn * kern.xb_bytes_per_word / 8;
          }
          for (int64_t p = 0; p < panels; ++p) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, nrows - p * MR));
            kern.micro(apack + p * apw, bp, kn, b1 - b0, bps,
                       counts + p * MR * ldc + (b0 * NR - col0), ldc, mr, bcols, k0 == 0);
          }
        }
      }
      finish(row0, nrows, col0, ncols, static_cast<const int32_t*>(counts), ldc);
    }
  });
}

}  // namespace lowbit
