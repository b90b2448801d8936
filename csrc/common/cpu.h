// CPU feature detection for run-time kernel selection.
// x86-64: CPUID (+ XGETBV so that the OS really saves the wide registers).
// Anything else: only the portable path.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define LOWBIT_X86 1
#else
#define LOWBIT_X86 0
#endif

namespace lowbit {

struct CpuFeatures {
  bool avx2 = false;       // AVX2 + POPCNT + OS support for YMM state
  bool avx512 = false;     // AVX512F + AVX512BW + AVX512VPOPCNTDQ + OS support for ZMM state
};

inline CpuFeatures detect_cpu() {
  CpuFeatures f;
#if LOWBIT_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool popcnt = c & (1u << 23);
  const bool osxsave = c & (1u << 27);
  if (!osxsave) return f;
  unsigned xlo, xhi;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  const bool ymm_ok = (xlo & 0x6) == 0x6;          // SSE + AVX state
  const bool zmm_ok = (xlo & 0xE6) == 0xE6;        // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = b & (1u << 5);
  const bool avx512f = b & (1u << 16);
  const bool avx512bw = b & (1u << 30);
  const bool vpopcntdq = c & (1u << 14);
  f.avx2 = popcnt && avx2 && ymm_ok;
  f.avx512 = f.avx2 && avx512f && avx512bw && vpopcntdq && zmm_ok;
#endif
  return f;
}

}  // namespace lowbit
