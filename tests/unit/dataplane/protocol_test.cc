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

// Walks every frame of a buffer (as the pump does with each frame buffer).
Status check_all(FrameChecker& check, const std::vector<uint8_t>& wire, size_t* frames) {
  size_t pos = 0;
  FrameChecker::Frame f;
  for (;;) {
    auto r = check.next(wire.data(), wire.size(), &pos, f);
    if (!r) return r.status();
    if (!*r) return Status::ok();
    ++*frames;
  }
}

TEST(FrameChecker, RoundTripAcrossBuffers) {
  std::mt19937 rng(42);
  std::vector<std::vector<uint8_t>> payloads;
  std::vector<std::vector<uint8_t>> buffers(1);
  for (uint64_t i = 0; i < 200; ++i) {
    size_t n = (i % 17 == 0) ? 0 : rng() % 9000;
    if (i == 100) n = kMaxPayload;
    payloads.push_back(make_payload(rng, n));
    if (rng() % 4 == 0) buffers.emplace_back();  // frames packed several to a buffer
    append_frame(buffers.back(), i % 3 == 0 ? FrameType::kReturn : FrameType::kOpaque,
                 i + kFirstDataSeq, payloads.back().data(), static_cast<uint32_t>(n));
  }
  FrameChecker check;
  size_t got = 0;
  uint64_t offset = 0;
  for (const auto& b : buffers) {
    size_t pos = 0;
    FrameChecker::Frame f;
    for (;;) {
      auto r = check.next(b.data(), b.size(), &pos, f);
      ASSERT_TRUE(r.has_value()) << r.status().message();
      if (!*r) break;
      ASSERT_LT(got, payloads.size());
      ASSERT_EQ(f.header.len, payloads[got].size());
      EXPECT_EQ(f.offset, offset);
      EXPECT_TRUE(std::equal(payloads[got].begin(), payloads[got].end(), f.payload));
      offset += kFrameHeaderSize + f.header.len;
      ++got;
    }
  }
  EXPECT_EQ(got, payloads.size());
}

TEST(FrameChecker, CorruptedCrcReportsOffset) {
  std::vector<uint8_t> wire;
  const char a[] = "hello", b[] = "world";
  append_frame(wire, FrameType::kOpaque, 0, a, 5);
  append_frame(wire, FrameType::kOpaque, 1, b, 5);
  wire[kFrameHeaderSize + 5 + kFrameHeaderSize + 2] ^= 0x40;  // payload of frame 1
  FrameChecker check(0);
  size_t frames = 0;
  Status st = check_all(check, wire, &frames);
  EXPECT_EQ(frames, 1u);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("crc32c"), std::string::npos);
  EXPECT_NE(st.message().find("offset " + std::to_string(25 + 16)), std::string::npos)
      << st.message();
}

TEST(FrameChecker, RejectsBadTypeLengthSeqAndTruncation) {
  auto fails_with = [](std::vector<uint8_t> wire, const std::string& want) {
    FrameChecker check(0);
    size_t frames = 0;
    Status st = check_all(check, wire, &frames);
    EXPECT_FALSE(st.is_ok());
    EXPECT_NE(st.message().find(want), std::string::npos) << st.message();
  };
  std::vector<uint8_t> wire;
  append_frame(wire, FrameType::kOpaque, 0, "x", 1);
  auto bad_type = wire;
  bad_type[3] = kMaxFrameType + 1;
  fails_with(bad_type, "bad type 10 at byte offset 0");
  auto bad_len = wire;
  bad_len[4] = 0x10;  // len = 0x10000001 > 1 MiB
  fails_with(bad_len, "bad length");
  auto gap = wire;
  append_frame(gap, FrameType::kOpaque, 2, "y", 1);
  fails_with(gap, "byte offset " + std::to_string(21 + 8));
  auto cut = wire;
  cut.pop_back();
  fails_with(cut, "truncated payload at byte offset 0");
  EXPECT_FALSE(frame_type_known(0));
  EXPECT_TRUE(frame_type_known(static_cast<uint32_t>(FrameType::kAccept)));
  EXPECT_FALSE(frame_type_known(kMaxFrameType + 1));
}

}  // namespace
}  // namespace ferry::dataplane
