// RLE and delta: bitmaps from the kernels in, canonical bytes out (shared by every variant).
#include "encoders/codecs.h"

#include <bit>
#include <cstring>

namespace ferry::encoders {
namespace {

// ---- bitmap scanning -------------------------------------------------------------------
//
// A scan sees the bitmap as an infinite bit string: bits of the map (optionally inverted)
// below n, then `pad` (all 0 or all 1) from n on. Positions past n are never returned beyond
// n itself, so callers clamp with n.
struct BitView {
  const uint64_t* bits;
  size_t n;
  size_t words;
  uint64_t inv;  // 0 or ~0: scan the complement
  uint64_t pad;  // value of bits at positions >= n (0 or ~0)

  uint64_t word(size_t k) const {
    if (k >= words) return pad;
    uint64_t w = bits[k] ^ inv;
    const size_t rem = n % 64;
    if (k == words - 1 && rem != 0) {
      const uint64_t valid = (uint64_t{1} << rem) - 1;
      w = (w & valid) | (pad & ~valid);
    }
    return w;
  }

  // Smallest j >= from with bit j set; n when none below n.
  size_t next_set(size_t from) const {
    if (from >= n) return n;
    size_t k = from / 64;
    uint64_t w = word(k) & (~uint64_t{0} << (from % 64));
    while (w == 0) {
      if (++k >= words) return n;
      w = word(k);
    }
    const size_t j = k * 64 + static_cast<size_t>(__builtin_ctzll(w));
    return j < n ? j : n;
  }

  // Smallest j >= from with bits j, j+1, j+2 all set; n when none starts below n.
  size_t next_triple(size_t from) const {
    if (from >= n) return n;
    size_t k = from / 64;
    uint64_t x0 = word(k);
    uint64_t x1 = word(k + 1);
    uint64_t t = x0 & ((x0 >> 1) | (x1 << 63)) & ((x0 >> 2) | (x1 << 62));
    t &= ~uint64_t{0} << (from % 64);
    while (t == 0) {
      if (++k >= words) return n;
      x0 = x1;
      x1 = word(k + 1);
      t = x0 & ((x0 >> 1) | (x1 << 63)) & ((x0 >> 2) | (x1 << 62));
    }
    const size_t j = k * 64 + static_cast<size_t>(__builtin_ctzll(t));
    return j < n ? j : n;
  }
};

static_assert(kRleMinRun == 4 && kDeltaMinGap == 3,
              "the scanners look for three consecutive bits: update next_triple");

inline size_t varint_size(uint32_t v) {
  return v < (1u << 7) ? 1 : v < (1u << 14) ? 2 : v < (1u << 21) ? 3 : 4;
}

inline uint8_t* put_varint(uint8_t* o, uint32_t v) {
  while (v >= 0x80) {
    *o++ = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  *o++ = static_cast<uint8_t>(v);
  return o;
}

// Reads a uleb128 of at most 4 bytes at in[*ip]. False on truncation or over-length; *err says
// which, *ip is left at the start of the varint.
inline bool get_varint(const uint8_t* in, size_t len, size_t* ip, uint32_t* v, DecodeError* err) {
  size_t i = *ip;
  uint32_t r = 0;
  for (int shift = 0; shift < 28; shift += 7) {
    if (i >= len) {
      *err = DecodeError::kTruncated;
      return false;
    }
    const uint8_t b = in[i++];
    r |= static_cast<uint32_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      *ip = i;
      *v = r;
      return true;
    }
  }
  *err = DecodeError::kBadVarint;
  return false;
}

}  // namespace

const char* decode_error_name(DecodeError e) {
  switch (e) {
    case DecodeError::kOk:
      return "ok";
    case DecodeError::kTruncated:
      return "input truncated";
    case DecodeError::kBadVarint:
      return "length field longer than 4 bytes";
    case DecodeError::kBadLength:
      return "invalid length";
    case DecodeError::kOverrun:
      return "record runs past the end of the page";
    case DecodeError::kShort:
      return "input ends before the page is complete";
    case DecodeError::kBadForm:
      return "unknown page form";
    case DecodeError::kNotCached:
      return "same/delta record for a page not in the cache";
    case DecodeError::kUnavailable:
      return "codec not available in this build";
    case DecodeError::kCodec:
      return "compressed payload rejected by its codec";
    case DecodeError::kTrailing:
      return "trailing bytes after the last record";
  }
  return "unknown error";
}

// ---- RLE ---------------------------------------------------------------------------------
//
// E = eq_prev bitmap. A run of >= 4 equal bytes starting at s shows as E[s+1..s+3] = 1, i.e.
// T[s+1] = 1 with T[j] = E[j] & E[j+1] & E[j+2]. The smallest such j after a literal start
// gives the start of a maximal run because E at the literal start is 0 (or it is position 0).
// The run ends at the next 0 of E.
namespace {

// Copies len bytes; when both sides have 32 bytes of room, as one fixed 32-byte move (which
// compiles to two vector moves) instead of a libc call: most chunks are short.
inline void copy_short(uint8_t* dst, size_t dst_room, const uint8_t* src, size_t src_room,
                       size_t len) {
  if (len <= 32 && dst_room >= 32 && src_room >= 32) {
    std::memcpy(dst, src, 32);
  } else {
    std::memcpy(dst, src, len);
  }
}

// One chunk page[from, to) at out[op] with exact bounds (long chunks, the last bytes of the
// page or of out); returns the new op, or kTooBig when it does not fit in cap.
size_t rle_emit_exact(const uint8_t* page, size_t n, uint8_t* out, size_t cap, size_t op,
                      size_t from, size_t to, bool run) {
  const uint32_t len = static_cast<uint32_t>(to - from);
  if (run) {
    const uint32_t hdr = (len << 1) | 1;
    if (op + varint_size(hdr) + 1 > cap) return kTooBig;
    op = static_cast<size_t>(put_varint(out + op, hdr) - out);
    out[op++] = page[from];
    return op;
  }
  const uint32_t hdr = len << 1;
  if (op + varint_size(hdr) + len > cap) return kTooBig;
  op = static_cast<size_t>(put_varint(out + op, hdr) - out);
  copy_short(out + op, cap - op, page + from, n - from, len);
  return op + len;
}

}  // namespace

size_t rle_encode(const Kernels& k, const uint8_t* page, size_t n, uint8_t* out, size_t cap,
                  uint64_t* bits) {
  k.eq_prev_bitmap(page, n, bits);
  const size_t words = bitmap_words(n);
  // Scratch layout: E[words + 1] (E[words] = 0), T with one zero word either side, RS, B.
  bits[words] = 0;
  uint64_t* t = bits + words + 2;
  t[-1] = 0;
  t[words] = 0;
  for (size_t i = 0; i < words; ++i) {
    const uint64_t e0 = bits[i];
    const uint64_t e1 = bits[i + 1];
    t[i] = e0 & ((e0 >> 1) | (e1 << 63)) & ((e0 >> 2) | (e1 << 62));
  }
  // Chunk boundaries, found per word without a serial scan from chunk to chunk:
  //   run start s: T[s+1] = 1 and E[s] = 0        (RS = (T >> 1) & ~E)
  //   run end e:   E[e] = 0 and T[e-3] = 1        (RE = (T << 3) & ~E), i.e. bytes e-4..e-1
  //                equal and byte e different.
  // A run chunk goes from an RS boundary to the next boundary (its RE, or n); every other chunk
  // is a literal. Boundaries only cost a ctz and a clear-lowest-bit each.
  size_t op = 0;
  size_t prev = 0;
  bool prev_is_run = false;
  // Boundary masks first, in a loop of pure word arithmetic the compiler vectorises; the
  // emission loop below then skips boundary-free words with one test each.
  uint64_t* rs_bits = t + words + 1;
  uint64_t* b_bits = rs_bits + words;
  const uint64_t* t_prev = t - 1;  // t[-1] is the zero pad word
  for (size_t i = 0; i < words; ++i) {
    const uint64_t e = bits[i];
    const uint64_t rs = ((t[i] >> 1) | (t[i + 1] << 63)) & ~e;
    const uint64_t re = ((t[i] << 3) | (t_prev[i] >> 61)) & ~e;
    rs_bits[i] = rs;
    b_bits[i] = rs | re;
  }
  const size_t rem = n % 64;
  if (rem != 0) b_bits[words - 1] &= (uint64_t{1} << rem) - 1;  // boundary n is implicit
  prev_is_run = (rs_bits[0] & 1) != 0;
  b_bits[0] &= ~uint64_t{1};
  // Emission. Fast path, without a branch on the chunk's kind (structured pages alternate
  // short runs and literals ~10 times per 64 bytes) and with op in a register: one header
  // byte, then 32 bytes copied from the chunk's start — a literal's bytes, or a run's byte
  // followed by junk that the next chunk overwrites.
  for (size_t i = 0; i < words; ++i) {
    uint64_t w = b_bits[i];
    const uint64_t rs = rs_bits[i];
    while (w != 0) {
      const unsigned bit = static_cast<unsigned>(__builtin_ctzll(w));
      w &= w - 1;
      const size_t b = i * 64 + bit;
      const size_t len = b - prev;
      if (len <= 32 && op + 1 + 32 <= cap && n - prev >= 32) [[likely]] {
        out[op] = static_cast<uint8_t>((len << 1) | (prev_is_run ? 1 : 0));
        std::memcpy(out + op + 1, page + prev, 32);
        op += 1 + (prev_is_run ? 1 : len);
      } else {
        op = rle_emit_exact(page, n, out, cap, op, prev, b, prev_is_run);
        if (op == kTooBig) return kTooBig;
      }
      prev = b;
      prev_is_run = ((rs >> bit) & 1) != 0;
    }
  }
  if (n > prev) return rle_emit_exact(page, n, out, cap, op, prev, n, prev_is_run);
  return op;
}

DecodeResult rle_decode(const uint8_t* in, size_t len, uint8_t* out, size_t n) {
  size_t ip = 0;
  size_t op = 0;
  while (ip < len) {
    // Fast path for short chunks (one header byte, L <= 63) far from both ends: fixed 64-byte
    // stores, no length tests beyond L != 0. Bytes stored past L lie inside the page and are
    // rewritten by the following chunks (RLE output is contiguous).
    const uint8_t h0 = in[ip];
    if (h0 < 0x80 && len - ip > 64 && n - op >= 64) {
      const size_t l = h0 >> 1;
      if (l == 0) return {DecodeError::kBadLength, static_cast<uint32_t>(ip)};
      if (h0 & 1) {
        // The run's byte in every lane of one 64-bit word, stored eight times (no stack copy).
        const uint64_t v = in[ip + 1] * 0x0101010101010101ull;
        for (int k = 0; k < 8; ++k) std::memcpy(out + op + 8 * k, &v, 8);
        ip += 2;
      } else {
        std::memcpy(out + op, in + ip + 1, 64);
        ip += 1 + l;
      }
      op += l;
      continue;
    }
    const size_t at = ip;
    uint32_t hdr;
    DecodeError err;
    if (!get_varint(in, len, &ip, &hdr, &err)) return {err, static_cast<uint32_t>(at)};
    const size_t l = hdr >> 1;
    if (l == 0) return {DecodeError::kBadLength, static_cast<uint32_t>(at)};
    if (l > n - op) return {DecodeError::kOverrun, static_cast<uint32_t>(at)};
    if (hdr & 1) {
      if (ip >= len) return {DecodeError::kTruncated, static_cast<uint32_t>(ip)};
      const uint8_t v = in[ip++];
      if (l <= 32 && n - op >= 32) {
        uint8_t tmp[32];
        std::memset(tmp, v, 32);
        std::memcpy(out + op, tmp, 32);
      } else {
        std::memset(out + op, v, l);
      }
    } else {
      if (l > len - ip) return {DecodeError::kTruncated, static_cast<uint32_t>(ip)};
      copy_short(out + op, n - op, in + ip, len - ip, l);
      ip += l;
    }
    op += l;
  }
  if (op != n) return {DecodeError::kShort, static_cast<uint32_t>(len)};
  return {};
}

// ---- delta -------------------------------------------------------------------------------
//
// D = diff bitmap. A changed span starts at the next set bit and ends where an unchanged gap of
// >= 3 bytes begins, or where the unchanged tail to the end of the page begins (scanning the
// complement with pad 1 treats the page end as unchanged).
size_t delta_encode(const uint8_t* cur, size_t n, const uint64_t* diff_bits, uint8_t* out,
                    size_t cap) {
  const BitView d{diff_bits, n, bitmap_words(n), 0, 0};
  const BitView same{diff_bits, n, bitmap_words(n), ~uint64_t{0}, ~uint64_t{0}};
  size_t op = 0;
  size_t prev_end = 0;
  size_t start = d.next_set(0);
  while (start < n) {
    const size_t end = same.next_triple(start + 1);
    const uint32_t skip = static_cast<uint32_t>(start - prev_end);
    const uint32_t len = static_cast<uint32_t>(end - start);
    if (op + varint_size(skip) + varint_size(len) + len > cap) return kTooBig;
    uint8_t* o = put_varint(out + op, skip);
    o = put_varint(o, len);
    std::memcpy(o, cur + start, len);
    op = static_cast<size_t>(o - out) + len;
    prev_end = end;
    start = d.next_set(end);
  }
  return op;
}

DecodeResult delta_decode(const uint8_t* in, size_t len, uint8_t* out, size_t n) {
  size_t ip = 0;
  size_t op = 0;
  while (ip < len) {
    const size_t at = ip;
    uint32_t skip;
    uint32_t l;
    DecodeError err;
    if (!get_varint(in, len, &ip, &skip, &err)) return {err, static_cast<uint32_t>(ip)};
    if (skip > n - op) return {DecodeError::kOverrun, static_cast<uint32_t>(at)};
    const size_t lat = ip;
    if (!get_varint(in, len, &ip, &l, &err)) return {err, static_cast<uint32_t>(ip)};
    if (l == 0) return {DecodeError::kBadLength, static_cast<uint32_t>(lat)};
    op += skip;
    if (l > n - op) return {DecodeError::kOverrun, static_cast<uint32_t>(lat)};
    if (l > len - ip) return {DecodeError::kTruncated, static_cast<uint32_t>(ip)};
    std::memcpy(out + op, in + ip, l);
    ip += l;
    op += l;
  }
  return {};
}

// ---- word stride -------------------------------------------------------------------------

namespace {

inline uint64_t load_le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}

inline void store_le64(uint8_t* p, uint64_t v) {
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  std::memcpy(p, &v, 8);
}

// |x| < 2^16 as a two's-complement 64-bit value.
inline unsigned small_word(uint64_t x) { return x + 0x10000 < 0x20000 ? 1 : 0; }

}  // namespace

bool valid_word_stride(unsigned k) { return k == 1 || k == 2 || k == 8; }

unsigned choose_word_stride(const uint8_t* page, size_t n) {
  const size_t words = n / 8;
  if (words <= 8) return 0;
  // One pass, all candidates at once; words before the largest stride count for none.
  unsigned as_is = 0, s1 = 0, s2 = 0, s8 = 0;
  for (size_t i = 8; i < words; ++i) {
    const uint64_t w = load_le64(page + 8 * i);
    as_is += small_word(w);
    s1 += small_word(w - load_le64(page + 8 * (i - 1)));
    s2 += small_word(w - load_le64(page + 8 * (i - 2)));
    s8 += small_word(w - load_le64(page + 8 * (i - 8)));
  }
  unsigned best = 0, best_score = as_is + static_cast<unsigned>(words / 8);
  if (s1 > best_score) best = 1, best_score = s1;
  if (s2 > best_score) best = 2, best_score = s2;
  if (s8 > best_score) best = 8;
  return best;
}

void word_stride_encode(const uint8_t* page, size_t n, unsigned k, uint8_t* out) {
  const size_t words = n / 8;
  std::memcpy(out, page, 8 * k);
  for (size_t i = k; i < words; ++i) {
    store_le64(out + 8 * i, load_le64(page + 8 * i) - load_le64(page + 8 * (i - k)));
  }
}

void word_stride_decode(const uint8_t* in, size_t n, unsigned k, uint8_t* out) {
  const size_t words = n / 8;
  std::memcpy(out, in, 8 * k);
  for (size_t i = k; i < words; ++i) {
    store_le64(out + 8 * i, load_le64(in + 8 * i) + load_le64(out + 8 * (i - k)));
  }
}

}  // namespace ferry::encoders
