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
  auto buf = encode_handshake({kVersion, 3, 0, 0x0102030405060708ull, ""});
  ASSERT_EQ(buf.size(), kHandshakeSize);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(buf.data()), 4), "FERY");
  auto h = decode_handshake(buf);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->channel, 3);
  EXPECT_EQ(h->session_id, 0x0102030405060708ull);
  EXPECT_EQ(h->features, 0u);
  EXPECT_EQ(h->vm_name, "");
}

TEST(Handshake, RejectsBadMagicAndVersion) {
  auto buf = encode_handshake({});
  buf[0] = 'X';
  auto h = decode_handshake(buf);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.status().message().find("offset 0"), std::string::npos);
  buf = encode_handshake({});
  buf[5] = 1;  // version 1: the byte-stream handshake before frame transports
  h = decode_handshake(buf);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.status().message().find("offset 4"), std::string::npos);
  // A feature bit this receiver does not know is refused, naming the field.
  buf = encode_handshake({kVersion, 0, 0x20, 1, ""});
  h = decode_handshake(buf);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.status().message().find("offset 8"), std::string::npos);
  // A link that resumes another must acknowledge frames.
  buf = encode_handshake({kVersion, 0, kFeatureResuming, 1, ""});
  h = decode_handshake(buf);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.status().message().find("RESUMING without ACKED"), std::string::npos);
  buf = encode_handshake({kVersion, 0, kFeatureAcked | kFeatureResuming, 1, ""});
  h = decode_handshake(buf);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->features, kFeatureAcked | kFeatureResuming);
}

TEST(Handshake, VmNameRoundTrip) {
  Handshake in{kVersion, 1, kFeaturePages, 42, "web-01.prod_A"};
  auto buf = encode_handshake(in);
  ASSERT_EQ(buf.size(), kHandshakeSize + 1 + in.vm_name.size());
  EXPECT_EQ(buf[kHandshakeSize], in.vm_name.size());
  auto h = decode_handshake(buf);
  ASSERT_TRUE(h.has_value()) << h.status().message();
  EXPECT_EQ(h->features, kFeaturePages | kFeatureVmName);
  EXPECT_EQ(h->vm_name, "web-01.prod_A");
  EXPECT_EQ(h->session_id, 42u);
  // The longest name fits the largest HELLO.
  in.vm_name = std::string(kMaxVmName, 'x');
  buf = encode_handshake(in);
  EXPECT_EQ(buf.size(), kMaxHandshakeSize);
  h = decode_handshake(buf);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->vm_name, in.vm_name);
}

TEST(Handshake, RejectsBadVmNameAndLength) {
  auto buf = encode_handshake({kVersion, 0, 0, 1, "vm"});
  // Trailing bytes, a missing byte, a missing length, bytes without the feature bit.
  auto longer = buf;
  longer.push_back('x');
  EXPECT_FALSE(decode_handshake(longer).has_value());
  auto shorter = buf;
  shorter.pop_back();
  auto h = decode_handshake(shorter);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.status().message().find("expected 23"), std::string::npos) << h.status().message();
  std::vector<uint8_t> no_len(buf.begin(), buf.begin() + kHandshakeSize);
  h = decode_handshake(no_len);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.status().message().find("offset 20"), std::string::npos);
  auto plain = encode_handshake({});
  plain.push_back(0);
  EXPECT_FALSE(decode_handshake(plain).has_value());
  EXPECT_FALSE(decode_handshake(std::span<const uint8_t>(buf.data(), 10)).has_value());
  // Names that could leave the directory, hide, or hold anything else are refused.
  for (std::string bad :
       {std::string(), std::string(".."), std::string(".hidden"), std::string("a/b"),
        std::string("a b"), std::string("a\nb"), std::string("vm\0x", 4),
        std::string(kMaxVmName + 1, 'x'), std::string("caf\xc3\xa9")}) {
    auto b = encode_handshake({kVersion, 0, 0, 1, ""});
    b[11] |= kFeatureVmName;  // features, big-endian, at byte offset 8
    b.push_back(static_cast<uint8_t>(bad.size()));
    b.insert(b.end(), bad.begin(), bad.end());
    h = decode_handshake(b);
    ASSERT_FALSE(h.has_value()) << bad;
    EXPECT_NE(h.status().message().find("VM name"), std::string::npos) << h.status().message();
    EXPECT_EQ(h.status().message().find(bad.empty() ? "\x01" : bad), std::string::npos)
        << "the refusal echoes the name: " << h.status().message();
  }
}

TEST(Handshake, CheckVmName) {
  EXPECT_TRUE(check_vm_name("a"));
  EXPECT_TRUE(check_vm_name("A.b_c-9"));
  EXPECT_TRUE(check_vm_name("a.."));
  EXPECT_TRUE(check_vm_name(std::string(kMaxVmName, 'z')));
  EXPECT_FALSE(check_vm_name(""));
  EXPECT_FALSE(check_vm_name("."));
  EXPECT_FALSE(check_vm_name(".a"));
  EXPECT_FALSE(check_vm_name("a/b"));
  EXPECT_FALSE(check_vm_name("a:b"));
  EXPECT_FALSE(check_vm_name(std::string(kMaxVmName + 1, 'z')));
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
  fails_with(bad_type, "bad type " + std::to_string(kMaxFrameType + 1) + " at byte offset 0");
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
