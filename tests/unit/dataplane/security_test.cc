// Link protection (dataplane/security): TLS handshakes over real transports with credentials
// made by scripts/make-credentials.sh, and the sealed frames after them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/handshake.h"
#include "dataplane/security/link_security.h"
#include "dataplane/security/protected_transport.h"
#include "dataplane/transport.h"

namespace ferry::dataplane {
namespace {

namespace fs = std::filesystem;

// Two credential sets: `a` (the one both ends normally share) and `b` (another CA, another
// PSK, and in `a_intruder` a certificate of a's CA with another name).
class Credentials : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(fs::temp_directory_path() / ("ferry-sec-" + std::to_string(::getpid())));
    const char* script = std::getenv("FERRY_MAKE_CREDENTIALS");
    ASSERT_NE(script, nullptr) << "FERRY_MAKE_CREDENTIALS is not set (meson sets it)";
    const auto make = [&](const std::string& dir, const std::string& extra) {
      const std::string cmd = std::string(script) + " " + (*root_ / dir).string() +
                              " --san DNS:localhost,IP:127.0.0.1 " + extra + " >/dev/null";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    };
    make("a", "");
    make("b", "");
    make("a_intruder", "--client-cn intruder --ca-from " + (*root_ / "a").string());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }
  static std::string x509(const std::string& set) { return (*root_ / set / "x509").string(); }
  static std::string psk(const std::string& set) { return (*root_ / set / "keys.psk").string(); }

  static std::shared_ptr<const LinkSecurity> load(SecurityOptions o, TlsRole role) {
    auto s = LinkSecurity::load(o, role);
    EXPECT_TRUE(s.has_value()) << s.status().message();
    return s ? *s : nullptr;
  }

  static fs::path* root_;
};
fs::path* Credentials::root_ = nullptr;

std::pair<std::unique_ptr<Transport>, std::unique_ptr<Transport>> tcp_pair() {
  for (int port = 47000 + (::getpid() % 1000) * 3;; ++port) {
    const std::string address = "tcp:127.0.0.1:" + std::to_string(port);
    auto l = listen_transport(address);
    if (!l) continue;
    auto c = connect_transport(address, 2000);
    EXPECT_TRUE(c.has_value());
    auto a = (*l)->accept(2000);
    EXPECT_TRUE(a.has_value());
    return {std::move(*c), std::move(*a)};
  }
}

struct Outcome {
  Result<std::unique_ptr<Transport>> sender = Status(ErrorCode::kInternal, "not run");
  Result<Greeting> greeting = Status(ErrorCode::kInternal, "not run");
  std::unique_ptr<Transport> receiver;  // accepted and protected
};

// One handshake between a sender and a receiver with these credentials (null = none). The
// receiver accepts whatever greeting succeeded.
Outcome handshake(const LinkSecurity* send_sec, const LinkSecurity* recv_sec,
                  const std::string& peer_host = "127.0.0.1") {
  auto [send, recv] = tcp_pair();
  Outcome out;
  SenderHello hello;
  hello.hello.session_id = 42;
  hello.security = send_sec;
  hello.peer_host = peer_host;
  hello.timeout_ms = 5000;
  std::thread sender(
      [&, s = std::move(send)]() mutable { out.sender = sender_handshake(std::move(s), hello); });
  out.greeting = receiver_greet(*recv, recv_sec, Clock::now() + std::chrono::seconds(5));
  if (out.greeting) {
    auto r = receiver_accept(std::move(recv), *out.greeting);
    EXPECT_TRUE(r.has_value()) << r.status().message();
    if (r) out.receiver = std::move(*r);
  } else {
    (void)receiver_refuse(*recv, out.greeting.status().message(), 2000);
  }
  sender.join();
  return out;
}

// A frame of `type` with payload from one protected end to the other, checked on arrival.
void expect_frame_crosses(Transport& from, Transport& to, const std::vector<uint8_t>& payload) {
  ASSERT_TRUE(send_frame(from, FrameType::kOpaque, 1, payload, 2000).is_ok());
  auto f = recv_frame(to, 2000);
  ASSERT_TRUE(f.has_value()) << f.status().message();
  FrameChecker check;
  FrameChecker::Frame frame;
  size_t pos = 0;
  auto got = check.next((*f)->data, (*f)->len, &pos, frame);
  ASSERT_TRUE(got.has_value() && *got) << (got ? "no frame" : got.status().message());
  EXPECT_EQ(frame.header.type, FrameType::kOpaque);
  ASSERT_EQ(frame.header.len, payload.size());
  EXPECT_EQ(std::memcmp(frame.payload, payload.data(), payload.size()), 0);
  (*f)->pool->free(*f);
}

TEST_F(Credentials, PskLinkAuthenticatesAndCarriesFramesBothWays) {
  auto s = load({.psk_file = psk("a")}, TlsRole::kClient);
  auto r = load({.psk_file = psk("a")}, TlsRole::kServer);
  Outcome o = handshake(s.get(), r.get());
  ASSERT_TRUE(o.sender.has_value()) << o.sender.status().message();
  ASSERT_TRUE(o.greeting.has_value()) << o.greeting.status().message();
  EXPECT_EQ(o.greeting->peer(), "ferry");
  EXPECT_TRUE(o.greeting->hello.features & kFeatureTls);
  std::vector<uint8_t> big(300000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7);
  expect_frame_crosses(**o.sender, *o.receiver, big);
  expect_frame_crosses(*o.receiver, **o.sender, {1, 2, 3});
  expect_frame_crosses(**o.sender, *o.receiver, {});
}

TEST_F(Credentials, X509LinkNamesThePeerAndHonoursAuthz) {
  auto s = load({.x509_dir = x509("a")}, TlsRole::kClient);
  auto r = load({.x509_dir = x509("a"), .authz = {"someone-else", "ferry-send"}}, TlsRole::kServer);
  Outcome o = handshake(s.get(), r.get());
  ASSERT_TRUE(o.sender.has_value()) << o.sender.status().message();
  ASSERT_TRUE(o.greeting.has_value()) << o.greeting.status().message();
  EXPECT_EQ(o.greeting->peer(), "CN=ferry-send,O=ferry test");
  expect_frame_crosses(**o.sender, *o.receiver, {9, 8, 7});
}

TEST_F(Credentials, CertificateOfTheRightCaButNotInAuthzIsRefused) {
  auto s = load({.x509_dir = x509("a_intruder")}, TlsRole::kClient);
  auto r = load({.x509_dir = x509("a"), .authz = {"ferry-send"}}, TlsRole::kServer);
  Outcome o = handshake(s.get(), r.get());
  ASSERT_FALSE(o.greeting.has_value());
  EXPECT_NE(o.greeting.status().message().find("CN=intruder,O=ferry test' is not in --tls-authz"),
            std::string::npos)
      << o.greeting.status().message();
  ASSERT_FALSE(o.sender.has_value());
  EXPECT_NE(o.sender.status().message().find("not in --tls-authz"), std::string::npos)
      << o.sender.status().message();
}

TEST_F(Credentials, CertificateOfAnotherCaIsRefused) {
  auto s = load({.x509_dir = x509("b")}, TlsRole::kClient);
  auto r = load({.x509_dir = x509("a")}, TlsRole::kServer);
  Outcome o = handshake(s.get(), r.get());
  EXPECT_FALSE(o.greeting.has_value());
  EXPECT_EQ(o.greeting.status().code(), ErrorCode::kAuth);
  EXPECT_FALSE(o.sender.has_value());
}

TEST_F(Credentials, ReceiverCertificateMustNameThePeerHost) {
  auto s = load({.x509_dir = x509("a")}, TlsRole::kClient);
  auto r = load({.x509_dir = x509("a")}, TlsRole::kServer);
  Outcome o = handshake(s.get(), r.get(), "10.9.9.9");
  ASSERT_FALSE(o.sender.has_value());
  EXPECT_NE(o.sender.status().message().find("certificate"), std::string::npos)
      << o.sender.status().message();
  auto named = load({.x509_dir = x509("a"), .hostname = "localhost"}, TlsRole::kClient);
  Outcome ok = handshake(named.get(), r.get(), "10.9.9.9");
  EXPECT_TRUE(ok.sender.has_value()) << ok.sender.status().message();
}

TEST_F(Credentials, WrongPreSharedKeyIsRefused) {
  // Same identity ("ferry"), another key.
  auto s = load({.psk_file = psk("b")}, TlsRole::kClient);
  auto r = load({.psk_file = psk("a")}, TlsRole::kServer);
  Outcome o = handshake(s.get(), r.get());
  EXPECT_FALSE(o.greeting.has_value());
  EXPECT_EQ(o.greeting.status().code(), ErrorCode::kAuth);
  EXPECT_FALSE(o.sender.has_value());
}

TEST_F(Credentials, CredentialsOnOneEndOnlyAreRefusedWithTheReason) {
  auto r = load({.psk_file = psk("a")}, TlsRole::kServer);
  Outcome plain = handshake(nullptr, r.get());
  ASSERT_FALSE(plain.sender.has_value());
  EXPECT_NE(plain.sender.status().message().find("accepts authenticated senders only"),
            std::string::npos)
      << plain.sender.status().message();
  auto s = load({.psk_file = psk("a")}, TlsRole::kClient);
  Outcome unexpected = handshake(s.get(), nullptr);
  ASSERT_FALSE(unexpected.sender.has_value());
  EXPECT_NE(unexpected.sender.status().message().find("has no credentials"), std::string::npos)
      << unexpected.sender.status().message();
}

TEST_F(Credentials, BadCredentialFilesAreNamed) {
  auto missing = LinkSecurity::load({.x509_dir = "/nonexistent"}, TlsRole::kServer);
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.status().message().find("ca-cert.pem is missing"), std::string::npos);
  const std::string bad = (fs::temp_directory_path() / "ferry-bad.psk").string();
  std::ofstream(bad) << "# comment\nferry:abc\n";
  auto odd = LinkSecurity::load({.psk_file = bad}, TlsRole::kServer);
  ASSERT_FALSE(odd.has_value());
  EXPECT_NE(odd.status().message().find("line 2"), std::string::npos) << odd.status().message();
  fs::remove(bad);
  EXPECT_FALSE(LinkSecurity::load({.x509_dir = x509("a"), .psk_file = psk("a")}, TlsRole::kClient)
                   .has_value());
}

TEST(SpecHost, LoopbackRule) {
  EXPECT_EQ(spec_host("tcp:10.0.0.2:4444"), "10.0.0.2");
  EXPECT_EQ(spec_host("tcp:[::1]:4444"), "::1");
  EXPECT_EQ(spec_host("dpdk:10.1.1.1:5000"), "10.1.1.1");
  EXPECT_TRUE(spec_is_local("tcp:127.0.0.1:4444"));
  EXPECT_TRUE(spec_is_local("udp:127.3.2.1:4444"));
  EXPECT_TRUE(spec_is_local("tcp:localhost:4444"));
  EXPECT_TRUE(spec_is_local("tcp:[::1]:4444"));
  EXPECT_TRUE(spec_is_local("loopback:x"));
  EXPECT_FALSE(spec_is_local("tcp:0.0.0.0:4444"));
  EXPECT_FALSE(spec_is_local("tcp:10.77.0.2:4444"));
  EXPECT_FALSE(spec_is_local("tcp:example.org:4444"));
}

// ---- sealed frames, without TLS: fixed keys on in-process links ----

SessionKeys keys_for(bool sender) {
  SessionKeys k{};
  for (size_t i = 0; i < SessionKeys::kKeySize; ++i) {
    (sender ? k.tx_key : k.rx_key)[i] = static_cast<uint8_t>(i);
    (sender ? k.rx_key : k.tx_key)[i] = static_cast<uint8_t>(100 + i);
  }
  for (size_t i = 0; i < SessionKeys::kIvSize; ++i) {
    (sender ? k.tx_iv : k.rx_iv)[i] = static_cast<uint8_t>(7 * i);
    (sender ? k.rx_iv : k.tx_iv)[i] = static_cast<uint8_t>(3 * i);
  }
  return k;
}

std::pair<std::unique_ptr<Transport>, std::unique_ptr<Transport>> loopback_pair() {
  static int n = 0;
  const std::string address = "loopback:sec" + std::to_string(n++);
  auto l = listen_transport(address);
  EXPECT_TRUE(l.has_value());
  auto c = connect_transport(address, 2000);
  auto a = (*l)->accept(2000);
  EXPECT_TRUE(c.has_value() && a.has_value());
  return {std::move(*c), std::move(*a)};
}

// The bytes of one buffer as they cross the wire.
std::vector<uint8_t> next_wire_buffer(Transport& raw) {
  auto f = recv_frame(raw, 2000);
  EXPECT_TRUE(f.has_value()) << f.status().message();
  if (!f) return {};
  std::vector<uint8_t> out((*f)->data, (*f)->data + (*f)->len);
  (*f)->pool->free(*f);
  return out;
}

void send_wire_buffer(Transport& raw, const std::vector<uint8_t>& bytes) {
  FrameBuf* f = raw.pool().alloc();
  ASSERT_NE(f, nullptr);
  std::memcpy(f->data, bytes.data(), bytes.size());
  f->len = static_cast<uint32_t>(bytes.size());
  ASSERT_EQ(raw.tx_burst({&f, 1}), 1u);
  raw.progress(Clock::now());
}

// Frames sent by a protected sender, captured raw, then replayed (maybe altered) into a
// protected receiver with the matching keys.
class Sealed : public ::testing::Test {
 protected:
  void SetUp() override {
    auto [s, capture] = loopback_pair();
    sender_ = protect_link(std::move(s), keys_for(true));
    capture_ = std::move(capture);
    auto [inject, r] = loopback_pair();
    inject_ = std::move(inject);
    receiver_ = protect_link(std::move(r), keys_for(false));
  }
  std::vector<uint8_t> seal(const std::vector<uint8_t>& payload) {
    EXPECT_TRUE(send_frame(*sender_, FrameType::kOpaque, 1, payload, 2000).is_ok());
    sender_->progress(Clock::now());
    return next_wire_buffer(*capture_);
  }
  std::unique_ptr<Transport> sender_, capture_, inject_, receiver_;
};

TEST_F(Sealed, WireShowsNoPlaintextAndTheReceiverOpensIt) {
  const std::string secret = "QEVM pc.ram this must not be readable on the wire";
  std::vector<uint8_t> payload(secret.begin(), secret.end());
  auto wire = seal(payload);
  ASSERT_EQ(wire.size(), kFrameHeaderSize + kFrameHeaderSize + payload.size() + kSealTagSize);
  EXPECT_EQ(std::search(wire.begin(), wire.end(), secret.begin(), secret.begin() + 4), wire.end());
  send_wire_buffer(*inject_, wire);
  auto f = recv_frame(*receiver_, 2000);
  ASSERT_TRUE(f.has_value()) << f.status().message();
  ASSERT_EQ((*f)->len, kFrameHeaderSize + payload.size());
  EXPECT_EQ(std::memcmp((*f)->data + kFrameHeaderSize, payload.data(), payload.size()), 0);
  (*f)->pool->free(*f);
  EXPECT_EQ(receiver_->state(), LinkState::kOpen);
}

TEST_F(Sealed, EveryFlippedByteFailsTheLinkAndNothingIsDelivered) {
  const std::vector<uint8_t> payload(64, 0x5a);
  const auto wire = seal(payload);
  for (size_t at : {size_t{3}, size_t{9}, size_t{15}, kFrameHeaderSize + 2, wire.size() - 1}) {
    SetUp();
    auto w = seal(payload);
    w[at] ^= 0x01;
    send_wire_buffer(*inject_, w);
    auto f = recv_frame(*receiver_, 2000);
    EXPECT_FALSE(f.has_value()) << "byte " << at << " flipped, yet a frame was delivered";
    EXPECT_EQ(receiver_->state(), LinkState::kFailed) << "byte " << at;
    EXPECT_EQ(receiver_->error().code(), ErrorCode::kAuth) << receiver_->error().message();
  }
}

TEST_F(Sealed, ReplayedFrameFailsTheLink) {
  const auto wire = seal({1, 2, 3});
  send_wire_buffer(*inject_, wire);
  auto f = recv_frame(*receiver_, 2000);
  ASSERT_TRUE(f.has_value());
  (*f)->pool->free(*f);
  send_wire_buffer(*inject_, wire);
  EXPECT_FALSE(recv_frame(*receiver_, 2000).has_value());
  EXPECT_NE(receiver_->error().message().find("replayed"), std::string::npos)
      << receiver_->error().message();
}

TEST_F(Sealed, UnprotectedFrameOnAProtectedLinkFails) {
  std::vector<uint8_t> plain(kFrameHeaderSize + 3);
  const uint8_t body[3] = {1, 2, 3};
  encode_frame_header(FrameType::kOpaque, 1, body, 3, plain.data());
  std::memcpy(plain.data() + kFrameHeaderSize, body, 3);
  send_wire_buffer(*inject_, plain);
  EXPECT_FALSE(recv_frame(*receiver_, 2000).has_value());
  EXPECT_NE(receiver_->error().message().find("unprotected frame"), std::string::npos)
      << receiver_->error().message();
}

TEST_F(Sealed, PoolLeavesRoomForHeaderAndTag) {
  EXPECT_EQ(sender_->pool().frame_capacity() + kSealOverhead, capture_->pool().frame_capacity());
  EXPECT_EQ(sender_->caps().max_frame + kSealOverhead, capture_->caps().max_frame);
}

}  // namespace
}  // namespace ferry::dataplane
