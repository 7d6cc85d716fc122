// Unit tests of encoders/stream_compressor.h, for both kinds (zstd, LZMA2): a stream of
// buffers round-trips in order with level changes between buffers, matches reach across
// buffers, and hostile blocks are refused with an error instead of a crash.
#include "encoders/stream_compressor.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tests/unit/encoders/page_sets.h"

namespace ferry::encoders {
namespace {

std::vector<uint8_t> text_buffer(std::mt19937& rng, size_t n) {
  static const char* kWords[] = {"migration ", "page ", "guest ", "memory ", "dirty ",
                                 "bitmap ",    "qemu ", "ferry ", "zstd ",   "\n"};
  std::vector<uint8_t> b;
  while (b.size() < n) {
    const char* w = kWords[rng() % 10];
    b.insert(b.end(), w, w + std::char_traits<char>::length(w));
  }
  b.resize(n);
  return b;
}

class StreamKinds : public ::testing::TestWithParam<StreamKind> {
 protected:
  void SetUp() override {
    if (!stream_compression_available(GetParam())) {
      GTEST_SKIP() << "no " << stream_kind_name(GetParam()) << " in this build";
    }
  }
  StreamKind kind() const { return GetParam(); }
  // Two levels of the kind, cheap and heavier.
  int low() const { return kind() == StreamKind::kLzma ? 0 : 1; }
  int high() const { return kind() == StreamKind::kLzma ? kLzmaPresetMax : 9; }
};

TEST_P(StreamKinds, RoundTripWithLevelChanges) {
  auto c = StreamCompressor::create(kind(), low());
  auto d = StreamDecompressor::create(kind());
  ASSERT_TRUE(c.has_value() && d.has_value());
  std::mt19937 rng(7);
  size_t in_total = 0, out_total = 0;
  for (int i = 0; i < 200; ++i) {
    if (i % 50 == 25) (*c)->set_level(i % 100 == 25 ? high() : low());
    std::vector<uint8_t> in;
    if (i % 3 == 0) {
      in.resize(rng() % 70000);
      for (auto& x : in) x = static_cast<uint8_t>(rng());  // incompressible
    } else {
      in = text_buffer(rng, rng() % 300000);
    }
    std::vector<uint8_t> z(StreamCompressor::max_compressed_size(in.size()));
    auto n = (*c)->compress(in, z);
    ASSERT_TRUE(n.has_value()) << n.status().message();
    std::vector<uint8_t> back(in.size());
    auto st = (*d)->decompress({z.data(), *n}, back);
    ASSERT_TRUE(st.is_ok()) << "buffer " << i << ": " << st.message();
    ASSERT_EQ(back, in) << "buffer " << i;
    in_total += in.size();
    out_total += *n;
  }
  EXPECT_LT(out_total, in_total / 2);
}

TEST(StreamCompressor, LevelChangesTakeEffect) {
  if (!stream_compression_available(StreamKind::kZstd)) GTEST_SKIP() << "no zstd in this build";
  std::mt19937 rng(11);
  auto in = text_buffer(rng, 1 << 20);
  auto size_at = [&](int first, int then) {
    auto c = StreamCompressor::create(StreamKind::kZstd, first);
    std::vector<uint8_t> z(StreamCompressor::max_compressed_size(in.size()));
    (void)(*c)->compress({in.data(), 4096}, z);
    (*c)->set_level(then);
    return (*c)->compress(in, z).value();
  };
  EXPECT_LT(size_at(1, 19) * 10, size_at(1, 1) * 9) << "level 19 after 1 must compress better";
}

TEST_P(StreamKinds, MatchesReachEarlierBuffers) {
  auto c = StreamCompressor::create(kind(), low());
  ASSERT_TRUE(c.has_value());
  std::mt19937 rng(1);
  std::vector<uint8_t> page(4096);
  for (auto& x : page) x = static_cast<uint8_t>(rng());
  std::vector<uint8_t> z(StreamCompressor::max_compressed_size(page.size()));
  auto first = (*c)->compress(page, z);
  auto second = (*c)->compress(page, z);  // the same random page again
  ASSERT_TRUE(first.has_value() && second.has_value());
  EXPECT_GT(*first, 4000u);
  EXPECT_LT(*second, 100u) << "the second copy should be a back-reference";
}

TEST_P(StreamKinds, RejectsHostileBlocks) {
  std::mt19937 rng(3);
  auto c = StreamCompressor::create(kind(), low());
  ASSERT_TRUE(c.has_value());
  auto in = text_buffer(rng, 50000);
  std::vector<uint8_t> z(StreamCompressor::max_compressed_size(in.size()));
  auto n = c.value()->compress(in, z);
  ASSERT_TRUE(n.has_value());
  z.resize(*n);
  {  // announced size too small
    auto d = StreamDecompressor::create(kind());
    std::vector<uint8_t> out(in.size() - 1);
    EXPECT_FALSE((*d)->decompress(z, out).is_ok());
  }
  {  // announced size too large (block ends early)
    auto d = StreamDecompressor::create(kind());
    std::vector<uint8_t> out(in.size() + 1);
    EXPECT_FALSE((*d)->decompress(z, out).is_ok());
  }
  {  // truncated
    auto d = StreamDecompressor::create(kind());
    std::vector<uint8_t> out(in.size());
    EXPECT_FALSE((*d)->decompress({z.data(), z.size() / 2}, out).is_ok());
  }
  for (int trial = 0; trial < 500; ++trial) {  // corrupted bytes, random garbage
    auto d = StreamDecompressor::create(kind());
    std::vector<uint8_t> bad = z;
    if (trial % 2) {
      for (int k = 0; k < 4; ++k) bad[rng() % bad.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    } else {
      bad.resize(1 + rng() % 200);
      for (auto& x : bad) x = static_cast<uint8_t>(rng());
    }
    std::vector<uint8_t> out(in.size());
    auto st = (*d)->decompress(bad, out);
    if (!st.is_ok()) {
      EXPECT_FALSE(st.message().empty());
    }
  }
}

// LZMA2 puts fewer bytes on the link than zstd -9 on guest-like pages (why effort 6 exists):
// 256 KiB buffers of random, text, sparse and structured pages, as the mix workload writes.
TEST(StreamCompressor, LzmaBeatsZstd9OnGuestPages) {
  if (!stream_compression_available(StreamKind::kZstd) ||
      !stream_compression_available(StreamKind::kLzma)) {
    GTEST_SKIP() << "needs zstd and LZMA";
  }
  auto size_of = [&](StreamKind kind, int level) {
    std::mt19937_64 rng(5);
    auto c = StreamCompressor::create(kind, level).value();
    size_t total = 0;
    for (int i = 0; i < 32; ++i) {
      std::vector<uint8_t> in;
      for (int k = 0; k < 64; ++k) {
        const auto page = k % 4 == 0   ? testing::random_page(rng, 4096)
                          : k % 4 == 1 ? testing::text_page(rng, 4096)
                          : k % 4 == 2 ? testing::sparse_page(rng, 4096)
                                       : testing::structured_page(rng, 4096);
        in.insert(in.end(), page.begin(), page.end());
      }
      std::vector<uint8_t> z(StreamCompressor::max_compressed_size(in.size()));
      total += c->compress(in, z).value();
    }
    return total;
  };
  const size_t lzma = size_of(StreamKind::kLzma, 0), zstd = size_of(StreamKind::kZstd, 9);
  EXPECT_LT(lzma, zstd) << "LZMA2 preset 0 " << lzma << " bytes, zstd -9 " << zstd;
}

// Presets whose dictionary exceeds what the decoder holds are refused.
TEST(StreamCompressor, LzmaRefusesPresetsAboveItsDictionary) {
  if (!stream_compression_available(StreamKind::kLzma)) GTEST_SKIP() << "no LZMA in this build";
  EXPECT_FALSE(StreamCompressor::create(StreamKind::kLzma, kLzmaPresetMax + 1).has_value());
  EXPECT_FALSE(StreamCompressor::create(StreamKind::kLzma, -1).has_value());
}

INSTANTIATE_TEST_SUITE_P(Kinds, StreamKinds,
                         ::testing::Values(StreamKind::kZstd, StreamKind::kLzma),
                         [](const auto& info) {
                           return std::string(stream_kind_name(info.param));
                         });

}  // namespace
}  // namespace ferry::encoders
