// dataplane/udp/udp_transport.cc — the `udp` transport's control path: reliable/ over a
// UdpPort, a Listener over PortListener, and connect with the handshake.
#include "dataplane/udp/udp_transport.h"

#include <algorithm>
#include <chrono>
#include <span>
#include <utility>

#include "common/clock.h"
#include "dataplane/reliable/reliable_transport.h"
#include "dataplane/udp/udp_port.h"

namespace ferry::dataplane::udp {
namespace {

using reliable::ReliableTransport;
using reliable::Role;

// The glue to reliable/: a Transport that owns the port. A server passes the peer's first
// datagram (its SYN), which reached the listening socket, not the port. No I/O here.
Result<std::unique_ptr<ReliableTransport>> make_transport(std::unique_ptr<UdpPort> port,
                                                          std::span<const uint8_t> first, Role role,
                                                          const TransportSettings& settings) {
  reliable::ReliableOptions options;
  options.liveness_timeout = settings.link_timeout;
  return ReliableTransport::create(std::move(port), options, role, first);
}

// The listener's first-datagram check: a reliable SYN, told apart by its connection id.
Result<uint64_t> syn_id(std::span<const uint8_t> datagram) {
  auto syn = reliable::parse_syn(datagram);
  if (!syn) return syn.status();
  return uint64_t{syn->conn_id};
}

class UdpListener final : public Listener {
 public:
  UdpListener(std::unique_ptr<PortListener> ports, const TransportSettings& settings)
      : ports_(std::move(ports)), settings_(settings) {}

  // The server's SYN-ACK leaves on the transport's first progress(), in its owner's loop.
  Result<std::unique_ptr<Transport>> accept(int timeout_ms) override {
    auto accepted = ports_->accept(timeout_ms);
    if (!accepted) return accepted.status();
    auto link =
        make_transport(std::move(accepted->port), accepted->first, Role::kServer, settings_);
    if (!link) return link.status();
    return std::unique_ptr<Transport>(std::move(*link));
  }
  int wait_fd() const noexcept override { return ports_->wait_fd(); }
  std::string where() const override { return "udp:" + ports_->where(); }

 private:
  std::unique_ptr<PortListener> ports_;
  TransportSettings settings_;
};

}  // namespace

Result<std::unique_ptr<Listener>> listen(const std::string& address,
                                         const TransportSettings& settings) {
  auto ports = PortListener::create(address, {}, syn_id);
  if (!ports) return ports.status();
  return std::unique_ptr<Listener>(new UdpListener(std::move(*ports), settings));
}

// A name may resolve to several addresses (::1 and 127.0.0.1 for localhost) and only the
// handshake shows which one a ferry listens on: one that refuses (ICMP port unreachable) passes
// on to the next, as TCP's connect does.
Result<std::unique_ptr<Transport>> connect(const std::string& address, int timeout_ms,
                                           const TransportSettings& settings) {
  const TimePoint deadline = Clock::now() + std::chrono::milliseconds(std::max(timeout_ms, 0));
  auto peers = resolve(address);
  if (!peers) return peers.status();
  for (const sockaddr_storage& peer : *peers) {
    auto port = connect_port(peer);
    if (!port) return port.status();
    const UdpPort* raw = port->get();
    auto link = make_transport(std::move(*port), {}, Role::kClient, settings);
    if (!link) return link.status();
    Status st = reliable::wait_established(**link, ms_left(deadline));
    if (st) return std::unique_ptr<Transport>(std::move(*link));
    if (!raw->failed() || raw->error().code() != ErrorCode::kRefused) {
      return error(st.code(), "cannot connect to udp:" + address + ": " + st.message());
    }
  }
  return error(ErrorCode::kRefused, "cannot connect to udp:" + address +
                                        ": nothing listens there (ICMP port unreachable); is "
                                        "ferry recv running?");
}

}  // namespace ferry::dataplane::udp
