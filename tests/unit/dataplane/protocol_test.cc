// Unit tests of dataplane/protocol.h: handshake and frame round trips, random splits, and
// rejection of corrupted frames with the byte offset in the message.
#include "dataplane/protocol.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace ferry::dataplane {
namespace {

std::vector<uint8_t> make_payload(std::mt19937& rng, size_t n) {
  std::vector<uint8_t> p(n);
  for (auto& b : p) b = static_cast<uint8_t>(rng());
  return p;
}

TEST(Handshake, RoundTrip) {
  uint8_t buf[kHandshakeSize];
  encode_handshake({kVersion, 3, 0, 0x0102030405060708ull}, buf);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(buf), 4), "FERY");
  auto h = decode_handshake(buf);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->channel, 3);
  EXPECT_EQ(h->session_id, 0x0102030405060708ull);
}

TEST(Handshake, RejectsBadMagicAndVersion) {
  uint8_t buf[kHandshakeSize];
  encode_handshake({}, buf);
  buf[0] = 'X';
  auto h = decode_handshake(buf);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.status().message().find("offset 0"), std::string::npos);
  encode_handshake({}, buf);
  buf[5] = 1;  // version 1: the byte-stream handshake before frame transports
  h = decode_handshake(buf);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.status().message().find("offset 4"), std::string::npos);
  // A feature bit this receiver does not know is refused, naming the field.
  encode_handshake({kVersion, 0, 0x4, 1}, buf);
  h = decode_handshake(buf);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.status().message().find("offset 8"), std::string::npos);
}

TEST(FrameDecoder, RoundTripRandomSplits) {
  std::mt19937 rng(42);
  std::vector<std::vector<uint8_t>> payloads;
  std::vector<uint8_t> wire;
  for (uint64_t i = 0; i < 200; ++i) {
    size_t n = (i % 17 == 0) ? 0 : rng() % 9000;
    if (i == 100) n = kMaxPayload;
    payloads.push_back(make_payload(rng, n));
    append_frame(wire, i % 3 == 0 ? FrameType::kReturn : FrameType::kOpaque, i,
                 payloads.back().data(), static_cast<uint32_t>(n));
  }
  append_frame(wire, FrameType::kEnd, payloads.size(), nullptr, 0);

  for (int split_seed = 0; split_seed < 5; ++split_seed) {
    std::mt19937 srng(split_seed);
    FrameDecoder dec;
    size_t at = 0, got = 0;
    bool ended = false;
    while (at < wire.size() || !ended) {
      size_t n = std::min<size_t>(wire.size() - at, 1 + srng() % (split_seed == 0 ? 3 : 70000));
      dec.push(wire.data() + at, n);
      at += n;
      FrameDecoder::Frame f;
      for (;;) {
        auto r = dec.next(f);
        ASSERT_TRUE(r.has_value()) << r.status().message();
        if (!*r) break;
        if (f.header.type == FrameType::kEnd) {
          ended = true;
          EXPECT_EQ(got, payloads.size());
          continue;
        }
        ASSERT_LT(got, payloads.size());
        ASSERT_EQ(f.header.len, payloads[got].size());
        EXPECT_TRUE(std::equal(payloads[got].begin(), payloads[got].end(), f.payload));
        ++got;
      }
      if (at == wire.size() && !ended) FAIL() << "stream ended without END";
    }
    EXPECT_EQ(dec.offset(), wire.size());
  }
}

TEST(FrameDecoder, CorruptedCrcReportsOffset) {
  std::vector<uint8_t> wire;
  const char a[] = "hello", b[] = "world";
  append_frame(wire, FrameType::kOpaque, 0, a, 5);
  append_frame(wire, FrameType::kOpaque, 1, b, 5);
  wire[kFrameHeaderSize + 5 + kFrameHeaderSize + 2] ^= 0x40;  // payload of frame 1
  FrameDecoder dec;
  dec.push(wire.data(), wire.size());
  FrameDecoder::Frame f;
  auto r = dec.next(f);
  ASSERT_TRUE(r.has_value() && *r);
  r = dec.next(f);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("crc32c"), std::string::npos);
  EXPECT_NE(r.status().message().find("offset " + std::to_string(25 + 16)), std::string::npos)
      << r.status().message();
  // Sticky.
  EXPECT_FALSE(dec.next(f).has_value());
}

TEST(FrameDecoder, RejectsBadTypeLengthAndSeq) {
  FrameDecoder::Frame f;
  {
    std::vector<uint8_t> wire;
    append_frame(wire, FrameType::kOpaque, 0, "x", 1);
    wire[3] = 9;
    FrameDecoder dec;
    dec.push(wire.data(), wire.size());
    auto r = dec.next(f);
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.status().message().find("bad type 9 at byte offset 0"), std::string::npos);
  }
  {
    std::vector<uint8_t> wire;
    append_frame(wire, FrameType::kOpaque, 0, "x", 1);
    wire[4] = 0x10;  // len = 0x10000001 > 1 MiB; detected from the header alone
    FrameDecoder dec;
    dec.push(wire.data(), kFrameHeaderSize);
    auto r = dec.next(f);
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.status().message().find("byte offset 4"), std::string::npos);
  }
  {
    std::vector<uint8_t> wire;
    append_frame(wire, FrameType::kOpaque, 0, "x", 1);
    append_frame(wire, FrameType::kOpaque, 2, "y", 1);
    FrameDecoder dec;
    dec.push(wire.data(), wire.size());
    ASSERT_TRUE(*dec.next(f));
    auto r = dec.next(f);
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.status().message().find("byte offset " + std::to_string(21 + 8)), std::string::npos)
        << r.status().message();
  }
}

}  // namespace
}  // namespace ferry::dataplane
