// RLE and delta: round trips for every kernel variant on random, adversarial and realistic
// pages; identical bytes from every variant; hostile input never crashes.
#include "encoders/codecs.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "tests/unit/encoders/page_sets.h"

namespace ferry::encoders {
namespace {

using testing::Page;

std::vector<const Kernels*> variants() {
  std::vector<const Kernels*> v;
  for (const KernelVariant& kv : kernel_variants()) {
    if (kv.available) v.push_back(kv.kernels);
  }
  return v;
}

std::vector<std::pair<std::string, Page>> all_pages(size_t n) {
  std::mt19937_64 rng(7);
  auto v = testing::adversarial_pages(n);
  for (int i = 0; i < 8; ++i) {
    v.push_back({"random", testing::random_page(rng, n)});
    v.push_back({"text", testing::text_page(rng, n)});
    v.push_back({"sparse", testing::sparse_page(rng, n)});
    v.push_back({"structured", testing::structured_page(rng, n)});
  }
  return v;
}

// Reference RLE decoder written from docs/ENCODING.md, byte at a time.
bool reference_rle_decode(const Page& in, size_t n, Page* out) {
  out->clear();
  size_t i = 0;
  while (i < in.size()) {
    uint32_t v = 0;
    int shift = 0;
    for (;;) {
      if (i >= in.size() || shift >= 28) return false;
      const uint8_t b = in[i++];
      v |= uint32_t{b & 0x7fu} << shift;
      shift += 7;
      if (!(b & 0x80)) break;
    }
    const size_t len = v >> 1;
    if (len == 0 || out->size() + len > n) return false;
    if (v & 1) {
      if (i >= in.size()) return false;
      out->insert(out->end(), len, in[i++]);
    } else {
      if (in.size() - i < len) return false;
      out->insert(out->end(), in.begin() + i, in.begin() + i + len);
      i += len;
    }
  }
  return out->size() == n;
}

TEST(Rle, RoundTripEveryVariantIdenticalBytes) {
  for (size_t n : {4096, 512, 65536}) {
    std::vector<uint64_t> bits(rle_scratch_words(n));
    Page enc(n + 64), out(n), ref_enc;
    for (const auto& [name, page] : all_pages(n)) {
      SCOPED_TRACE(name + " n=" + std::to_string(n));
      Page first;
      for (const Kernels* k : variants()) {
        const size_t len = rle_encode(*k, page.data(), n, enc.data(), enc.size(), bits.data());
        ASSERT_NE(len, kTooBig) << k->name;
        Page e(enc.begin(), enc.begin() + len);
        if (first.empty()) first = e;
        ASSERT_EQ(e, first) << k->name << " encodes differently from scalar";
        std::fill(out.begin(), out.end(), 0xcc);
        const DecodeResult r = rle_decode(e.data(), e.size(), out.data(), n);
        ASSERT_TRUE(r.ok()) << decode_error_name(r.error) << " at " << r.offset;
        ASSERT_EQ(out, page) << k->name;
        Page ref;
        ASSERT_TRUE(reference_rle_decode(e, n, &ref));
        ASSERT_EQ(ref, page);
      }
    }
  }
}

TEST(Rle, CompressesWhatItShould) {
  const size_t n = 4096;
  std::vector<uint64_t> bits(rle_scratch_words(n));
  Page enc(n * 2);
  const Page zero(n, 0);
  EXPECT_EQ(rle_encode(kernels(), zero.data(), n, enc.data(), enc.size(), bits.data()), 3u);
  const Page ff(n, 0xff);
  EXPECT_EQ(rle_encode(kernels(), ff.data(), n, enc.data(), enc.size(), bits.data()), 3u);
  // Runs of 3 stay literal: one literal chunk of n bytes (2-byte header).
  for (const auto& [name, page] : testing::adversarial_pages(n)) {
    if (name == "runs_of_3" || name == "alternating_runs_3" || name == "alternating_bytes") {
      EXPECT_EQ(rle_encode(kernels(), page.data(), n, enc.data(), enc.size(), bits.data()), n + 2)
          << name;
    }
  }
  // Capacity is honoured exactly.
  std::mt19937_64 rng(1);
  const Page sp = testing::sparse_page(rng, n);
  const size_t len = rle_encode(kernels(), sp.data(), n, enc.data(), enc.size(), bits.data());
  ASSERT_NE(len, kTooBig);
  EXPECT_EQ(rle_encode(kernels(), sp.data(), n, enc.data(), len, bits.data()), len);
  EXPECT_EQ(rle_encode(kernels(), sp.data(), n, enc.data(), len - 1, bits.data()), kTooBig);
}

TEST(Delta, OneByteChangeAtEveryOffsetEveryVariant) {
  const size_t n = 4096;
  std::mt19937_64 rng(3);
  std::vector<uint64_t> bits(rle_scratch_words(n));
  Page enc(n), out(n);
  for (const Page& base : {testing::random_page(rng, n), Page(n, 0), Page(n, 0xff)}) {
    for (size_t off = 0; off < n; ++off) {
      Page cur = base;
      cur[off] ^= 0x5a;
      Page first;
      for (const Kernels* k : variants()) {
        ASSERT_TRUE(k->diff_bitmap(cur.data(), base.data(), n, bits.data()));
        const size_t len = delta_encode(cur.data(), n, bits.data(), enc.data(), enc.size());
        ASSERT_NE(len, kTooBig);
        ASSERT_LE(len, 2 + 2 + 1u) << "off=" << off;
        Page e(enc.begin(), enc.begin() + len);
        if (first.empty()) first = e;
        ASSERT_EQ(e, first) << k->name << " off=" << off;
        out = base;
        ASSERT_TRUE(delta_decode(e.data(), e.size(), out.data(), n).ok());
        ASSERT_EQ(out, cur) << k->name << " off=" << off;
      }
    }
  }
}

TEST(Delta, RoundTripAcrossPageSets) {
  for (size_t n : {4096, 512, 65536}) {
    std::vector<uint64_t> bits(rle_scratch_words(n));
    Page enc(2 * n), out(n);
    const auto pages = all_pages(n);
    std::mt19937_64 rng(11);
    for (size_t i = 0; i < pages.size(); ++i) {
      const Page& base = pages[i].second;
      // Against another page, against a mutation with sparse edits, against itself.
      Page edited = base;
      for (size_t j = 0; j < n; j += 1 + rng() % 200) edited[j] = static_cast<uint8_t>(rng());
      const Page* curs[] = {&pages[(i + 1) % pages.size()].second, &edited, &base};
      for (const Page* cur : curs) {
        Page first;
        bool first_set = false;
        for (const Kernels* k : variants()) {
          k->diff_bitmap(cur->data(), base.data(), n, bits.data());
          const size_t len = delta_encode(cur->data(), n, bits.data(), enc.data(), enc.size());
          ASSERT_NE(len, kTooBig);
          Page e(enc.begin(), enc.begin() + len);
          if (!first_set) {
            first = e;
            first_set = true;
          }
          ASSERT_EQ(e, first) << k->name;
          out = base;
          ASSERT_TRUE(delta_decode(e.data(), e.size(), out.data(), n).ok());
          ASSERT_EQ(out, *cur) << pages[i].first << " " << k->name;
        }
      }
    }
  }
}

TEST(Delta, GapsShorterThanThreeAreAbsorbed) {
  const size_t n = 512;
  Page base(n, 0), cur(n, 0);
  cur[10] = 1;
  cur[13] = 1;  // gap of 2: one record [10, 14)
  cur[20] = 1;  // gap of 6: second record
  std::vector<uint64_t> bits(rle_scratch_words(n));
  kernels().diff_bitmap(cur.data(), base.data(), n, bits.data());
  Page enc(64);
  const size_t len = delta_encode(cur.data(), n, bits.data(), enc.data(), enc.size());
  const Page want = {10, 4, 1, 0, 0, 1, 6, 1, 1};
  EXPECT_EQ(Page(enc.begin(), enc.begin() + len), want);
}

// Hostile input: every truncation and many random mutations of valid encodings, plus pure
// noise. The decoder must return (ok or an error), never write past n (checked by a guard
// zone), and, when it says ok, must have written all n bytes consistently with the reference.
// The stride whose differences are small wins; pages without stepping words keep none. Every
// stride round-trips on any page, including ones whose differences wrap around 2^64.
TEST(WordStride, ChoosesTheSteppingStrideAndRoundTrips) {
  constexpr size_t kPage = 4096;
  std::mt19937_64 rng(3);
  auto page_of = [&](auto word_at) {
    Page p(kPage);
    for (size_t i = 0; i < kPage / 8; ++i) {
      const uint64_t w = word_at(i);
      std::memcpy(p.data() + 8 * i, &w, 8);
    }
    return p;
  };
  const Page counters = page_of([](size_t i) { return 0x7f00001000ull + 24 * i; });
  const Page pairs = page_of([&](size_t i) { return i % 2 ? rng() : 0xffff888000000000ull + i; });
  const Page records = page_of([&](size_t i) {
    return i % 8 == 0 ? 100000 + i / 8 : i % 8 == 3 ? rng() : 0x1234567890ull * (i % 8);
  });
  EXPECT_EQ(choose_word_stride(counters.data(), kPage), 1u);
  EXPECT_EQ(choose_word_stride(pairs.data(), kPage), 2u);
  EXPECT_EQ(choose_word_stride(records.data(), kPage), 8u);
  EXPECT_EQ(choose_word_stride(testing::random_page(rng, kPage).data(), kPage), 0u);
  EXPECT_EQ(choose_word_stride(testing::text_page(rng, kPage).data(), kPage), 0u);
  EXPECT_EQ(choose_word_stride(Page(kPage, 0).data(), kPage), 0u) << "small as it is";
  for (const Page& p : {counters, pairs, records, testing::random_page(rng, kPage),
                        testing::structured_page(rng, kPage), Page(kPage, 0xff)}) {
    for (unsigned k : kWordStrides) {
      Page t(kPage), back(kPage);
      word_stride_encode(p.data(), kPage, k, t.data());
      word_stride_decode(t.data(), kPage, k, back.data());
      EXPECT_EQ(back, p) << "stride " << k;
    }
  }
  EXPECT_TRUE(valid_word_stride(8));
  EXPECT_FALSE(valid_word_stride(0));
  EXPECT_FALSE(valid_word_stride(4));
}

TEST(Hostile, DecodersSurviveMutations) {
  const size_t n = 4096;
  std::mt19937_64 rng(99);
  std::vector<uint64_t> bits(rle_scratch_words(n));
  Page out(n + 64);
  const auto pages = all_pages(n);
  size_t errors = 0, oks = 0;
  for (const auto& [name, page] : pages) {
    Page enc(2 * n);
    const size_t len = rle_encode(kernels(), page.data(), n, enc.data(), enc.size(), bits.data());
    enc.resize(len);
    for (size_t cut = 0; cut < len; cut += 1 + len / 64) {
      std::fill(out.begin(), out.end(), 0xee);
      const DecodeResult r = rle_decode(enc.data(), cut, out.data(), n);
      ASSERT_FALSE(r.ok()) << name << " cut=" << cut;
      ASSERT_LE(r.offset, cut);
      for (size_t g = n; g < out.size(); ++g) ASSERT_EQ(out[g], 0xee);
    }
    for (int m = 0; m < 200; ++m) {
      Page bad = enc;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f)
        bad[rng() % bad.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
      std::fill(out.begin(), out.end(), 0xee);
      const DecodeResult r = rle_decode(bad.data(), bad.size(), out.data(), n);
      for (size_t g = n; g < out.size(); ++g) ASSERT_EQ(out[g], 0xee);
      Page ref;
      const bool ref_ok = reference_rle_decode(bad, n, &ref);
      ASSERT_EQ(r.ok(), ref_ok) << name << " " << decode_error_name(r.error);
      if (r.ok()) {
        ASSERT_TRUE(std::equal(ref.begin(), ref.end(), out.begin()));
        ++oks;
      } else {
        ASSERT_LE(r.offset, bad.size());
        ++errors;
      }
      // The same bytes as a delta stream.
      std::copy(page.begin(), page.end(), out.begin());
      const DecodeResult d = delta_decode(bad.data(), bad.size(), out.data(), n);
      for (size_t g = n; g < out.size(); ++g) ASSERT_EQ(out[g], 0xee);
      if (!d.ok()) {
        ASSERT_LE(d.offset, bad.size());
      }
    }
  }
  EXPECT_GT(errors, 0u);
  std::printf("mutations: %zu rejected, %zu decoded (same as reference)\n", errors, oks);
}

TEST(Hostile, SpecificErrors) {
  Page out(512);
  const size_t n = out.size();
  auto rle = [&](const Page& in) { return rle_decode(in.data(), in.size(), out.data(), n); };
  EXPECT_EQ(rle({}).error, DecodeError::kShort);
  EXPECT_EQ(rle({0x00}).error, DecodeError::kBadLength);  // len 0
  EXPECT_EQ(rle({0x80, 0x80, 0x80, 0x80, 0x01}).error, DecodeError::kBadVarint);
  EXPECT_EQ(rle({0x80}).error, DecodeError::kTruncated);
  EXPECT_EQ(rle({0x81, 0x08}).error, DecodeError::kTruncated);   // run, no byte
  EXPECT_EQ(rle({0x83, 0x08, 7}).error, DecodeError::kOverrun);  // run of 513
  EXPECT_EQ(rle({0x81, 0x08, 7}).error, DecodeError::kOk);       // run of 512
  EXPECT_EQ(rle({0x81, 0x08, 7, 0x03, 1}).error, DecodeError::kOverrun);
  const DecodeResult t = rle({0x06, 1, 2});
  EXPECT_EQ(t.error, DecodeError::kTruncated);
  EXPECT_EQ(t.offset, 1u);
  auto delta = [&](const Page& in) { return delta_decode(in.data(), in.size(), out.data(), n); };
  EXPECT_TRUE(delta({}).ok());
  EXPECT_EQ(delta({0x00, 0x00}).error, DecodeError::kBadLength);
  EXPECT_EQ(delta({0x80, 0x04, 1, 9}).error, DecodeError::kOverrun);     // skip 512 + 1
  EXPECT_EQ(delta({0xff, 0x03, 2, 1, 1}).error, DecodeError::kOverrun);  // 511 + 2
  EXPECT_TRUE(delta({0xff, 0x03, 1, 1}).ok());
  EXPECT_EQ(delta({0x00, 0x05, 1}).error, DecodeError::kTruncated);
  EXPECT_EQ(delta({0x00}).error, DecodeError::kTruncated);
}

}  // namespace
}  // namespace ferry::encoders
