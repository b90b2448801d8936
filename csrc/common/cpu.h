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
  // The individual bits, so that an error can say what exactly is missing.
  bool popcnt = false, avx2_isa = false, os_ymm = false;
  bool avx512f = false, avx512bw = false, avx512vpopcntdq = false, os_zmm = false;
};

inline CpuFeatures detect_cpu() {
  CpuFeatures f;
#if LOWBIT_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.popcnt = c & (1u << 23);
  const bool osxsave = c & (1u << 27);
  if (osxsave) {  // XGETBV is only legal when the OS enabled it
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    f.os_ymm = (xlo & 0x6) == 0x6;        // SSE + AVX state
    f.os_zmm = (xlo & 0xE6) == 0xE6;      // + opmask, ZMM_Hi256, Hi16_ZMM
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2_isa = b & (1u << 5);
    f.avx512f = b & (1u << 16);
    f.avx512bw = b & (1u << 30);
    f.avx512vpopcntdq = c & (1u << 14);
  }
  f.avx2 = f.popcnt && f.avx2_isa && f.os_ymm;
  f.avx512 = f.avx2 && f.avx512f && f.avx512bw && f.avx512vpopcntdq && f.os_zmm;
#endif
  return f;
}

}  // namespace lowbit
