// The C API of lowbit_runner.h over ModelFile + Plan.
#include "runner/lowbit_runner.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "runner/model.h"
#include "runner/plan.h"

struct lowbit_model {
  std::unique_ptr<lowbit::runner::ModelFile> mf;
  std::unique_ptr<lowbit::runner::Plan> plan;
  std::string path;
};

namespace {
void put(char* err, size_t n, const std::string& s) {
  if (err && n) {
    std::strncpy(err, s.c_str(), n - 1);
    err[n - 1] = 0;
  }
}
}  // namespace

extern "C" {

lowbit_model* lowbit_load(const char* file, int threads, const char* path, char* err, size_t errlen) {
  try {
    auto m = std::make_unique<lowbit_model>();
    m->path = path && *path ? path : lowbit::runner::best_path();
    bool known = false;
    for (const auto& p : lowbit::compiled_paths()) known |= p == m->path;
    if (!known) throw std::invalid_argument("unknown or not compiled kernel path '" + m->path + "'");
    m->mf = std::make_unique<lowbit::runner::ModelFile>(file);
    m->plan = std::make_unique<lowbit::runner::Plan>(*m->mf, m->path, threads < 1 ? 1 : threads);
    // the file's bytes are no longer needed: the plan holds the laid-out weights
    return m.release();
  } catch (const std::exception& e) {
    put(err, errlen, e.what());
    return nullptr;
  }
}

void lowbit_free(lowbit_model* m) { delete m; }

void lowbit_input_shape(const lowbit_model* m, int64_t* c, int64_t* h, int64_t* w) {
  const auto& s = m->plan->in_shape;
  *c = s[0]; *h = s[1]; *w = s[2];
}

int lowbit_num_outputs(const lowbit_model* m) { return static_cast<int>(m->plan->out_ids.size()); }

int64_t lowbit_output_shape(const lowbit_model* m, int k, int* rank, int64_t dims[3]) {
  const auto& v = m->plan->ex.value(m->plan->out_ids.at(static_cast<size_t>(k)));
  if (v.h * v.w == 1) { *rank = 1; dims[0] = v.c; dims[1] = dims[2] = 1; }
  else { *rank = 3; dims[0] = v.c; dims[1] = v.h; dims[2] = v.w; }
  return v.h * v.w * v.c;
}

const char* lowbit_kernel_path(const lowbit_model* m) { return m->path.c_str(); }
int64_t lowbit_weight_bytes(const lowbit_model* m) { return m->plan->weight_bytes(); }
int64_t lowbit_arena_bytes(lowbit_model* m, int64_t n) { return m->plan->ex.arena_bytes(n); }

int lowbit_run_outputs(lowbit_model* m, const void* x, int u8, int64_t n, float** outs, char* err, size_t errlen) {
  try {
    std::vector<float*> o(outs, outs + m->plan->out_ids.size());
    m->plan->ex.run(x, u8 != 0, n, o, false, false, false);
    return 0;
  } catch (const std::domain_error&) {
    put(err, errlen, m->mf->where() + ": input contains NaN or inf");
    return 2;
  } catch (const std::exception& e) {
    put(err, errlen, e.what());
    return 1;
  }
}

int lowbit_run_u8(lowbit_model* m, const uint8_t* x, int64_t n, float* out, char* err, size_t errlen) {
  std::vector<std::vector<float>> tmp(m->plan->out_ids.size());
  std::vector<float*> ptrs;
  for (size_t k = 0; k < tmp.size(); ++k) {
    int r; int64_t d[3];
    if (k == 0) { ptrs.push_back(out); continue; }
    tmp[k].resize(static_cast<size_t>(n * lowbit_output_shape(m, static_cast<int>(k), &r, d)));
    ptrs.push_back(tmp[k].data());
  }
  return lowbit_run_outputs(m, x, 1, n, ptrs.data(), err, errlen);
}

int lowbit_run_f32(lowbit_model* m, const float* x, int64_t n, float* out, char* err, size_t errlen) {
  std::vector<std::vector<float>> tmp(m->plan->out_ids.size());
  std::vector<float*> ptrs;
  for (size_t k = 0; k < tmp.size(); ++k) {
    int r; int64_t d[3];
    if (k == 0) { ptrs.push_back(out); continue; }
    tmp[k].resize(static_cast<size_t>(n * lowbit_output_shape(m, static_cast<int>(k), &r, d)));
    ptrs.push_back(tmp[k].data());
  }
  return lowbit_run_outputs(m, x, 0, n, ptrs.data(), err, errlen);
}

}  // extern "C"
