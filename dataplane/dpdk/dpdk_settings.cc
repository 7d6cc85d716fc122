// dataplane/dpdk/dpdk_settings.cc — see dpdk_settings.h.
#include "dataplane/dpdk/dpdk_settings.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "dataplane/dpdk/dpdk_wire.h"

namespace ferry::dataplane::dpdk {
namespace {

std::mutex g_mu;
DpdkSettings g_settings;

// af_packet's ring frames hold a received frame behind the kernel's tpacket2 header and
// address (macoff 66, the frame's IP header aligned to 16): an MTU above framesz - 80 would
// arrive truncated.
constexpr unsigned kAfPacketFrameOverhead = 80;
// af_packet's rx queue wants mbufs that hold a whole ring frame less its first 32 bytes.
constexpr unsigned kAfPacketRxSkip = 32;
// What a received frame may carry beyond the MTU: its Ethernet header, two VLAN tags (a NIC
// may leave them in) and the CRC (one that does not strip it).
constexpr size_t kFrameOverhead = 14 + 8 + 4;
// DPDK's default mbuf data room (RTE_MBUF_DEFAULT_DATAROOM).
constexpr size_t kDefaultMbufRoom = 2048;

std::string from_env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

void configure(const DpdkSettings& settings) {
  std::lock_guard lk(g_mu);
  g_settings = settings;
}

DpdkSettings settings() {
  DpdkSettings s;
  {
    std::lock_guard lk(g_mu);
    s = g_settings;
  }
  if (s.eal_args.empty()) s.eal_args = from_env(kEalArgsEnv);
  if (s.local_ip.empty()) s.local_ip = from_env(kLocalIpEnv);
  if (s.mtu == 0)
    s.mtu = static_cast<unsigned>(std::strtoul(from_env(kMtuEnv).c_str(), nullptr, 10));
  return s;
}

Result<PortGeometry> port_geometry(const PortLimits& l) {
  const unsigned mtu = l.requested_mtu ? l.requested_mtu : l.reported_mtu;
  const std::string what = "dpdk: MTU " + std::to_string(mtu);
  if (mtu < kMinMtu || mtu > kMaxMtu) {
    return error(ErrorCode::kInvalidArgument, what + " on " + l.name + " is outside " +
                                                  std::to_string(kMinMtu) + ".." +
                                                  std::to_string(kMaxMtu));
  }
  if (l.kind == PortLimits::Kind::kAfPacket && l.requested_mtu) {
    if (l.if_mtu && mtu > l.if_mtu) {
      return error(ErrorCode::kInvalidArgument, what + " is above the MTU of " + l.name +
                                                    "'s interface (" + std::to_string(l.if_mtu) +
                                                    "): raise it first (ip link set IF mtu N)");
    }
    if (mtu + kAfPacketFrameOverhead > l.afp_frame) {
      return error(ErrorCode::kInvalidArgument,
                   what + " does not fit " + l.name + "'s ring frames (framesz " +
                       std::to_string(l.afp_frame) + "): give framesz >= MTU + " +
                       std::to_string(kAfPacketFrameOverhead) +
                       " (a multiple of 16) and blocksz a multiple of the page size >= it");
    }
  }
  // DPDK 22.11's memif corrupts frames chained over several of its buffers (its tx leaves
  // stale "next" flags on reused descriptors: frames merge, the receiver reads stale slots;
  // fixed upstream in 26.03): a frame must fit one buffer.
  if (l.kind == PortLimits::Kind::kMemif && kEthHeader + mtu > l.memif_buffer) {
    return error(ErrorCode::kInvalidArgument,
                 what + " does not fit " + l.name + "'s buffers (bsize " +
                     std::to_string(l.memif_buffer) +
                     "): give bsize >= MTU + 14 on both ends (memif must not chain buffers)");
  }
  // One mbuf per datagram, large enough for a whole frame at the MTU (and for af_packet's
  // ring frames): a jumbo datagram is one buffer to build and parse, not a chain.
  PortGeometry g;
  g.mtu = mtu;
  g.mbuf_room = std::max<size_t>(kDefaultMbufRoom, mtu + kFrameOverhead);
  if (l.kind == PortLimits::Kind::kAfPacket) {
    g.mbuf_room = std::max<size_t>(g.mbuf_room, l.afp_frame - kAfPacketRxSkip);
  }
  g.mbuf_room = (g.mbuf_room + 63) & ~size_t{63};
  g.max_datagram = mtu - kIpv4Header - kUdpHeader;
  return g;
}

}  // namespace ferry::dataplane::dpdk
