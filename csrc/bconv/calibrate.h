// Register-only calibration loops: the binary MAC/s ceiling of each kernel's instruction mix
// on this CPU, for the "% of peak" column of `lowbit bench kernels`.  No memory traffic, no
// tile set-up: what a micro-kernel could reach if loads and stores were free.
//
//   popcnt : XOR + POPCNT + ADD on 64-bit words, 12 independent chains (the XOR-popcount
//            peak the issue names; ~150 GMAC/s on the Zen 1 development machine);
//   nlut   : VPSHUFB + VPADDB on 256-bit registers, 8 independent chains (the nibble
//            look-up kernel's mix: 128 binary MACs per pair);
//   vpopcntq: VPXORQ + VPOPCNTQ + VPADDQ on 512-bit registers (AVX-512 VPOPCNTDQ CPUs).
// Each returns binary GMAC per second of thread CPU time over about `seconds`.  The loops
// are inline assembly so the compiler can neither vectorise nor hoist them; x86-64 GCC /
// Clang only (0 elsewhere).
#pragma once

#include <cstdint>
#include <ctime>
#include <string>

#include "common/target.h"

namespace lowbit {
namespace calibrate_detail {

inline double thread_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

#if LOWBIT_X86_PATHS && !defined(LOWBIT_SIMDE)
// 1e6 iterations x 12 word pairs.
LOWBIT_TARGET_AVX2 inline void popcnt_block() {
  int64_t n = 1000000;
  uint64_t a = 0x123456789ABCDEFULL, b = 0xF0E1D2C3B4A59687ULL, t0, t1, t2, t3, s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  __asm__ volatile(
      "1:\n\t"
      "mov %[a], %[t0]\n\t xor %[b], %[t0]\n\t popcnt %[t0], %[t0]\n\t add %[t0], %[s0]\n\t"
      "mov %[a], %[t1]\n\t xor %[b], %[t1]\n\t popcnt %[t1], %[t1]\n\t add %[t1], %[s1]\n\t"
      "mov %[a], %[t2]\n\t xor %[b], %[t2]\n\t popcnt %[t2], %[t2]\n\t add %[t2], %[s2]\n\t"
      "mov %[a], %[t3]\n\t xor %[b], %[t3]\n\t popcnt %[t3], %[t3]\n\t add %[t3], %[s3]\n\t"
      "mov %[a], %[t0]\n\t xor %[b], %[t0]\n\t popcnt %[t0], %[t0]\n\t add %[t0], %[s0]\n\t"
      "mov %[a], %[t1]\n\t xor %[b], %[t1]\n\t popcnt %[t1], %[t1]\n\t add %[t1], %[s1]\n\t"
      "mov %[a], %[t2]\n\t xor %[b], %[t2]\n\t popcnt %[t2], %[t2]\n\t add %[t2], %[s2]\n\t"
      "mov %[a], %[t3]\n\t xor %[b], %[t3]\n\t popcnt %[t3], %[t3]\n\t add %[t3], %[s3]\n\t"
      "mov %[a], %[t0]\n\t xor %[b], %[t0]\n\t popcnt %[t0], %[t0]\n\t add %[t0], %[s0]\n\t"
      "mov %[a], %[t1]\n\t xor %[b], %[t1]\n\t popcnt %[t1], %[t1]\n\t add %[t1], %[s1]\n\t"
      "mov %[a], %[t2]\n\t xor %[b], %[t2]\n\t popcnt %[t2], %[t2]\n\t add %[t2], %[s2]\n\t"
      "mov %[a], %[t3]\n\t xor %[b], %[t3]\n\t popcnt %[t3], %[t3]\n\t add %[t3], %[s3]\n\t"
      "dec %[n]\n\t jnz 1b\n\t"
      : [n] "+r"(n), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3),
        [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2), [s3] "+r"(s3)
      : [a] "r"(a), [b] "r"(b)
      : "cc");
}

// 1e6 iterations x 8 VPSHUFB (256-bit) + 8 VPADDB.
LOWBIT_TARGET_AVX2 inline void nlut_block() {
  int64_t n = 1000000;
  __asm__ volatile(
      "vpxor %%ymm0, %%ymm0, %%ymm0\n\t vpxor %%ymm8, %%ymm8, %%ymm8\n\t"
      "vpxor %%ymm9, %%ymm9, %%ymm9\n\t vpxor %%ymm12, %%ymm12, %%ymm12\n\t"
      "vpxor %%ymm13, %%ymm13, %%ymm13\n\t"
      "1:\n\t"
      "vpshufb %%ymm8, %%ymm12, %%ymm14\n\t vpaddb %%ymm14, %%ymm0, %%ymm0\n\t"
      "vpshufb %%ymm9, %%ymm12, %%ymm15\n\t vpaddb %%ymm15, %%ymm1, %%ymm1\n\t"
      "vpshufb %%ymm10, %%ymm12, %%ymm14\n\t vpaddb %%ymm14, %%ymm2, %%ymm2\n\t"
      "vpshufb %%ymm11, %%ymm12, %%ymm15\n\t vpaddb %%ymm15, %%ymm3, %%ymm3\n\t"
      "vpshufb %%ymm8, %%ymm13, %%ymm14\n\t vpaddb %%ymm14, %%ymm4, %%ymm4\n\t"
      "vpshufb %%ymm9, %%ymm13, %%ymm15\n\t vpaddb %%ymm15, %%ymm5, %%ymm5\n\t"
      "vpshufb %%ymm10, %%ymm13, %%ymm14\n\t vpaddb %%ymm14, %%ymm6, %%ymm6\n\t"
      "vpshufb %%ymm11, %%ymm13, %%ymm15\n\t vpaddb %%ymm15, %%ymm7, %%ymm7\n\t"
      "dec %[n]\n\t jnz 1b\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(n)
      :
      : "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

// 1e6 iterations x 8 x (VPXORQ + VPOPCNTQ + VPADDQ) on 8 words.
LOWBIT_TARGET_AVX512 inline void vpopcntq_block() {
  int64_t n = 1000000;
  __asm__ volatile(
      "vpxorq %%zmm0, %%zmm0, %%zmm0\n\t vpxorq %%zmm16, %%zmm16, %%zmm16\n\t"
      "1:\n\t"
      "vpxorq %%zmm16, %%zmm8, %%zmm17\n\t vpopcntq %%zmm17, %%zmm17\n\t vpaddq %%zmm17, %%zmm0, %%zmm0\n\t"
      "vpxorq %%zmm16, %%zmm9, %%zmm18\n\t vpopcntq %%zmm18, %%zmm18\n\t vpaddq %%zmm18, %%zmm1, %%zmm1\n\t"
      "vpxorq %%zmm16, %%zmm10, %%zmm19\n\t vpopcntq %%zmm19, %%zmm19\n\t vpaddq %%zmm19, %%zmm2, %%zmm2\n\t"
      "vpxorq %%zmm16, %%zmm11, %%zmm20\n\t vpopcntq %%zmm20, %%zmm20\n\t vpaddq %%zmm20, %%zmm3, %%zmm3\n\t"
      "vpxorq %%zmm16, %%zmm12, %%zmm21\n\t vpopcntq %%zmm21, %%zmm21\n\t vpaddq %%zmm21, %%zmm4, %%zmm4\n\t"
      "vpxorq %%zmm16, %%zmm13, %%zmm22\n\t vpopcntq %%zmm22, %%zmm22\n\t vpaddq %%zmm22, %%zmm5, %%zmm5\n\t"
      "vpxorq %%zmm16, %%zmm14, %%zmm23\n\t vpopcntq %%zmm23, %%zmm23\n\t vpaddq %%zmm23, %%zmm6, %%zmm6\n\t"
      "vpxorq %%zmm16, %%zmm15, %%zmm24\n\t vpopcntq %%zmm24, %%zmm24\n\t vpaddq %%zmm24, %%zmm7, %%zmm7\n\t"
      "dec %[n]\n\t jnz 1b\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(n)
      :
      : "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19",
        "xmm20", "xmm21", "xmm22", "xmm23", "xmm24");
}
#endif

}  // namespace calibrate_detail

// Binary GMAC/s (per second of thread CPU time) of the register-only loop `which`
// ("popcnt", "nlut", "vpopcntq"); 0 when not compiled here.  Caller checked the CPU.
inline double calibrate_peak(const std::string& which, double seconds) {
  using namespace calibrate_detail;
#if LOWBIT_X86_PATHS && !defined(LOWBIT_SIMDE)
  void (*block)() = nullptr;
  double macs = 0;
  if (which == "popcnt") { block = &popcnt_block; macs = 1e6 * 12 * 64; }
  else if (which == "nlut") { block = &nlut_block; macs = 1e6 * 8 * 128; }
  else if (which == "vpopcntq") { block = &vpopcntq_block; macs = 1e6 * 8 * 512; }
  if (!block) return 0;
  block();  // warm up (clock, caches)
  double best = 0;
  const double t_end = thread_seconds() + seconds;
  do {  // best of many short blocks: robust to preemption
    const double t0 = thread_seconds();
    block();
    const double dt = thread_seconds() - t0;
    if (dt > 0 && macs / dt > best) best = macs / dt;
  } while (thread_seconds() < t_end);
  return best / 1e9;
#else
  (void)which;
  (void)seconds;
  return 0;
#endif
}

}  // namespace lowbit
