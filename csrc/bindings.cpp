// Python bindings only: every kernel lives in a header under csrc/<op>/.
#include <nanobind/nanobind.h>

#include "common/cpu.h"

namespace nb = nanobind;

NB_MODULE(_kernels, m) {
  m.doc() = "lowbit compiled kernels (header-only C++17 under csrc/, bound with nanobind)";
  m.def("cpu_features", []() {
    auto f = lowbit::detect_cpu();
    nb::dict d;
    d["avx2"] = f.avx2;
    d["avx512"] = f.avx512;
    return d;
  }, "CPU features relevant to kernel selection, detected by CPUID at run time.");
}
