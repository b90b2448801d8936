// CRC-32 (zlib's polynomial, table driven) and zlib-stream inflate (RFC 1950 / 1951, the
// canonical-Huffman decoder of zlib's puff.c), so that the runner needs no zlib: the model
// header is the only deflated part of a model file.  Any malformed stream throws.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace lowbit {
namespace runner {

inline uint32_t crc32_of(const uint8_t* p, size_t n) {
  static const auto table = [] {
    struct T { uint32_t v[256]; } t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t.v[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table.v[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

class Inflater {
 public:
  Inflater(const uint8_t* p, size_t n) : p_(p), n_(n) {}

  // The whole zlib stream (header, deflate blocks, Adler-32) -> bytes.
  std::string zlib() {
    if (n_ < 6) fail("stream too short");
    const int cmf = p_[0], flg = p_[1];
    if ((cmf & 15) != 8 || (cmf >> 4) > 7 || (cmf * 256 + flg) % 31 || (flg & 0x20)) fail("incorrect header check");
    pos_ = 2;
    int last;
    do {
      last = bit();
      const int type = static_cast<int>(bits(2));
      if (type == 0) stored();
      else if (type == 1) fixed();
      else if (type == 2) dynamic();
      else fail("invalid block type");
    } while (!last);
    bitcnt_ = 0;  // to the byte boundary
    if (pos_ + 4 > n_) fail("incomplete or truncated stream");
    uint32_t a = 1, b = 0;
    for (unsigned char ch : out_) { a = (a + ch) % 65521; b = (b + a) % 65521; }
    const uint32_t want = (uint32_t{p_[pos_]} << 24) | (uint32_t{p_[pos_ + 1]} << 16) | (uint32_t{p_[pos_ + 2]} << 8) | p_[pos_ + 3];
    if (want != ((b << 16) | a)) fail("incorrect data check");
    return std::move(out_);
  }

 private:
  struct Huff { uint16_t count[16]; uint16_t sym[320]; };
  const uint8_t* p_;
  size_t n_, pos_ = 0;
  uint32_t bitbuf_ = 0;
  int bitcnt_ = 0;
  std::string out_;

  [[noreturn]] static void fail(const char* what) { throw std::runtime_error(what); }

  int bit() {
    if (!bitcnt_) {
      if (pos_ >= n_) fail("incomplete or truncated stream");
      bitbuf_ = p_[pos_++];
      bitcnt_ = 8;
    }
    const int b = bitbuf_ & 1;
    bitbuf_ >>= 1;
    --bitcnt_;
    return b;
  }
  uint32_t bits(int k) {
    uint32_t v = 0;
    for (int i = 0; i < k; ++i) v |= static_cast<uint32_t>(bit()) << i;
    return v;
  }
  void put(char c) {
    if (out_.size() >= (size_t{1} << 30)) fail("inflates past 1 GiB");
    out_.push_back(c);
  }

  void stored() {
    bitcnt_ = 0;
    if (pos_ + 4 > n_) fail("incomplete or truncated stream");
    const unsigned len = p_[pos_] | (p_[pos_ + 1] << 8), nlen = p_[pos_ + 2] | (p_[pos_ + 3] << 8);
    pos_ += 4;
    if (len != (~nlen & 0xFFFF)) fail("invalid stored block lengths");
    if (pos_ + len > n_) fail("incomplete or truncated stream");
    for (unsigned i = 0; i < len; ++i) put(static_cast<char>(p_[pos_ + i]));
    pos_ += len;
  }

  // returns the number of unused codes (< 0: over-subscribed)
  static int build(Huff& h, const uint8_t* len, int n) {
    for (auto& c : h.count) c = 0;
    for (int s = 0; s < n; ++s) h.count[len[s]]++;
    if (h.count[0] == n) return 0;
    int left = 1;
    for (int l = 1; l < 16; ++l) {
      left <<= 1;
      left -= h.count[l];
      if (left < 0) return left;
    }
    uint16_t offs[16];
    offs[1] = 0;
    for (int l = 1; l < 15; ++l) offs[l + 1] = static_cast<uint16_t>(offs[l] + h.count[l]);
    for (int s = 0; s < n; ++s)
      if (len[s]) h.sym[offs[len[s]]++] = static_cast<uint16_t>(s);
    return left;
  }

  int decode(const Huff& h) {
    int code = 0, first = 0, index = 0;
    for (int l = 1; l < 16; ++l) {
      code |= bit();
      const int count = h.count[l];
      if (code - count < first) return h.sym[index + (code - first)];
      index += count;
      first += count;
      first <<= 1;
      code <<= 1;
    }
    fail("invalid code");
  }

  void codes(const Huff& lc, const Huff& dc) {
    static const uint16_t lbase[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const uint8_t lext[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    static const uint16_t dbase[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
    static const uint8_t dext[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    while (true) {
      int sym = decode(lc);
      if (sym < 256) { put(static_cast<char>(sym)); continue; }
      if (sym == 256) return;
      sym -= 257;
      if (sym >= 29) fail("invalid literal/length code");
      const size_t len = lbase[sym] + bits(lext[sym]);
      const int ds = decode(dc);
      if (ds >= 30) fail("invalid distance code");
      const size_t dist = dbase[ds] + bits(dext[ds]);
      if (dist > out_.size()) fail("invalid distance too far back");
      for (size_t i = 0; i < len; ++i) put(out_[out_.size() - dist]);
    }
  }

  void fixed() {
    static const auto tables = [] {
      struct T { Huff l, d; } t{};
      uint8_t len[288];
      int s = 0;
      for (; s < 144; ++s) len[s] = 8;
      for (; s < 256; ++s) len[s] = 9;
      for (; s < 280; ++s) len[s] = 7;
      for (; s < 288; ++s) len[s] = 8;
      build(t.l, len, 288);
      for (s = 0; s < 30; ++s) len[s] = 5;
      build(t.d, len, 30);
      return t;
    }();
    codes(tables.l, tables.d);
  }

  void dynamic() {
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    const int nlen = static_cast<int>(bits(5)) + 257, ndist = static_cast<int>(bits(5)) + 1, ncode = static_cast<int>(bits(4)) + 4;
    if (nlen > 286 || ndist > 30) fail("bad counts");
    uint8_t len[320] = {};
    for (int i = 0; i < ncode; ++i) len[order[i]] = static_cast<uint8_t>(bits(3));
    Huff lc, dc;
    if (build(lc, len, 19) != 0) fail("invalid code lengths set");
    int i = 0;
    while (i < nlen + ndist) {
      int sym = decode(lc);
      if (sym < 16) { len[i++] = static_cast<uint8_t>(sym); continue; }
      uint8_t v = 0;
      int rep;
      if (sym == 16) {
        if (i == 0) fail("invalid bit length repeat");
        v = len[i - 1];
        rep = 3 + static_cast<int>(bits(2));
      } else if (sym == 17) rep = 3 + static_cast<int>(bits(3));
      else rep = 11 + static_cast<int>(bits(7));
      if (i + rep > nlen + ndist) fail("invalid bit length repeat");
      while (rep--) len[i++] = v;
    }
    if (len[256] == 0) fail("invalid code -- missing end-of-block");
    int err = build(lc, len, nlen);
    if (err < 0 || (err > 0 && nlen - lc.count[0] != 1)) fail("invalid literal/lengths set");
    err = build(dc, len + nlen, ndist);
    if (err < 0 || (err > 0 && ndist - dc.count[0] != 1)) fail("invalid distances set");
    codes(lc, dc);
  }
};

}  // namespace runner
}  // namespace lowbit
