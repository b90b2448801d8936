// The model file read in C++ (no Python): lowbit.codec.container + lowbit.codec.model +
// the parts of lowbit.codec.graph / packed / model.check_op_values the runner relies on.
//
// Container (src/lowbit/codec/container.py): 64-byte preamble with its own CRC32, the JSON
// header (zlib-deflated when flag bit 0; inflate.h, no zlib needed) with its CRC32, zero padding to 64 bytes, sections
// on 64-byte boundaries, each with its CRC32 and zero padding, the file exactly `total`
// bytes long.  Every check of container.decode is made here, in the same order, with the same
// wording, so a corrupt file is refused by both loaders (the runner exits 2 with the message).
//
// Tensors: "raw" (any real dtype, floats finite) and "packed" (check_packed: layout, pad bits,
// ternary sign bits on zero weights).  "dc" (Deep Compression) is refused: the runner does
// not carry the Huffman / sparse-index decoder (the Python runtime runs those files).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runner/inflate.h"

namespace lowbit {
namespace runner {

using json = nlohmann::json;

struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline std::string hex8(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
using Bytes = std::unique_ptr<uint8_t, AlignedFree>;
inline Bytes aligned_bytes(size_t n) {
  void* p = std::aligned_alloc(64, (n + 63) / 64 * 64 + 64);
  if (!p) throw std::bad_alloc();
  return Bytes(static_cast<uint8_t*>(p));
}

struct Section {
  std::string name, kind;      // kind: "array" | "bytes"
  char dkind = 0;              // numpy kind: b i u f c
  int itemsize = 0;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  int64_t nbytes = 0;
  int64_t count() const {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
};

constexpr int64_t kAlign = 64, kPreamble = 64;
inline int64_t pad64(int64_t n) { return (kAlign - n % kAlign) % kAlign; }

inline bool is_int(const json& v) { return v.is_number_integer(); }
inline std::string shortj(const json& v, size_t n = 120) {
  std::string s = v.dump();
  return s.size() <= n ? s : s.substr(0, n) + "...";
}

// numpy dtype string ("<f4", "|u1", ...) -> (kind, itemsize); false if not a plain number type
inline bool parse_dtype(const std::string& s, char& kind, int& size) {
  if (s.size() < 3) return false;
  const char order = s[0];
  if (order != '<' && order != '|' && order != '=') return false;  // big-endian: not written
  kind = s[1];
  if (std::string("biufc").find(kind) == std::string::npos) return false;
  try {
    size_t used = 0;
    size = std::stoi(s.substr(2), &used);
    if (used != s.size() - 2) return false;
  } catch (...) {
    return false;
  }
  if (kind == 'b') return size == 1;
  if (kind == 'f') return size == 2 || size == 4 || size == 8;
  if (kind == 'c') return size == 8 || size == 16;
  return size == 1 || size == 2 || size == 4 || size == 8;
}

class Container {
 public:
  std::string where;
  json meta;                                 // the caller's header (the model document)
  std::map<std::string, Section> sections;
  std::vector<std::string> order;
  int64_t file_bytes = 0;

  explicit Container(const std::string& path) : where(path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw FormatError(where + ": cannot open: " + std::strerror(errno));
    std::fseek(f, 0, SEEK_END);
    const long size = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    if (size < 0) { std::fclose(f); throw FormatError(where + ": cannot read its size"); }
    file_bytes = size;
    buf_ = aligned_bytes(static_cast<size_t>(size));
    const size_t got = std::fread(buf_.get(), 1, static_cast<size_t>(size), f);
    std::fclose(f);
    if (static_cast<long>(got) != size)
      throw FormatError(where + ": truncated while reading: expected " + std::to_string(size) +
                        " bytes, got " + std::to_string(got));
    decode();
  }

 private:
  Bytes buf_;

  void check_zero(int64_t lo, int64_t hi, const std::string& what) const {
    for (int64_t i = lo; i < hi; ++i)
      if (buf_.get()[i])
        throw FormatError(where + ": " + what + ": padding bytes " + std::to_string(lo) + ".." +
                          std::to_string(hi - 1) + " are not zero; the file is corrupt");
  }

  void decode() {
    const uint8_t* b = buf_.get();
    const int64_t size = file_bytes;
    static const char kMagic[8] = {'L', 'O', 'W', 'B', 'I', 'T', 'M', 'F'};
    const int64_t m = std::min<int64_t>(size, 8);
    const bool prefix = std::memcmp(b, kMagic, static_cast<size_t>(m)) == 0;
    if (size < kPreamble && prefix)
      throw FormatError(where + ": truncated: " + std::to_string(size) + " bytes, the preamble alone is 64");
    if (!prefix || size < 8) throw FormatError(where + ": not a lowbit model file (magic: expected b'LOWBITMF')");
    uint32_t version, flags, hcrc, pcrc;
    uint64_t total, hlen;
    std::memcpy(&version, b + 8, 4);
    std::memcpy(&flags, b + 12, 4);
    std::memcpy(&total, b + 16, 8);
    std::memcpy(&hlen, b + 24, 8);
    std::memcpy(&hcrc, b + 32, 4);
    std::memcpy(&pcrc, b + 60, 4);
    const uint32_t got = crc32_of(b, 60);
    if (got != pcrc)
      throw FormatError(where + ": preamble: CRC32 mismatch (stored " + hex8(pcrc) + ", computed " +
                        hex8(got) + "); the file is corrupt");
    if (version != 1) {
      if (version > 1)
        throw FormatError(where + ": format version " + std::to_string(version) +
                          " is newer than this lowbit reads (versions [1]); upgrade lowbit");
      throw FormatError(where + ": format version " + std::to_string(version) +
                        " is older than this lowbit reads (versions [1]); re-create the file");
    }
    bool reserved = false;
    for (int i = 36; i < 60; ++i) reserved |= b[i] != 0;
    if ((flags & ~1u) || reserved)
      throw FormatError(where + ": preamble: unknown flags or non-zero reserved bytes (this lowbit knows flag 0x1 only)");
    if (total != static_cast<uint64_t>(size))
      throw FormatError(where + ": " + (static_cast<uint64_t>(size) < total ? "truncated" : "has trailing bytes") +
                        ": total length: expected " + std::to_string(total) + " bytes, got " + std::to_string(size));
    if (hlen > total || kPreamble + static_cast<int64_t>(hlen) + pad64(static_cast<int64_t>(hlen)) > static_cast<int64_t>(total))
      throw FormatError(where + ": header length " + std::to_string(hlen) + " runs past the end of the file");
    const int64_t hl = static_cast<int64_t>(hlen);
    const uint32_t hgot = crc32_of(b + kPreamble, static_cast<size_t>(hl));
    if (hgot != hcrc)
      throw FormatError(where + ": header: CRC32 mismatch (stored " + hex8(hcrc) + ", computed " +
                        hex8(hgot) + "); the file is corrupt");
    check_zero(kPreamble + hl, kPreamble + hl + pad64(hl), "header");
    std::string text;
    if (flags & 1u) text = inflate(b + kPreamble, static_cast<size_t>(hl));
    else text.assign(reinterpret_cast<const char*>(b + kPreamble), static_cast<size_t>(hl));
    json doc;
    try {
      doc = json::parse(text);
    } catch (const std::exception& e) {
      throw FormatError(where + ": header: not valid JSON (" + e.what() + ")");
    }
    if (!doc.is_object() || !doc.contains("meta") || !doc["meta"].is_object() ||
        !doc.contains("sections") || !doc["sections"].is_array())
      throw FormatError(where + ": header: expected keys 'meta' (object) and 'sections' (list)");
    const int64_t base = kPreamble + hl + pad64(hl);
    int64_t pos = base;
    for (const json& e : doc["sections"]) {
      if (!e.is_object()) throw FormatError(where + ": header: malformed section entry " + shortj(e));
      pos = read_section(e, pos, base);
    }
    if (pos != size)
      throw FormatError(where + ": " + std::to_string(size - pos) +
                        " bytes after the last section are not described by the header");
    meta = std::move(doc["meta"]);
  }

  std::string inflate(const uint8_t* p, size_t n) const {
    try {
      return Inflater(p, n).zlib();
    } catch (const std::runtime_error& e) {
      throw FormatError(where + ": header: deflate stream is corrupt (" + e.what() + ")");
    }
  }

  int64_t read_section(const json& e, int64_t pos, int64_t base) {
    auto get = [&](const char* k) -> const json* { return e.contains(k) ? &e[k] : nullptr; };
    const json *name = get("name"), *kind = get("kind"), *off = get("offset"), *nb = get("nbytes"), *crc = get("crc32");
    if (!(name && name->is_string() && !name->get<std::string>().empty() && kind && kind->is_string() &&
          off && is_int(*off) && nb && is_int(*nb) && crc && is_int(*crc)))
      throw FormatError(where + ": header: malformed section entry " + shortj(e) +
                        " (expected 'name' and 'kind' strings, 'offset', 'nbytes', 'crc32' integers)");
    Section s;
    s.name = name->get<std::string>();
    s.kind = kind->get<std::string>();
    const int64_t rel = off->get<int64_t>(), nbytes = nb->get<int64_t>();
    const int64_t at = base + rel;
    if (at != pos || nbytes < 0 || nbytes > file_bytes || at + nbytes + pad64(nbytes) > file_bytes)
      throw FormatError(where + ": section '" + s.name + "': offset " + std::to_string(rel) + " / size " +
                        std::to_string(nbytes) + " do not fit the file (expected offset " +
                        std::to_string(pos - base) + ", data area is " + std::to_string(file_bytes - base) + " bytes)");
    const uint32_t want = static_cast<uint32_t>(crc->get<int64_t>());
    const uint32_t got = crc32_of(buf_.get() + at, static_cast<size_t>(nbytes));
    if (crc->get<int64_t>() < 0 || crc->get<int64_t>() > 0xFFFFFFFFll || got != want)
      throw FormatError(where + ": section '" + s.name + "': CRC32 mismatch (stored " + hex8(want) +
                        ", computed " + hex8(got) + "); the file is corrupt");
    check_zero(at + nbytes, at + nbytes + pad64(nbytes), "section '" + s.name + "'");
    s.data = buf_.get() + at;
    s.nbytes = nbytes;
    if (s.kind == "array") {
      const json* shape = get("shape");
      if (!(shape && shape->is_array()))
        throw FormatError(where + ": section '" + s.name + "': bad shape (expected a list of sizes)");
      for (const json& v : *shape) {
        if (!is_int(v) || v.get<int64_t>() < 0)
          throw FormatError(where + ": section '" + s.name + "': bad shape " + shortj(*shape) + " (expected a list of sizes)");
        s.shape.push_back(v.get<int64_t>());
      }
      const json* dt = get("dtype");
      if (!(dt && dt->is_string() && parse_dtype(dt->get<std::string>(), s.dkind, s.itemsize)))
        throw FormatError(where + ": section '" + s.name + "': unsupported dtype " +
                          (dt ? shortj(*dt) : "None") + " (numeric or bool arrays only)");
      long double cap = 1;
      for (auto v : s.shape) cap *= static_cast<long double>(v > 1 ? v : 1);
      if (cap * s.itemsize >= 4611686018427387904.0L)
        throw FormatError(where + ": section '" + s.name + "': shape is too large for an array");
      if (s.count() * s.itemsize != nbytes)
        throw FormatError(where + ": section '" + s.name + "': " + dt->get<std::string>() + " " + shortj(*shape) +
                          " needs " + std::to_string(s.count() * s.itemsize) + " bytes, the section has " +
                          std::to_string(nbytes));
    } else if (s.kind != "bytes") {
      throw FormatError(where + ": section '" + s.name + "': unknown kind '" + s.kind + "' (expected 'array' or 'bytes')");
    }
    if (sections.count(s.name)) throw FormatError(where + ": section '" + s.name + "' appears twice");
    order.push_back(s.name);
    sections.emplace(s.name, std::move(s));
    return at + nbytes + pad64(nbytes);
  }
};

// One element of a raw array section as double.
inline double element(const Section& s, int64_t i) {
  const uint8_t* p = s.data + i * s.itemsize;
  switch (s.dkind) {
    case 'b': return *p ? 1.0 : 0.0;
    case 'u':
      if (s.itemsize == 1) return *p;
      if (s.itemsize == 2) { uint16_t v; std::memcpy(&v, p, 2); return v; }
      if (s.itemsize == 4) { uint32_t v; std::memcpy(&v, p, 4); return v; }
      { uint64_t v; std::memcpy(&v, p, 8); return static_cast<double>(v); }
    case 'i':
      if (s.itemsize == 1) return static_cast<int8_t>(*p);
      if (s.itemsize == 2) { int16_t v; std::memcpy(&v, p, 2); return v; }
      if (s.itemsize == 4) { int32_t v; std::memcpy(&v, p, 4); return v; }
      { int64_t v; std::memcpy(&v, p, 8); return static_cast<double>(v); }
    case 'f':
      if (s.itemsize == 4) { float v; std::memcpy(&v, p, 4); return v; }
      if (s.itemsize == 8) { double v; std::memcpy(&v, p, 8); return v; }
      {  // half
        uint16_t h; std::memcpy(&h, p, 2);
        const int e = (h >> 10) & 31, m = h & 1023;
        const double sign = (h >> 15) ? -1.0 : 1.0;
        if (e == 0) return sign * std::ldexp(m, -24);
        if (e == 31) return m ? NAN : sign * INFINITY;
        return sign * std::ldexp(m + 1024, e - 25);
      }
  }
  return 0.0;
}

struct Packed {   // a "packed" tensor's entry, checked
  std::string levels;
  int64_t oc = 0, kh = 0, kw = 0, c = 0, bits = 1, step = 1, offset = 0;
  const uint64_t* words = nullptr;   // the section
  int64_t cw() const { return (c + 63) / 64; }
};

// The model document over a container (lowbit.codec.model.from_container).
class ModelFile {
 public:
  Container box;
  json graph, entries, meta;

  explicit ModelFile(const std::string& path) : box(path) {
    const std::string& where = box.where;
    const json& h = box.meta;
    if (!h.contains("format") || h["format"] != "lowbit.model")
      throw FormatError(where + ": header 'format': expected 'lowbit.model', got " +
                        (h.contains("format") ? shortj(h["format"]) : "None"));
    if (!(h.contains("graph") && h["graph"].is_object() && h.contains("tensors") && h["tensors"].is_object() &&
          h.contains("meta") && h["meta"].is_object()))
      throw FormatError(where + ": header: 'graph', 'tensors' and 'meta' must be objects");
    graph = h["graph"];
    entries = h["tensors"];
    meta = h["meta"];
    for (auto it = entries.begin(); it != entries.end(); ++it)
      if (!(it->is_object() && it->contains("enc") && (*it)["enc"].is_string()))
        throw FormatError(where + ": header 'tensors': entry '" + it.key().substr(0, 80) +
                          "' is not an object with an 'enc' string");
    std::set<std::string> ents, secs;
    for (auto it = entries.begin(); it != entries.end(); ++it) ents.insert(it.key());
    for (const auto& kv : box.sections) secs.insert(kv.first);
    if (ents != secs) {
      std::string a, b;
      for (auto& n : ents) if (!secs.count(n)) a += (a.empty() ? "'" : ", '") + n + "'";
      for (auto& n : secs) if (!ents.count(n)) b += (b.empty() ? "'" : ", '") + n + "'";
      throw FormatError(where + ": tensors without a section: [" + a + "]; sections without a tensor: [" + b + "]");
    }
  }

  const std::string& where() const { return box.where; }
  std::string enc(const std::string& name) const {
    if (!entries.contains(name)) throw FormatError(where() + ": no tensor '" + name + "'");
    return entries[name]["enc"].get<std::string>();
  }
  const Section& section(const std::string& name) const { return box.sections.at(name); }

  [[noreturn]] void fail(const std::string& name, const std::string& what) const {
    throw FormatError(where() + ": tensor '" + name + "': " + what);
  }

  // The logical shape after the encoding's check (ModelFile.tensor_shape).
  std::vector<int64_t> tensor_shape(const std::string& name) const {
    const std::string e = enc(name);
    if (e == "raw") {
      const Section& s = section(name);
      if (s.kind != "array") fail(name, "raw tensor: the section is not an array");
      if (s.dkind == 'c') fail(name, "raw tensor: dtype is not a real number type");
      return s.shape;
    }
    if (e == "packed") {
      Packed p = packed(name);
      return {p.oc, p.kh, p.kw, p.c};
    }
    if (e == "dc")
      fail(name, "Deep-Compression ('dc') tensors are not supported by lowbit-run (no Huffman / "
                 "sparse-index decoder in the C++ loader); run this file with the Python runtime");
    fail(name, "unknown encoding '" + e + "' (known: dc, packed, raw)");
  }

  // The dense float32 value (np.asarray(mf.tensor(name), float32)) and its shape.
  std::vector<float> tensor(const std::string& name, std::vector<int64_t>* shape = nullptr) const {
    const std::vector<int64_t> sh = tensor_shape(name);
    if (shape) *shape = sh;
    const std::string e = enc(name);
    std::vector<float> out;
    if (e == "raw") {
      const Section& s = section(name);
      const int64_t n = s.count();
      out.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        const double v = element(s, i);
        if (s.dkind == 'f' && !std::isfinite(v)) fail(name, "raw tensor: contains NaN or inf");
        out[static_cast<size_t>(i)] = static_cast<float>(v);
      }
      return out;
    }
    const Packed p = packed(name);  // unpack_levels: float32 levels (OC, KH, KW, C)
    const int64_t rows = p.oc * p.kh * p.kw, cw = p.cw();
    out.resize(static_cast<size_t>(rows * p.c));
    auto bit = [&](const uint64_t* plane, int64_t r, int64_t ch) {
      return static_cast<int>((plane[r * cw + ch / 64] >> (ch % 64)) & 1);
    };
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t ch = 0; ch < p.c; ++ch) {
        double v;
        if (p.levels == "binary") v = 2.0 * bit(p.words, r, ch) - 1.0;
        else if (p.levels == "ternary") v = (2.0 * bit(p.words, r, ch) - 1.0) * bit(p.words + rows * cw, r, ch);
        else {
          int64_t u = 0;
          for (int64_t k = 0; k < p.bits; ++k)
            u |= static_cast<int64_t>((p.words[(r * p.bits + k) * cw + ch / 64] >> (ch % 64)) & 1) << k;
          v = static_cast<double>(p.step * u + p.offset);
        }
        out[static_cast<size_t>(r * p.c + ch)] = static_cast<float>(v);
      }
    return out;
  }

  // lowbit.codec.packed.check_packed
  Packed packed(const std::string& name) const {
    if (enc(name) != "packed") fail(name, "expected a packed tensor");
    const json& e = entries[name];
    const Section& s = section(name);
    auto ok_int = [](const json& v, int64_t lo, int64_t hi) {
      return v.is_number_integer() && v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
    };
    Packed p;
    const json shape = e.value("shape", json());
    if (!(shape.is_array() && shape.size() == 4 && ok_int(shape[0], 1, 2147483647) && ok_int(shape[1], 1, 2147483647) &&
          ok_int(shape[2], 1, 2147483647) && ok_int(shape[3], 1, 2147483647)))
      fail(name, "packed tensor: field 'shape': expected [OC, KH, KW, C] of positive integers, got " + shortj(shape, 80));
    const json lv = e.value("levels", json());
    if (!(lv.is_string() && (lv == "binary" || lv == "ternary" || lv == "planes")))
      fail(name, "packed tensor: unknown levels " + shortj(lv, 40));
    p.levels = lv.get<std::string>();
    const json bits = e.contains("bits") ? e["bits"] : json(1);
    if (p.levels == "planes") {
      if (!(ok_int(bits, 1, 32) && e.contains("step") && ok_int(e["step"], -(1ll << 32), 1ll << 32) &&
            e.contains("offset") && ok_int(e["offset"], -(1ll << 32), 1ll << 32)))
        fail(name, "packed tensor: planes need integer 'bits' (1..32), 'step' and 'offset'");
      p.bits = bits.get<int64_t>();
      p.step = e["step"].get<int64_t>();
      p.offset = e["offset"].get<int64_t>();
    }
    p.oc = shape[0].get<int64_t>(); p.kh = shape[1].get<int64_t>(); p.kw = shape[2].get<int64_t>(); p.c = shape[3].get<int64_t>();
    const int64_t w = p.cw();
    std::vector<int64_t> want;
    if (p.levels == "binary") want = {p.oc, p.kh, p.kw, w};
    else if (p.levels == "ternary") want = {2, p.oc, p.kh, p.kw, w};
    else want = {p.oc, p.kh, p.kw, p.bits, w};
    if (!(s.kind == "array" && s.dkind == 'u' && s.itemsize == 8 && s.shape == want))
      fail(name, "packed tensor: " + p.levels + " levels of shape " + shape.dump() +
                 " need a uint64 section of that layout");
    p.words = reinterpret_cast<const uint64_t*>(s.data);
    const int64_t nwords = s.count();
    if (p.c % 64) {
      for (int64_t i = w - 1; i < nwords; i += w)
        if (p.words[i] >> (p.c % 64)) fail(name, "packed tensor: pad bits past channel " + std::to_string(p.c) + " are set (they must be 0)");
    }
    if (p.levels == "ternary") {
      const int64_t half = nwords / 2;
      for (int64_t i = 0; i < half; ++i)
        if (p.words[i] & ~p.words[half + i]) fail(name, "packed tensor: ternary sign bits set on zero weights (mask 0)");
    }
    return p;
  }
};

}  // namespace runner
}  // namespace lowbit
