// lowbit-run MODEL.lbm INPUT [options]: a lowbit model file run by the native executor,
// without Python.  INPUT: raw uint8 pixels (n images of the graph input's C*H*W bytes, NCHW)
// or .npy (uint8 pixels, or float32 already normalised with --normalized; shape (N, C, H, W),
// (N, H, W) for one channel, or one image without N).
//
//   --out FILE      write output 0 as .npy (float32, torch layout) or, any other name, text
//   --threads N     kernel threads (default 1)
//   --kernel PATH   portable | neon | avx2 | avx512 (default: the best this CPU runs)
//   --repeat R      run the batch R more times and report the mean time
//   --quiet         no per-image lines on stdout
// stdout: one line per image: "<index> <predicted class> <logits...>"; stderr: timing.
// Exit status: 0 ok, 2 a refused model file or input (message on stderr), 1 usage.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "runner/lowbit_runner.h"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: lowbit-run MODEL.lbm INPUT(.npy|raw uint8) [--normalized] [--out FILE(.npy|.txt)]\n"
               "                  [--threads N] [--kernel PATH] [--repeat R] [--quiet]\n");
  return 1;
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "lowbit-run: %s\n", msg.c_str());
  std::exit(2);
}

std::vector<uint8_t> read_file(const std::string& p) {
  FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) die(p + ": cannot open");
  std::vector<uint8_t> b;
  uint8_t chunk[65536];
  size_t k;
  while ((k = std::fread(chunk, 1, sizeof chunk, f)) > 0) b.insert(b.end(), chunk, chunk + k);
  std::fclose(f);
  return b;
}

bool ends_with(const std::string& s, const std::string& e) {
  return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

// .npy v1/v2/v3: dtype, shape, C order; returns the data offset
size_t parse_npy(const std::vector<uint8_t>& b, const std::string& where, std::string& descr,
                 std::vector<int64_t>& shape) {
  if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0) die(where + ": not a .npy file");
  const int major = b[6];
  size_t hl, off;
  if (major == 1) { hl = b[8] | (b[9] << 8); off = 10; }
  else if (major == 2 || major == 3) {
    if (b.size() < 12) die(where + ": truncated .npy header");
    hl = b[8] | (b[9] << 8) | (b[10] << 16) | (static_cast<size_t>(b[11]) << 24); off = 12;
  } else die(where + ": unknown .npy version");
  if (off + hl > b.size()) die(where + ": truncated .npy header");
  const std::string h(reinterpret_cast<const char*>(b.data() + off), hl);
  auto field = [&](const std::string& key) {
    const size_t p = h.find("'" + key + "'");
    if (p == std::string::npos) die(where + ": .npy header has no '" + key + "'");
    return h.substr(h.find(':', p) + 1);
  };
  std::string d = field("descr");
  const size_t q1 = d.find('\''), q2 = d.find('\'', q1 + 1);
  descr = d.substr(q1 + 1, q2 - q1 - 1);
  std::string fo = field("fortran_order");
  if (fo.find("True") < fo.find(',')) die(where + ": Fortran-ordered .npy arrays are not supported");
  std::string s = field("shape");
  s = s.substr(s.find('(') + 1, s.find(')') - s.find('(') - 1);
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == ',')) ++i;
    if (i >= s.size()) break;
    shape.push_back(std::strtoll(s.c_str() + i, nullptr, 10));
    while (i < s.size() && s[i] != ',') ++i;
  }
  return off + hl;
}

void write_npy(const std::string& p, const std::vector<float>& v, const std::vector<int64_t>& shape) {
  std::string sh = "(";
  for (size_t i = 0; i < shape.size(); ++i) sh += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
  sh += ")";
  std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': " + sh + ", }";
  while ((10 + h.size() + 1) % 64) h += ' ';
  h += '\n';
  FILE* f = std::fopen(p.c_str(), "wb");
  if (!f) die(p + ": cannot write");
  const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<unsigned char>(h.size() & 255),
                                 static_cast<unsigned char>(h.size() >> 8)};
  std::fwrite(pre, 1, 10, f);
  std::fwrite(h.data(), 1, h.size(), f);
  std::fwrite(v.data(), sizeof(float), v.size(), f);
  std::fclose(f);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  std::string out_path, kernel;
  bool normalized = false, quiet = false;
  int threads = 1, repeat = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { if (i + 1 >= argc) std::exit(usage()); return argv[++i]; };
    if (a == "--normalized") normalized = true;
    else if (a == "--quiet") quiet = true;
    else if (a == "--out") out_path = next();
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--kernel") kernel = next();
    else if (a == "--repeat") repeat = std::atoi(next().c_str());
    else if (a == "-h" || a == "--help") { usage(); return 0; }
    else if (!a.empty() && a[0] == '-') return usage();
    else pos.push_back(a);
  }
  if (pos.size() != 2 || threads < 1 || repeat < 0) return usage();

  char err[1024];
  auto t0 = std::chrono::steady_clock::now();
  lowbit_model* m = lowbit_load(pos[0].c_str(), threads, kernel.empty() ? nullptr : kernel.c_str(), err, sizeof err);
  if (!m) die(err);
  const double load_ms = ms_since(t0);
  int64_t C, H, W;
  lowbit_input_shape(m, &C, &H, &W);
  const int64_t per = C * H * W;

  const std::vector<uint8_t> raw = read_file(pos[1]);
  const uint8_t* data = raw.data();
  size_t bytes = raw.size();
  bool u8 = true;
  int64_t n;
  if (ends_with(pos[1], ".npy")) {
    std::string descr;
    std::vector<int64_t> shape;
    const size_t off = parse_npy(raw, pos[1], descr, shape);
    data += off;
    bytes -= off;
    if (descr == "|u1" || descr == "<u1") u8 = true;
    else if (descr == "<f4") u8 = false;
    else die(pos[1] + ": dtype " + descr + ": pass uint8 pixels, or float32 already normalised with --normalized");
    if (!u8 && !normalized)
      die(pos[1] + ": got float32 input; pass uint8 pixels 0..255 (the model normalises them itself), or float "
                   "input already normalised as in training with --normalized");
    if (u8 && normalized) die(pos[1] + ": --normalized expects float32 input already normalised as in training, got uint8");
    std::vector<int64_t> want = {C, H, W};
    std::vector<int64_t> tail;
    if (shape.size() == 4) { n = shape[0]; tail.assign(shape.begin() + 1, shape.end()); }
    else if (shape.size() == 3 && C == 1 && !(shape[0] == 1 && shape[1] == H && shape[2] == W && H != 1)) { n = shape[0]; tail = {1, shape[1], shape[2]}; }
    else if (shape.size() == 3) { n = 1; tail = shape; }
    else if (shape.size() == 2 && C == 1) { n = 1; tail = {1, shape[0], shape[1]}; }
    else { n = -1; }
    if (n < 1 || tail != want)
      die(pos[1] + ": input shape does not match the graph input (N, " + std::to_string(C) + ", " + std::to_string(H) +
          ", " + std::to_string(W) + ") in NCHW layout");
    if (bytes != static_cast<size_t>(n * per * (u8 ? 1 : 4))) die(pos[1] + ": .npy data size does not match its shape");
  } else {
    if (normalized) die("--normalized needs a float32 .npy input");
    if (bytes == 0 || bytes % static_cast<size_t>(per))
      die(pos[1] + ": " + std::to_string(bytes) + " bytes of raw uint8 input is not a whole number of images of " +
          std::to_string(C) + "x" + std::to_string(H) + "x" + std::to_string(W) + " = " + std::to_string(per) + " bytes");
    n = static_cast<int64_t>(bytes) / per;
  }
  // aligned copy for float input
  std::vector<float> fx;
  const void* x = data;
  if (!u8) {
    fx.resize(static_cast<size_t>(n * per));
    std::memcpy(fx.data(), data, fx.size() * 4);
    x = fx.data();
  }

  const int nout = lowbit_num_outputs(m);
  std::vector<std::vector<float>> outs(static_cast<size_t>(nout));
  std::vector<float*> ptrs;
  std::vector<int64_t> sizes;
  for (int k = 0; k < nout; ++k) {
    int r; int64_t d[3];
    sizes.push_back(lowbit_output_shape(m, k, &r, d));
    outs[static_cast<size_t>(k)].resize(static_cast<size_t>(n * sizes.back()));
    ptrs.push_back(outs[static_cast<size_t>(k)].data());
  }
  t0 = std::chrono::steady_clock::now();
  int rc = lowbit_run_outputs(m, x, u8, n, ptrs.data(), err, sizeof err);
  if (rc) die(err);
  const double first_ms = ms_since(t0);
  double mean_ms = first_ms;
  if (repeat > 0) {
    t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < repeat; ++r)
      if (lowbit_run_outputs(m, x, u8, n, ptrs.data(), err, sizeof err)) die(err);
    mean_ms = ms_since(t0) / repeat;
  }
  const std::vector<float>& y = outs[0];
  const int64_t F = sizes[0];
  if (!quiet)
    for (int64_t i = 0; i < n; ++i) {
      int64_t best = 0;
      for (int64_t j = 1; j < F; ++j)
        if (y[static_cast<size_t>(i * F + j)] > y[static_cast<size_t>(i * F + best)]) best = j;
      std::printf("%lld %lld", static_cast<long long>(i), static_cast<long long>(best));
      for (int64_t j = 0; j < F; ++j) std::printf(" %.9g", y[static_cast<size_t>(i * F + j)]);
      std::printf("\n");
    }
  if (!out_path.empty()) {
    int r; int64_t d[3];
    lowbit_output_shape(m, 0, &r, d);
    std::vector<int64_t> shape = {n};
    for (int k = 0; k < r; ++k) shape.push_back(d[k]);
    if (ends_with(out_path, ".npy")) write_npy(out_path, y, shape);
    else {
      FILE* f = std::fopen(out_path.c_str(), "w");
      if (!f) die(out_path + ": cannot write");
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < F; ++j) std::fprintf(f, j ? " %.9g" : "%.9g", y[static_cast<size_t>(i * F + j)]);
        std::fprintf(f, "\n");
      }
      std::fclose(f);
    }
  }
  std::fprintf(stderr,
               "lowbit-run: %s: %lld image(s), kernel path %s, %d thread(s); load+plan %.3f ms, first run %.3f ms, "
               "%s %.3f ms/batch (%.3f ms/image); weights %lld B, arena %lld B\n",
               pos[0].c_str(), static_cast<long long>(n), lowbit_kernel_path(m), threads, load_ms, first_ms,
               repeat ? "mean" : "run", mean_ms, mean_ms / static_cast<double>(n),
               static_cast<long long>(lowbit_weight_bytes(m)), static_cast<long long>(lowbit_arena_bytes(m, n)));
  lowbit_free(m);
  return 0;
}
