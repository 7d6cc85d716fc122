// dataplane/dpdk/dpdk_settings.h — what the `dpdk` transport needs beyond "dpdk:IPV4:PORT":
// the EAL arguments (which port: a PCI device, a VF, or a vdev such as net_af_packet or
// net_memif) and the local IPv4 address ferry answers ARP for and sends from. Built in every
// binary (no DPDK header here), so apps/ can take --dpdk-args / --dpdk-local whether or not
// this build has DPDK; the transport reads them when it first opens a port.
#pragma once

#include <string>

namespace ferry::dataplane::dpdk {

struct DpdkSettings {
  // EAL arguments, split at blanks (e.g. "--no-pci --vdev net_af_packet0,iface=eth1").
  // Empty: FERRY_DPDK_ARGS from the environment.
  std::string eal_args;
  // This end's IPv4 address on the DPDK port ("10.0.0.1"). Empty: FERRY_DPDK_LOCAL from the
  // environment; a listener without one uses its listen address.
  std::string local_ip;
};

// Environment variables read when a setting is not given on the command line.
inline constexpr const char* kEalArgsEnv = "FERRY_DPDK_ARGS";
inline constexpr const char* kLocalIpEnv = "FERRY_DPDK_LOCAL";

// Sets the process-wide settings; call before the first dpdk: connect or listen (the EAL is
// set up once per process and keeps its first arguments). Any thread, before any link.
void configure(const DpdkSettings& settings);
// The settings in effect: configure()'s, each empty field filled from the environment.
DpdkSettings settings();

}  // namespace ferry::dataplane::dpdk
