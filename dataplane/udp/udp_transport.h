// dataplane/udp/udp_transport.h — the `udp` transport: reliable/ (sequence, acks,
// retransmits, pacing, and its connection handshake) over a kernel UDP port (udp_port.h).
// The entry points of its row in the registration table (transport.cc).
#pragma once

#include <memory>
#include <string>

#include "dataplane/transport.h"

namespace ferry::dataplane::udp {

// address: "HOST:PORT" (IPv6 hosts in brackets; an empty host listens on every address).
// Each peer that sends its first datagram gets its own connected socket and Transport, so
// every channel of a migration is its own connection.
Result<std::unique_ptr<Listener>> listen(const std::string& address);
// Runs the reliable layer's handshake; gives up after timeout_ms.
Result<std::unique_ptr<Transport>> connect(const std::string& address, int timeout_ms);

}  // namespace ferry::dataplane::udp
