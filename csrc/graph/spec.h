// The graph executor's vocabulary: values, borrowed arrays, op attributes, the per-element
// output programs (epilogues) that fuse float affine steps into the op that produces a value,
// and the Op interface.  No Python here: bindings.cpp turns Python objects into OpSpec.
//
// Values (per image; the batch axis n is added at run time):
//   float  (h, w, c) float32, NHWC, channel fastest; a 1-D value (F,) is (1, 1, F);
//   bits   (h, w, c) packed ±1: (h, w, ceil(c/64)) uint64 words, pad bits 0 (docs/design.md).
// A value's buffer lives in the executor's arena (arena.h) from the op that writes it to the
// last op that reads it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace lowbit {
namespace graph {

struct Value {
  bool bits = false;
  int64_t h = 1, w = 1, c = 1;
  int64_t words() const { return (c + 63) / 64; }
  // elements (floats or words) per image
  int64_t elems() const { return h * w * (bits ? words() : c); }
  int64_t bytes() const { return elems() * (bits ? 8 : 4); }
};

// An array owned by the caller (the Python side keeps it alive as long as the plan).
struct ArrayRef {
  const void* data = nullptr;
  int64_t size = 0;   // elements
  char dtype = 0;     // 'f' float32, 'd' float64, 'i' int32, 'u' uint64, 'b' uint8
};

// What one op of the plan is: kind, a label for errors ("op 3 'conv2' (qconv2d)"), input
// value ids, named integer / float / string / array attributes.
struct OpSpec {
  std::string kind, label;
  std::vector<int> inputs;
  std::map<std::string, int64_t> ints;
  std::map<std::string, double> floats;
  std::map<std::string, std::string> strs;
  std::map<std::string, ArrayRef> arrays;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::invalid_argument(label + ": " + what);
  }
  int64_t i(const std::string& k) const {
    auto it = ints.find(k);
    if (it == ints.end()) fail("missing integer attribute '" + k + "'");
    return it->second;
  }
  int64_t i(const std::string& k, int64_t dflt) const {
    auto it = ints.find(k);
    return it == ints.end() ? dflt : it->second;
  }
  double f(const std::string& k) const {
    auto it = floats.find(k);
    if (it != floats.end()) return it->second;
    auto jt = ints.find(k);
    if (jt == ints.end()) fail("missing number attribute '" + k + "'");
    return static_cast<double>(jt->second);
  }
  std::string s(const std::string& k, const std::string& dflt = "") const {
    auto it = strs.find(k);
    return it == strs.end() ? dflt : it->second;
  }
  bool has(const std::string& k) const { return arrays.count(k) != 0; }
  // The array `k` of dtype `t` with exactly `n` elements (n < 0: any size).
  template <class T>
  const T* a(const std::string& k, char t, int64_t n) const {
    auto it = arrays.find(k);
    if (it == arrays.end()) fail("missing array '" + k + "'");
    if (it->second.dtype != t) fail("array '" + k + "' has the wrong dtype");
    if (n >= 0 && it->second.size != n)
      fail("array '" + k + "' has " + std::to_string(it->second.size) + " elements, expected " +
           std::to_string(n));
    return static_cast<const T*>(it->second.data);
  }
  int64_t size(const std::string& k) const {
    auto it = arrays.find(k);
    return it == arrays.end() ? -1 : it->second.size;
  }
};

// ---- output programs ----------------------------------------------------------------------
// A float value is produced one pixel row (c channels) at a time; a program of steps rewrites
// the row in place, each step exactly as the Python executor (lowbit.runtime) computes it
// with numpy float32 (two roundings where numpy has two: no FMA, the build uses
// -ffp-contract=off), so fusing BatchNorm / activations into a conv changes no bit.
enum class StepCode : int {
  kRound = 0,     // nearbyint (half to even, np.round)
  kMulC = 1,      // x *= v[ch]
  kMulS = 2,      // x *= s
  kMulPixel = 3,  // x *= kfac[pixel] (XNOR-Net's K, computed by the op)
  kAddC = 4,      // x += v[ch]
  kBn = 5,        // x = f32(f64(x) * a[ch] + b[ch])  (torch eval BatchNorm, lowbit.codec.fold)
  kRelu = 6,      // max(x, 0)
  kClamp = 7,     // min(max(x, lo), hi)  (hardtanh, np.clip)
  kPreluC = 8,    // x > 0 ? x : x * v[ch]
  kPreluS = 9,    // x > 0 ? x : x * s
  kActQuant = 10, // round(clamp(x, 0, 1) * s) / s  (DoReFa k-bit activation, s = 2^k - 1)
};

struct Step {
  StepCode code;
  const float* v = nullptr;
  const double* a = nullptr;
  const double* b = nullptr;
  float s = 0.f, lo = 0.f, hi = 0.f;
};

// Steps from an OpSpec: ints "steps" = count, per step k: ints "step{k}" = code, arrays
// "step{k}.v" (float32, c or 1), "step{k}.a"/"step{k}.b" (float64, c), floats
// "step{k}.s"/".lo"/".hi".  c = channels of the row the program runs on.  Another prefix
// names a second program of the op ("post": "posts", "post{k}", ...).
inline std::vector<Step> read_program(const OpSpec& sp, int64_t c, const std::string& pre = "step") {
  std::vector<Step> prog;
  const int64_t n = sp.i(pre + "s", 0);
  for (int64_t k = 0; k < n; ++k) {
    const std::string p = pre + std::to_string(k);
    Step st;
    const int64_t code = sp.i(p);
    if (code < 0 || code > 10) sp.fail("unknown output step code " + std::to_string(code));
    st.code = static_cast<StepCode>(code);
    switch (st.code) {
      case StepCode::kMulC: case StepCode::kAddC: case StepCode::kPreluC:
        st.v = sp.a<float>(p + ".v", 'f', c); break;
      case StepCode::kBn:
        st.a = sp.a<double>(p + ".a", 'd', c); st.b = sp.a<double>(p + ".b", 'd', c); break;
      case StepCode::kMulS: case StepCode::kPreluS: case StepCode::kActQuant:
        st.s = static_cast<float>(sp.f(p + ".s")); break;
      case StepCode::kClamp:
        st.lo = static_cast<float>(sp.f(p + ".lo")); st.hi = static_cast<float>(sp.f(p + ".hi")); break;
      default: break;
    }
    prog.push_back(st);
  }
  return prog;
}

// One step of a program on one row x[0..c) of pixel `pixel` (kfac: per-pixel factors or null).
inline void run_step(const Step& st, float* x, int64_t c, int64_t pixel, const float* kfac) {
  {
    switch (st.code) {
      case StepCode::kRound: for (int64_t j = 0; j < c; ++j) x[j] = std::nearbyint(x[j]); break;
      case StepCode::kMulC: for (int64_t j = 0; j < c; ++j) x[j] *= st.v[j]; break;
      case StepCode::kMulS: for (int64_t j = 0; j < c; ++j) x[j] *= st.s; break;
      case StepCode::kMulPixel: {
        const float k = kfac[pixel];
        for (int64_t j = 0; j < c; ++j) x[j] *= k;
        break;
      }
      case StepCode::kAddC: for (int64_t j = 0; j < c; ++j) x[j] += st.v[j]; break;
      case StepCode::kBn:
        for (int64_t j = 0; j < c; ++j)
          x[j] = static_cast<float>(static_cast<double>(x[j]) * st.a[j] + st.b[j]);
        break;
      case StepCode::kRelu:
        for (int64_t j = 0; j < c; ++j) x[j] = x[j] >= 0.f || std::isnan(x[j]) ? x[j] : 0.f;
        break;
      case StepCode::kClamp:
        for (int64_t j = 0; j < c; ++j) {
          const float y = x[j] < st.lo ? st.lo : x[j];
          x[j] = y > st.hi ? st.hi : y;
        }
        break;
      case StepCode::kPreluC: for (int64_t j = 0; j < c; ++j) x[j] = x[j] > 0.f ? x[j] : x[j] * st.v[j]; break;
      case StepCode::kPreluS: for (int64_t j = 0; j < c; ++j) x[j] = x[j] > 0.f ? x[j] : x[j] * st.s; break;
      case StepCode::kActQuant:
        for (int64_t j = 0; j < c; ++j) {
          const float y = x[j] < 0.f ? 0.f : (x[j] > 1.f ? 1.f : x[j]);
          x[j] = std::nearbyint(y * st.s) / st.s;
        }
        break;
    }
  }
}

// Runs `prog` on one row x[0..c) of pixel `pixel`.
inline void run_program(const std::vector<Step>& prog, float* x, int64_t c, int64_t pixel,
                        const float* kfac) {
  for (const Step& st : prog) run_step(st, x, c, pixel, kfac);
}

// run_program on rows x[r * c .. r * c + c) of pixels pixel0 + r, r < rows: the same steps
// on every element, in the same order per element; the common steps (+ v, x v, relu) loop
// over the whole block at once instead of dispatching per short row.
inline void run_program_rows(const std::vector<Step>& prog, float* x, int64_t rows, int64_t c,
                             int64_t pixel0, const float* kfac) {
  for (const Step& st : prog) {
    switch (st.code) {
      case StepCode::kAddC:
        for (int64_t r = 0; r < rows; ++r) {
          float* y = x + r * c;
          for (int64_t j = 0; j < c; ++j) y[j] += st.v[j];
        }
        break;
      case StepCode::kMulC:
        for (int64_t r = 0; r < rows; ++r) {
          float* y = x + r * c;
          for (int64_t j = 0; j < c; ++j) y[j] *= st.v[j];
        }
        break;
      case StepCode::kRelu:
        for (int64_t j = 0; j < rows * c; ++j) x[j] = x[j] >= 0.f || std::isnan(x[j]) ? x[j] : 0.f;
        break;
      default:
        for (int64_t r = 0; r < rows; ++r) run_step(st, x + r * c, c, pixel0 + r, kfac);
    }
  }
}

inline bool program_uses_kfac(const std::vector<Step>& prog) {
  for (const Step& st : prog)
    if (st.code == StepCode::kMulPixel) return true;
  return false;
}

// ---- ops ------------------------------------------------------------------------------------
// What an op sees while it runs: the batch, threads, its inputs' / output's / temporaries'
// memory (all in the arena), and the opt-in accumulator record.
struct Ctx {
  int64_t n = 1;
  int threads = 1;
  bool record = false;
  std::vector<const void*> in;
  void* out = nullptr;
  std::vector<void*> tmp;
};

class Op {
 public:
  explicit Op(const OpSpec& sp) : label(sp.label), kind(sp.kind), inputs(sp.inputs) {}
  virtual ~Op() = default;
  // Bytes of each temporary buffer for a batch of n (asked at plan time, per batch size).
  virtual std::vector<int64_t> temps(int64_t /*n*/, int /*threads*/) const { return {}; }
  virtual void run(Ctx& c) = 0;
  // Opt-in integer accumulators of the last run (bitwise layers): (n, oh, ow, oc) int32.
  virtual const std::vector<int32_t>* recorded() const { return nullptr; }

  std::string label, kind;
  std::vector<int> inputs;
  Value out;  // set by the constructor from the inputs' values (checked)
};

}  // namespace graph
}  // namespace lowbit
