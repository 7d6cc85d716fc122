// dataplane/udp/udp_transport.h — the `udp` transport: reliable/ (sequence, acks,
// retransmits, pacing, and its connection handshake) over a kernel UDP port (udp_port.h).
// The entry points of its row in the registration table (transport.cc).
#pragma once

#include <memory>
#include <string>

#include "dataplane/transport.h"

namespace ferry::dataplane::udp {

// address: "HOST:PORT" (IPv6 hosts in brackets; an empty host listens on every address).
// accept() returns once a new peer's SYN arrived: its own connected socket under a
// reliable::ReliableTransport (kind() "udp") that answers on its first progress(). Every
// channel of a migration is its own connection; repeated SYNs and strangers' datagrams are
// dropped.
Result<std::unique_ptr<Listener>> listen(const std::string& address,
                                         const TransportSettings& settings = {});
// Runs the reliable handshake on each address of HOST in turn until one answers, within
// timeout_ms. Nothing listening: kClosed ("nothing listens there"), at once, not at the
// timeout.
Result<std::unique_ptr<Transport>> connect(const std::string& address, int timeout_ms,
                                           const TransportSettings& settings = {});

}  // namespace ferry::dataplane::udp
