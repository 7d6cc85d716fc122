// Tests of the `udp` transport (reliable/ over dataplane/udp ports) on loopback: 200 MB of
// frames between two threads with every byte checked and the throughput printed, several
// channels through one listener at once, and a peer that is not there.
#include "dataplane/udp/udp_transport.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "dataplane/protocol.h"
#include "dataplane/reliable/reliable_transport.h"
#include "dataplane/transport.h"
#include "dataplane/udp/udp_port.h"

namespace ferry::dataplane::udp {
namespace {

// Sleeps until the transport may have work: its fd, or its next deadline (at most 5 ms).
void idle(Transport& t, bool want_tx) {
  const TimePoint now = Clock::now();
  const TimePoint next = std::min(t.next_deadline(), now + std::chrono::milliseconds(5));
  if (next <= now) return;
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(next - now).count();
  const uint32_t ev = t.wait_events(true, want_tx);
  pollfd p{t.wait_fd(), 0, 0};
  if (ev & kWaitReadable) p.events |= POLLIN;
  if (ev & kWaitWritable) p.events |= POLLOUT;
  ::poll(&p, p.fd >= 0 ? 1 : 0, static_cast<int>((us + 999) / 1000));
}

// Frames carry one of kTemplates payloads (by sequence number), so that sender and receiver
// spend their time on the transport, not on making and checking bytes: a memcpy and a memcmp
// per frame, and the CRC computed once per template.
constexpr size_t kTemplates = 7;

struct Frames {
  size_t payload;
  std::vector<std::vector<uint8_t>> payloads;
  std::vector<std::array<uint8_t, kFrameHeaderSize>> headers;  // seq 0; patched per frame

  explicit Frames(size_t payload_len) : payload(payload_len) {
    for (size_t t = 0; t < kTemplates; ++t) {
      std::vector<uint8_t> p(payload);
      for (size_t j = 0; j < payload; ++j) p[j] = static_cast<uint8_t>(t * 131 + j * 7 + (j >> 11));
      headers.emplace_back();
      encode_frame_header(FrameType::kOpaque, 0, p.data(), static_cast<uint32_t>(payload),
                          headers.back().data());
      payloads.push_back(std::move(p));
    }
  }
  void write(FrameBuf* f, uint64_t seq) const {
    std::memcpy(f->data, headers[seq % kTemplates].data(), kFrameHeaderSize);
    for (int i = 0; i < 8; ++i) f->data[8 + i] = static_cast<uint8_t>(seq >> (56 - 8 * i));
    std::memcpy(f->payload(), payloads[seq % kTemplates].data(), payload);
    f->len = static_cast<uint32_t>(kFrameHeaderSize + payload);
  }
  // Whether f is frame seq, byte for byte.
  bool check(const FrameBuf* f, uint64_t seq) const {
    if (f->len != kFrameHeaderSize + payload) return false;
    uint8_t h[kFrameHeaderSize];
    std::memcpy(h, headers[seq % kTemplates].data(), kFrameHeaderSize);
    for (int i = 0; i < 8; ++i) h[8 + i] = static_cast<uint8_t>(seq >> (56 - 8 * i));
    return std::memcmp(f->data, h, kFrameHeaderSize) == 0 &&
           std::memcmp(f->payload(), payloads[seq % kTemplates].data(), payload) == 0;
  }
};

// Sends `count` frames, closes, and waits until all were acknowledged.
Status send_all_frames(Transport& t, const Frames& frames, uint64_t count) {
  uint64_t seq = 0;
  FrameBuf* batch[32];
  FrameBuf* done[64];
  const TimePoint deadline = Clock::now() + std::chrono::seconds(120);
  bool closed = false;
  while (Clock::now() < deadline) {
    size_t work = t.progress(Clock::now());
    size_t r = t.reap_tx(done);
    for (size_t i = 0; i < r; ++i) done[i]->pool->free(done[i]);
    work += r;
    size_t k = 0;
    while (seq + k < count && k < 32) {
      FrameBuf* f = t.pool().alloc();
      if (!f) break;
      frames.write(f, seq + k);
      batch[k++] = f;
    }
    const size_t taken = t.tx_burst({batch, k});
    for (size_t i = taken; i < k; ++i) t.pool().free(batch[i]);
    seq += taken;
    work += taken;
    if (seq == count && !closed) {
      t.close_tx();
      closed = true;
    }
    if (t.state() == LinkState::kFailed) return t.error();
    if (closed && t.tx_in_flight_bytes() == 0) return Status::ok();
    if (work == 0) idle(t, k > taken);
  }
  return error(ErrorCode::kTimeout, "sender: " + std::to_string(seq) + " frames taken");
}

// Receives until the peer closed; checks every frame. Returns the frame count.
Result<uint64_t> receive_all_frames(Transport& t, const Frames& frames) {
  uint64_t seq = 0;
  FrameBuf* got[32];
  const TimePoint deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline) {
    size_t work = t.progress(Clock::now());
    const size_t n = t.rx_burst(got);
    for (size_t i = 0; i < n; ++i, ++seq) {
      const bool ok = frames.check(got[i], seq);
      got[i]->pool->free(got[i]);
      if (!ok) return error(ErrorCode::kProtocol, "frame " + std::to_string(seq) + " differs");
    }
    work += n;
    if (t.state() == LinkState::kPeerClosed) return seq;
    if (t.state() == LinkState::kFailed) return t.error();
    if (work == 0) idle(t, false);
  }
  return error(ErrorCode::kTimeout, "receiver: " + std::to_string(seq) + " frames");
}

TEST(UdpTransport, TwoHundredMegabytesCheckedWithThroughput) {
  auto listener = listen("127.0.0.1:0");
  ASSERT_TRUE(listener) << listener.status().message();
  const std::string at = (*listener)->where().substr(4);  // "udp:" off
  const Frames frames(kMaxPayload);                       // 1 MiB frames, as bulk data uses
  const uint64_t count = 200;
  Status sent;
  double t_connected = 0;
  uint64_t retransmits = 0;
  std::thread client([&] {
    auto link = connect(at, 5000);
    if (!link) {
      sent = link.status();
      return;
    }
    t_connected = now_seconds();
    sent = send_all_frames(**link, frames, count);
    retransmits = static_cast<reliable::ReliableTransport&>(**link).stats().retransmits;
  });
  auto server = (*listener)->accept(5000);
  ASSERT_TRUE(server) << server.status().message();
  auto received = receive_all_frames(**server, frames);
  const double t_end = now_seconds();
  client.join();
  ASSERT_TRUE(sent) << sent.message();
  ASSERT_TRUE(received) << received.status().message();
  EXPECT_EQ(*received, count);
  const double mb = static_cast<double>(count * frames.payload) / 1e6;
  auto& link = static_cast<reliable::ReliableTransport&>(**server);
  std::printf(
      "udp over reliable, loopback: %.0f MB in %.3f s = %.2f GB/s (%zu-byte datagrams, "
      "GSO/GRO %s, %llu retransmits)\n",
      mb, t_end - t_connected, mb / 1e3 / (t_end - t_connected), link.port().max_datagram(),
      static_cast<UdpPort&>(link.port()).offload() ? "on" : "off",
      static_cast<unsigned long long>(retransmits));
}

// --link-timeout reaches reliable/ on both ends: a peer that stops answering (alive, but its
// engine never runs again) fails the link after 2 s, not the default 10.
TEST(UdpTransport, LinkTimeoutSettingEndsASilentLink) {
  TransportSettings settings;
  settings.link_timeout = std::chrono::seconds(2);
  auto listener = listen("127.0.0.1:0", settings);
  ASSERT_TRUE(listener) << listener.status().message();
  const std::string at = (*listener)->where().substr(4);
  Result<std::unique_ptr<Transport>> client = error(ErrorCode::kInternal, "not run");
  std::atomic<bool> connected{false};
  std::thread connector([&] {
    client = connect(at, 5000, settings);
    connected = true;
  });
  auto server = (*listener)->accept(5000);
  ASSERT_TRUE(server) << server.status().message();
  while (!connected) {  // the server answers the handshake from its progress()
    (*server)->progress(Clock::now());
    idle(**server, false);
  }
  connector.join();
  ASSERT_TRUE(client) << client.status().message();
  const auto t0 = Clock::now();
  while ((*client)->state() == LinkState::kOpen && Clock::now() - t0 < std::chrono::seconds(6)) {
    (*client)->progress(Clock::now());
    idle(**client, false);
  }
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_EQ((*client)->state(), LinkState::kFailed);
  EXPECT_GE(took, 1.5);
  EXPECT_LT(took, 3.5);
  EXPECT_NE((*client)->error().message().find("for 2.0 s (liveness timeout)"), std::string::npos)
      << (*client)->error().message();
}

// Channels of one migration connect to one listener at the same time; each gets its own
// connection and its own frames.
TEST(UdpTransport, ChannelsInParallelAreSeparateConnections) {
  auto listener = listen("127.0.0.1:0");
  ASSERT_TRUE(listener);
  const std::string at = (*listener)->where().substr(4);
  constexpr int kChannels = 4;
  std::vector<Frames> frames;
  for (int c = 0; c < kChannels; ++c) frames.emplace_back(1000 + 4096 * c);  // told apart by size
  std::vector<Status> sent(kChannels);
  std::vector<std::thread> clients;
  for (int c = 0; c < kChannels; ++c) {
    clients.emplace_back([&, c] {
      auto link = connect(at, 5000);
      sent[c] = link ? send_all_frames(**link, frames[c], 300) : link.status();
    });
  }
  std::vector<std::unique_ptr<Transport>> servers;
  for (int c = 0; c < kChannels; ++c) {
    auto s = (*listener)->accept(5000);
    ASSERT_TRUE(s) << s.status().message();
    servers.push_back(std::move(*s));
  }
  // Each server link learns which channel it serves from its first frame's size.
  std::vector<std::thread> receivers;
  std::vector<int> channel_of(kChannels, -1);
  std::vector<Result<uint64_t>> got(kChannels, error(ErrorCode::kInternal, "not run"));
  for (int i = 0; i < kChannels; ++i) {
    receivers.emplace_back([&, i] {
      Transport& t = *servers[i];
      auto first = recv_frame(t, 5000);
      if (!first) {
        got[i] = first.status();
        return;
      }
      FrameBuf* f = *first;
      channel_of[i] = static_cast<int>((f->len - kFrameHeaderSize - 1000) / 4096);
      const Frames& mine = frames[std::clamp(channel_of[i], 0, kChannels - 1)];
      const bool first_ok = mine.check(f, 0);
      f->pool->free(f);
      if (!first_ok) {
        got[i] = error(ErrorCode::kProtocol, "frame 0 differs");
        return;
      }
      uint64_t seq = 1;
      FrameBuf* in[32];
      for (;;) {
        size_t work = t.progress(Clock::now());
        const size_t n = t.rx_burst(in);
        for (size_t k = 0; k < n; ++k, ++seq) {
          const bool ok = mine.check(in[k], seq);
          in[k]->pool->free(in[k]);
          if (!ok) {
            got[i] = error(ErrorCode::kProtocol, "frame " + std::to_string(seq) + " differs");
            return;
          }
        }
        if (t.state() == LinkState::kPeerClosed) break;
        if (t.state() == LinkState::kFailed) {
          got[i] = t.error();
          return;
        }
        if (work + n == 0) idle(t, false);
      }
      got[i] = seq;
    });
  }
  for (auto& th : clients) th.join();
  for (auto& th : receivers) th.join();
  std::vector<int> seen;
  for (int i = 0; i < kChannels; ++i) {
    EXPECT_TRUE(sent[i]) << sent[i].message();
    ASSERT_TRUE(got[i]) << got[i].status().message();
    EXPECT_EQ(*got[i], 300u);
    seen.push_back(channel_of[i]);
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 3}));
}

TEST(UdpTransport, NobodyListeningFailsFastWithReason) {
  // A port nobody listens on: the ICMP "port unreachable" ends the handshake long before its
  // timeout.
  auto probe = PortListener::create("127.0.0.1:0");
  ASSERT_TRUE(probe);
  const std::string at = "127.0.0.1:" + std::to_string((*probe)->port());
  probe->reset();
  const double t0 = now_seconds();
  auto link = connect(at, 5000);
  ASSERT_FALSE(link);
  EXPECT_LT(now_seconds() - t0, 2.0);
  EXPECT_EQ(link.status().code(), ErrorCode::kRefused);
  EXPECT_NE(link.status().message().find("nothing listens"), std::string::npos)
      << link.status().message();
}

TEST(UdpTransport, BadAddress) {
  auto link = connect("nonsense", 100);
  ASSERT_FALSE(link);
  EXPECT_EQ(link.status().code(), ErrorCode::kInvalidArgument);
  auto l = listen("127.0.0.1:99999");
  ASSERT_FALSE(l);
}

}  // namespace
}  // namespace ferry::dataplane::udp
