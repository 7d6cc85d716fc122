// dataplane/udp/udp_port_internal.h — the socket port shared by the control file
// (udp_port.cc) and the data path (udp_datapath.cc).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "dataplane/udp/udp_port.h"

namespace ferry::dataplane::udp {

// Whether a peer's port still lives, so that the listener can tell a late duplicate of its
// first datagram from a new connection. Shared by the listener and the port's owner thread.
struct PortListener::PeerSlot {
  std::string key;                     // family + address + port, as bytes
  uint64_t id = 0;                     // from the FirstDatagramCheck
  std::atomic<uint64_t> closed_ns{0};  // 0 while the port lives; now_ns() when it closed
};

inline constexpr size_t kBurst = 32;  // datagrams per sendmmsg/recvmmsg

class SocketPort final : public UdpPort {
 public:
  // Takes ownership of a connected, non-blocking socket.
  SocketPort(int fd, size_t max_datagram, bool ipv6_header, size_t datagram_cap, std::string name,
             std::shared_ptr<PortListener::PeerSlot> slot);
  ~SocketPort() override;
  SocketPort(const SocketPort&) = delete;
  SocketPort& operator=(const SocketPort&) = delete;

  const char* kind() const noexcept override { return "udp"; }
  size_t max_datagram() const noexcept override { return max_datagram_; }
  size_t send_burst(std::span<const DatagramOut> out) noexcept override;
  size_t recv_burst(std::span<DatagramIn> in) noexcept override;
  int wait_fd() const noexcept override { return fd_; }
  uint32_t wait_events(bool want_rx, bool want_tx) const noexcept override;
  bool failed() const noexcept override { return !error_.is_ok(); }
  const Status& error() const noexcept override { return error_; }
  const PortCounters& counters() const noexcept override { return counters_; }
  const std::string& name() const noexcept override { return name_; }

 private:
  void fail(const char* what, int err) noexcept;
  // After EMSGSIZE: the route's MTU shrank (an ICMP "fragmentation needed"); re-read it.
  void refresh_mtu() noexcept;

  int fd_;
  size_t max_datagram_;
  bool ipv6_header_;  // a real IPv6 path (40-byte header), not IPv4 or v4-mapped
  size_t datagram_cap_;
  std::string name_;
  std::shared_ptr<PortListener::PeerSlot> slot_;  // set on ports made by a listener
  Status error_;
  PortCounters counters_;
};

// Makes fd accept only datagrams from peer (a cBPF socket filter); exposed for tests.
Status attach_peer_filter(int fd, const sockaddr_storage& peer);

// max_datagram() for a connected socket: the path MTU less the IP and UDP headers, capped.
size_t datagram_size_for(int fd, bool ipv6_header, size_t cap);

}  // namespace ferry::dataplane::udp
