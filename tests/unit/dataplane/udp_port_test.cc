// Unit tests of the UDP datagram port (dataplane/udp/udp_port.h) on loopback: bursts both ways
// with their content checked, the reported datagram size, a peer that is gone (ECONNREFUSED),
// the listener giving concurrent peers their own connections and ignoring duplicate first
// datagrams, the per-peer filter, IPv6 and dual-stack listeners.
#include "dataplane/udp/udp_port.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/transport.h"
#include "dataplane/udp/udp_port_internal.h"

namespace ferry::dataplane::udp {
namespace {

using std::chrono::milliseconds;

bool has_ipv6_loopback() {
  int fd = ::socket(AF_INET6, SOCK_DGRAM, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

void wait_for(const DatagramPort& port, uint32_t events, int ms) {
  pollfd p{port.wait_fd(), 0, 0};
  if (events & kWaitReadable) p.events |= POLLIN;
  if (events & kWaitWritable) p.events |= POLLOUT;
  ::poll(&p, 1, ms);
}

// Sends every datagram, waiting while the socket buffer is full.
void send_all(DatagramPort& port, std::span<const DatagramOut> out) {
  size_t done = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (done < out.size() && !port.failed() && std::chrono::steady_clock::now() < deadline) {
    size_t n = port.send_burst(out.subspan(done));
    if (n == 0) wait_for(port, kWaitWritable, 10);
    done += n;
  }
  ASSERT_EQ(done, out.size()) << port.error().message();
}

void send_text(DatagramPort& port, const std::string& text) {
  DatagramOut d{{}, {reinterpret_cast<const uint8_t*>(text.data()), text.size()}};
  send_all(port, {&d, 1});
}

// Receives up to n datagrams (as strings) within timeout_ms.
std::vector<std::string> recv_texts(DatagramPort& port, size_t n, int timeout_ms) {
  std::vector<std::string> got;
  std::vector<uint8_t> buf(65536);
  const auto deadline = std::chrono::steady_clock::now() + milliseconds(timeout_ms);
  while (got.size() < n && std::chrono::steady_clock::now() < deadline) {
    DatagramIn in{buf.data(), buf.size(), 0};
    if (port.recv_burst({&in, 1}) == 1) {
      got.emplace_back(reinterpret_cast<const char*>(in.buf), in.len);
    } else {
      wait_for(port, kWaitReadable, 10);
    }
  }
  return got;
}

// A client port and the listener's port for it, joined by one first datagram.
struct Pair {
  std::unique_ptr<PortListener> listener;
  std::unique_ptr<UdpPort> client, server;
};

Pair make_pair(const std::string& listen_at, const std::string& host, PortOptions options = {}) {
  Pair p;
  auto l = PortListener::create(listen_at, options);
  EXPECT_TRUE(l) << l.status().message();
  if (!l) return p;
  p.listener = std::move(*l);
  auto c = connect_port(host + ":" + std::to_string(p.listener->port()), options);
  EXPECT_TRUE(c) << c.status().message();
  if (!c) return p;
  p.client = std::move(*c);
  send_text(*p.client, "hello");
  auto a = p.listener->accept(2000);
  EXPECT_TRUE(a) << a.status().message();
  if (!a) return p;
  EXPECT_EQ(std::string(a->first.begin(), a->first.end()), "hello");
  p.server = std::move(a->port);
  return p;
}

// Datagram i: an 8-byte head (i) and a body of body_size(i, max) bytes derived from i.
// Mixed sizes; or, with runs, what reliable/ sends: runs of full-sized pieces of a frame,
// each run ended by the frame's shorter last piece (what GSO sends as one).
size_t body_size(size_t i, size_t max_body, bool runs) {
  if (!runs) return (i * 977) % max_body;
  return i % 11 == 10 ? (i * 977) % max_body : max_body;
}

struct Burst {
  std::vector<uint64_t> heads;
  std::vector<std::vector<uint8_t>> bodies;
  std::vector<DatagramOut> out;
  Burst(size_t n, size_t max_body, bool runs = false) : heads(n), bodies(n), out(n) {
    for (size_t i = 0; i < n; ++i) {
      heads[i] = i;
      bodies[i].resize(body_size(i, max_body, runs));
      for (size_t j = 0; j < bodies[i].size(); ++j) bodies[i][j] = static_cast<uint8_t>(i + j * 7);
      out[i] = {{reinterpret_cast<const uint8_t*>(&heads[i]), 8}, bodies[i]};
    }
  }
};

// Receives n datagrams in bursts of 32 and checks each against Burst's rule, in order
// (loopback neither loses with room in the buffer nor reorders).
void expect_burst(DatagramPort& port, size_t n, size_t max_body, bool runs = false,
                  size_t per_call = 32) {
  std::vector<std::vector<uint8_t>> bufs(per_call, std::vector<uint8_t>(port.max_datagram()));
  std::vector<DatagramIn> in(per_call);
  size_t next = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (next < n && std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < per_call; ++i) in[i] = {bufs[i].data(), bufs[i].size(), 0};
    size_t got = port.recv_burst(in);
    // Datagrams staged in the port (GRO) wake no fd: its deadline says so.
    if (got == 0 && port.next_deadline() == kNever) wait_for(port, kWaitReadable, 10);
    for (size_t k = 0; k < got; ++k, ++next) {
      uint64_t head;
      ASSERT_GE(in[k].len, 8u);
      std::memcpy(&head, in[k].buf, 8);
      ASSERT_EQ(head, next);
      ASSERT_EQ(in[k].len, 8 + body_size(next, max_body, runs));
      for (size_t j = 0; j + 8 < in[k].len; ++j) {
        ASSERT_EQ(in[k].buf[8 + j], static_cast<uint8_t>(next + j * 7)) << next << " byte " << j;
      }
    }
  }
  EXPECT_EQ(next, n);
}

// Every test of the data path runs with GSO/GRO (offload) and without.
class UdpPortTest : public ::testing::TestWithParam<bool> {
 protected:
  PortOptions options(size_t cap = PortOptions{}.datagram_cap) const {
    PortOptions o;
    o.offload = GetParam();
    o.datagram_cap = cap;
    return o;
  }
};
INSTANTIATE_TEST_SUITE_P(Offload, UdpPortTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "on" : "off"; });

TEST_P(UdpPortTest, BurstsBothWaysWithContentChecked) {
  Pair p = make_pair("127.0.0.1:0", "127.0.0.1", options());
  ASSERT_TRUE(p.server);
  const size_t max_body = p.client->max_datagram() - 8;
  // Fewer bytes than the receive buffer holds, so that nothing may be lost.
  Burst b(600, max_body);
  send_all(*p.client, b.out);
  expect_burst(*p.server, b.out.size(), max_body);
  send_all(*p.server, b.out);
  expect_burst(*p.client, b.out.size(), max_body);
  EXPECT_EQ(p.client->counters().tx_datagrams, 1u + 600u);
  EXPECT_EQ(p.server->counters().rx_datagrams, 600u);
  EXPECT_FALSE(p.client->failed());
  EXPECT_FALSE(p.server->failed());
}

// Runs of equal sizes leave as one super-datagram each (GSO) and arrive glued (GRO, on
// loopback the super-datagram itself); the receiver takes fewer per call than were glued, so
// some wait staged in the port. Without offload: the same datagrams, one by one.
TEST_P(UdpPortTest, RunsOfEqualSizesWithContentChecked) {
  Pair p = make_pair("127.0.0.1:0", "127.0.0.1", options(1472));
  ASSERT_TRUE(p.server);
  EXPECT_EQ(p.client->offload(), GetParam());
  const size_t max_body = p.client->max_datagram() - 8;
  Burst b(2000, max_body, true);
  send_all(*p.client, b.out);
  expect_burst(*p.server, b.out.size(), max_body, true, 7);
  send_all(*p.server, b.out);
  expect_burst(*p.client, b.out.size(), max_body, true, 32);
  EXPECT_EQ(p.server->next_deadline(), kNever);  // nothing left staged
  if (GetParam()) {
    EXPECT_GT(p.client->counters().tx_gso_batches, 100u);
    EXPECT_GT(p.server->counters().rx_gro_batches, 100u);
  } else {
    EXPECT_EQ(p.client->counters().tx_gso_batches, 0u);
    EXPECT_EQ(p.server->counters().rx_gro_batches, 0u);
  }
  EXPECT_EQ(p.server->counters().rx_datagrams, 2000u);
}

// A GSO sender and a receiver without GRO: the kernel cuts the super-datagrams.
TEST(UdpPort, OffloadToPlainPeer) {
  PortOptions plain;
  plain.offload = false;
  plain.datagram_cap = 1472;
  auto l = PortListener::create("127.0.0.1:0", plain);
  ASSERT_TRUE(l);
  PortOptions offload;
  offload.datagram_cap = 1472;
  auto c = connect_port("127.0.0.1:" + std::to_string((*l)->port()), offload);
  ASSERT_TRUE(c);
  send_text(**c, "hello");
  auto a = (*l)->accept(1000);
  ASSERT_TRUE(a);
  const size_t max_body = (*c)->max_datagram() - 8;
  Burst b(500, max_body, true);
  send_all(**c, b.out);
  expect_burst(*a->port, b.out.size(), max_body, true);
  EXPECT_GT((*c)->counters().tx_gso_batches, 0u);
  EXPECT_EQ(a->port->counters().rx_gro_batches, 0u);
}

TEST_P(UdpPortTest, TruncatedDatagramIsDroppedAndTheRestCompacted) {
  Pair p = make_pair("127.0.0.1:0", "127.0.0.1", options());
  ASSERT_TRUE(p.server);
  send_text(*p.client, "short-1");
  send_text(*p.client, std::string(100, 'x'));
  send_text(*p.client, "short-2");
  std::this_thread::sleep_for(milliseconds(20));
  uint8_t a[16], b[16], c[16];
  DatagramIn in[3] = {{a, 16, 0}, {b, 16, 0}, {c, 16, 0}};
  ASSERT_EQ(p.server->recv_burst(in), 2u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(in[0].buf), in[0].len), "short-1");
  EXPECT_EQ(std::string(reinterpret_cast<char*>(in[1].buf), in[1].len), "short-2");
  EXPECT_EQ(p.server->counters().rx_truncated, 1u);
}

TEST_P(UdpPortTest, MaxDatagramFromPathMtu) {
  // Loopback's MTU is 65536: the cap decides, and without one the IPv4 UDP limit.
  Pair capped = make_pair("127.0.0.1:0", "127.0.0.1", options());
  ASSERT_TRUE(capped.client);
  EXPECT_EQ(capped.client->max_datagram(), PortOptions{}.datagram_cap);
  EXPECT_EQ(capped.server->max_datagram(), PortOptions{}.datagram_cap);
  Pair raw = make_pair("127.0.0.1:0", "127.0.0.1", options(0));
  ASSERT_TRUE(raw.client);
  EXPECT_EQ(raw.client->max_datagram(), 65535u - 20 - 8);  // IPv4's length limit
  // A datagram of max_datagram() passes; a larger one cannot leave (EMSGSIZE: dropped and
  // counted, the port stays usable).
  std::vector<uint8_t> big(raw.client->max_datagram());
  DatagramOut d{{}, big};
  EXPECT_EQ(raw.client->send_burst({&d, 1}), 1u);
  std::vector<uint8_t> too_big(raw.client->max_datagram() + 1);
  DatagramOut t{{}, too_big};
  EXPECT_EQ(raw.client->send_burst({&t, 1}), 1u);
  EXPECT_EQ(raw.client->counters().tx_too_big, 1u);
  EXPECT_FALSE(raw.client->failed());
  auto got = recv_texts(*raw.server, 1, 2000);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].size(), big.size());
}

TEST(UdpPort, PeerGoneFailsWithReason) {
  // A port that nobody listens on any more.
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  auto port = connect_port("127.0.0.1:" + std::to_string(ntohs(a.sin_port)));
  ASSERT_TRUE(port) << port.status().message();
  const std::string ping = "ping";
  DatagramOut d{{}, {reinterpret_cast<const uint8_t*>(ping.data()), ping.size()}};
  // The ICMP "port unreachable" comes back asynchronously; a later call reports it.
  for (int i = 0; i < 100 && !(*port)->failed(); ++i) {
    (*port)->send_burst({&d, 1});
    uint8_t buf[64];
    DatagramIn in{buf, sizeof buf, 0};
    (*port)->recv_burst({&in, 1});
    std::this_thread::sleep_for(milliseconds(5));
  }
  ASSERT_TRUE((*port)->failed());
  EXPECT_EQ((*port)->error().code(), ErrorCode::kRefused);
  EXPECT_NE((*port)->error().message().find("refused"), std::string::npos)
      << (*port)->error().message();
  EXPECT_EQ((*port)->send_burst({&d, 1}), 0u);
}

// Two clients start at once and, like reliable/'s SYN, repeat their first datagram until
// answered; each must get its own server port, which then hears only its own peer.
TEST(UdpListener, AcceptsConcurrentPeersAsSeparateConnections) {
  auto l = PortListener::create("127.0.0.1:0");
  ASSERT_TRUE(l) << l.status().message();
  const std::string at = "127.0.0.1:" + std::to_string((*l)->port());
  std::atomic<int> answered{0};
  auto client = [&](const std::string& name) {
    auto port = connect_port(at);
    ASSERT_TRUE(port);
    std::vector<std::string> got;
    for (int i = 0; i < 200 && got.empty(); ++i) {
      send_text(**port, "syn " + name);
      got = recv_texts(**port, 1, 10);
    }
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], "ack " + name);
    ++answered;
    for (int i = 0; i < 10; ++i) send_text(**port, "data " + name);
  };
  std::thread a(client, "a"), b(client, "b");
  std::vector<std::unique_ptr<UdpPort>> servers;
  std::vector<std::string> firsts;
  for (int i = 0; i < 2; ++i) {
    auto acc = (*l)->accept(5000);
    ASSERT_TRUE(acc) << acc.status().message();
    firsts.emplace_back(acc->first.begin(), acc->first.end());
    send_text(*acc->port, "ack " + firsts.back().substr(4));
    servers.push_back(std::move(acc->port));
  }
  a.join();
  b.join();
  EXPECT_EQ(answered.load(), 2);
  EXPECT_NE(firsts[0], firsts[1]);
  EXPECT_NE(servers[0]->name(), servers[1]->name());
  for (int i = 0; i < 2; ++i) {
    // Every data datagram from a peer reaches that peer's port (late SYNs may come too).
    auto got = recv_texts(*servers[i], 1000, 200);
    int data = 0;
    for (const auto& g : got) {
      EXPECT_EQ(g.substr(g.size() - 1), firsts[i].substr(4)) << g;
      data += g.rfind("data", 0) == 0;
    }
    EXPECT_EQ(data, 10);
  }
  // Nothing new is waiting: repeated SYNs were duplicates, not connections.
  auto none = (*l)->accept(100);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.status().code(), ErrorCode::kTimeout);
}

TEST(UdpListener, DuplicateFirstDatagramsMakeOneConnection) {
  auto l = PortListener::create("127.0.0.1:0");
  ASSERT_TRUE(l);
  auto c = connect_port("127.0.0.1:" + std::to_string((*l)->port()));
  ASSERT_TRUE(c);
  // Five SYNs queue on the listening socket before it accepts anything.
  for (int i = 0; i < 5; ++i) send_text(**c, "syn");
  std::this_thread::sleep_for(milliseconds(20));
  auto first = (*l)->accept(1000);
  ASSERT_TRUE(first);
  auto again = (*l)->accept(100);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.status().code(), ErrorCode::kTimeout);
  EXPECT_EQ((*l)->duplicates(), 4u);
  // Later datagrams go to the connected port, not the listener.
  send_text(**c, "data");
  auto got = recv_texts(*first->port, 1, 1000);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "data");
  EXPECT_EQ((*l)->duplicates(), 4u);
  // A peer whose port closed stays "known" for a while: its stale SYNs are still duplicates.
  first->port.reset();
  send_text(**c, "syn");
  EXPECT_FALSE((*l)->accept(100));
  EXPECT_EQ((*l)->duplicates(), 5u);
}

// With a check (reliable/'s parse_syn in real use): strangers make no socket; after a
// connection closed, its stale SYN is a duplicate but a new id from the same address opens a
// new connection.
TEST(UdpListener, FirstDatagramCheckAndConnectionIds) {
  auto check = [](std::span<const uint8_t> d) -> Result<uint64_t> {
    std::string s(d.begin(), d.end());
    if (s.rfind("syn ", 0) != 0) return error(ErrorCode::kProtocol, "not a syn");
    return std::stoull(s.substr(4));
  };
  auto l = PortListener::create("127.0.0.1:0", {}, check);
  ASSERT_TRUE(l);
  auto c = connect_port("127.0.0.1:" + std::to_string((*l)->port()));
  ASSERT_TRUE(c);
  send_text(**c, "garbage");
  send_text(**c, "syn 7");
  send_text(**c, "syn 7");
  std::this_thread::sleep_for(milliseconds(20));
  auto first = (*l)->accept(1000);
  ASSERT_TRUE(first);
  EXPECT_EQ(std::string(first->first.begin(), first->first.end()), "syn 7");
  EXPECT_EQ((*l)->refused(), 1u);
  EXPECT_FALSE((*l)->accept(50));
  EXPECT_EQ((*l)->duplicates(), 1u);
  first->port.reset();
  send_text(**c, "syn 7");  // stale
  send_text(**c, "syn 8");  // the same client address, a new connection
  auto second = (*l)->accept(1000);
  ASSERT_TRUE(second) << second.status().message();
  EXPECT_EQ(std::string(second->first.begin(), second->first.end()), "syn 8");
  EXPECT_EQ((*l)->duplicates(), 2u);
}

// An unconnected bound socket with the filter: the state of a per-peer socket between bind
// and connect, when the kernel may hand it another new peer's datagrams.
void check_peer_filter(int family) {
  sockaddr_storage at{};
  at.ss_family = static_cast<sa_family_t>(family);
  if (family == AF_INET6) {
    reinterpret_cast<sockaddr_in6&>(at).sin6_addr = in6addr_loopback;
  } else {
    reinterpret_cast<sockaddr_in&>(at).sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }
  const socklen_t alen = family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  int s = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&at), alen), 0);
  socklen_t len = sizeof at;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&at), &len);
  int peers[2];
  for (int& p : peers) {
    p = ::socket(family, SOCK_DGRAM, 0);
    ASSERT_EQ(::connect(p, reinterpret_cast<sockaddr*>(&at), alen), 0);
  }
  sockaddr_storage peer_a{};
  len = sizeof peer_a;
  ::getsockname(peers[0], reinterpret_cast<sockaddr*>(&peer_a), &len);
  ASSERT_TRUE(attach_peer_filter(s, peer_a));
  ASSERT_EQ(::send(peers[1], "b", 1, 0), 1);
  ASSERT_EQ(::send(peers[0], "a", 1, 0), 1);
  std::this_thread::sleep_for(milliseconds(20));
  char buf[8];
  EXPECT_EQ(::recv(s, buf, sizeof buf, 0), 1);
  EXPECT_EQ(buf[0], 'a');
  EXPECT_EQ(::recv(s, buf, sizeof buf, 0), -1);  // b never arrived
  ::close(s);
  for (int p : peers) ::close(p);
}

TEST(UdpListener, PeerFilterKeepsOtherPeersOut) { check_peer_filter(AF_INET); }

TEST(UdpListener, PeerFilterKeepsOtherPeersOutIpv6) {
  if (!has_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback";
  check_peer_filter(AF_INET6);
}

TEST_P(UdpPortTest, Ipv6) {
  if (!has_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback";
  Pair p = make_pair("[::1]:0", "[::1]", options(0));
  ASSERT_TRUE(p.server);
  EXPECT_EQ(p.client->max_datagram(), 65536u - 40 - 8);
  EXPECT_NE(p.server->name().find("[::1]"), std::string::npos) << p.server->name();
  Burst b(300, 8000);
  send_all(*p.client, b.out);
  expect_burst(*p.server, b.out.size(), 8000);
  Burst runs(300, 8000, true);
  send_all(*p.client, runs.out);
  expect_burst(*p.server, runs.out.size(), 8000, true);
  send_text(*p.server, "back");
  EXPECT_EQ(recv_texts(*p.client, 1, 1000), std::vector<std::string>{"back"});
}

TEST(UdpListener, DualStackListenerTakesIpv4Peers) {
  if (!has_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback";
  PortOptions uncapped;
  uncapped.datagram_cap = 0;
  // The peer is IPv4 on an IPv6 socket (::ffff:127.0.0.1): 20-byte IP headers, the filter's
  // IPv4 branch, the v4-mapped local address from IPV6_PKTINFO.
  Pair p = make_pair("[::]:0", "127.0.0.1", uncapped);
  ASSERT_TRUE(p.server);
  EXPECT_EQ(p.server->max_datagram(), 65535u - 20 - 8);
  EXPECT_NE(p.server->name().find("::ffff:127.0.0.1"), std::string::npos) << p.server->name();
  send_text(*p.server, "back");
  EXPECT_EQ(recv_texts(*p.client, 1, 1000), std::vector<std::string>{"back"});
  send_text(*p.client, "forth");
  EXPECT_EQ(recv_texts(*p.server, 1, 1000), std::vector<std::string>{"forth"});
}

TEST(UdpPort, BadAddressesAndPortsInUse) {
  auto a = connect_port("no-port");
  ASSERT_FALSE(a);
  EXPECT_EQ(a.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("udp:HOST:PORT"), std::string::npos);
  auto b = PortListener::create("127.0.0.1:");
  ASSERT_FALSE(b);
  EXPECT_EQ(b.status().code(), ErrorCode::kInvalidArgument);
  auto port = connect_port("127.0.0.1:99999");  // getaddrinfo alone would wrap it to 34463
  ASSERT_FALSE(port);
  EXPECT_EQ(port.status().code(), ErrorCode::kInvalidArgument);
  // A second listener on a port in use fails as TCP's would, instead of sharing it.
  auto first = PortListener::create("127.0.0.1:0");
  ASSERT_TRUE(first);
  auto second = PortListener::create("127.0.0.1:" + std::to_string((*first)->port()));
  ASSERT_FALSE(second);
  EXPECT_NE(second.status().message().find("in use"), std::string::npos)
      << second.status().message();
  auto c = connect_port("no.such.host.invalid:7000");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace ferry::dataplane::udp
