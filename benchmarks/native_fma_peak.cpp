// One core's float32 FMA peak, for the native-executor section of docs/results.md: 16
// independent AVX-512 accumulators acc += x * w (the GEMM / conv pattern) in hand-written asm
// (no spills), timed in thread CPU time; the clock from a chain of dependent integer adds
// (1 cycle each).  x86-64 with AVX-512F only.
//   g++ -O2 -mavx512f benchmarks/native_fma_peak.cpp -o /tmp/fma_peak && /tmp/fma_peak
#include <immintrin.h>
#include <time.h>
#include <cstdio>
#include <cstdint>
static double cpu(){timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t); return t.tv_sec+1e-9*t.tv_nsec;}
int main() {
  for (int rep=0; rep<5; ++rep) {
    uint64_t y=1; const int64_t NA=200'000'000;
    double c0=cpu();
    for(int64_t i=0;i<NA;++i){ __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(y)); }
    double ghz = 8.0*NA/(cpu()-c0)/1e9;
    const int64_t N = 50'000'000;
    int64_t n = N;
    double t0=cpu();
    // 16 independent accumulators acc += x*w, pure register asm (no compiler spills)
    __asm__ volatile(
      "vxorps %%zmm0,%%zmm0,%%zmm0\n\t" "vmovaps %%zmm0,%%zmm1\n\t" "vmovaps %%zmm0,%%zmm2\n\t" "vmovaps %%zmm0,%%zmm3\n\t"
      "vmovaps %%zmm0,%%zmm4\n\t" "vmovaps %%zmm0,%%zmm5\n\t" "vmovaps %%zmm0,%%zmm6\n\t" "vmovaps %%zmm0,%%zmm7\n\t"
      "vmovaps %%zmm0,%%zmm8\n\t" "vmovaps %%zmm0,%%zmm9\n\t" "vmovaps %%zmm0,%%zmm10\n\t" "vmovaps %%zmm0,%%zmm11\n\t"
      "vmovaps %%zmm0,%%zmm12\n\t" "vmovaps %%zmm0,%%zmm13\n\t" "vmovaps %%zmm0,%%zmm14\n\t" "vmovaps %%zmm0,%%zmm15\n\t"
      "vxorps %%zmm16,%%zmm16,%%zmm16\n\t" "vxorps %%zmm17,%%zmm17,%%zmm17\n\t"
      "1:\n\t"
      "vfmadd231ps %%zmm16,%%zmm17,%%zmm0\n\t" "vfmadd231ps %%zmm16,%%zmm17,%%zmm1\n\t" "vfmadd231ps %%zmm16,%%zmm17,%%zmm2\n\t" "vfmadd231ps %%zmm16,%%zmm17,%%zmm3\n\t"
      "vfmadd231ps %%zmm16,%%zmm17,%%zmm4\n\t" "vfmadd231ps %%zmm16,%%zmm17,%%zmm5\n\t" "vfmadd231ps %%zmm16,%%zmm17,%%zmm6\n\t" "vfmadd231ps %%zmm16,%%zmm17,%%zmm7\n\t"
      "vfmadd231ps %%zmm16,%%zmm17,%%zmm8\n\t" "vfmadd231ps %%zmm16,%%zmm17,%%zmm9\n\t" "vfmadd231ps %%zmm16,%%zmm17,%%zmm10\n\t" "vfmadd231ps %%zmm16,%%zmm17,%%zmm11\n\t"
      "vfmadd231ps %%zmm16,%%zmm17,%%zmm12\n\t" "vfmadd231ps %%zmm16,%%zmm17,%%zmm13\n\t" "vfmadd231ps %%zmm16,%%zmm17,%%zmm14\n\t" "vfmadd231ps %%zmm16,%%zmm17,%%zmm15\n\t"
      "dec %0\n\t" "jnz 1b\n\t"
      : "+r"(n) : : "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11","xmm12","xmm13","xmm14","xmm15","xmm16","xmm17","cc");
    double s=cpu()-t0, f=16.0*N;
    printf("clock %.2f GHz | zmm FMA %.2f G/s = %.2f per clock = %.1f G lane-FMA/s (GMAC/s)\n", ghz, f/s/1e9, f/s/1e9/ghz, f*16/s/1e9);
  }
}
