// Unit tests of dataplane/dpdk/dpdk_wire: the UDP/IPv4 and ARP headers the dpdk transport
// builds and parses itself (no EAL needed), and the settings' environment fallback.
#include "dataplane/dpdk/dpdk_wire.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

#include "dataplane/dpdk/dpdk_settings.h"

namespace ferry::dataplane::dpdk {
namespace {

UdpAddressing addressing() {
  UdpAddressing a;
  a.src_mac = {2, 0, 0, 0, 0, 1};
  a.dst_mac = {2, 0, 0, 0, 0, 2};
  a.src_ip = *parse_ipv4("10.77.0.101");
  a.dst_ip = *parse_ipv4("10.77.0.102");
  a.src_port = 50000;
  a.dst_port = 7000;
  return a;
}

std::vector<uint8_t> datagram(size_t payload, bool checksum = true) {
  std::vector<uint8_t> f(kUdpHeaders + payload);
  write_udp_headers(f.data(), addressing(), payload, 77, checksum);
  for (size_t i = 0; i < payload; ++i) f[kUdpHeaders + i] = static_cast<uint8_t>(i * 7);
  return f;
}

TEST(DpdkWire, Ipv4Text) {
  EXPECT_EQ(parse_ipv4("10.77.0.1"), 0x0a4d0001u);
  EXPECT_EQ(format_ipv4(0x0a4d0001u), "10.77.0.1");
  EXPECT_FALSE(parse_ipv4("10.77.0"));
  EXPECT_FALSE(parse_ipv4("10.77.0.256"));
  EXPECT_FALSE(parse_ipv4("10.77.0.1x"));
  EXPECT_FALSE(parse_ipv4(""));
  EXPECT_EQ(format_mac({2, 0, 0xab, 0, 0, 1}), "02:00:ab:00:00:01");
}

TEST(DpdkWire, UdpRoundTrip) {
  for (size_t payload : {0, 1, 18, 1472}) {
    auto f = datagram(payload);
    ParsedFrame p = parse_frame(f.data(), f.size(), true);
    ASSERT_EQ(p.kind, ParsedFrame::Kind::kUdp) << payload;
    EXPECT_EQ(p.udp.src_ip, addressing().src_ip);
    EXPECT_EQ(p.udp.dst_ip, addressing().dst_ip);
    EXPECT_EQ(p.udp.src_port, 50000);
    EXPECT_EQ(p.udp.dst_port, 7000);
    EXPECT_EQ(p.udp.src_mac, addressing().src_mac);
    EXPECT_EQ(p.udp.dst_mac, addressing().dst_mac);
    EXPECT_EQ(p.len, payload);
    EXPECT_EQ(p.payload, f.data() + kUdpHeaders);
    // The header checksum verifies (sums to zero) and DF is set.
    EXPECT_EQ(ipv4_checksum(f.data() + kEthHeader, kIpv4Header), 0);
    EXPECT_EQ(f[kEthHeader + 6], 0x40);
  }
}

TEST(DpdkWire, EthernetPaddingIsNotPayload) {
  auto f = datagram(4);
  f.resize(60, 0);  // a short frame padded to Ethernet's minimum
  ParsedFrame p = parse_frame(f.data(), f.size(), true);
  ASSERT_EQ(p.kind, ParsedFrame::Kind::kUdp);
  EXPECT_EQ(p.len, 4u);
}

TEST(DpdkWire, OffloadedChecksumIsLeftZero) {
  auto f = datagram(10, /*checksum=*/false);
  EXPECT_EQ(f[kEthHeader + 10], 0);
  EXPECT_EQ(f[kEthHeader + 11], 0);
  EXPECT_EQ(parse_frame(f.data(), f.size(), true).kind, ParsedFrame::Kind::kMalformed);
  EXPECT_EQ(parse_frame(f.data(), f.size(), false).kind, ParsedFrame::Kind::kUdp);
}

TEST(DpdkWire, MalformedFrames) {
  auto f = datagram(100);
  // Every truncation is refused, never read past.
  for (size_t n = 0; n < f.size(); ++n) {
    ParsedFrame p = parse_frame(f.data(), n, true);
    EXPECT_NE(p.kind, ParsedFrame::Kind::kUdp) << n;
  }
  auto bad_sum = f;
  bad_sum[kEthHeader + 12] ^= 1;  // source address changed, checksum not
  EXPECT_EQ(parse_frame(bad_sum.data(), bad_sum.size(), true).kind, ParsedFrame::Kind::kMalformed);
  auto fragment = datagram(100);
  fragment[kEthHeader + 6] = 0x20;  // MF
  fragment[kEthHeader + 10] = fragment[kEthHeader + 11] = 0;
  const uint16_t sum = ipv4_checksum(fragment.data() + kEthHeader, kIpv4Header);
  fragment[kEthHeader + 10] = static_cast<uint8_t>(sum >> 8);
  fragment[kEthHeader + 11] = static_cast<uint8_t>(sum);
  EXPECT_EQ(parse_frame(fragment.data(), fragment.size(), true).kind,
            ParsedFrame::Kind::kMalformed);
  auto udp_long = datagram(100);
  udp_long[kEthHeader + kIpv4Header + 5] = 200;  // UDP length beyond the IP packet
  EXPECT_EQ(parse_frame(udp_long.data(), udp_long.size(), true).kind,
            ParsedFrame::Kind::kMalformed);
  auto tcp = datagram(100);
  tcp[kEthHeader + 9] = 6;
  EXPECT_NE(parse_frame(tcp.data(), tcp.size(), false).kind, ParsedFrame::Kind::kUdp);
}

TEST(DpdkWire, Arp) {
  uint8_t f[kArpFrame];
  const Mac me{2, 0, 0, 0, 0, 1};
  write_arp(f, ArpOp::kRequest, kBroadcastMac, me, 0x0a4d0065, Mac{}, 0x0a4d0066);
  ParsedFrame p = parse_frame(f, sizeof f, true);
  ASSERT_EQ(p.kind, ParsedFrame::Kind::kArp);
  EXPECT_EQ(p.arp_op, ArpOp::kRequest);
  EXPECT_EQ(p.arp_sender_mac, me);
  EXPECT_EQ(p.arp_sender_ip, 0x0a4d0065u);
  EXPECT_EQ(p.arp_target_ip, 0x0a4d0066u);
  EXPECT_EQ(p.src_mac, me);
  EXPECT_EQ(parse_frame(f, sizeof f - 1, true).kind, ParsedFrame::Kind::kMalformed);
  f[kEthHeader + 7] = 9;  // an op ARP has not
  EXPECT_EQ(parse_frame(f, sizeof f, true).kind, ParsedFrame::Kind::kOther);
}

TEST(DpdkSettings, EnvironmentFillsWhatIsNotGiven) {
  ::setenv(kEalArgsEnv, "--no-pci --vdev net_null0", 1);
  ::setenv(kLocalIpEnv, "10.0.0.9", 1);
  configure({});
  EXPECT_EQ(settings().eal_args, "--no-pci --vdev net_null0");
  EXPECT_EQ(settings().local_ip, "10.0.0.9");
  configure({"--vdev net_memif0", ""});
  EXPECT_EQ(settings().eal_args, "--vdev net_memif0");
  EXPECT_EQ(settings().local_ip, "10.0.0.9");
  ::setenv(kMtuEnv, "9000", 1);
  EXPECT_EQ(settings().mtu, 9000u);
  DpdkSettings given;
  given.mtu = 4000;
  configure(given);
  EXPECT_EQ(settings().mtu, 4000u);
  ::unsetenv(kEalArgsEnv);
  ::unsetenv(kLocalIpEnv);
  ::unsetenv(kMtuEnv);
  configure({});
  EXPECT_EQ(settings().eal_args, "");
  EXPECT_EQ(settings().mtu, 0u);
}

PortLimits limits(PortLimits::Kind kind, unsigned requested) {
  PortLimits l;
  l.kind = kind;
  l.name = "port";
  l.requested_mtu = requested;
  return l;
}

TEST(DpdkPortGeometry, DefaultIsTheReportedMtuInOneDefaultMbuf) {
  auto g = port_geometry(limits(PortLimits::Kind::kOther, 0));
  ASSERT_TRUE(g) << g.status().message();
  EXPECT_EQ(g->mtu, 1500u);
  EXPECT_EQ(g->max_datagram, 1472u);
  EXPECT_EQ(g->mbuf_room, 2048u);
}

TEST(DpdkPortGeometry, JumboMtuGetsMbufsThatHoldAWholeFrame) {
  PortLimits l = limits(PortLimits::Kind::kOther, 9000);
  auto g = port_geometry(l);
  ASSERT_TRUE(g) << g.status().message();
  EXPECT_EQ(g->mtu, 9000u);
  EXPECT_EQ(g->max_datagram, 8972u);
  EXPECT_GE(g->mbuf_room, 9014u);
  l.requested_mtu = 9601;
  EXPECT_FALSE(port_geometry(l));
}

// DPDK 22.11's memif corrupts frames chained over its buffers: a frame must fit one.
TEST(DpdkPortGeometry, MemifFrameMustFitOneBuffer) {
  PortLimits l = limits(PortLimits::Kind::kMemif, 9000);
  auto g = port_geometry(l);
  ASSERT_FALSE(g);
  EXPECT_NE(g.status().message().find("bsize"), std::string::npos) << g.status().message();
  l.memif_buffer = 9216;
  EXPECT_TRUE(port_geometry(l));
  l.memif_buffer = 9013;  // one byte short of 14 + 9000
  EXPECT_FALSE(port_geometry(l));
}

TEST(DpdkPortGeometry, AfPacketChecksItsInterfaceAndRingFrames) {
  PortLimits l = limits(PortLimits::Kind::kAfPacket, 9000);
  l.if_mtu = 1500;
  l.afp_frame = 9216;
  auto g = port_geometry(l);
  ASSERT_FALSE(g);
  EXPECT_NE(g.status().message().find("interface"), std::string::npos);
  l.if_mtu = 9000;
  l.afp_frame = 2048;
  g = port_geometry(l);
  ASSERT_FALSE(g);
  EXPECT_NE(g.status().message().find("framesz"), std::string::npos);
  l.afp_frame = 9216;
  g = port_geometry(l);
  ASSERT_TRUE(g) << g.status().message();
  // af_packet's rx queue refuses mbufs smaller than a ring frame less 32 bytes.
  EXPECT_GE(g->mbuf_room, 9216u - 32);
  // Without --dpdk-mtu the port's own MTU, whatever the interface's.
  l.requested_mtu = 0;
  l.afp_frame = 2048;
  g = port_geometry(l);
  ASSERT_TRUE(g) << g.status().message();
  EXPECT_EQ(g->mtu, 1500u);
  EXPECT_EQ(g->mbuf_room, 2048u);
}

}  // namespace
}  // namespace ferry::dataplane::dpdk
