// common/endian.h — the one big-endian helper: QEMU's stream and ferry's wire formats are
// big-endian, read and written byte by byte (no alignment assumed, no host-order surprise).
#pragma once

#include <cstdint>

namespace ferry {

inline uint16_t load_be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline uint32_t load_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
inline uint64_t load_be64(const uint8_t* p) {
  return (uint64_t{load_be32(p)} << 32) | load_be32(p + 4);
}
// The low n bytes of v (n <= 8), most significant first.
inline uint64_t load_be(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

inline void store_be(uint8_t* p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
inline void store_be16(uint8_t* p, uint16_t v) { store_be(p, v, 2); }
inline void store_be32(uint8_t* p, uint32_t v) { store_be(p, v, 4); }
inline void store_be64(uint8_t* p, uint64_t v) { store_be(p, v, 8); }

}  // namespace ferry
