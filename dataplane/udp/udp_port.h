// dataplane/udp/udp_port.h — DatagramPort on a kernel UDP socket (datagram.h), and the
// listening side that turns each new peer address into its own connected port.
//
// A port is one non-blocking UDP socket connect()ed to one peer: sendmmsg/recvmmsg in bursts
// of up to 32, UDP GSO/GRO where the kernel has them, IP_PMTUDISC_DO (nothing is fragmented,
// so one lost fragment never costs a whole datagram), max_datagram() from the path MTU, large
// socket buffers. reliable/ turns a port into a Transport (udp_transport.h); these are the
// parts below it, testable on their own.
//
// Addresses are "HOST:PORT" with IPv6 hosts in brackets ("[::1]:7000"), as in tcp.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "dataplane/datagram.h"

namespace ferry::dataplane::udp {

struct PortOptions {
  // Upper bound on max_datagram() when the path MTU is larger (loopback: 65536; a 1500 MTU
  // gives 1472 whatever the cap). Larger datagrams cost less per byte, but one loss costs
  // more to resend and reliable/ keeps a max_datagram() buffer per datagram of a burst.
  // Measured, reliable/ over loopback, 2 shared cores, GSO/GRO on: 1472 B 0.5-1.9 GB/s,
  // 16 KiB 2.5-2.7 GB/s, 64 KiB 2.7-3.1 GB/s; past 16 KiB little is left to win.
  // 0 = the path MTU alone.
  size_t datagram_cap = 16 * 1024;
  // UDP GSO and GRO (Linux 4.18 / 5.0): a run of equal-sized datagrams leaves as one
  // super-datagram that the kernel or the NIC cuts, and arrivals are glued back together
  // until recv_burst splits them. The same datagrams on the wire, a fraction of the trips
  // through the stack. Off where the kernel or the device lacks it (found out, not asked).
  bool offload = true;
  // SO_SNDBUF/SO_RCVBUF asked for. As root SO_*BUFFORCE passes net.core.[rw]mem_max; else
  // the kernel clamps to it (4 MiB by default). The receive side absorbs bursts that the
  // owner thread is too busy to read; what overflows is lost and resent by reliable/.
  size_t socket_buffer = 16 * 1024 * 1024;
};

// Counters of one port; written by its owner thread only, read by it or by tests.
struct PortCounters {
  uint64_t tx_datagrams = 0;
  uint64_t tx_bytes = 0;
  uint64_t tx_full = 0;     // send_burst calls that found the socket buffer full
  uint64_t tx_too_big = 0;  // datagrams dropped as larger than the path MTU (EMSGSIZE)
  uint64_t rx_datagrams = 0;
  uint64_t rx_bytes = 0;
  uint64_t rx_truncated = 0;    // datagrams dropped as larger than the buffer offered
  uint64_t tx_gso_batches = 0;  // super-datagrams sent (each several datagrams)
  uint64_t rx_gro_batches = 0;  // arrivals of several datagrams glued together
};

// A DatagramPort plus what only UDP has.
class UdpPort : public DatagramPort {
 public:
  virtual const PortCounters& counters() const noexcept = 0;
  // "udp LOCAL -> PEER", for messages.
  virtual const std::string& name() const noexcept = 0;
  // Whether GSO or GRO is in use (PortOptions::offload, and the kernel has it).
  virtual bool offload() const noexcept = 0;
};

// Every address of "HOST:PORT", in getaddrinfo's order (a name may have IPv6 and IPv4 ones;
// only a handshake tells which one answers).
Result<std::vector<sockaddr_storage>> resolve(const std::string& address);

// A port connected to peer. Connecting a UDP socket sends nothing, so this never waits; a
// peer that is not there shows up as failed() (ECONNREFUSED) after the first send, or as
// silence.
Result<std::unique_ptr<UdpPort>> connect_port(const sockaddr_storage& peer,
                                              const PortOptions& options = {});
// The same for the first address of "HOST:PORT".
Result<std::unique_ptr<UdpPort>> connect_port(const std::string& address,
                                              const PortOptions& options = {});

// A new peer: its own port, and the datagram that announced it (the peer's first, e.g. the
// reliable layer's SYN).
struct AcceptedPort {
  std::unique_ptr<UdpPort> port;
  std::vector<uint8_t> first;
};

// Tells a connection's first datagram from anything else (reliable/'s parse_syn): returns an
// id that differs between connections from one peer address (its connection id), or why the
// datagram cannot open a connection.
using FirstDatagramCheck = std::function<Result<uint64_t>(std::span<const uint8_t>)>;

// One bound UDP socket that waits for datagrams from peers it has not seen. For each new peer
// it makes a socket bound to the same local address and port and connect()ed to the peer:
// Linux delivers a 4-tuple's datagrams to its connected socket before a merely bound one, so
// after accept the peer talks to its own port and the listener sees new peers only.
// What reached the listening socket before a peer's own socket existed (repeated SYNs) is
// dropped as a duplicate, never taken as a second connection: while the peer's port lives,
// anything from its address; after it closed, datagrams with the same id (for 10 s).
// Owned by one thread (accept's caller).
class PortListener {
 public:
  // check: see FirstDatagramCheck; none = every datagram from a new address opens one (id 0).
  static Result<std::unique_ptr<PortListener>> create(const std::string& address,
                                                      const PortOptions& options = {},
                                                      FirstDatagramCheck check = {});
  ~PortListener();
  PortListener(const PortListener&) = delete;
  PortListener& operator=(const PortListener&) = delete;

  // Waits up to timeout_ms (>= 0) for the first datagram of a new connection; kTimeout if
  // none came. Other errors: a socket for the new peer could not be made.
  Result<AcceptedPort> accept(int timeout_ms);
  // Readable when a datagram waits on the listening socket (new peer or duplicate).
  int wait_fd() const noexcept { return fd_; }
  // "HOST:PORT" as bound (the real port when 0 was asked for).
  const std::string& where() const noexcept { return where_; }
  uint16_t port() const noexcept { return port_; }
  // Datagrams dropped as repeats from a connection already accepted.
  uint64_t duplicates() const noexcept { return duplicates_; }
  // Datagrams dropped because the check refused them (strangers, stray packets).
  uint64_t refused() const noexcept { return refused_; }

  // A peer's identity and whether its port still lives (shared with the port).
  struct PeerSlot;

 private:
  PortListener() = default;
  // Whether a datagram of len bytes from peer opens a new connection (else it was counted).
  bool is_new(size_t len, const std::string& key, uint64_t& id);
  Result<AcceptedPort> take(size_t len, const sockaddr_storage& peer, const sockaddr_storage& local,
                            std::string key, uint64_t id);

  int fd_ = -1;
  uint16_t port_ = 0;
  std::string where_;
  PortOptions options_;
  FirstDatagramCheck check_;
  std::vector<uint8_t> buf_;  // one datagram of any size (64 KiB)
  std::vector<std::shared_ptr<PeerSlot>> peers_;
  uint64_t duplicates_ = 0;
  uint64_t refused_ = 0;
};

}  // namespace ferry::dataplane::udp
