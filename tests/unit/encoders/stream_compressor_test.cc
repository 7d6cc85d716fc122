// Unit tests of encoders/stream_compressor.h: a stream of buffers round-trips in order with
// level changes between buffers, matches reach across buffers, and hostile blocks are refused
// with an error instead of a crash.
#include "encoders/stream_compressor.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

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

TEST(StreamCompressor, RoundTripWithLevelChanges) {
  if (!stream_compression_available()) GTEST_SKIP() << "no zstd in this build";
  auto c = StreamCompressor::create(1);
  auto d = StreamDecompressor::create();
  ASSERT_TRUE(c.has_value() && d.has_value());
  std::mt19937 rng(7);
  size_t in_total = 0, out_total = 0;
  for (int i = 0; i < 200; ++i) {
    if (i % 50 == 25) (*c)->set_level(i % 100 == 25 ? 3 : 9);
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
  if (!stream_compression_available()) GTEST_SKIP() << "no zstd in this build";
  std::mt19937 rng(11);
  auto in = text_buffer(rng, 1 << 20);
  auto size_at = [&](int first, int then) {
    auto c = StreamCompressor::create(first);
    std::vector<uint8_t> z(StreamCompressor::max_compressed_size(in.size()));
    (void)(*c)->compress({in.data(), 4096}, z);
    (*c)->set_level(then);
    return (*c)->compress(in, z).value();
  };
  EXPECT_LT(size_at(1, 19) * 10, size_at(1, 1) * 9) << "level 19 after 1 must compress better";
}

TEST(StreamCompressor, MatchesReachEarlierBuffers) {
  if (!stream_compression_available()) GTEST_SKIP() << "no zstd in this build";
  auto c = StreamCompressor::create(1);
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

TEST(StreamDecompressor, RejectsHostileBlocks) {
  if (!stream_compression_available()) GTEST_SKIP() << "no zstd in this build";
  std::mt19937 rng(3);
  auto c = StreamCompressor::create(1);
  ASSERT_TRUE(c.has_value());
  auto in = text_buffer(rng, 50000);
  std::vector<uint8_t> z(StreamCompressor::max_compressed_size(in.size()));
  auto n = c.value()->compress(in, z);
  ASSERT_TRUE(n.has_value());
  z.resize(*n);
  {  // announced size too small
    auto d = StreamDecompressor::create();
    std::vector<uint8_t> out(in.size() - 1);
    EXPECT_FALSE((*d)->decompress(z, out).is_ok());
  }
  {  // announced size too large (block ends early)
    auto d = StreamDecompressor::create();
    std::vector<uint8_t> out(in.size() + 1);
    EXPECT_FALSE((*d)->decompress(z, out).is_ok());
  }
  {  // truncated
    auto d = StreamDecompressor::create();
    std::vector<uint8_t> out(in.size());
    EXPECT_FALSE((*d)->decompress({z.data(), z.size() / 2}, out).is_ok());
  }
  for (int trial = 0; trial < 500; ++trial) {  // corrupted bytes, random garbage
    auto d = StreamDecompressor::create();
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

}  // namespace
}  // namespace ferry::encoders
