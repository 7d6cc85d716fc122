// Encoder/Decoder: every form, every effort and kernel variant, caches kept identical on both
// ends through many rounds of a simulated migration, hostile batches.
#include "encoders/page_codec.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>

#include "tests/unit/encoders/page_sets.h"

namespace ferry::encoders {
namespace {

using testing::Page;
constexpr size_t kPage = 4096;

struct Pair {
  std::unique_ptr<Encoder> enc;
  std::unique_ptr<Decoder> dec;
};

Pair make_pair(size_t cache_pages, const Kernels* k = nullptr, size_t page = kPage,
               CachePolicy policy = kDefaultCachePolicy) {
  CodecConfig c;
  c.page_size = page;
  c.cache_bytes = cache_pages * page;
  c.kernels = k;
  c.cache_policy = policy;
  auto e = Encoder::create(c);
  auto d = Decoder::create(c);
  EXPECT_TRUE(e.has_value() && d.has_value());
  return {std::move(e).value(), std::move(d).value()};
}

// Encodes one page, decodes it, checks the round trip; returns the form.
Form round_trip(Pair& p, uint64_t key, const Page& page) {
  std::vector<uint8_t> rec(p.enc->max_record_size());
  Form f{};
  const size_t len = p.enc->encode_page(key, page.data(), rec.data(), &f);
  Page out(page.size(), 0xcc);
  size_t used = 0;
  Form g{};
  const DecodeResult r = p.dec->decode_record(key, {rec.data(), len}, out.data(), &used, &g);
  EXPECT_TRUE(r.ok()) << decode_error_name(r.error) << " at " << r.offset;
  EXPECT_EQ(used, len);
  EXPECT_EQ(f, g);
  EXPECT_EQ(out, page) << form_name(f);
  return f;
}

TEST(PageCodec, ChoosesTheExpectedForms) {
  Pair p = make_pair(16);
  std::mt19937_64 rng(5);
  EXPECT_EQ(round_trip(p, 1, Page(kPage, 0)), Form::kZero);
  const Page rnd = testing::random_page(rng, kPage);
  EXPECT_EQ(round_trip(p, 2, rnd), Form::kRaw);
  EXPECT_EQ(round_trip(p, 2, rnd), Form::kSame);
  EXPECT_EQ(round_trip(p, 2, testing::one_word_changed(rng, rnd)), Form::kDelta);
  EXPECT_EQ(round_trip(p, 3, testing::sparse_page(rng, kPage)), Form::kRle);
  EXPECT_EQ(round_trip(p, 4, Page(kPage, 0xff)), Form::kRle);
  // Zero drops the cached copy on both ends: "same" is impossible afterwards.
  EXPECT_EQ(round_trip(p, 2, Page(kPage, 0)), Form::kZero);
  EXPECT_EQ(round_trip(p, 2, rnd), Form::kRaw);
}

// Pages whose 64-bit words step by a constant (counters, pointers, page-table entries) go out
// word-differenced when the stream follows (params.word_stride), and only then.
TEST(PageCodec, WordStrideFormForSteppingWords) {
  Pair p = make_pair(16);
  std::mt19937_64 rng(9);
  Page table(kPage);  // page-table-like: entries 4 KiB apart, same flags
  for (size_t i = 0; i < kPage / 8; ++i) {
    const uint64_t pte = 0x8000000123400067ull + (i << 12);
    std::memcpy(table.data() + 8 * i, &pte, 8);
  }
  EXPECT_EQ(round_trip(p, 1, table), Form::kRaw) << "without the flag: as before";
  EncodeParams params = params_for_effort(1);
  params.rle = false;
  params.word_stride = true;
  p.enc->set_params(params);
  EXPECT_EQ(round_trip(p, 2, table), Form::kStride);
  EXPECT_EQ(round_trip(p, 3, testing::random_page(rng, kPage)), Form::kRaw);
  EXPECT_EQ(round_trip(p, 2, table), Form::kSame) << "the cache holds the page, not the transform";
}

TEST(PageCodec, EveryHeavyCodecRoundTrips) {
  std::mt19937_64 rng(6);
  for (const CodecInfo& ci : heavy_codecs()) {
    if (!ci.available) {
      std::printf("%s unavailable: %s\n", ci.name, ci.why_not);
      continue;
    }
    for (int level : {0, 1, 3, 9}) {
      if (ci.codec == HeavyCodec::kDeflate && level > 3) continue;
      Pair p = make_pair(0);
      EncodeParams ep;
      ep.rle = false;
      ep.heavy = ci.codec;
      ep.heavy_level = ci.codec == HeavyCodec::kLz4 ? std::max(level, 1) : level;
      p.enc->set_params(ep);
      const Form want = ci.codec == HeavyCodec::kLz4    ? Form::kLz4
                        : ci.codec == HeavyCodec::kZstd ? Form::kZstd
                                                        : Form::kDeflate;
      EXPECT_EQ(round_trip(p, 1, testing::text_page(rng, kPage)), want) << ci.name << level;
      EXPECT_EQ(round_trip(p, 2, testing::structured_page(rng, kPage)), want) << ci.name;
      EXPECT_EQ(round_trip(p, 3, testing::random_page(rng, kPage)), Form::kRaw) << ci.name;
    }
  }
}

TEST(PageCodec, EvictedPageIsSentWhole) {
  Pair p = make_pair(2, nullptr, kPage, CachePolicy::kLru);
  std::mt19937_64 rng(8);
  const Page a = testing::random_page(rng, kPage);
  EXPECT_EQ(round_trip(p, 1, a), Form::kRaw);
  EXPECT_EQ(round_trip(p, 2, testing::random_page(rng, kPage)), Form::kRaw);
  EXPECT_EQ(round_trip(p, 1, a), Form::kSame);  // 1 becomes most recent
  EXPECT_EQ(round_trip(p, 3, testing::random_page(rng, kPage)), Form::kRaw);  // evicts 2
  EXPECT_EQ(round_trip(p, 1, testing::one_word_changed(rng, a)), Form::kDelta);
  EXPECT_EQ(round_trip(p, 4, testing::random_page(rng, kPage)), Form::kRaw);  // evicts 3
  EXPECT_EQ(round_trip(p, 5, testing::random_page(rng, kPage)), Form::kRaw);  // evicts 1
  EXPECT_EQ(round_trip(p, 1, a), Form::kRaw);
  EXPECT_EQ(p.enc->cache().keys_by_recency(), p.dec->cache().keys_by_recency());
  EXPECT_EQ(p.enc->stats().cache_evictions, 4u);  // 2, 3, 1, then 4 for the last insert
}

// A frozen pair (post-copy, pipeline/postcopy_bases.h) still encodes against its cache but
// changes nothing in it: another thread may read it, and a page of another stream encoded
// against the frozen copy (encode_against) decodes against the same copy at the other end.
TEST(PageCodec, FrozenCachesStayAsTheyAreAndServeAsBases) {
  Pair p = make_pair(4);
  std::mt19937_64 rng(12);
  const Page a = testing::random_page(rng, kPage), b = testing::random_page(rng, kPage);
  EXPECT_EQ(round_trip(p, 1, a), Form::kRaw);
  EXPECT_EQ(round_trip(p, 2, b), Form::kRaw);
  p.enc->freeze_cache();
  p.dec->freeze_cache();
  const uint64_t digest = p.enc->cache().state_digest();
  const Page a2 = testing::one_word_changed(rng, a);
  EXPECT_EQ(round_trip(p, 1, a2), Form::kDelta);
  EXPECT_EQ(round_trip(p, 1, a2), Form::kDelta) << "the cache kept a, not a2";
  EXPECT_EQ(round_trip(p, 2, Page(kPage, 0)), Form::kZero);
  EXPECT_EQ(round_trip(p, 2, b), Form::kSame) << "a zero page did not drop b";
  EXPECT_EQ(round_trip(p, 3, testing::random_page(rng, kPage)), Form::kRaw);
  EXPECT_EQ(p.enc->cache().state_digest(), digest);
  EXPECT_EQ(p.dec->cache().state_digest(), digest);

  // Another stream's pair, without a cache of its own, against the frozen copy of key 1.
  Pair other = make_pair(0);
  const uint8_t* sent_base = p.enc->cache().data(p.enc->cache().find(1));
  const uint8_t* kept_base = p.dec->cache().data(p.dec->cache().find(1));
  std::vector<uint8_t> rec(other.enc->max_record_size());
  for (const Page* page : {&a, &a2}) {
    Form f{};
    const size_t len = other.enc->encode_against(sent_base, page->data(), rec.data(), &f);
    EXPECT_EQ(f, page == &a ? Form::kSame : Form::kDelta);
    Page out(kPage, 0xcc);
    size_t used = 0;
    Form g{};
    ASSERT_TRUE(
        other.dec->decode_against(kept_base, {rec.data(), len}, out.data(), &used, &g).ok());
    EXPECT_EQ(used, len);
    EXPECT_EQ(g, f);
    EXPECT_EQ(out, *page);
    // Without the base at the receiving end it is an error, never a wrong page.
    EXPECT_EQ(other.dec->decode_against(nullptr, {rec.data(), len}, out.data(), &used, &g).error,
              DecodeError::kNotCached);
  }
  EXPECT_EQ(p.enc->cache().state_digest(), digest);
}

// Many rounds of a migration: a working set larger than the cache, pages re-dirtied in many
// ways, batches encoded and decoded; destination memory and both caches must stay identical.
TEST(PageCodec, SimulatedMigrationKeepsCachesIdentical) {
  const size_t keys = 96;
  for (const CachePolicy policy : {CachePolicy::kLru, CachePolicy::kAgedClock}) {
    for (const KernelVariant& kv : kernel_variants()) {
      if (!kv.available) continue;
      for (int effort = 0; effort <= kMaxEffort; ++effort) {
        SCOPED_TRACE(std::string(cache_policy_name(policy)) + " " + kv.kernels->name + " effort " +
                     std::to_string(effort));
        Pair p = make_pair(40, kv.kernels, kPage, policy);
        p.enc->set_params(params_for_effort(effort));
        std::mt19937_64 rng(effort * 31 + static_cast<int>(kv.kernels->level));
        std::vector<Page> src(keys, Page(kPage, 0)), dst(keys, Page(kPage, 0x77));
        uint64_t forms_seen = 0;
        for (int round = 0; round < 25; ++round) {
          std::vector<PageRef> batch;
          std::vector<uint64_t> batch_keys;
          for (size_t k = 0; k < keys; ++k) {
            if (round > 0 && rng() % 3 != 0) continue;
            Page& pg = src[k];
            switch (rng() % 8) {
              case 0:
                pg = Page(kPage, 0);
                break;
              case 1:
                pg = testing::random_page(rng, kPage);
                break;
              case 2:
                pg = testing::text_page(rng, kPage);
                break;
              case 3:
                pg = testing::sparse_page(rng, kPage);
                break;
              case 4:
                pg = testing::structured_page(rng, kPage);
                break;
              case 5:
                break;  // re-sent unchanged
              default:
                pg = testing::one_word_changed(rng, pg);
                break;
            }
            batch.push_back({k, pg.data()});
            batch_keys.push_back(k);
          }
          std::vector<uint8_t> wire(p.enc->max_encoded_size(batch.size()));
          std::vector<uint32_t> ends(batch.size());
          std::vector<Form> forms(batch.size()), dforms(batch.size());
          const BatchResult br = p.enc->encode_batch(batch, wire, ends, forms);
          ASSERT_EQ(br.pages, batch.size());
          std::vector<uint8_t> out(batch.size() * kPage);
          const DecodeResult r =
              p.dec->decode_batch(batch_keys, {wire.data(), br.bytes}, out.data(), dforms);
          ASSERT_TRUE(r.ok()) << decode_error_name(r.error) << " at " << r.offset;
          ASSERT_EQ(forms, dforms);
          for (size_t i = 0; i < batch.size(); ++i) {
            forms_seen |= 1u << static_cast<int>(forms[i]);
            std::copy(out.begin() + i * kPage, out.begin() + (i + 1) * kPage,
                      dst[batch_keys[i]].begin());
          }
          ASSERT_EQ(src, dst) << "round " << round;
          ASSERT_EQ(p.enc->cache().keys_by_recency(), p.dec->cache().keys_by_recency());
          ASSERT_EQ(p.enc->cache().state_digest(), p.dec->cache().state_digest());
          for (uint64_t key : p.enc->cache().keys_by_recency()) {
            const uint32_t a = p.enc->cache().find(key), b = p.dec->cache().find(key);
            ASSERT_EQ(0, std::memcmp(p.enc->cache().data(a), p.dec->cache().data(b), kPage));
          }
        }
        if (effort >= 1) {
          EXPECT_TRUE(forms_seen & (1u << static_cast<int>(Form::kSame)));
          EXPECT_TRUE(forms_seen & (1u << static_cast<int>(Form::kDelta)));
          EXPECT_TRUE(forms_seen & (1u << static_cast<int>(Form::kRle)));
        } else {
          EXPECT_EQ(forms_seen,
                    (1u << static_cast<int>(Form::kZero)) | (1u << static_cast<int>(Form::kRaw)));
        }
        // Hits, misses, evictions and (aged CLOCK) refused admissions all happened.
        const PageCache& c = p.enc->cache();
        EXPECT_GT(c.hits(), 0u);
        EXPECT_GT(c.evictions(), 0u);
        if (policy == CachePolicy::kAgedClock) {
          EXPECT_GT(c.declined(), 0u);
        }
      }
    }
  }
}

TEST(PageCodec, BatchStopsWhenOutputIsShort) {
  Pair p = make_pair(0);
  std::mt19937_64 rng(2);
  const Page a = testing::random_page(rng, kPage);
  const std::vector<PageRef> batch = {{1, a.data()}, {2, a.data()}, {3, a.data()}};
  std::vector<uint8_t> wire(p.enc->max_encoded_size(2) + 10);
  const BatchResult r = p.enc->encode_batch(batch, wire);
  EXPECT_EQ(r.pages, 2u);
  EXPECT_EQ(r.bytes, 2 * (kPage + 1));
}

TEST(PageCodec, RejectsBadConfig) {
  CodecConfig c;
  c.page_size = 4000;
  EXPECT_FALSE(Encoder::create(c).has_value());
  EXPECT_FALSE(Decoder::create(c).has_value());
  c.page_size = 256;
  EXPECT_FALSE(Encoder::create(c).has_value());
}

TEST(PageCodecHostile, SpecificErrors) {
  Pair p = make_pair(4);
  Page out(kPage);
  size_t used;
  Form f;
  auto dec = [&](std::vector<uint8_t> in) {
    return p.dec->decode_record(7, in, out.data(), &used, &f);
  };
  EXPECT_EQ(dec({}).error, DecodeError::kTruncated);
  EXPECT_EQ(dec({9}).error, DecodeError::kBadForm);
  EXPECT_EQ(dec({8}).error, DecodeError::kTruncated);
  EXPECT_EQ(dec({8, 3}).error, DecodeError::kBadLength);  // strides are 1, 2, 8
  EXPECT_EQ(dec({8, 2, 0}).error, DecodeError::kTruncated);
  EXPECT_EQ(dec({0xff}).error, DecodeError::kBadForm);
  EXPECT_EQ(dec({1}).error, DecodeError::kNotCached);
  EXPECT_EQ(dec({3, 1, 0, 0}).error, DecodeError::kNotCached);
  EXPECT_EQ(dec({2, 0, 0}).error, DecodeError::kTruncated);
  EXPECT_EQ(dec({4, 0, 0}).error, DecodeError::kBadLength);
  EXPECT_EQ(dec({4, 0xfe, 0x0f}).error, DecodeError::kBadLength);  // 4094 > 4096 - 3
  EXPECT_EQ(dec({4, 5, 0}).error, DecodeError::kTruncated);
  const DecodeResult r = dec({4, 2, 0, 0x83, 0x40});  // a run of 4097 bytes
  EXPECT_EQ(r.error, DecodeError::kOverrun);
  EXPECT_EQ(r.offset, 3u);
  for (Form hf : {Form::kLz4, Form::kZstd, Form::kDeflate}) {
    const DecodeResult h = dec({static_cast<uint8_t>(hf), 4, 0, 1, 2, 3, 4});
    EXPECT_TRUE(h.error == DecodeError::kCodec || h.error == DecodeError::kUnavailable)
        << form_name(hf) << " " << decode_error_name(h.error);
  }
  // Trailing bytes after a complete batch.
  const std::vector<uint64_t> keys = {1};
  const std::vector<uint8_t> two_zero = {0, 0};
  const DecodeResult t = p.dec->decode_batch(keys, two_zero, out.data());
  EXPECT_EQ(t.error, DecodeError::kTrailing);
  EXPECT_EQ(t.offset, 1u);
  const Status st = decode_status(t, "page batch from peer");
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("byte 1"), std::string::npos) << st.message();
}

// Mutated batches from a real encoder, decoded from the same starting state: never a crash or
// a write outside the output pages, errors carry an offset inside the input.
TEST(PageCodecHostile, MutatedBatches) {
  std::mt19937_64 rng(77);
  const size_t n = 24;
  std::vector<Page> pages;
  std::vector<PageRef> refs;
  std::vector<uint64_t> keys;
  for (size_t i = 0; i < n; ++i) {
    switch (i % 6) {
      case 0:
        pages.push_back(Page(kPage, 0));
        break;
      case 1:
        pages.push_back(testing::random_page(rng, kPage));
        break;
      case 2:
        pages.push_back(testing::text_page(rng, kPage));
        break;
      case 3:
        pages.push_back(testing::sparse_page(rng, kPage));
        break;
      default:
        pages.push_back(testing::structured_page(rng, kPage));
        break;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    refs.push_back({i, pages[i].data()});
    keys.push_back(i);
  }
  for (int effort : {1, 2, 3}) {
    Pair p = make_pair(64);
    p.enc->set_params(params_for_effort(effort));
    std::vector<uint8_t> wire(p.enc->max_encoded_size(n));
    const BatchResult br = p.enc->encode_batch(refs, wire);
    wire.resize(br.bytes);
    std::vector<uint8_t> out(n * kPage + 64);
    size_t rejected = 0;
    for (int m = 0; m < 300; ++m) {
      std::vector<uint8_t> bad = wire;
      if (m % 3 == 0) {
        bad.resize(rng() % bad.size());
      } else {
        for (int f = 0; f < 1 + m % 5; ++f) bad[rng() % bad.size()] ^= static_cast<uint8_t>(rng());
      }
      Pair q = make_pair(64);
      std::fill(out.begin(), out.end(), 0xee);
      const DecodeResult r = q.dec->decode_batch(keys, bad, out.data());
      for (size_t g = n * kPage; g < out.size(); ++g) ASSERT_EQ(out[g], 0xee);
      if (!r.ok()) {
        ++rejected;
        ASSERT_LE(r.offset, bad.size());
      }
    }
    EXPECT_GT(rejected, 100u);
  }
}

}  // namespace
}  // namespace ferry::encoders
