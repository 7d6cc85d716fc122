// tests/fuzz/encoders/fuzz_reference.h — trivially correct reference decoders, written from
// docs/ENCODING.md one byte at a time, for differential fuzzing of the fast decoders.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace ferry::encoders::fuzz {

inline bool ref_varint(const uint8_t* in, size_t len, size_t* i, uint32_t* v) {
  uint32_t r = 0;
  for (int shift = 0; shift < 28; shift += 7) {
    if (*i >= len) return false;
    const uint8_t b = in[(*i)++];
    r |= uint32_t{b & 0x7fu} << shift;
    if (!(b & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}

inline bool ref_rle_decode(const uint8_t* in, size_t len, size_t n, std::vector<uint8_t>* out) {
  out->clear();
  size_t i = 0;
  while (i < len) {
    uint32_t v;
    if (!ref_varint(in, len, &i, &v)) return false;
    const size_t l = v >> 1;
    if (l == 0 || out->size() + l > n) return false;
    if (v & 1) {
      if (i >= len) return false;
      out->insert(out->end(), l, in[i++]);
    } else {
      if (len - i < l) return false;
      out->insert(out->end(), in + i, in + i + l);
      i += l;
    }
  }
  return out->size() == n;
}

// out holds the base on entry.
inline bool ref_delta_decode(const uint8_t* in, size_t len, std::vector<uint8_t>* out) {
  size_t i = 0, pos = 0;
  while (i < len) {
    uint32_t skip, l;
    if (!ref_varint(in, len, &i, &skip)) return false;
    if (!ref_varint(in, len, &i, &l)) return false;
    if (l == 0 || pos + skip + l > out->size() || len - i < l) return false;
    pos += skip;
    for (size_t k = 0; k < l; ++k) (*out)[pos++] = in[i++];
  }
  return true;
}

[[noreturn]] inline void fuzz_fail() { std::abort(); }

}  // namespace ferry::encoders::fuzz
