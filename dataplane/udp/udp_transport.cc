// dataplane/udp/udp_transport.cc — the `udp` transport's control path: a Listener over
// PortListener, connect, and the one function that hands a port to reliable/.
#include "dataplane/udp/udp_transport.h"

#include <span>
#include <utility>

#include "common/clock.h"
#include "dataplane/udp/udp_port.h"

namespace ferry::dataplane::udp {
namespace {

enum class Role { kClient, kServer };

// The glue to reliable/: a Transport that owns the port. A server passes the peer's first
// datagram (its SYN), which reached the listening socket, not the port.
Result<std::unique_ptr<Transport>> make_transport(std::unique_ptr<UdpPort> port,
                                                  std::span<const uint8_t> first, Role role,
                                                  int timeout_ms) {
  (void)port;
  (void)first;
  (void)role;
  (void)timeout_ms;
  return error(ErrorCode::kUnavailable,
               "the udp transport needs dataplane/reliable/, which this build does not have yet");
}

class UdpListener final : public Listener {
 public:
  explicit UdpListener(std::unique_ptr<PortListener> ports) : ports_(std::move(ports)) {}

  Result<std::unique_ptr<Transport>> accept(int timeout_ms) override {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    auto accepted = ports_->accept(timeout_ms);
    if (!accepted) return accepted.status();
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return make_transport(std::move(accepted->port), accepted->first, Role::kServer,
                          std::max<int>(static_cast<int>(left.count()), 0));
  }
  int wait_fd() const noexcept override { return ports_->wait_fd(); }
  std::string where() const override { return "udp:" + ports_->where(); }

 private:
  std::unique_ptr<PortListener> ports_;
};

}  // namespace

Result<std::unique_ptr<Listener>> listen(const std::string& address) {
  auto ports = PortListener::create(address);
  if (!ports) return ports.status();
  return std::unique_ptr<Listener>(new UdpListener(std::move(*ports)));
}

Result<std::unique_ptr<Transport>> connect(const std::string& address, int timeout_ms) {
  auto port = connect_port(address);
  if (!port) return port.status();
  return make_transport(std::move(*port), {}, Role::kClient, timeout_ms);
}

}  // namespace ferry::dataplane::udp
