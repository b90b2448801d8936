// Per-function ISA targets and the CPU paths every kernel folder offers.
//
// The extension is compiled for baseline x86-64 (no -mavx2, no -mpopcnt), so that the wheel
// loads on any x86-64 CPU.  The SIMD kernels carry a target attribute on *each function*
// (LOWBIT_TARGET_AVX2 / LOWBIT_TARGET_AVX512) and are only called after CPUID said yes
// (path_available below).  Rules that keep this safe:
//   * every function that uses AVX2 / AVX-512 intrinsics, or that must compile `popcnt`
//     to the POPCNT instruction, has the attribute itself (attributes do not propagate to
//     callees, and a baseline helper inlined into an AVX2 function is fine, but not the
//     other way round);
//   * SIMD helpers are `static inline` with their target attribute, so no COMDAT copy of a
//     helper compiled for one ISA can be picked by the linker for a caller of another;
//   * the portable path never uses __builtin_popcountll on x86 (without -mpopcnt it is a
//     libgcc call); it uses the SWAR bit trick, which is plain C++ for any CPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/cpu.h"

#if defined(LOWBIT_SIMDE)
// Test builds only (tests/runtime/simd_emulated.cpp): SIMDe implements the x86 intrinsics in
// plain C, so the logic of the AVX2 / AVX-512 kernels can be checked on a CPU without them.
// It says nothing about code generation for the real ISA; never use it for the extension.
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#define LOWBIT_X86_PATHS 1
#define LOWBIT_TARGET_AVX2
#define LOWBIT_TARGET_AVX512
#define _mm_popcnt_u64(x) __builtin_popcountll(x)
#elif LOWBIT_X86 && (defined(__GNUC__) || defined(__clang__))
#define LOWBIT_X86_PATHS 1
#include <immintrin.h>
#define LOWBIT_TARGET_AVX2 __attribute__((target("avx2,popcnt")))
#define LOWBIT_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,avx2,popcnt")))
#else
#define LOWBIT_X86_PATHS 0
#endif

// aarch64: the "neon" path (Advanced SIMD is part of the base ISA there, so it is always
// available; bconv's kernel table adds NEON micro-kernels, the other kernels run their
// portable code on it).
#if (defined(__aarch64__) || defined(_M_ARM64)) && defined(__ARM_NEON) && !defined(LOWBIT_NO_NEON)
#define LOWBIT_NEON_PATH 1
#else
#define LOWBIT_NEON_PATH 0
#endif

namespace lowbit {

// Path names in order of preference (worst first).  "ref" is the numpy reference and
// lives in Python (lowbit.runtime.ref); the C++ side knows only the compiled paths.
inline std::vector<std::string> compiled_paths() {
#if LOWBIT_X86_PATHS
  return {"portable", "avx2", "avx512"};
#elif LOWBIT_NEON_PATH
  return {"portable", "neon"};
#else
  return {"portable"};
#endif
}

// Paths whose non-GEMM kernels (bitpack, unpack, thresholds, bit planes, float GEMM) are
// the portable code.
inline bool runs_portable_helpers(const std::string& path) {
  return path == "portable" || (LOWBIT_NEON_PATH && path == "neon");
}

inline const CpuFeatures& cpu() {
  static const CpuFeatures f = detect_cpu();
  return f;
}

inline bool path_available(const std::string& path) {
  if (path == "portable") return true;
#if LOWBIT_NEON_PATH
  if (path == "neon") return true;
#endif
#if LOWBIT_X86_PATHS
  if (path == "avx2") return cpu().avx2;
  if (path == "avx512") return cpu().avx512;
#endif
  return false;
}

// Population count of one word in plain C++ (SWAR: 2-, 4-, 8-bit partial sums, then a
// multiply adds the 8 byte counts into the top byte).  Any CPU; no POPCNT instruction.
inline uint64_t popcount_swar(uint64_t x) {
  x = x - ((x >> 1) & 0x5555555555555555ULL);
  x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return (x * 0x0101010101010101ULL) >> 56;
}

}  // namespace lowbit
