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

// Everything a SocketPort is made of; filled by the control path.
struct SocketSetup {
  int fd = -1;  // connected, non-blocking; the port owns it
  size_t max_datagram = 0;
  bool ipv6_header = false;  // a real IPv6 path (40-byte header), not IPv4 or v4-mapped
  size_t datagram_cap = 0;
  bool gso = false;  // UDP_SEGMENT works on this socket
  bool gro = false;  // UDP_GRO is on: datagrams may arrive glued together
  std::string name;
  std::shared_ptr<PortListener::PeerSlot> slot;  // set on ports made by a listener
};

class SocketPort final : public UdpPort {
 public:
  explicit SocketPort(SocketSetup setup);
  ~SocketPort() override;
  SocketPort(const SocketPort&) = delete;
  SocketPort& operator=(const SocketPort&) = delete;

  const char* kind() const noexcept override { return "udp"; }
  size_t max_datagram() const noexcept override { return s_.max_datagram; }
  size_t send_burst(std::span<const DatagramOut> out) noexcept override;
  size_t recv_burst(std::span<DatagramIn> in) noexcept override;
  // Datagrams already read from the socket but not yet handed out wake no fd: "due now".
  TimePoint next_deadline() const noexcept override {
    return gro_next_ < gro_count_ ? TimePoint{} : kNever;
  }
  int wait_fd() const noexcept override { return s_.fd; }
  uint32_t wait_events(bool want_rx, bool want_tx) const noexcept override;
  bool failed() const noexcept override { return !error_.is_ok(); }
  const Status& error() const noexcept override { return error_; }
  const PortCounters& counters() const noexcept override { return counters_; }
  const std::string& name() const noexcept override { return s_.name; }
  bool offload() const noexcept override { return s_.gso || s_.gro; }

 private:
  // Hot path (udp_datapath.cc).
  size_t send_plain(std::span<const DatagramOut> out) noexcept;
  size_t send_gso(std::span<const DatagramOut> out) noexcept;
  size_t recv_plain(std::span<DatagramIn> in) noexcept;
  size_t recv_gro(std::span<DatagramIn> in) noexcept;
  bool refill_gro() noexcept;
  // An errno of sendmmsg/recvmmsg that is not "full" or "empty": drop, retry or fail.
  void fail(const char* what, int err) noexcept;
  // After EMSGSIZE: the route's MTU shrank (an ICMP "fragmentation needed"); re-read it.
  void refresh_mtu() noexcept;

  SocketSetup s_;
  Status error_;
  PortCounters counters_;
  // GRO staging: kGroSlots receive buffers of 64 KiB, each holding one glued arrival of
  // gro_seg_[i]-byte datagrams (the last may be shorter); handed out from (gro_next_, gro_off_).
  static constexpr size_t kGroSlots = 8;
  static constexpr size_t kGroSlotBytes = 65536;
  std::unique_ptr<uint8_t[]> gro_buf_;
  uint32_t gro_len_[kGroSlots] = {};
  uint32_t gro_seg_[kGroSlots] = {};
  size_t gro_count_ = 0;
  size_t gro_next_ = 0;
  size_t gro_off_ = 0;
};

// Makes fd accept only datagrams from peer (a cBPF socket filter); exposed for tests.
Status attach_peer_filter(int fd, const sockaddr_storage& peer);

// max_datagram() for a connected socket: the path MTU less the IP and UDP headers, capped.
size_t datagram_size_for(int fd, bool ipv6_header, size_t cap);

}  // namespace ferry::dataplane::udp
