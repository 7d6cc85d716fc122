// dataplane/dpdk/dpdk_transport.h — the `dpdk` transport: reliable/ (sequence, acks,
// retransmits, pacing, liveness) over UDP/IPv4 datagrams that ferry builds itself and sends
// through a DPDK port (any PMD: a NIC or VF, af_packet, af_xdp, memif), polled from user
// space. The entry points of its row in the registration table (transport.cc); built only
// when Meson finds libdpdk.
//
// Addresses are "IPV4:PORT". The process uses one DPDK port, set up on first use from
// dpdk_settings.h (EAL arguments, local address); every link is one UDP flow on it and every
// multifd channel its own flow. ARP resolves the peer and answers for the local address.
#pragma once

#include <memory>
#include <string>

#include "dataplane/transport.h"

namespace ferry::dataplane::dpdk {

// Listens on UDP port PORT of IPV4 (the local address; --dpdk-local, when given, must match).
// accept() returns once a new flow's SYN arrived; datagrams from unknown flows that are not a
// SYN are dropped and counted (link_stats "dpdk.rx_unknown").
Result<std::unique_ptr<Listener>> listen(const std::string& address,
                                         const TransportSettings& settings = {});
// Resolves the peer by ARP and runs the reliable handshake, within timeout_ms.
Result<std::unique_ptr<Transport>> connect(const std::string& address, int timeout_ms,
                                           const TransportSettings& settings = {});

}  // namespace ferry::dataplane::dpdk
