// Python bindings only: every kernel lives in a header under csrc/<op>/.
//
// Each binding checks what could make a kernel read or write out of bounds (dtype, rank,
// contiguity via the ndarray type; shapes, thread count and path by hand) and raises a
// Python exception instead.  The friendlier checks and messages live in the Python
// wrappers (lowbit.runtime.kernels); these are the last line of defence.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "bgemm/bgemm.h"
#include "bitpack/bitpack.h"
#include "bitpack/unpack.h"
#include "common/cpu.h"
#include "common/target.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

template <class T>
using In2 = nb::ndarray<const T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
template <class T>
using Out2 = nb::ndarray<T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

void check_path(const std::string& path) {
  bool known = false;
  for (const auto& p : lowbit::compiled_paths()) known |= p == path;
  if (!known) throw nb::value_error(("unknown or not compiled kernel path '" + path + "'").c_str());
  if (!lowbit::path_available(path))
    throw std::runtime_error("kernel path '" + path + "' is not supported by this CPU");
}

void check_threads(int threads) {
  if (threads < 1) throw nb::value_error("threads must be >= 1");
}

template <class T>
void def_bitpack(nb::module_& m) {
  m.def(
      "bitpack",
      [](In2<T> x, Out2<uint64_t> out, const std::string& path, int threads) {
        check_path(path);
        check_threads(threads);
        const int64_t rows = static_cast<int64_t>(x.shape(0)), k = static_cast<int64_t>(x.shape(1));
        if (static_cast<int64_t>(out.shape(0)) != rows ||
            static_cast<int64_t>(out.shape(1)) != (k + 63) / 64)
          throw nb::value_error("bitpack: out must have shape (rows, ceil(k/64))");
        nb::gil_scoped_release unlocked;
        return lowbit::bitpack<T>(x.data(), rows, k, out.data(), path, threads);
      },
      "x"_a.noconvert(), "out"_a.noconvert(), "path"_a, "threads"_a,
      "Pack the signs of x (rows, k) into out (rows, ceil(k/64)) uint64; returns True if x "
      "holds a NaN (out is then unusable).");
}

template <class T>
void def_unpack(nb::module_& m) {
  m.def(
      "unpack",
      [](In2<uint64_t> words, Out2<T> out, const std::string& path, int threads) {
        check_path(path);
        check_threads(threads);
        const int64_t rows = static_cast<int64_t>(out.shape(0)), k = static_cast<int64_t>(out.shape(1));
        if (static_cast<int64_t>(words.shape(0)) != rows ||
            static_cast<int64_t>(words.shape(1)) != (k + 63) / 64)
          throw nb::value_error("unpack: words must have shape (rows, ceil(k/64)) for out (rows, k)");
        nb::gil_scoped_release unlocked;
        lowbit::unpack<T>(words.data(), rows, k, out.data(), path, threads);
      },
      "words"_a.noconvert(), "out"_a.noconvert(), "path"_a, "threads"_a,
      "Unpack words (rows, ceil(k/64)) into out (rows, k) as +1 / -1.");
}

}  // namespace

NB_MODULE(_kernels, m) {
  m.doc() = "lowbit compiled kernels (header-only C++17 under csrc/, bound with nanobind)";

  m.def("cpu_features", []() {
    const auto& f = lowbit::cpu();
    nb::dict d;
    d["avx2"] = f.avx2;
    d["avx512"] = f.avx512;
    d["popcnt"] = f.popcnt;
    d["avx2_isa"] = f.avx2_isa;
    d["os_ymm"] = f.os_ymm;
    d["avx512f"] = f.avx512f;
    d["avx512bw"] = f.avx512bw;
    d["avx512vpopcntdq"] = f.avx512vpopcntdq;
    d["os_zmm"] = f.os_zmm;
    return d;
  }, "CPU features relevant to kernel selection, detected by CPUID at run time.");

  m.def("compiled_paths", &lowbit::compiled_paths,
        "C++ kernel paths compiled into this build, worst first (available or not).");
  m.def("path_available", &lowbit::path_available, "path"_a,
        "True when this CPU can run the compiled path.");

  def_bitpack<float>(m);
  def_bitpack<double>(m);
  def_bitpack<int8_t>(m);
  def_bitpack<int32_t>(m);
  def_unpack<int8_t>(m);
  def_unpack<float>(m);

  m.def("bgemm_variants", []() {
    std::vector<std::tuple<std::string, std::string>> v;
    for (const auto& kern : lowbit::bgemm_detail::kKernels) v.emplace_back(kern.path, kern.variant);
    return v;
  }, "(path, variant) rows of the bgemm kernel table; the first row of a path is its default.");

  m.def(
      "bgemm",
      [](In2<uint64_t> a, In2<uint64_t> b, int64_t k, Out2<int32_t> out, const std::string& path,
         int threads, const std::string& variant) {
        check_path(path);
        check_threads(threads);
        const auto* kern = lowbit::bgemm_detail::find_kernel(path, variant);
        if (!kern) throw nb::value_error(("no bgemm variant '" + variant + "' for path '" + path + "'").c_str());
        const int64_t M = static_cast<int64_t>(a.shape(0)), N = static_cast<int64_t>(b.shape(0));
        const int64_t W = static_cast<int64_t>(a.shape(1));
        if (k < 0 || k > (int64_t{1} << 30)) throw nb::value_error("bgemm: k must be in [0, 2**30]");
        if (W != (k + 63) / 64 || static_cast<int64_t>(b.shape(1)) != W)
          throw nb::value_error("bgemm: a and b must have ceil(k/64) columns");
        if (static_cast<int64_t>(out.shape(0)) != M || static_cast<int64_t>(out.shape(1)) != N)
          throw nb::value_error("bgemm: out must have shape (a.shape[0], b.shape[0])");
        nb::gil_scoped_release unlocked;
        lowbit::bgemm(*kern, a.data(), b.data(), M, N, W, static_cast<int32_t>(k), out.data(), threads);
      },
      "a"_a.noconvert(), "b"_a.noconvert(), "k"_a, "out"_a.noconvert(), "path"_a, "threads"_a,
      "variant"_a = "",
      "out[m, n] = k - 2 * popcount(a[m] ^ b[n]) for packed a (M, W), b (N, W), W = ceil(k/64).");
}
