// tests/unit/encoders/page_sets.h — deterministic page generators shared by the encoder unit
// tests, fuzzers (seed corpora) and benchmarks. Header-only; no ferry dependencies.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace ferry::encoders::testing {

using Page = std::vector<uint8_t>;

inline Page random_page(std::mt19937_64& rng, size_t n) {
  Page p(n);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(p.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return p;
}

// English-like text: words from a small vocabulary, spaces, newlines (kernel log buffers,
// config files, source in page cache).
inline Page text_page(std::mt19937_64& rng, size_t n) {
  static const char* kWords[] = {"the",   "migration", "of",      "a",     "page",      "is",
                                 "sent",  "to",        "kernel:", "[",     "0.000000]", "memory",
                                 "and",   "dirty",     "qemu",    "ferry", "virtio",    "net",
                                 "block", "cpu",       "=",       "0x1f",  "ok"};
  Page p(n);
  size_t i = 0;
  while (i < n) {
    const char* w = kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))];
    for (const char* c = w; *c != 0 && i < n; ++c) p[i++] = static_cast<uint8_t>(*c);
    if (i < n) p[i++] = (rng() % 9 == 0) ? '\n' : ' ';
  }
  return p;
}

// Mostly zero with a few scattered 8-byte values (page tables, sparse heaps, bitmaps).
inline Page sparse_page(std::mt19937_64& rng, size_t n) {
  Page p(n, 0);
  const size_t words = 4 + rng() % 28;
  for (size_t k = 0; k < words; ++k) {
    const size_t off = (rng() % (n / 8)) * 8;
    const uint64_t v = rng() & 0x0000ffffffffffffull;
    std::memcpy(p.data() + off, &v, 8);
  }
  return p;
}

// Arrays of 64-byte records: counters, small flags, kernel pointers, zero padding (slab
// objects, struct page arrays).
inline Page structured_page(std::mt19937_64& rng, size_t n) {
  Page p(n, 0);
  const uint64_t base_id = rng() % 100000;
  const uint64_t ptr_base = 0xffff888000000000ull | ((rng() & 0xfffff) << 12);
  for (size_t off = 0, r = 0; off + 64 <= n; off += 64, ++r) {
    const uint64_t id = base_id + r;
    const uint32_t flags = static_cast<uint32_t>(rng() % 4);
    const uint64_t next = ptr_base + (r + 1) * 64;
    const uint64_t prev = ptr_base + (r ? r - 1 : 0) * 64;
    std::memcpy(p.data() + off, &id, 8);
    std::memcpy(p.data() + off + 8, &flags, 4);
    std::memcpy(p.data() + off + 16, &next, 8);
    std::memcpy(p.data() + off + 24, &prev, 8);
    std::memset(p.data() + off + 40, 0xff, 4);
  }
  return p;
}

// base with one aligned 8-byte word changed.
inline Page one_word_changed(std::mt19937_64& rng, const Page& base) {
  Page p = base;
  const size_t off = (rng() % (base.size() / 8)) * 8;
  const uint64_t v = rng() | 1;
  uint64_t old;
  std::memcpy(&old, p.data() + off, 8);
  const uint64_t nv = old ^ v;
  std::memcpy(p.data() + off, &nv, 8);
  return p;
}

// Adversarial pages for RLE/delta: run-length extremes and boundaries.
inline std::vector<std::pair<std::string, Page>> adversarial_pages(size_t n) {
  std::vector<std::pair<std::string, Page>> v;
  v.push_back({"all_zero", Page(n, 0)});
  v.push_back({"all_ff", Page(n, 0xff)});
  Page alt(n);
  for (size_t i = 0; i < n; ++i) alt[i] = (i & 1) ? 0xff : 0x00;
  v.push_back({"alternating_bytes", alt});
  for (size_t run : {2, 3, 4, 5, 7, 8, 64, 127, 128, 129}) {
    Page r(n);
    for (size_t i = 0; i < n; ++i) r[i] = static_cast<uint8_t>((i / run) & 1 ? 0xaa : 0x55);
    v.push_back({"alternating_runs_" + std::to_string(run), r});
  }
  Page grow(n);  // runs of length 1, 2, 3, ... with changing values
  for (size_t i = 0, len = 1, val = 0; i < n; ++len, ++val) {
    for (size_t j = 0; j < len && i < n; ++j) grow[i++] = static_cast<uint8_t>(val * 37);
  }
  v.push_back({"growing_runs", grow});
  Page ramp(n);
  for (size_t i = 0; i < n; ++i) ramp[i] = static_cast<uint8_t>(i);
  v.push_back({"ramp", ramp});
  Page tail(n, 0);
  tail[n - 1] = 1;
  v.push_back({"last_byte_set", tail});
  Page head(n, 0);
  head[0] = 1;
  v.push_back({"first_byte_set", head});
  Page three(n, 0);  // runs of exactly 3 separated by single bytes: just under kRleMinRun
  for (size_t i = 0; i < n; ++i)
    three[i] = (i % 4 == 3) ? 9 : static_cast<uint8_t>(10 + (i / 4) % 200);
  v.push_back({"runs_of_3", three});
  return v;
}

}  // namespace ferry::encoders::testing
