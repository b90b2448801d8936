// The native whole-graph executor: a model's ops, planned once at load, run by one call per
// batch with every value in one arena.  lowbit.runtime.native builds it from a model file's
// graph (lowbit.codec.graph) and lowbit.runtime.graph.Runtime calls it; the Python executor
// (lowbit.runtime.graph, executor="python") stays the living spec it is tested against.
//
// Plan (add_op, then set_outputs): each op checks its inputs (kinds, shapes, attribute and
// array sizes, kernel availability) and derives its output value; anything inconsistent is
// refused with an error naming the op.  Per batch size n (the first run at that n): every
// value and temporary gets an interval [first op, last op] it must live, and an offset in one
// arena such that buffers whose intervals overlap never overlap in memory (greedy first fit,
// largest first: the TFLite arena planner's rule).  Graph outputs live to the end.
//
// Run: the input op converts the host batch, each op runs with its buffers' addresses, the
// outputs are copied out in torch's layout (float NCHW / (n, F); bits as ±1).  Opt-in per
// run: per-op wall time, the integer accumulators of every bitwise layer (record), and
// `poison`, which fills the whole arena with 0xFF bytes before the run and every buffer
// whose life ends after each op (NaN floats, all-ones words), so that a plan that let two
// live buffers share memory, or an op that read a buffer it never wrote, changes the results.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bconv/driver.h"
#include "common/threads.h"
#include "graph/fconv.h"
#include "graph/float_ops.h"
#include "graph/pool_ops.h"
#include "graph/qlayer.h"
#include "graph/spec.h"

namespace lowbit {
namespace graph {

struct Buffer {
  int64_t bytes = 0, first = 0, last = 0, offset = 0;
};

// Offsets for buffers (64-byte multiples): largest first, each at the lowest offset where it
// overlaps no placed buffer that is alive at the same time.  Returns the arena size.
inline int64_t place_buffers(std::vector<Buffer>& bufs) {
  std::vector<size_t> order(bufs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return bufs[a].bytes > bufs[b].bytes; });
  std::vector<size_t> placed;
  int64_t total = 0;
  for (size_t i : order) {
    Buffer& b = bufs[i];
    if (b.bytes == 0) continue;
    std::vector<std::pair<int64_t, int64_t>> busy;  // [offset, end) of overlapping lives
    for (size_t j : placed) {
      const Buffer& o = bufs[j];
      if (o.first <= b.last && b.first <= o.last) busy.emplace_back(o.offset, o.offset + o.bytes);
    }
    std::sort(busy.begin(), busy.end());
    int64_t at = 0;
    for (const auto& [s, e] : busy) {
      if (at + b.bytes <= s) break;
      at = std::max(at, e);
    }
    b.offset = at;
    total = std::max(total, at + b.bytes);
    placed.push_back(i);
  }
  return total;
}

inline int64_t round64(int64_t b) { return (b + 63) / 64 * 64; }

class Executor {
 public:
  explicit Executor(int threads) : threads_(std::max(1, threads)) {}

  // Adds an op; returns the id of the value it defines.
  int add_op(const OpSpec& sp) {
    for (int v : sp.inputs)
      if (v < 0 || v >= static_cast<int>(values_.size())) sp.fail("input value " + std::to_string(v) + " is not defined");
    if (values_.empty() && sp.kind != "input") sp.fail("the first op must be the graph input");
    std::unique_ptr<Op> op;
    const std::string& k = sp.kind;
    if (k == "input") {
      if (!values_.empty()) sp.fail("one graph input only");
      op = std::make_unique<InputOp>(sp);
    } else if (k == "fconv") op = std::make_unique<FConvOp>(sp, values_);
    else if (k == "qlayer") op = std::make_unique<QLayerOp>(sp, values_);
    else if (k == "ew") op = std::make_unique<EwOp>(sp, values_);
    else if (k == "tobits") op = std::make_unique<ToBitsOp>(sp, values_);
    else if (k == "tofloat") op = std::make_unique<ToFloatOp>(sp, values_);
    else if (k == "flatten") op = std::make_unique<FlattenOp>(sp, values_);
    else if (k == "maxpool") op = std::make_unique<MaxPoolOp>(sp, values_);
    else if (k == "avgpool") op = std::make_unique<AvgPoolOp>(sp, values_);
    else if (k == "upsample") op = std::make_unique<UpsampleOp>(sp, values_);
    else if (k == "add" || k == "concat") op = std::make_unique<JoinOp>(sp, values_);
    else sp.fail("unknown native op kind '" + k + "'");
    values_.push_back(op->out);
    ops_.push_back(std::move(op));
    plan_n_ = -1;
    return static_cast<int>(values_.size()) - 1;
  }

  void set_outputs(const std::vector<int>& outs) {
    if (outs.empty()) throw std::invalid_argument("graph: no outputs");
    for (int v : outs)
      if (v < 0 || v >= static_cast<int>(values_.size())) throw std::invalid_argument("graph: output value not defined");
    outputs_ = outs;
    plan_n_ = -1;
  }

  const Value& value(int v) const { return values_.at(static_cast<size_t>(v)); }
  const std::vector<std::unique_ptr<Op>>& ops() const { return ops_; }
  const std::vector<double>& op_seconds() const { return seconds_; }
  InputOp& input() { return static_cast<InputOp&>(*ops_.at(0)); }

  // Arena bytes for a batch of n, and what the buffers would take without sharing memory.
  int64_t arena_bytes(int64_t n) { plan(n); return arena_size_; }
  int64_t unshared_bytes(int64_t n) {
    plan(n);
    int64_t t = 0;
    for (const Buffer& b : bufs_) t += b.bytes;
    return t;
  }

  // One batch: host input (n, c, h, w) uint8 or float32; outs[k] float32 of
  // n * (value elements) for outputs_[k].
  void run(const void* host, bool host_u8, int64_t n, const std::vector<float*>& outs, bool profile,
           bool record, bool poison) {
    if (outputs_.empty()) throw std::invalid_argument("graph: outputs not set");
    if (outs.size() != outputs_.size()) throw std::invalid_argument("graph: wrong number of output buffers");
    if (n < 1) throw std::invalid_argument("graph: batch must be >= 1");
    plan(n);
    InputOp& in = input();
    in.host = host;
    in.host_u8 = host_u8;
    uint8_t* arena = arena_.get();
    if (poison) std::memset(arena, 0xFF, static_cast<size_t>(arena_size_));
    seconds_.assign(ops_.size(), 0.0);
    Ctx c;
    c.n = n; c.threads = threads_; c.record = record;
    for (size_t i = 0; i < ops_.size(); ++i) {
      Op& op = *ops_[i];
      c.in.clear();
      for (int v : op.inputs) c.in.push_back(addr(val_buf_[static_cast<size_t>(v)]));
      c.out = addr(val_buf_[i]);
      c.tmp.clear();
      for (size_t t : tmp_buf_[i]) c.tmp.push_back(addr(t));
      const auto t0 = profile ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
      op.run(c);
      if (profile) seconds_[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (poison)
        for (size_t b : dies_[i]) std::memset(addr(b), 0xFF, static_cast<size_t>(bufs_[b].bytes));
    }
    for (size_t k = 0; k < outputs_.size(); ++k) copy_out(outputs_[k], n, outs[k]);
    if (in.nonfinite.load()) throw std::domain_error("input contains NaN or inf");
  }

 private:
  void* addr(size_t b) { return bufs_[b].bytes ? arena_.get() + bufs_[b].offset : nullptr; }

  void plan(int64_t n) {
    if (n == plan_n_) return;
    if (outputs_.empty()) throw std::invalid_argument("graph: outputs not set");
    const int64_t nops = static_cast<int64_t>(ops_.size());
    bufs_.clear();
    val_buf_.assign(values_.size(), 0);
    tmp_buf_.assign(ops_.size(), {});
    for (size_t v = 0; v < values_.size(); ++v) {  // value v is defined by op v
      val_buf_[v] = bufs_.size();
      bufs_.push_back({round64(n * values_[v].bytes()), static_cast<int64_t>(v), static_cast<int64_t>(v), 0});
    }
    for (size_t i = 0; i < ops_.size(); ++i)
      for (int v : ops_[i]->inputs) {
        Buffer& b = bufs_[val_buf_[static_cast<size_t>(v)]];
        b.last = std::max<int64_t>(b.last, static_cast<int64_t>(i));
      }
    for (int v : outputs_) bufs_[val_buf_[static_cast<size_t>(v)]].last = nops;
    for (size_t i = 0; i < ops_.size(); ++i)
      for (int64_t bytes : ops_[i]->temps(n, threads_)) {
        tmp_buf_[i].push_back(bufs_.size());
        bufs_.push_back({round64(bytes), static_cast<int64_t>(i), static_cast<int64_t>(i), 0});
      }
    arena_size_ = std::max<int64_t>(64, place_buffers(bufs_));
    dies_.assign(ops_.size(), {});
    for (size_t b = 0; b < bufs_.size(); ++b)
      if (bufs_[b].last < nops && bufs_[b].bytes) dies_[static_cast<size_t>(bufs_[b].last)].push_back(b);
    if (arena_size_ > arena_cap_) {
      arena_.reset(static_cast<uint8_t*>(bconv_detail::alloc_bytes(arena_size_)));
      arena_cap_ = arena_size_;
    }
    plan_n_ = n;
  }

  // value -> torch layout: float NHWC -> NCHW; bits -> ±1 NCHW (a flattened value's (c, h, w)
  // order is the same memory).
  void copy_out(int v, int64_t n, float* dst) {
    const Value& x = values_[static_cast<size_t>(v)];
    const void* src = addr(val_buf_[static_cast<size_t>(v)]);
    const int64_t hw = x.h * x.w, C = x.c, nw = x.words();
    for (int64_t b = 0; b < n; ++b)
      for (int64_t p = 0; p < hw; ++p)
        for (int64_t ch = 0; ch < C; ++ch) {
          float y;
          if (x.bits) {
            const uint64_t word = static_cast<const uint64_t*>(src)[(b * hw + p) * nw + ch / 64];
            y = (word >> (ch % 64)) & 1 ? 1.f : -1.f;
          } else {
            y = static_cast<const float*>(src)[(b * hw + p) * C + ch];
          }
          dst[(b * C + ch) * hw + p] = y;
        }
  }

  struct FreeArena {
    void operator()(uint8_t* p) const { std::free(p); }
  };

  int threads_;
  std::vector<Value> values_;
  std::vector<std::unique_ptr<Op>> ops_;
  std::vector<int> outputs_;
  std::vector<Buffer> bufs_;
  std::vector<size_t> val_buf_;
  std::vector<std::vector<size_t>> tmp_buf_, dies_;
  std::vector<double> seconds_;
  std::unique_ptr<uint8_t, FreeArena> arena_;
  int64_t arena_size_ = 0, arena_cap_ = 0, plan_n_ = -1;
};

}  // namespace graph
}  // namespace lowbit
