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
#include <nanobind/stl/pair.h>

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "bconv/bconv.h"
#include "bconv/bitplane.h"
#include "bconv/calibrate.h"
#include "bconv/driver.h"
#include "bconv/maxpool.h"
#include "bgemm/bgemm.h"
#include "bitpack/bitpack.h"
#include "bitpack/unpack.h"
#include "common/cpu.h"
#include "common/target.h"
#include "graph/executor.h"

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


template <class T>
using In1 = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <class T>
using In5 = nb::ndarray<const T, nb::ndim<5>, nb::c_contig, nb::device::cpu>;
template <class T>
using Out1 = nb::ndarray<T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <class T>
using Out3 = nb::ndarray<T, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
template <class T>
using Out4 = nb::ndarray<T, nb::ndim<4>, nb::c_contig, nb::device::cpu>;
template <class T>
using In4 = nb::ndarray<const T, nb::ndim<4>, nb::c_contig, nb::device::cpu>;
using OutAny = nb::ndarray<nb::c_contig, nb::device::cpu>;

const lowbit::bconv_detail::XKernel& xkernel(const std::string& path, const std::string& variant,
                                             bool masked = false) {
  check_path(path);
  const auto* kern = lowbit::bconv_detail::find_xkernel(path, variant, masked);
  if (!kern) throw nb::value_error(("no xconv variant '" + variant + "' for path '" + path + "'").c_str());
  return *kern;
}

void check_size(const char* what, size_t got, int64_t want) {
  if (static_cast<int64_t>(got) != want)
    throw nb::value_error((std::string(what) + ": expected " + std::to_string(want) +
                           " elements, got " + std::to_string(got)).c_str());
}

// xconv2d: the bitwise conv2d / dense of bconv/bconv.h (kinds and stages documented there).
void xconv2d_binding(In5<uint64_t> x, In1<uint64_t> packed, const std::vector<int64_t>& geom,
                     int kind, int64_t oc, int64_t kbits, int a_bits, int w_bits,
                     In1<int32_t> tap_sums, int pad_value, In1<int32_t> w_pop, int stage,
                     OutAny out, In1<int32_t> thr, In1<uint8_t> flip, In1<float> scale,
                     In1<float> bias, const std::string& path, const std::string& variant,
                     int threads) {
  using namespace lowbit;
  const auto& kern = xkernel(path, variant, kind == 4);
  check_threads(threads);
  if (geom.size() != 6) throw nb::value_error("xconv2d: geom must be [kh, kw, sh, sw, ph, pw]");
  ConvShape s{};
  s.n = x.shape(0); s.h = x.shape(1); s.w = x.shape(2); s.planes = x.shape(3); s.cw = x.shape(4);
  s.kh = geom[0]; s.kw = geom[1]; s.sh = geom[2]; s.sw = geom[3]; s.ph = geom[4]; s.pw = geom[5];
  if (s.kh < 1 || s.kw < 1 || s.sh < 1 || s.sw < 1 || s.ph < 0 || s.pw < 0)
    throw nb::value_error("xconv2d: kernel and stride must be >= 1, padding >= 0");
  if (s.h + 2 * s.ph < s.kh || s.w + 2 * s.pw < s.kw)
    throw nb::value_error("xconv2d: kernel larger than the padded input");
  s.oh = (s.h + 2 * s.ph - s.kh) / s.sh + 1;
  s.ow = (s.w + 2 * s.pw - s.kw) / s.sw + 1;
  if (kind < 0 || kind > 4) throw nb::value_error("xconv2d: kind must be 0..4");
  if ((kind == 4) != (kern.format == bconv_detail::Format::Masked))
    throw nb::value_error("xconv2d: masked variants serve kind 4 (ternary, masked) only, and kind 4 needs one");
  XOp op;
  op.kind = static_cast<XKind>(kind);
  op.oc = oc; op.kbits = kbits; op.a_bits = a_bits; op.w_bits = w_bits; op.pad_value = pad_value;
  const int64_t taps = s.kh * s.kw, W = taps * s.cw;
  if (oc < 0) throw nb::value_error("xconv2d: oc must be >= 0");
  if (kbits < 0 || kbits > (int64_t{1} << 30) || kbits > W * 64 || kbits <= taps * (s.cw - 1) * 64)
    throw nb::value_error("xconv2d: kbits must be kh*kw*C with ceil(C/64) == cw and <= 2**30");
  const bool planar = op.kind == XKind::kPlanesBinary || op.kind == XKind::kPlanesPlanes;
  if (planar ? s.planes != a_bits || a_bits < 1 || a_bits > 8 : s.planes != 1)
    throw nb::value_error("xconv2d: x.shape[3] must be 1 (binary) or a_bits in 1..8 (planes)");
  if (op.kind == XKind::kPlanesPlanes && (w_bits < 1 || w_bits > 8))
    throw nb::value_error("xconv2d: w_bits must be in 1..8");
  if (!planar) {
    if (pad_value < -1 || pad_value > 1) throw nb::value_error("xconv2d: pad_value must be -1, 0 or 1");
    if (pad_value != -1 && (s.ph > 0 || s.pw > 0)) {  // the padding correction reads them
      check_size("xconv2d: tap_sums", tap_sums.size(), oc * taps);
      op.tap_sums = tap_sums.data();
    }
    if (op.kind == XKind::kTernaryMasked) {
      check_size("xconv2d: w_pop", w_pop.size(), oc);
      op.w_pop = w_pop.data();
    }
  } else {
    check_size("xconv2d: w_pop", w_pop.size(), op.kind == XKind::kPlanesPlanes ? oc * w_bits : oc);
    op.w_pop = w_pop.data();
  }
  const int64_t N = bconv_detail::op_columns(op);
  check_size("xconv2d: packed weights", packed.size(), bconv_detail::packed_b_words(kern, N, W));
  const int64_t rows = s.n * s.oh * s.ow;
  OutStage st;
  st.out = out.data();
  if (stage == 0) {
    if (out.dtype() != nb::dtype<int32_t>()) throw nb::type_error("xconv2d: int32 out expected");
    check_size("xconv2d: out", out.size(), rows * oc);
    st.kind = StageKind::kInt32;
  } else if (stage == 1) {
    if (out.dtype() != nb::dtype<uint64_t>()) throw nb::type_error("xconv2d: uint64 out expected");
    check_size("xconv2d: out", out.size(), rows * ((oc + 63) / 64));
    check_size("xconv2d: thr", thr.size(), oc);
    check_size("xconv2d: flip", flip.size(), oc);
    st.kind = StageKind::kBits; st.thr = thr.data(); st.flip = flip.data();
  } else if (stage == 2) {
    if (out.dtype() != nb::dtype<float>()) throw nb::type_error("xconv2d: float32 out expected");
    check_size("xconv2d: out", out.size(), rows * oc);
    check_size("xconv2d: scale", scale.size(), oc);
    if (bias.size() != 0) check_size("xconv2d: bias", bias.size(), oc);
    st.kind = StageKind::kFloat; st.scale = scale.data(); st.bias = bias.size() ? bias.data() : nullptr;
  } else {
    throw nb::value_error("xconv2d: stage must be 0 (int32), 1 (bits) or 2 (float)");
  }
  if (planar) {  // accumulators must fit int32
    const int64_t amax = (int64_t{1} << a_bits) - 1;
    const int64_t wmax = op.kind == XKind::kPlanesPlanes ? (int64_t{1} << w_bits) - 1 : 1;
    if (amax * wmax * kbits >= (int64_t{1} << 31)) throw nb::value_error("xconv2d: accumulator may overflow int32");
  }
  nb::gil_scoped_release unlocked;
  xconv2d(kern, x.data(), s, packed.data(), op, st, threads);
}


// ---- the native graph executor (csrc/graph/executor.h) --------------------------------------
// Python builds the plan op by op (lowbit.runtime.native): attributes come as a dict of
// ints, floats, strings and numpy arrays.  Arrays are borrowed: the Graph keeps a reference
// to each, so they live as long as the plan.
class PyGraph {
 public:
  explicit PyGraph(int threads) : ex_(threads) {}

  int add_op(const std::string& kind, const std::string& label, const std::vector<int>& inputs,
             nb::dict attrs) {
    lowbit::graph::OpSpec sp;
    sp.kind = kind;
    sp.label = label;
    sp.inputs = inputs;
    for (auto [k, v] : attrs) {
      const std::string key = nb::cast<std::string>(k);
      if (nb::isinstance<bool>(v) || nb::isinstance<nb::int_>(v)) {
        sp.ints[key] = nb::cast<int64_t>(v);
      } else if (nb::isinstance<nb::float_>(v)) {
        sp.floats[key] = nb::cast<double>(v);
      } else if (nb::isinstance<nb::str>(v)) {
        sp.strs[key] = nb::cast<std::string>(v);
      } else {
        using Arr = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;
        Arr a;
        if (!nb::try_cast<Arr>(v, a)) throw nb::type_error((label + ": attribute '" + key + "' has an unsupported type").c_str());
        lowbit::graph::ArrayRef r;
        r.data = a.data();
        r.size = static_cast<int64_t>(a.size());
        const auto dt = a.dtype();
        r.dtype = dt == nb::dtype<float>() ? 'f' : dt == nb::dtype<double>() ? 'd' : dt == nb::dtype<int32_t>() ? 'i'
                : dt == nb::dtype<uint64_t>() ? 'u' : dt == nb::dtype<uint8_t>() ? 'b' : 0;
        if (!r.dtype) throw nb::type_error((label + ": array '" + key + "' has an unsupported dtype").c_str());
        sp.arrays[key] = r;
        keep_.push_back(nb::borrow(v));
      }
    }
    try {
      return ex_.add_op(sp);
    } catch (const std::invalid_argument& e) {
      throw nb::value_error(e.what());
    }
  }

  std::vector<int64_t> value(int v) const {
    const auto& x = ex_.value(v);
    return {x.bits ? 1 : 0, x.h, x.w, x.c};
  }

  void set_outputs(const std::vector<int>& outs) {
    try { ex_.set_outputs(outs); } catch (const std::invalid_argument& e) { throw nb::value_error(e.what()); }
  }

  // x: (n, ...) uint8 or float32, C-contiguous; outs: float32 arrays of the outputs' sizes.
  nb::object run(nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu> x, std::vector<nb::ndarray<float, nb::c_contig, nb::device::cpu>> outs,
           bool profile, bool record, bool poison) {
    const bool u8 = x.dtype() == nb::dtype<uint8_t>();
    if (!u8 && x.dtype() != nb::dtype<float>()) throw nb::type_error("run: input must be uint8 or float32");
    if (x.ndim() < 1) throw nb::value_error("run: input needs a batch axis");
    const int64_t n = static_cast<int64_t>(x.shape(0));
    if (n < 1 || static_cast<int64_t>(x.size()) != n * ex_.input().host_elems())
      throw nb::value_error("run: input size does not match the graph input");
    std::vector<float*> ptrs;
    for (size_t k = 0; k < outs.size(); ++k) ptrs.push_back(outs[k].data());
    std::vector<int64_t> sizes = out_sizes_;
    if (sizes.size() != outs.size()) throw nb::value_error("run: wrong number of outputs");
    for (size_t k = 0; k < outs.size(); ++k)
      if (static_cast<int64_t>(outs[k].size()) != n * sizes[k]) throw nb::value_error("run: output buffer size mismatch");
    // One arena: calls from several Python threads take turns.  The GIL is released before
    // the lock is taken (no thread waits for the lock holding the GIL), and the lock is held
    // until this call's profile / records are read.
    std::unique_lock<std::mutex> one_at_a_time(run_mutex_, std::defer_lock);
    {
      nb::gil_scoped_release unlocked;
      one_at_a_time.lock();
      ex_.run(x.data(), u8, n, ptrs, profile, record, poison);  // NaN / inf input: ValueError
    }
    if (!profile && !record) return nb::none();
    return nb::make_tuple(ex_.op_seconds(), records());
  }

  void outputs(const std::vector<int>& outs) {
    set_outputs(outs);
    out_sizes_.clear();
    for (int v : outs) {
      const auto& x = ex_.value(v);
      out_sizes_.push_back(x.h * x.w * x.c);
    }
  }

  std::vector<double> op_seconds() const { return ex_.op_seconds(); }
  int64_t arena_bytes(int64_t n) { return ex_.arena_bytes(n); }
  int64_t unshared_bytes(int64_t n) { return ex_.unshared_bytes(n); }

  // (op index, int32 accumulators (n*oh*ow*oc) as a new array) of every bitwise layer that
  // recorded in the last run.
  std::vector<std::pair<int, nb::ndarray<nb::numpy, int32_t>>> records() const {
    std::vector<std::pair<int, nb::ndarray<nb::numpy, int32_t>>> out;
    for (size_t i = 0; i < ex_.ops().size(); ++i) {
      const auto* r = ex_.ops()[i]->recorded();
      if (!r || r->empty()) continue;
      auto* copy = new std::vector<int32_t>(*r);
      nb::capsule owner(copy, [](void* p) noexcept { delete static_cast<std::vector<int32_t>*>(p); });
      size_t shape[1] = {copy->size()};
      out.emplace_back(static_cast<int>(i), nb::ndarray<nb::numpy, int32_t>(copy->data(), 1, shape, owner));
    }
    return out;
  }

 private:
  lowbit::graph::Executor ex_;
  std::mutex run_mutex_;
  std::vector<nb::object> keep_;
  std::vector<int64_t> out_sizes_;
};

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

  m.def("xconv_variants", []() {
    std::vector<std::tuple<std::string, std::string>> v;
    for (const auto& kern : lowbit::bconv_detail::kXKernels) v.emplace_back(kern.path, kern.variant);
    return v;
  }, "(path, variant) rows of the bitwise conv/dense kernel table; the first row of a path is its default.");

  m.def(
      "xconv_packed_words",
      [](int64_t n, int64_t w, const std::string& path, const std::string& variant) {
        if (n < 0 || w < 0) throw nb::value_error("xconv_packed_words: n, w must be >= 0");
        return lowbit::bconv_detail::packed_b_words(xkernel(path, variant), n, w);
      },
      "n"_a, "w"_a, "path"_a, "variant"_a,
      "uint64 words of packed weights for n columns of w words on this kernel.");

  m.def(
      "xconv_pack_weights",
      [](In2<uint64_t> src, Out1<uint64_t> out, const std::string& path, const std::string& variant) {
        const auto& kern = xkernel(path, variant);
        const int64_t n = static_cast<int64_t>(src.shape(0));
        // masked layouts take (sign, mask) rows: src (n, 2 * w)
        const bool masked = kern.format == lowbit::bconv_detail::Format::Masked;
        if (masked && src.shape(1) % 2) throw nb::value_error("xconv_pack_weights: masked rows need 2*w words");
        const int64_t w = static_cast<int64_t>(src.shape(1)) / (masked ? 2 : 1);
        check_size("xconv_pack_weights: out", out.size(), lowbit::bconv_detail::packed_b_words(kern, n, w));
        nb::gil_scoped_release unlocked;
        lowbit::bconv_detail::pack_weights(kern, src.data(), n, w, out.data());
      },
      "src"_a.noconvert(), "out"_a.noconvert(), "path"_a, "variant"_a,
      "Lay out weight rows src (n, w) words (masked variants: (n, 2*w), sign then mask) as the "
      "kernel's B panels in out.");

  m.def("xconv2d", &xconv2d_binding, "x"_a.noconvert(), "packed"_a.noconvert(), "geom"_a,
        "kind"_a, "oc"_a, "kbits"_a, "a_bits"_a, "w_bits"_a, "tap_sums"_a.noconvert(),
        "pad_value"_a, "w_pop"_a.noconvert(), "stage"_a, "out"_a.noconvert(),
        "thr"_a.noconvert(), "flip"_a.noconvert(), "scale"_a.noconvert(), "bias"_a.noconvert(),
        "path"_a, "variant"_a, "threads"_a,
        "Bitwise conv2d on packed NHWC words (kinds and stages: csrc/bconv/bconv.h).");

  m.def(
      "pack_bitplanes",
      [](In2<uint8_t> x, Out3<uint64_t> out, int bits, const std::string& path, int threads) {
        check_path(path);
        check_threads(threads);
        if (bits < 1 || bits > 8) throw nb::value_error("pack_bitplanes: bits must be in 1..8");
        const int64_t rows = x.shape(0), k = x.shape(1);
        if (static_cast<int64_t>(out.shape(0)) != rows || static_cast<int64_t>(out.shape(1)) != bits ||
            static_cast<int64_t>(out.shape(2)) != (k + 63) / 64)
          throw nb::value_error("pack_bitplanes: out must have shape (rows, bits, ceil(k/64))");
        nb::gil_scoped_release unlocked;
        lowbit::pack_bitplanes(x.data(), rows, k, bits, out.data(), path, threads);
      },
      "x"_a.noconvert(), "out"_a.noconvert(), "bits"_a, "path"_a, "threads"_a,
      "Bit planes of uint8 levels x (rows, k) into out (rows, bits, ceil(k/64)) uint64.");

  m.def(
      "binary_maxpool2d",
      [](In4<uint64_t> x, Out4<uint64_t> out, const std::vector<int64_t>& geom, int threads) {
        check_threads(threads);
        if (geom.size() != 6) throw nb::value_error("binary_maxpool2d: geom must be [kh, kw, sh, sw, ph, pw]");
        const int64_t n = x.shape(0), h = x.shape(1), w = x.shape(2), cw = x.shape(3);
        const int64_t kh = geom[0], kw = geom[1], sh = geom[2], sw = geom[3], ph = geom[4], pw = geom[5];
        if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw)
          throw nb::value_error("binary_maxpool2d: bad kernel / stride / padding (padding <= kernel/2)");
        if (h + 2 * ph < kh || w + 2 * pw < kw) throw nb::value_error("binary_maxpool2d: kernel larger than input");
        const int64_t oh = (h + 2 * ph - kh) / sh + 1, ow = (w + 2 * pw - kw) / sw + 1;
        if (static_cast<int64_t>(out.shape(0)) != n || static_cast<int64_t>(out.shape(1)) != oh ||
            static_cast<int64_t>(out.shape(2)) != ow || static_cast<int64_t>(out.shape(3)) != cw)
          throw nb::value_error("binary_maxpool2d: out must have shape (n, oh, ow, cw)");
        nb::gil_scoped_release unlocked;
        lowbit::binary_maxpool2d(x.data(), n, h, w, cw, kh, kw, sh, sw, ph, pw, oh, ow, out.data(), threads);
      },
      "x"_a.noconvert(), "out"_a.noconvert(), "geom"_a, "threads"_a,
      "OR-pooling of packed ±1 NHWC words (= max pooling of ±1 values).");

  m.def(
      "calibrate_peak",
      [](const std::string& which, double seconds) {
        const std::string need = which == "vpopcntq" ? "avx512" : "avx2";
        if (which != "popcnt" && which != "nlut" && which != "vpopcntq")
          throw nb::value_error("calibrate_peak: which must be 'popcnt', 'nlut' or 'vpopcntq'");
        check_path(need);
        nb::gil_scoped_release unlocked;
        return lowbit::calibrate_peak(which, seconds);
      },
      "which"_a, "seconds"_a = 0.2,
      "Binary GMAC/s of a register-only loop of a kernel's instruction mix (thread CPU time).");

  nb::class_<PyGraph>(m, "Graph", "The native graph executor (csrc/graph/executor.h); built by lowbit.runtime.native.")
      .def(nb::init<int>(), "threads"_a)
      .def("add_op", &PyGraph::add_op, "kind"_a, "label"_a, "inputs"_a, "attrs"_a,
           "Add an op; returns the id of the value it defines (errors name the op).")
      .def("value", &PyGraph::value, "v"_a, "[bits, h, w, c] of value v (per image).")
      .def("set_outputs", &PyGraph::outputs, "outputs"_a)
      .def("run", &PyGraph::run, "x"_a.noconvert(), "outs"_a.noconvert(), "profile"_a = false,
           "record"_a = false, "poison"_a = false,
           "Run one batch; outputs in torch's layout.  With profile or record: returns (per-op "
           "seconds, [(op index, int32 accumulators)]) of this call.")
      .def("op_seconds", &PyGraph::op_seconds, "Per-op wall seconds of the last profiled run.")
      .def("arena_bytes", &PyGraph::arena_bytes, "n"_a, "Arena bytes for a batch of n.")
      .def("unshared_bytes", &PyGraph::unshared_bytes, "n"_a,
           "Bytes of all values and temporaries for a batch of n if none shared memory.")
      .def("records", &PyGraph::records, "(op index, int32 accumulators) of the last recorded run.");

  m.def(
      "fgemm",
      [](nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> a,
         nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> b, bool b_trans,
         Out2<float> out, const std::string& path) {
        check_path(path);
        const int64_t M = a.shape(0), K = a.shape(1);
        const int64_t N = b_trans ? b.shape(0) : b.shape(1);
        if ((b_trans ? b.shape(1) : b.shape(0)) != static_cast<size_t>(K))
          throw nb::value_error("fgemm: inner dimensions differ");
        if (static_cast<int64_t>(out.shape(0)) != M || static_cast<int64_t>(out.shape(1)) != N)
          throw nb::value_error("fgemm: out must have shape (M, N)");
        auto fn = lowbit::find_fgemm(path);
        nb::gil_scoped_release unlocked;
        fn(a.data(), K, b.data(), b_trans ? K : N, b_trans, out.data(), N, M, K, N);
      },
      "a"_a.noconvert(), "b"_a.noconvert(), "b_trans"_a, "out"_a.noconvert(), "path"_a,
      "out = a @ (b.T if b_trans else b), float32, on the graph executor's Eigen GEMM of a CPU "
      "path (csrc/graph/fgemm.h); for tests and benchmarks.");
  m.attr("has_eigen") = true;
}
