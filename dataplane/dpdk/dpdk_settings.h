// dataplane/dpdk/dpdk_settings.h — what the `dpdk` transport needs beyond "dpdk:IPV4:PORT":
// the EAL arguments (which port: a PCI device, a VF, or a vdev such as net_af_packet or
// net_memif) and the local IPv4 address ferry answers ARP for and sends from. Built in every
// binary (no DPDK header here), so apps/ can take --dpdk-args / --dpdk-local whether or not
// this build has DPDK; the transport reads them when it first opens a port.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace ferry::dataplane::dpdk {

struct DpdkSettings {
  // EAL arguments, split at blanks (e.g. "--no-pci --vdev net_af_packet0,iface=eth1").
  // Empty: FERRY_DPDK_ARGS from the environment.
  std::string eal_args;
  // This end's IPv4 address on the DPDK port ("10.0.0.1"). Empty: FERRY_DPDK_LOCAL from the
  // environment; a listener without one uses its listen address.
  std::string local_ip;
  // The port's MTU (--dpdk-mtu): 0 keeps the MTU the port reports (1500 unless set). memif
  // and af_packet take frames above their reported 1518-byte limit (docs/DPDK.md "Jumbo frames").
  // 0: FERRY_DPDK_MTU from the environment.
  unsigned mtu = 0;
};

// Environment variables read when a setting is not given on the command line.
inline constexpr const char* kEalArgsEnv = "FERRY_DPDK_ARGS";
inline constexpr const char* kLocalIpEnv = "FERRY_DPDK_LOCAL";
inline constexpr const char* kMtuEnv = "FERRY_DPDK_MTU";
// --dpdk-mtu's range: IPv4's minimum and the largest frame one ferry datagram may fill.
inline constexpr unsigned kMinMtu = 576;
inline constexpr unsigned kMaxMtu = 9600;

// What decides a port's MTU and buffer size (plain values, so the unit suite tests the rules
// without an EAL): the PMD, the MTU it reports, --dpdk-mtu, and what limits its frames.
struct PortLimits {
  enum class Kind : uint8_t { kOther, kMemif, kAfPacket };
  Kind kind = Kind::kOther;
  std::string name;  // for messages
  unsigned reported_mtu = 1500;
  unsigned requested_mtu = 0;    // --dpdk-mtu, 0 = none
  unsigned if_mtu = 0;           // af_packet: its kernel interface's MTU (0 = unknown)
  unsigned afp_frame = 2048;     // af_packet: its ring frame size (framesz)
  unsigned memif_buffer = 2048;  // memif: its buffer size (bsize)
};
struct PortGeometry {
  unsigned mtu = 0;
  size_t mbuf_room = 0;     // data bytes per mbuf (after the headroom)
  size_t max_datagram = 0;  // UDP payload bytes per frame
};
// The port's MTU (--dpdk-mtu, else the reported one), checked where ethdev cannot check it,
// and the mbuf size that holds a whole frame at it; or why the MTU cannot be had.
Result<PortGeometry> port_geometry(const PortLimits& limits);

// Sets the process-wide settings; call before the first dpdk: connect or listen (the EAL is
// set up once per process and keeps its first arguments). Any thread, before any link.
void configure(const DpdkSettings& settings);
// The settings in effect: configure()'s, each empty field filled from the environment.
DpdkSettings settings();

}  // namespace ferry::dataplane::dpdk
