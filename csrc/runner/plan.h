// The native executor's plan built in C++ from a model file: the C++ twin of
// lowbit.runtime.graph.Runtime's planning (QLayer weight layouts, BatchNorm affines and
// float thresholds) and lowbit.runtime.native.NativeGraph (graph op -> executor ops, fused
// output programs, bits conversions).  Same decisions, same float32 / float64 roundings, so
// the runner computes what the Python runtime's native executor computes, bit for bit.
//
// Graph checks: version 1 (upgraded) / 2, known ops, inputs defined before use, single
// definitions, tensor references, the quantized layers' attributes and weight encodings,
// 0/1 flips, int32 thresholds, variances >= 0, the packed layouts; sizes are checked by the
// executor's ops as they are added (the plan fails with the op's label).
#pragma once

#include <cmath>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "bconv/driver.h"
#include "common/target.h"
#include "graph/executor.h"
#include "runner/model.h"

namespace lowbit {
namespace runner {

namespace G = lowbit::graph;

struct NotNative : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Arrays owned by the plan (the executor borrows them), 64-byte aligned.
class Store {
 public:
  template <class T>
  G::ArrayRef put(const std::vector<T>& v, char dtype) {
    const size_t bytes = v.size() * sizeof(T);
    bufs_.push_back(aligned_bytes(bytes ? bytes : 1));
    if (bytes) std::memcpy(bufs_.back().get(), v.data(), bytes);
    total += static_cast<int64_t>(bytes);
    G::ArrayRef r;
    r.data = bufs_.back().get();
    r.size = static_cast<int64_t>(v.size());
    r.dtype = dtype;
    return r;
  }
  int64_t total = 0;

 private:
  std::deque<Bytes> bufs_;
};

inline G::ArrayRef arr(Store& st, const std::vector<float>& v) { return st.put(v, 'f'); }
inline G::ArrayRef arr(Store& st, const std::vector<double>& v) { return st.put(v, 'd'); }
inline G::ArrayRef arr(Store& st, const std::vector<int32_t>& v) { return st.put(v, 'i'); }
inline G::ArrayRef arr(Store& st, const std::vector<uint64_t>& v) { return st.put(v, 'u'); }
inline G::ArrayRef arr(Store& st, const std::vector<uint8_t>& v) { return st.put(v, 'b'); }

inline int popcount64(uint64_t x) { return static_cast<int>(popcount_swar(x)); }

// ---- lowbit.codec.fold ----------------------------------------------------------------------
struct Affine { std::vector<double> a, b; };

inline Affine bn_affine(const std::vector<float>& g, const std::vector<float>& beta, const std::vector<float>& mean,
                        const std::vector<float>& var, double eps) {
  Affine r;
  const float e = static_cast<float>(eps);
  for (size_t j = 0; j < g.size(); ++j) {
    volatile float s = var[j] + e;
    const float invstd = 1.0f / std::sqrt(static_cast<float>(s));
    const float a = invstd * g[j];
    const double bb = static_cast<double>(beta[j]) - static_cast<double>(mean[j]) * static_cast<double>(a);
    r.a.push_back(static_cast<double>(a));
    r.b.push_back(static_cast<double>(static_cast<float>(bb)));
  }
  return r;
}

inline float key_to_f32(int64_t k) {
  const uint32_t m = static_cast<uint32_t>(k < 0 ? -k : k);
  float f;
  std::memcpy(&f, &m, 4);
  return k < 0 ? -f : f;
}

// fold_float_threshold: (t, s) with sign(BN(x)) = +1 <=> s * (x - t) >= 0 (bisection over
// the ordered float32 values, as Python does it).
inline void fold_float_threshold(const Affine& af, std::vector<float>& t, std::vector<float>& s) {
  const int64_t kMax = 0x7F7FFFFF;
  const size_t c = af.a.size();
  auto bit = [&](size_t j, int64_t key) {
    const float x = key_to_f32(key);
    const float y = static_cast<float>(static_cast<double>(x) * af.a[j] + af.b[j]);
    return y >= 0.f;
  };
  t.assign(c, 0.f);
  s.assign(c, 1.f);
  for (size_t j = 0; j < c; ++j) {
    const bool lo_bit = bit(j, -kMax), hi_bit = bit(j, kMax);
    const bool inc = !lo_bit && hi_bit, dec = lo_bit && !hi_bit;
    int64_t lo = -kMax, hi = kMax;
    while ((inc || dec) && hi - lo > 1) {
      const int64_t mid = (lo + hi) >> 1;  // floor division, like numpy's //
      const bool b = bit(j, mid);
      const bool up = inc ? !b : b;
      if (up) lo = mid; else hi = mid;
    }
    t[j] = lo_bit && hi_bit ? -INFINITY : INFINITY;
    if (inc) t[j] = key_to_f32(hi);
    if (dec) { t[j] = key_to_f32(lo); s[j] = -1.f; }
  }
}

// ---- the plan -------------------------------------------------------------------------------
inline std::string best_path() {
  const auto paths = compiled_paths();
  std::string best = "portable";
  for (const auto& p : paths)
    if (path_available(p)) best = p;
  return best;
}

struct PW {   // PackedWeights (lowbit.runtime.weights)
  std::string kind, variant;
  int64_t oc = 0, kh = 1, kw = 1, c = 0, w_bits = 1;
  std::vector<uint64_t> packed;
  std::vector<int32_t> tap_sums, w_pop;
};

struct QL {   // QLayer (lowbit.runtime.ops)
  std::string name, mode, kind, out;
  bool conv = false, spatial = false, flat_dense = false, integer_acc = false;
  int64_t a_bits = 1, c = 0, oc = 0, kernel[2] = {1, 1}, stride[2] = {1, 1}, padding[2] = {0, 0}, pad_value = 0;
  bool has_sw = false, has_bias = false, has_sx = false;
  std::vector<float> sw, bias, w_float;
  float sx = 0.f;
  std::vector<int32_t> thr;
  std::vector<uint8_t> flip;
  PW pw, pw_ones;
  int64_t step = 1, offset = 0;
};

enum Steps { ROUND, MUL_C, MUL_S, MUL_PIXEL, ADD_C, BN, RELU, CLAMP, PRELU_C, PRELU_S, ACT_QUANT };
struct StepV {
  int code;
  std::vector<float> v;
  std::vector<double> a, b;
  double s = 0, lo = 0, hi = 0;
  bool has_s = false;
};

class Plan {
 public:
  Plan(const ModelFile& mf, const std::string& path, int threads)
      : mf_(mf), where_(mf.where()), path_(path), ex(threads) {
    if (!path_available(path_)) throw std::invalid_argument("kernel path '" + path_ + "' does not run on this CPU");
    parse_graph();
    for (size_t i = 0; i < ops_.size(); ++i) plan_op(static_cast<int>(i));
    build();
  }

  G::Executor ex;
  std::vector<int64_t> in_shape;      // (C, H, W) or (F,)
  std::vector<std::string> outputs;
  std::vector<int> out_ids;
  int64_t weight_bytes() const { return store_.total; }

 private:
  const ModelFile& mf_;
  std::string where_, path_;
  json g_;
  std::vector<json> ops_;
  std::map<std::string, std::vector<int>> readers_;
  std::map<std::string, QL> layers_;
  std::map<int, Affine> bn_;
  std::map<int, std::pair<std::vector<float>, std::vector<float>>> bn_sign_;
  std::map<std::string, std::vector<float>> float_;
  std::map<std::string, std::pair<int64_t, int64_t>> kshape_;
  std::vector<float> table_;
  Store store_;
  // NativeGraph state
  std::map<std::string, int> ids_;
  std::set<std::string> flat_alias_;
  std::map<std::string, int> pre_flat_;
  std::map<std::pair<std::string, bool>, int> conv_cache_;
  std::set<int> fused_;

  [[noreturn]] void bad(const std::string& what) const { throw FormatError(where_ + ": graph: " + what); }

  // ---- lowbit.codec.graph.parse (the checks the runner relies on) --------------------------
  static bool ints(const json& v, size_t n, int64_t lo) {
    if (!v.is_array() || v.size() != n) return false;
    for (const json& a : v)
      if (!a.is_number_integer() || a.get<int64_t>() < lo || a.get<int64_t>() > 2147483647) return false;
    return true;
  }

  void parse_graph() {
    const json& graph = mf_.graph;
    const json ver = graph.contains("version") ? graph["version"] : json(1);
    if (!(ver.is_number_integer() && (ver.get<int64_t>() == 1 || ver.get<int64_t>() == 2)))
      bad("version " + shortj(ver) + " is not supported by this lowbit (it reads versions 1, 2); "
          "the file was written by a newer lowbit: upgrade lowbit to run it");
    if (ver.get<int64_t>() == 1) {   // upgrade_v1
      if (!graph.contains("ops") || !graph["ops"].is_array()) bad("field 'ops': expected a list");
      json spec = graph.contains("input") && !graph["input"].is_null() ? graph["input"] : json{{"shape", nullptr}, {"dtype", "uint8"}};
      if (!spec.is_object()) bad("field 'input': expected an object");
      spec["name"] = "input";
      std::string prev = "input";
      json ops = json::array();
      for (size_t i = 0; i < graph["ops"].size(); ++i) {
        json op = graph["ops"][i];
        if (!op.is_object()) bad("op " + std::to_string(i) + ": expected an object");
        const std::string v = "v" + std::to_string(i);
        op["inputs"] = json::array({prev});
        op["outputs"] = json::array({v});
        ops.push_back(op);
        prev = v;
      }
      g_ = {{"version", 2}, {"inputs", json::array({spec})}, {"ops", ops}, {"outputs", json::array({prev})}};
    } else {
      g_ = graph;
    }
    if (!g_.contains("inputs") || !g_["inputs"].is_array() || g_["inputs"].empty()) bad("field 'inputs': expected a non-empty list");
    if (!g_.contains("ops") || !g_["ops"].is_array()) bad("field 'ops': expected a list");
    if (g_["inputs"].size() != 1)
      throw NotNative(where_ + ": graph has " + std::to_string(g_["inputs"].size()) + " inputs; this runtime runs single-input graphs");
    std::set<std::string> defined, names;
    const json& spec = g_["inputs"][0];
    if (!spec.is_object() || !spec.contains("name") || !spec["name"].is_string() || spec["name"].get<std::string>().empty())
      bad("input 0: field 'name': expected a new non-empty string");
    if (!spec.contains("shape") || spec["shape"].is_null()) bad("input 'input': field 'shape' is missing");
    const json& shape = spec["shape"];
    if (!(shape.is_array() && (shape.size() == 1 || shape.size() == 3) && ints(shape, shape.size(), 1)))
      bad("input 0: field 'shape': expected [C, H, W] (or [F]) of positive integers, got " + shortj(shape));
    for (const json& v : shape) in_shape.push_back(v.get<int64_t>());
    defined.insert(spec["name"].get<std::string>());
    static const std::map<std::string, std::pair<int, int>> arity = {
        {"conv2d", {1, 1}}, {"dense", {1, 1}}, {"qconv2d", {1, 1}}, {"qdense", {1, 1}}, {"batchnorm", {1, 1}},
        {"maxpool2d", {1, 1}}, {"avgpool2d", {1, 1}}, {"global_avgpool", {1, 1}}, {"upsample", {1, 1}},
        {"relu", {1, 1}}, {"hardtanh", {1, 1}}, {"prelu", {1, 1}}, {"sign", {1, 1}}, {"act_quant", {1, 1}},
        {"flatten", {1, 1}}, {"add", {2, 1 << 30}}, {"concat", {2, 1 << 30}}};
    static const std::map<std::string, std::vector<std::string>> required = {
        {"conv2d", {"weight", "stride", "padding"}}, {"dense", {"weight"}},
        {"qconv2d", {"name", "in", "a_bits", "w_bits", "weight", "w_levels", "integer_acc", "in_channels", "out_channels", "kernel", "stride", "padding", "pad_value", "out"}},
        {"qdense", {"name", "in", "a_bits", "w_bits", "weight", "w_levels", "integer_acc", "in_channels", "out_channels", "kernel", "stride", "padding", "pad_value", "out"}},
        {"batchnorm", {"gamma", "beta", "mean", "var", "eps"}}, {"maxpool2d", {"kernel", "stride"}},
        {"avgpool2d", {"kernel", "stride", "padding"}}, {"upsample", {"scale"}}, {"hardtanh", {"min", "max"}},
        {"prelu", {"weight"}}, {"act_quant", {"bits"}}};
    static const std::map<std::string, std::vector<std::string>> tensor_attrs = {
        {"conv2d", {"weight", "bias"}}, {"dense", {"weight", "bias"}},
        {"qconv2d", {"weight", "sw", "bias", "threshold", "flip"}}, {"qdense", {"weight", "sw", "bias", "threshold", "flip"}},
        {"batchnorm", {"gamma", "beta", "mean", "var"}}, {"prelu", {"weight"}}};
    for (size_t i = 0; i < g_["ops"].size(); ++i) {
      const json& op = g_["ops"][i];
      std::string label = "op " + std::to_string(i);
      if (!op.is_object()) bad(label + ": expected an object");
      if (op.contains("name") && op["name"].is_string()) label += " '" + op["name"].get<std::string>() + "'";
      const json kind = op.value("op", json());
      if (!kind.is_string() || !arity.count(kind.get<std::string>())) bad(label + ": field 'op': unknown op " + shortj(kind));
      const std::string k = kind.get<std::string>();
      label += " (" + k + ")";
      const json ins = op.value("inputs", json()), outs = op.value("outputs", json());
      bool ok = ins.is_array() && static_cast<int>(ins.size()) >= arity.at(k).first && static_cast<int>(ins.size()) <= arity.at(k).second;
      if (ok) for (const json& v : ins) ok &= v.is_string();
      if (!ok) bad(label + ": field 'inputs': expected a list of value names, got " + shortj(ins));
      for (const json& v : ins)
        if (!defined.count(v.get<std::string>())) bad(label + ": input '" + v.get<std::string>() + "' is not defined by a graph input or an earlier op");
      if (!(outs.is_array() && outs.size() == 1 && outs[0].is_string() && !outs[0].get<std::string>().empty()))
        bad(label + ": field 'outputs': expected one value name, got " + shortj(outs));
      if (defined.count(outs[0].get<std::string>())) bad(label + ": output '" + outs[0].get<std::string>() + "' is already defined");
      if (required.count(k))
        for (const auto& r : required.at(k))
          if (!op.contains(r)) bad(label + ": missing field(s) '" + r + "'");
      if (tensor_attrs.count(k))
        for (const auto& t : tensor_attrs.at(k)) {
          if (!op.contains(t) || op[t].is_null()) continue;
          if (!op[t].is_string() || !mf_.entries.contains(op[t].get<std::string>()))
            bad(label + ": field '" + t + "': no tensor " + shortj(op[t]) + " in the file");
          const std::string tn = op[t].get<std::string>();
          const std::string enc = mf_.enc(tn);
          const bool qweight = (k == "qconv2d" || k == "qdense") && t == "weight" && op["w_levels"] != "float";
          if (qweight) {
            const json& e = mf_.entries[tn];
            if (enc != "packed" || e.value("levels", json()) != op["w_levels"])
              bad(label + ": field 'weight': w_levels " + shortj(op["w_levels"]) + " needs a packed tensor of those levels");
            if (op["w_levels"] == "planes" && e.value("bits", json()) != op["w_bits"])
              bad(label + ": field 'w_bits': the packed weight has another number of bit planes");
          } else if (enc == "packed") {
            bad(label + ": field '" + t + "': '" + tn + "' is a packed tensor of weight levels; this field takes a float tensor");
          }
          mf_.tensor_shape(tn);   // the encoding's checks (dc: refused here)
        }
      for (const char* key : {"kernel", "stride", "padding", "scale"}) {
        if (!op.contains(key) || op[key].is_null()) continue;
        const int64_t lo = std::string(key) == "padding" ? 0 : 1;
        if (!ints(op[key], 2, lo)) bad(label + ": field '" + key + "': expected two integers >= " + std::to_string(lo));
      }
      if ((k == "conv2d" || k == "qconv2d") && (op["stride"].is_null() || op["padding"].is_null()))
        bad(label + ": fields 'stride', 'padding': expected two integers each");
      if ((k == "maxpool2d" || k == "avgpool2d") && op["kernel"].is_null()) bad(label + ": field 'kernel': expected two integers");
      if (k == "upsample" && op["scale"].is_null()) bad(label + ": field 'scale': expected two integers");
      if (k == "batchnorm" && !(op["eps"].is_number() && std::isfinite(op["eps"].get<double>()) && op["eps"].get<double>() > 0))
        bad(label + ": field 'eps': expected a positive number");
      if (k == "act_quant" && !(op["bits"].is_number_integer() && op["bits"].get<int64_t>() >= 1 && op["bits"].get<int64_t>() <= 16))
        bad(label + ": field 'bits': expected an integer 1..16");
      if (k == "hardtanh" && !(op["min"].is_number() && op["max"].is_number() && !op["min"].is_boolean() &&
                               std::isfinite(op["min"].get<double>()) && std::isfinite(op["max"].get<double>()) &&
                               op["min"].get<double>() < op["max"].get<double>()))
        bad(label + ": fields 'min', 'max': expected finite numbers min < max");
      if (k == "qconv2d" || k == "qdense") check_qlayer(label, op);
      check_values(label, op);
      if (op.contains("name") && !op["name"].is_null()) {
        if (!op["name"].is_string() || op["name"].get<std::string>().empty() || names.count(op["name"].get<std::string>()))
          bad(label + ": field 'name': expected a unique string");
        names.insert(op["name"].get<std::string>());
      }
      defined.insert(outs[0].get<std::string>());
      ops_.push_back(op);
    }
    const json outs = g_.value("outputs", json());
    bool ok = outs.is_array() && !outs.empty();
    if (ok) for (const json& v : outs) ok &= v.is_string() && defined.count(v.get<std::string>());
    if (!ok) bad("field 'outputs': expected a non-empty list of defined values, got " + shortj(outs));
    for (const json& v : outs) outputs.push_back(v.get<std::string>());
    for (size_t i = 0; i < ops_.size(); ++i)
      for (const json& v : ops_[i]["inputs"]) readers_[v.get<std::string>()].push_back(static_cast<int>(i));
    for (const auto& v : outputs) readers_[v].push_back(-1);
  }

  void check_qlayer(const std::string& w, const json& op) const {
    auto posint = [](const json& v, int64_t lo, int64_t hi) {
      return v.is_number_integer() && v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
    };
    if (!op["name"].is_string() || op["name"].get<std::string>().empty()) bad(w + ": field 'name': a quantized layer needs a non-empty name");
    for (const char* k : {"in_channels", "out_channels"})
      if (!posint(op[k], 1, 2147483647)) bad(w + ": field '" + k + "': expected a positive integer");
    for (const char* k : {"a_bits", "w_bits"})
      if (!posint(op[k], 1, 32)) bad(w + ": field '" + k + "': expected an integer 1..32");
    static const std::set<std::string> modes = {"sign", "xnor", "uint8", "dorefa", "dorefa-float", "float"};
    static const std::set<std::string> levels = {"binary", "ternary", "planes", "float"};
    if (!op["in"].is_string() || !modes.count(op["in"].get<std::string>())) bad(w + ": field 'in': unknown input mode");
    if (!op["w_levels"].is_string() || !levels.count(op["w_levels"].get<std::string>())) bad(w + ": field 'w_levels': unknown levels");
    if (!(op["out"] == "float" || op["out"] == "bits")) bad(w + ": field 'out': expected 'float' or 'bits'");
    if (!op["integer_acc"].is_boolean()) bad(w + ": field 'integer_acc': expected true or false");
    const json& pv = op["pad_value"];
    if (!(pv.is_number() && !pv.is_boolean() && (pv.get<double>() == -1 || pv.get<double>() == 0 || pv.get<double>() == 1)))
      bad(w + ": field 'pad_value': expected -1, 0 or 1");
    if (op.contains("sx") && !op["sx"].is_null() && !(op["sx"].is_number() && !op["sx"].is_boolean() && std::isfinite(op["sx"].get<double>())))
      bad(w + ": field 'sx': expected a finite number or null");
    if (op["in"] == "uint8") {
      const json u8 = op.value("u8", json());
      if (op["a_bits"] != 8 || !(u8.is_object() && u8.contains("mean") && u8["mean"].is_number() && u8.contains("std") && u8["std"].is_number()))
        bad(w + ": input 'uint8' needs a_bits 8 and field 'u8' {'mean': number, 'std': number}");
    }
    const json sp = op.value("spatial", json());
    if (!sp.is_null() && !sp.is_boolean()) bad(w + ": field 'spatial': expected true, false or null");
    const bool spatial = sp.is_boolean() && sp.get<bool>();
    if (op["op"] == "qconv2d" && spatial) bad(w + ": field 'spatial': only a qdense layer reads a spatial input");
    if (op["op"] == "qdense" && (op["stride"] != json::array({1, 1}) || op["padding"] != json::array({0, 0}) ||
                                 (!spatial && op["kernel"] != json::array({1, 1}))))
      bad(w + ": a qdense layer has kernel [1, 1] (or, spatial, the input's [H, W]), stride [1, 1] and padding [0, 0]");
    if (op["out"] == "bits") {
      if (!op.contains("threshold") || op["threshold"].is_null() || !op.contains("flip") || op["flip"].is_null())
        bad(w + ": out 'bits' needs fields 'threshold' and 'flip'");
      if (bitwise_kind(op) == "float") bad(w + ": out 'bits' (a folded threshold stage) needs a layer on the bitwise kernels");
    }
    const json pool = op.value("pool", json());
    if (!pool.is_null()) {
      if (op["op"] != "qconv2d" || op["out"] != "bits") bad(w + ": field 'pool': only a qconv2d layer with out 'bits' pools its bits");
      if (!(pool.is_object() && pool.contains("kernel") && ints(pool["kernel"], 2, 1) &&
            (!pool.contains("stride") || pool["stride"].is_null() || ints(pool["stride"], 2, 1))))
        bad(w + ": field 'pool': expected {'kernel': [kh, kw], 'stride': [sh, sw]}");
    }
    // the packed weight's logical shape against the layer (shapes.infer)
    if (op["w_levels"] != "float") {
      const auto s = mf_.tensor_shape(op["weight"].get<std::string>());
      const int64_t oc = op["out_channels"].get<int64_t>(), c = op["in_channels"].get<int64_t>();
      const int64_t kh = op["kernel"][0].get<int64_t>(), kw = op["kernel"][1].get<int64_t>();
      if (s != std::vector<int64_t>{oc, kh, kw, c}) bad(w + ": field 'weight': shape does not match out_channels, kernel, in_channels");
    }
  }

  static std::string bitwise_kind(const json& op) {
    const std::string wl = op["w_levels"], mode = op["in"];
    const bool planes_in = (mode == "uint8" || mode == "dorefa") && op["a_bits"].get<int64_t>() <= 8;
    if ((mode == "sign" || mode == "xnor") && (wl == "binary" || wl == "ternary")) return wl;
    if (planes_in && wl == "binary") return "planes-binary";
    if (planes_in && wl == "planes" && op["w_bits"].get<int64_t>() <= 8) return "planes-planes";
    return "float";
  }

  void check_values(const std::string& w, const json& op) const {   // ModelFile.check_op_values
    const std::string kind = op["op"];
    if ((kind == "qconv2d" || kind == "qdense") && op["out"] == "bits") {
      for (float f : mf_.tensor(op["flip"].get<std::string>()))
        if (f != 0.f && f != 1.f) bad(w + ": field 'flip': values must be 0 or 1");
      const std::string tn = op["threshold"].get<std::string>();
      const Section& s = mf_.section(tn);
      if (mf_.enc(tn) == "raw")
        for (int64_t i = 0; i < s.count(); ++i) {
          const double v = element(s, i);
          // int32 sections hold int32 values by construction (numpy's abs wraps INT32_MIN)
          if (s.dkind == 'i' && s.itemsize <= 4) continue;
          if (!(v == std::nearbyint(v) && std::fabs(v) <= 2147483647.0))
            bad(w + ": field 'threshold': values must be integers in int32 range");
        }
    }
    if (kind == "batchnorm")
      for (float v : mf_.tensor(op["var"].get<std::string>()))
        if (v < 0) bad(w + ": field 'var': a running variance is negative");
  }

  // ---- Runtime._plan --------------------------------------------------------------------------
  static bool sign_reader(const json& op) {
    return op["op"] == "sign" || ((op["op"] == "qconv2d" || op["op"] == "qdense") && op["in"] == "sign");
  }

  std::vector<float> tensor(const json& name, std::vector<int64_t>* shape = nullptr) const {
    return mf_.tensor(name.get<std::string>(), shape);
  }

  void plan_op(int i) {
    const json& op = ops_[i];
    const std::string kind = op["op"];
    if (kind == "qconv2d" || kind == "qdense") {
      layers_[op["name"].get<std::string>()] = qlayer(op);
    } else if (kind == "batchnorm") {
      auto gm = tensor(op["gamma"]), bt = tensor(op["beta"]), mn = tensor(op["mean"]), vr = tensor(op["var"]);
      const size_t c = gm.size();
      if (bt.size() != c || mn.size() != c || vr.size() != c) bad("op " + std::to_string(i) + " (batchnorm): statistics of different sizes");
      Affine af = bn_affine(gm, bt, mn, vr, op["eps"].get<double>());
      const auto& users = readers_[op["outputs"][0].get<std::string>()];
      bool all = !users.empty();
      for (int u : users) all &= u >= 0 && sign_reader(ops_[static_cast<size_t>(u)]);
      if (all) {
        std::vector<float> t, s;
        fold_float_threshold(af, t, s);
        bn_sign_[i] = {t, s};
      }
      bn_[i] = af;
    } else if (kind == "conv2d" || kind == "dense") {
      for (const char* k : {"weight", "bias"}) {
        if (!op.contains(k) || op[k].is_null()) continue;
        std::vector<int64_t> sh;
        std::vector<float> t = tensor(op[k], &sh);
        if (kind == "conv2d" && std::string(k) == "weight") {
          if (sh.size() != 4) bad("op " + std::to_string(i) + " (conv2d): weight is not OIHW");
          kshape_[op[k].get<std::string>()] = {sh[2], sh[3]};
          t = conv_matrix(t, sh);
        }
        float_[op[k].get<std::string>()] = std::move(t);
      }
    } else if (kind == "prelu") {
      float_[op["weight"].get<std::string>()] = tensor(op["weight"]);
    }
  }

  // OIHW -> (KH*KW*C, O): rows (kh, kw, c)
  static std::vector<float> conv_matrix(const std::vector<float>& w, const std::vector<int64_t>& s) {
    const int64_t O = s[0], I = s[1], H = s[2], W = s[3];
    std::vector<float> m(w.size());
    for (int64_t o = 0; o < O; ++o)
      for (int64_t c = 0; c < I; ++c)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x) m[static_cast<size_t>(((y * W + x) * I + c) * O + o)] = w[static_cast<size_t>(((o * I + c) * H + y) * W + x)];
    return m;
  }

  // ---- weights (lowbit.runtime.weights._prepare) ------------------------------------------------
  std::string variant_for(bool dense, bool ternary) const {
    if (ternary) {
      const auto* k = bconv_detail::find_xkernel(path_, "", true);
      if (k) return k->variant;
    }
    if (dense && path_ == "avx2" && bconv_detail::find_xkernel(path_, "popcnt-2x4")) return "popcnt-2x4";
    const auto* k = bconv_detail::find_xkernel(path_, "", false);
    if (!k) throw std::invalid_argument("no bitwise kernel for path '" + path_ + "'");
    return k->variant;
  }

  void lay_out(PW& pw, const std::vector<uint64_t>& rows, int64_t n, int64_t wds) {
    const auto* kern = bconv_detail::find_xkernel(path_, pw.variant);
    pw.packed.assign(static_cast<size_t>(bconv_detail::packed_b_words(*kern, n, wds)), 0);
    if (!pw.packed.empty()) bconv_detail::pack_weights(*kern, rows.data(), n, wds, pw.packed.data());
  }

  // rows (oc, taps * cw) of a plane; popcount per (row, tap)
  static std::vector<int32_t> pop_rows(const uint64_t* w, int64_t rows, int64_t len) {
    std::vector<int32_t> r(static_cast<size_t>(rows), 0);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t k = 0; k < len; ++k) r[static_cast<size_t>(i)] += popcount64(w[i * len + k]);
    return r;
  }

  QL qlayer(const json& op) {
    QL L;
    L.name = op["name"];
    L.conv = op["op"] == "qconv2d";
    const json spatial = op.value("spatial", json(false));
    L.spatial = spatial.is_boolean() && spatial.get<bool>();
    L.mode = op["in"];
    L.a_bits = op["a_bits"];
    L.c = op["in_channels"];
    L.oc = op["out_channels"];
    for (int k = 0; k < 2; ++k) {
      L.kernel[k] = op["kernel"][k]; L.stride[k] = op["stride"][k]; L.padding[k] = op["padding"][k];
    }
    L.pad_value = static_cast<int64_t>(op["pad_value"].get<double>());
    L.flat_dense = !L.conv && !L.spatial;
    auto opt = [&](const char* k, std::vector<float>& dst) {
      if (!op.contains(k) || op[k].is_null()) return false;
      dst = tensor(op[k]);
      return true;
    };
    L.has_sw = opt("sw", L.sw);
    L.has_bias = opt("bias", L.bias);
    if (op.contains("sx") && !op["sx"].is_null()) { L.has_sx = true; L.sx = static_cast<float>(op["sx"].get<double>()); }
    L.out = op["out"];
    if (L.out == "bits") {
      for (float v : tensor(op["threshold"])) L.thr.push_back(static_cast<int32_t>(v));
      for (float v : tensor(op["flip"])) L.flip.push_back(static_cast<uint8_t>(v));
      // exact int32 thresholds from raw integer sections (float32 would round past 2^24)
      const Section& s = mf_.section(op["threshold"].get<std::string>());
      if (mf_.enc(op["threshold"].get<std::string>()) == "raw")
        for (int64_t i = 0; i < s.count() && i < static_cast<int64_t>(L.thr.size()); ++i) L.thr[static_cast<size_t>(i)] = static_cast<int32_t>(element(s, i));
    }
    L.kind = bitwise_kind(op);
    L.integer_acc = op["integer_acc"].get<bool>();
    const bool corr = L.pad_value != -1 && (L.padding[0] || L.padding[1]);
    const bool fd = L.flat_dense;
    if (L.kind == "float") {
      std::vector<int64_t> sh;
      std::vector<float> lv = tensor(op["weight"], &sh);
      const int64_t O = sh.empty() ? 1 : sh[0];
      const int64_t F = O ? static_cast<int64_t>(lv.size()) / O : 0;
      if (L.conv) {   // (OC, KH*KW*C) -> transposed (KH*KW*C, OC)
        L.w_float.resize(lv.size());
        for (int64_t o = 0; o < O; ++o)
          for (int64_t f = 0; f < F; ++f) L.w_float[static_cast<size_t>(f * O + o)] = lv[static_cast<size_t>(o * F + f)];
      } else {
        L.w_float = std::move(lv);
      }
      return L;
    }
    const Packed p = mf_.packed(op["weight"].get<std::string>());
    PW& pw = L.pw;
    pw.kind = L.kind;
    pw.oc = p.oc; pw.kh = fd ? 1 : p.kh; pw.kw = fd ? 1 : p.kw; pw.c = L.c;
    const int64_t cw = p.cw(), taps = pw.kh * pw.kw, len = taps * cw;
    pw.variant = variant_for(fd, L.kind == "ternary");
    if (L.kind == "binary") {
      if (corr && !fd) {
        auto pops = pop_rows(p.words, pw.oc * taps, cw);
        for (auto v : pops) pw.tap_sums.push_back(2 * v - static_cast<int32_t>(L.c));
      }
      std::vector<uint64_t> rows(p.words, p.words + pw.oc * len);
      lay_out(pw, rows, pw.oc, len);
    } else if (L.kind == "ternary") {
      const uint64_t* s = p.words;
      const uint64_t* m = p.words + pw.oc * len;
      if (corr && !fd) {
        std::vector<uint64_t> sm(static_cast<size_t>(pw.oc * len));
        for (size_t k = 0; k < sm.size(); ++k) sm[k] = s[k] & m[k];
        auto a = pop_rows(sm.data(), pw.oc * taps, cw), b = pop_rows(m, pw.oc * taps, cw);
        for (size_t k = 0; k < a.size(); ++k) pw.tap_sums.push_back(2 * a[k] - b[k]);
      }
      // masked variants: rows (sign & mask, mask) per channel, w_pop = pop(mask)
      std::vector<uint64_t> rows(static_cast<size_t>(pw.oc * 2 * len));
      for (int64_t o = 0; o < pw.oc; ++o)
        for (int64_t k = 0; k < len; ++k) {
          rows[static_cast<size_t>(o * 2 * len + k)] = s[o * len + k] & m[o * len + k];
          rows[static_cast<size_t>(o * 2 * len + len + k)] = m[o * len + k];
        }
      pw.w_pop = pop_rows(m, pw.oc, len);
      lay_out(pw, rows, pw.oc, len);
    } else if (L.kind == "planes-binary") {
      pw.w_pop = pop_rows(p.words, pw.oc, len);
      std::vector<uint64_t> rows(p.words, p.words + pw.oc * len);
      lay_out(pw, rows, pw.oc, len);
    } else {   // planes-planes
      const int64_t wb = p.bits;
      pw.w_bits = wb;
      L.step = p.step;
      L.offset = p.offset;
      // planes = moveaxis(w, 3, 1): row (oc * wb + k) = taps of plane k
      std::vector<uint64_t> rows(static_cast<size_t>((pw.oc * wb + 1) * len), 0);
      for (int64_t o = 0; o < pw.oc; ++o)
        for (int64_t k = 0; k < wb; ++k)
          for (int64_t t = 0; t < taps; ++t)
            for (int64_t j = 0; j < cw; ++j)
              rows[static_cast<size_t>((o * wb + k) * len + t * cw + j)] = p.words[((o * taps + t) * wb + k) * cw + j];
      pw.w_pop = pop_rows(rows.data(), pw.oc * wb, len);
      lay_out(pw, rows, pw.oc * wb + 1, len);
      // the all-+1 weights (1, KH, KW, ceil(c/64)): planes-binary
      PW& on = L.pw_ones;
      on.kind = "planes-binary"; on.oc = 1; on.kh = pw.kh; on.kw = pw.kw; on.c = L.c; on.variant = variant_for(fd, false);
      std::vector<uint64_t> ones(static_cast<size_t>(len), ~0ull);
      if (L.c % 64)
        for (int64_t t = 0; t < taps; ++t) ones[static_cast<size_t>(t * cw + cw - 1)] = (1ull << (L.c % 64)) - 1;
      on.w_pop = pop_rows(ones.data(), 1, len);
      lay_out(on, ones, 1, len);
    }
    return L;
  }

  // ---- NativeGraph._build ---------------------------------------------------------------------
  std::string label(int gi) const {
    if (gi < 0) return where_ + ": graph input";
    const json& op = ops_[static_cast<size_t>(gi)];
    std::string s = where_ + ": graph op " + std::to_string(gi);
    if (op.contains("name") && op["name"].is_string()) s += " '" + op["name"].get<std::string>() + "'";
    return s + " (" + op["op"].get<std::string>() + ")";
  }

  struct Attrs {
    std::map<std::string, int64_t> ints;
    std::map<std::string, double> floats;
    std::map<std::string, std::string> strs;
    std::map<std::string, G::ArrayRef> arrays;
  };

  int add(const std::string& kind, int gi, const std::vector<int>& inputs, const Attrs& a) {
    G::OpSpec sp;
    sp.kind = kind;
    sp.label = label(gi);
    sp.inputs = inputs;
    sp.ints = a.ints;
    sp.floats = a.floats;
    sp.strs = a.strs;
    sp.arrays = a.arrays;
    try {
      return ex.add_op(sp);
    } catch (const std::invalid_argument& e) {
      throw FormatError(std::string("native plan: ") + e.what());
    }
  }

  const G::Value& dims(int vid) const { return ex.value(vid); }

  int to_float(const std::string& name, int gi, bool flat = false) {
    const int vid = ids_.at(name);
    const G::Value v = dims(vid);
    flat = flat || flat_alias_.count(name);
    const auto key = std::make_pair(name, flat);
    auto it = conv_cache_.find(key);
    if (it != conv_cache_.end()) return it->second;
    int out;
    Attrs a;
    if (v.bits) {
      a.ints["flat"] = flat && v.h * v.w > 1;
      a.strs["path"] = path_;
      out = add("tofloat", gi, {vid}, a);
    } else if (flat && v.h * v.w > 1) {
      out = add("flatten", gi, {vid}, a);
    } else {
      return vid;
    }
    conv_cache_[key] = out;
    return out;
  }

  void build() {
    if (in_shape.size() != 3) throw NotNative(where_ + ": a graph input of shape [F] runs in the Python executor only");
    const int64_t C = in_shape[0], H = in_shape[1], W = in_shape[2];
    // input_tables
    const json& spec = g_["inputs"][0];
    table_.assign(static_cast<size_t>(C * 256), 0.f);
    const json norm = spec.value("normalization", json());
    if (norm.is_null()) {
      for (int64_t c = 0; c < C; ++c)
        for (int u = 0; u < 256; ++u) table_[static_cast<size_t>(c * 256 + u)] = static_cast<float>(u) / 255.0f;
    } else {
      if (!(norm.is_object() && norm.contains("mean") && norm.contains("std"))) bad("input: field 'normalization': expected an object with 'mean' and 'std'");
      auto vals = [&](const char* k) {
        std::vector<double> v;
        const json& x = norm[k];
        if (x.is_array()) { for (const json& a : x) v.push_back(a.get<double>()); }
        else v.push_back(x.get<double>());
        if (v.empty() || (v.size() != 1 && static_cast<int64_t>(v.size()) != C)) bad(std::string("input: normalization '") + k + "': wrong number of values");
        for (double d : v) if (!std::isfinite(d)) bad(std::string("input: normalization '") + k + "': expected finite numbers");
        return v;
      };
      const auto mean = vals("mean"), sd = vals("std");
      for (double s : sd) if (!(s > 0)) bad("input: normalization 'std': expected positive values");
      const double scale = norm.contains("scale") ? norm["scale"].get<double>() : 255.0;
      if (!(scale > 0)) bad("input: normalization 'scale': expected a positive number");
      for (int64_t c = 0; c < C; ++c) {
        const double m = mean[mean.size() == 1 ? 0 : static_cast<size_t>(c)], s = sd[sd.size() == 1 ? 0 : static_cast<size_t>(c)];
        for (int u = 0; u < 256; ++u) table_[static_cast<size_t>(c * 256 + u)] = static_cast<float>((u / scale - m) / s);
      }
    }
    Attrs a;
    a.ints = {{"h", H}, {"w", W}, {"c", C}};
    a.arrays["table"] = arr(store_, table_);
    ids_[spec["name"].get<std::string>()] = add("input", -1, {}, a);
    for (size_t i = 0; i < ops_.size(); ++i) {
      if (fused_.count(static_cast<int>(i))) continue;
      op(static_cast<int>(i));
    }
    for (const auto& v : outputs) out_ids.push_back(ids_.at(v));
    ex.set_outputs(out_ids);
  }

  std::vector<StepV> fuse_into(int i, std::vector<StepV>& steps, std::string& end) {
    std::string out = ops_[static_cast<size_t>(i)]["outputs"][0];
    while (true) {
      auto it = readers_.find(out);
      if (it == readers_.end() || it->second.size() != 1 || it->second[0] < 0) break;
      const int j = it->second[0];
      const json& op = ops_[static_cast<size_t>(j)];
      const std::string k = op["op"];
      if (!(k == "batchnorm" || k == "relu" || k == "hardtanh" || k == "prelu" || k == "act_quant") || bn_sign_.count(j)) break;
      for (auto& s : steps_of(j)) steps.push_back(s);
      fused_.insert(j);
      out = op["outputs"][0];
    }
    end = out;
    return steps;
  }

  std::vector<StepV> steps_of(int j) {
    const json& op = ops_[static_cast<size_t>(j)];
    const std::string k = op["op"];
    StepV s;
    if (k == "batchnorm") { s.code = BN; s.a = bn_[j].a; s.b = bn_[j].b; return {s}; }
    if (k == "relu") { s.code = RELU; return {s}; }
    if (k == "hardtanh") {
      s.code = CLAMP;
      s.lo = static_cast<float>(op["min"].get<double>());
      s.hi = static_cast<float>(op["max"].get<double>());
      return {s};
    }
    if (k == "prelu") {
      const auto& w = float_.at(op["weight"].get<std::string>());
      if (w.size() == 1) { s.code = PRELU_S; s.s = w[0]; s.has_s = true; }
      else { s.code = PRELU_C; s.v = w; }
      return {s};
    }
    s.code = ACT_QUANT;
    s.s = static_cast<float>((1ll << op["bits"].get<int64_t>()) - 1);
    s.has_s = true;
    return {s};
  }

  void program(Attrs& a, const std::vector<StepV>& steps) {
    a.ints["steps"] = static_cast<int64_t>(steps.size());
    for (size_t k = 0; k < steps.size(); ++k) {
      const std::string p = "step" + std::to_string(k);
      const StepV& s = steps[k];
      a.ints[p] = s.code;
      switch (s.code) {
        case MUL_C: case ADD_C: case PRELU_C: a.arrays[p + ".v"] = arr(store_, s.v); break;
        case BN: a.arrays[p + ".a"] = arr(store_, s.a); a.arrays[p + ".b"] = arr(store_, s.b); break;
        case MUL_S: case PRELU_S: case ACT_QUANT: a.floats[p + ".s"] = s.s; break;
        case CLAMP: a.floats[p + ".lo"] = s.lo; a.floats[p + ".hi"] = s.hi; break;
        default: break;
      }
    }
  }

  int sole_reader(const std::string& v) const {
    auto it = readers_.find(v);
    if (it == readers_.end() || it->second.size() != 1 || it->second[0] < 0) return -1;
    return it->second[0];
  }

  bool bits_reader(int j) const {
    const json& op = ops_[static_cast<size_t>(j)];
    return op["op"] == "sign" || (op["op"] == "batchnorm" && bn_sign_.count(j));
  }

  // _fuse_bits: returns the value the conv's output stands for; pool attrs (has_pool)
  std::string fuse_bits(const std::string& end, int i, Attrs& attrs, bool& has_pool, Attrs& pool) {
    int j = sole_reader(end);
    int pool_op = -1;
    has_pool = false;
    if (j >= 0 && ops_[static_cast<size_t>(j)]["op"] == "maxpool2d") {
      const int k = sole_reader(ops_[static_cast<size_t>(j)]["outputs"][0]);
      if (k >= 0 && bits_reader(k)) { pool_op = j; j = k; }
    }
    if (j < 0 || !bits_reader(j)) return end;
    const json& op = ops_[static_cast<size_t>(j)];
    std::vector<uint8_t> flip;
    attrs.ints["bits_out"] = 1;
    if (op["op"] != "sign") {
      const auto& ts = bn_sign_.at(j);
      attrs.arrays["t"] = arr(store_, ts.first);
      attrs.arrays["s"] = arr(store_, ts.second);
      for (float v : ts.second) flip.push_back(v < 0 ? 1 : 0);
    }
    fused_.insert(j);
    if (pool_op < 0) return op["outputs"][0];
    fused_.insert(pool_op);
    const json& p = ops_[static_cast<size_t>(pool_op)];
    const json st = p.contains("stride") && !p["stride"].is_null() ? p["stride"] : p["kernel"];
    pool.ints = {{"kh", p["kernel"][0]}, {"kw", p["kernel"][1]}, {"sh", st[0]}, {"sw", st[1]}};
    pool.strs["path"] = path_;
    bool any = false;
    for (auto f : flip) any |= f != 0;
    if (any) pool.arrays["flip"] = arr(store_, flip);
    has_pool = true;
    return op["outputs"][0];
  }

  void fconv(int i, int x, Attrs attrs, std::vector<StepV> steps) {
    std::string end0;
    fuse_into(i, steps, end0);
    bool has_pool;
    Attrs pool;
    const std::string end = fuse_bits(end0, i, attrs, has_pool, pool);
    program(attrs, steps);
    int vid = add("fconv", i, {x}, attrs);
    if (has_pool) vid = add("maxpool", i, {vid}, pool);
    ids_[end] = vid;
  }

  static void geometry(Attrs& a, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
    a.ints["kh"] = kh; a.ints["kw"] = kw; a.ints["sh"] = sh; a.ints["sw"] = sw; a.ints["ph"] = ph; a.ints["pw"] = pw;
  }

  void op(int i) {
    const json& o = ops_[static_cast<size_t>(i)];
    const std::string kind = o["op"];
    const std::string in0 = o["inputs"][0], out = o["outputs"][0];
    if (kind == "qconv2d" || kind == "qdense") return qlayer_op(i, o);
    if (kind == "conv2d" || kind == "dense") {
      const bool dense = kind == "dense";
      const int x = to_float(in0, i, dense);
      const std::string wn = o["weight"];
      const auto& wt = float_.at(wn);
      std::vector<StepV> steps;
      if (o.contains("bias") && !o["bias"].is_null()) {
        StepV s; s.code = ADD_C; s.v = float_.at(o["bias"].get<std::string>()); steps.push_back(s);
      }
      Attrs a;
      if (dense) {
        geometry(a, 1, 1, 1, 1, 0, 0);
        std::vector<int64_t> sh = mf_.tensor_shape(wn);
        a.ints["oc"] = sh.empty() ? 1 : sh[0];
      } else {
        const auto ks = kshape_.at(wn);
        geometry(a, ks.first, ks.second, o["stride"][0], o["stride"][1], o["padding"][0], o["padding"][1]);
        a.ints["oc"] = mf_.tensor_shape(wn)[0];
      }
      a.floats["pad"] = 0.0;
      a.ints["b_trans"] = dense;
      a.arrays["weight"] = arr(store_, wt);
      a.strs["path"] = path_;
      return fconv(i, x, a, steps);
    }
    if (kind == "batchnorm" || kind == "relu" || kind == "hardtanh" || kind == "prelu" || kind == "act_quant") {
      if (kind == "batchnorm" && bn_sign_.count(i)) {
        Attrs a;
        a.arrays["t"] = arr(store_, bn_sign_[i].first);
        a.arrays["s"] = arr(store_, bn_sign_[i].second);
        a.strs["path"] = path_;
        ids_[out] = add("tobits", i, {to_float(in0, i)}, a);
        return;
      }
      std::vector<StepV> steps = steps_of(i);
      const int x = to_float(in0, i);
      std::string end;
      fuse_into(i, steps, end);
      Attrs a;
      program(a, steps);
      ids_[end] = add("ew", i, {x}, a);
      return;
    }
    if (kind == "sign") {
      const int vid = ids_.at(in0);
      if (dims(vid).bits) {
        if (flat_alias_.count(in0)) flat_alias_.insert(out);
        ids_[out] = vid;
        return;
      }
      Attrs a;
      a.strs["path"] = path_;
      ids_[out] = add("tobits", i, {vid}, a);
      return;
    }
    if (kind == "flatten") {
      const int vid = ids_.at(in0);
      pre_flat_[out] = pre_flat_.count(in0) ? pre_flat_[in0] : vid;
      if (dims(vid).bits) {
        flat_alias_.insert(out);
        ids_[out] = vid;
        return;
      }
      ids_[out] = to_float(in0, i, true);
      return;
    }
    if (kind == "maxpool2d") {
      const json st = o.contains("stride") && !o["stride"].is_null() ? o["stride"] : o["kernel"];
      int vid = ids_.at(in0);
      if (flat_alias_.count(in0)) vid = to_float(in0, i);
      Attrs a;
      a.ints = {{"kh", o["kernel"][0]}, {"kw", o["kernel"][1]}, {"sh", st[0]}, {"sw", st[1]}};
      a.strs["path"] = path_;
      ids_[out] = add("maxpool", i, {vid}, a);
      return;
    }
    if (kind == "avgpool2d" || kind == "global_avgpool") {
      const int x = to_float(in0, i);
      Attrs a;
      if (kind == "global_avgpool") {
        a.ints["global"] = 1;
      } else {
        const json pd = o.contains("padding") && !o["padding"].is_null() ? o["padding"] : json::array({0, 0});
        const json st = o.contains("stride") && !o["stride"].is_null() ? o["stride"] : o["kernel"];
        a.ints = {{"kh", o["kernel"][0]}, {"kw", o["kernel"][1]}, {"sh", st[0]}, {"sw", st[1]}, {"ph", pd[0]}, {"pw", pd[1]},
                  {"count_include_pad", o.value("count_include_pad", json(true)).get<bool>() ? 1 : 0}};
      }
      ids_[out] = add("avgpool", i, {x}, a);
      return;
    }
    if (kind == "upsample") {
      Attrs a;
      a.ints = {{"fh", o["scale"][0]}, {"fw", o["scale"][1]}};
      ids_[out] = add("upsample", i, {to_float(in0, i)}, a);
      return;
    }
    if (kind == "add" || kind == "concat") {
      std::vector<int> xs;
      for (const json& v : o["inputs"]) xs.push_back(to_float(v.get<std::string>(), i));
      ids_[out] = add(kind, i, xs, Attrs{});
      return;
    }
    throw NotNative(label(i) + ": no native implementation");
  }

  void float_stage(const QL& L, std::vector<StepV>& steps) {
    if (L.has_sw) {
      StepV s;
      if (L.sw.size() == 1) { s.code = MUL_S; s.s = L.sw[0]; } else { s.code = MUL_C; s.v = L.sw; }
      steps.push_back(s);
    }
    if (L.has_sx) { StepV s; s.code = MUL_S; s.s = L.sx; steps.push_back(s); }
    if (L.mode == "xnor") { StepV s; s.code = MUL_PIXEL; steps.push_back(s); }
    if (L.has_bias) { StepV s; s.code = ADD_C; s.v = L.bias; steps.push_back(s); }
  }

  static const std::map<std::string, int>& operand_codes() {
    static const std::map<std::string, int> m = {{"sign", 1}, {"xnor", 1}, {"uint8", 2}, {"dorefa", 3}, {"dorefa-float", 4}, {"float", 0}};
    return m;
  }

  void qlayer_float(int i, const json& o, const QL& L) {
    std::vector<StepV> steps;
    const int x = to_float(o["inputs"][0], i, !L.conv);
    Attrs a;
    if (L.conv) geometry(a, L.kernel[0], L.kernel[1], L.stride[0], L.stride[1], L.padding[0], L.padding[1]);
    else geometry(a, 1, 1, 1, 1, 0, 0);
    a.floats["pad"] = L.conv ? static_cast<double>(L.pad_value) : 0.0;
    a.ints["oc"] = L.oc;
    a.ints["b_trans"] = !L.conv;
    a.arrays["weight"] = arr(store_, L.w_float);
    a.strs["path"] = path_;
    a.ints["operand"] = operand_codes().at(L.mode);
    a.ints["xnor"] = L.mode == "xnor";
    if (L.mode == "uint8") {
      a.floats["operand.a"] = static_cast<float>(o["u8"]["std"].get<double>());
      a.floats["operand.b"] = static_cast<float>(o["u8"]["mean"].get<double>());
    } else if (L.mode == "dorefa") {
      a.floats["operand.a"] = static_cast<float>((1ll << L.a_bits) - 1);
    }
    if (L.integer_acc) { StepV s; s.code = ROUND; steps.push_back(s); }
    float_stage(L, steps);
    fconv(i, x, a, steps);
  }

  void qlayer_op(int i, const json& o) {
    const QL& L = layers_.at(o["name"].get<std::string>());
    const std::string src = o["inputs"][0];
    if (L.kind == "float") return qlayer_float(i, o, L);
    const PW& pw = L.pw;
    Attrs a;
    a.strs["path"] = path_;
    a.strs["variant"] = pw.variant;
    a.ints["oc"] = pw.oc; a.ints["c"] = pw.c; a.ints["kh"] = pw.kh; a.ints["kw"] = pw.kw; a.ints["w_bits"] = pw.w_bits;
    a.arrays["packed"] = arr(store_, pw.packed);
    a.arrays["w_pop"] = arr(store_, pw.w_pop);
    static const std::map<std::string, int> code = {{"binary", 0}, {"ternary", 1}, {"planes-binary", 2}, {"planes-planes", 3}};
    a.ints["xkind"] = pw.variant.rfind("masked-", 0) == 0 ? 4 : code.at(pw.kind);
    a.ints["pad_value"] = (pw.kind == "binary" || pw.kind == "ternary") ? L.pad_value : 0;
    if (!pw.tap_sums.empty()) a.arrays["tap_sums"] = arr(store_, pw.tap_sums);
    if (L.conv) geometry(a, L.kernel[0], L.kernel[1], L.stride[0], L.stride[1], L.padding[0], L.padding[1]);
    else geometry(a, pw.kh, pw.kw, 1, 1, 0, 0);
    int vid = ids_.at(src);
    bool bits = dims(vid).bits;
    int source;
    if (L.spatial) {
      if (!pre_flat_.count(src)) throw NotNative(label(i) + ": a spatial dense layer must read a flattened value");
      vid = pre_flat_[src];
      bits = dims(vid).bits;
      if (!bits || L.mode != "sign") throw NotNative(label(i) + ": spatial dense layers run on sign bits only");
      source = 0;
    } else if (L.mode == "sign" && bits && !(L.flat_dense && flat_alias_.count(src) && dims(vid).h * dims(vid).w > 1)) {
      source = 0;
    } else {
      vid = to_float(src, i, L.flat_dense);
      static const std::map<std::string, int> srcs = {{"sign", 1}, {"xnor", 2}, {"uint8", 3}, {"dorefa", 4}};
      auto it = srcs.find(L.mode);
      if (it == srcs.end()) throw NotNative(label(i) + ": input mode '" + L.mode + "' on the bitwise kernels");
      source = it->second;
    }
    a.ints["source"] = source;
    if (L.kind.rfind("planes", 0) == 0) {
      a.ints["a_bits"] = L.a_bits;
      if (L.mode == "uint8") {
        a.floats["levels.a"] = static_cast<float>(o["u8"]["std"].get<double>());
        a.floats["levels.b"] = static_cast<float>(o["u8"]["mean"].get<double>());
      } else {
        a.floats["levels.a"] = static_cast<float>((1ll << L.a_bits) - 1);
        a.floats["levels.b"] = 0.0;
      }
    }
    if (L.kind == "planes-planes") {
      a.arrays["ones.packed"] = arr(store_, L.pw_ones.packed);
      a.arrays["ones.w_pop"] = arr(store_, L.pw_ones.w_pop);
      a.ints["step"] = L.step;
      a.ints["offset"] = L.offset;
    }
    std::string end = o["outputs"][0];
    if (L.out == "bits") {
      a.ints["bits_out"] = 1;
      a.arrays["thr"] = arr(store_, L.thr);
      a.arrays["flip"] = arr(store_, L.flip);
      const json p = o.value("pool", json());
      if (!p.is_null()) {
        const json st = p.contains("stride") && !p["stride"].is_null() ? p["stride"] : p["kernel"];
        a.ints["pool"] = 1;
        a.ints["pool.kh"] = p["kernel"][0]; a.ints["pool.kw"] = p["kernel"][1];
        a.ints["pool.sh"] = st[0]; a.ints["pool.sw"] = st[1];
      }
    } else {
      a.ints["bits_out"] = 0;
      std::vector<StepV> steps;
      float_stage(L, steps);
      fuse_into(i, steps, end);
      program(a, steps);
    }
    ids_[end] = add("qlayer", i, {vid}, a);
  }
};

}  // namespace runner
}  // namespace lowbit
