// dataplane/transport.h — the Transport interface: one reliable, ordered, bidirectional byte
// connection between a ferry sender and a ferry receiver, carrying ferry frames
// (protocol.h). Backends live in subfolders (tcp/, loopback/; dpdk/ and rdma/ later) and are
// listed in one registration table (transport_registry.cc).
//
// Control methods (listen, accept, connect) may block and return Result<T>. Data methods take
// a burst, never block, are noexcept and return the count handled; one virtual call per burst.
// A Transport is owned and driven by one thread (its channel's pump, channel_pump.h).
#pragma once

#include <poll.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace ferry::dataplane {

class Transport {
 public:
  virtual ~Transport() = default;

  // Backend name ("tcp", "loopback").
  virtual const char* kind() const noexcept = 0;

  // Data path, owner thread only.
  // Queues up to bytes.size() bytes for the peer; returns how many were taken (0 = the
  // transport is full now: poll and retry). After a failure returns 0 and failed() is true.
  virtual size_t tx_burst(std::span<const uint8_t> bytes) noexcept = 0;
  // Copies up to out.size() received bytes into out; returns the count (0 = nothing now, or
  // the peer closed: see peer_closed()).
  virtual size_t rx_burst(std::span<uint8_t> out) noexcept = 0;
  // No more bytes will be sent; the peer's rx sees the end after the queued bytes.
  virtual void close_tx() noexcept = 0;

  // The peer closed its sending side (after rx_burst returned every byte it sent).
  virtual bool peer_closed() const noexcept = 0;
  // A hard error happened (reset, broken pipe); error() says what.
  virtual bool failed() const noexcept = 0;
  virtual const Status& error() const noexcept = 0;

  // Readiness for the owner's poll loop: the fd to poll and the events to wait for, given
  // whether the owner wants to receive and has bytes waiting to go out (0 = do not poll).
  // After poll returns, the owner calls rearm() once and then tries rx_burst/tx_burst
  // (readiness is a hint, never a promise).
  virtual int poll_fd() const noexcept = 0;
  virtual short poll_events(bool want_rx, bool want_tx) const noexcept = 0;
  virtual void rearm() noexcept {}
  // How many bytes the transport should hold in flight below ferry (kernel socket buffers):
  // enough for the link's bandwidth-delay product, no more, so that what QEMU writes last
  // is not stuck behind seconds of queued data (its downtime estimate would be wrong).
  // The pump calls it as it measures the link rate. A hint: backends may ignore it.
  virtual void set_buffer_hint(size_t /*bytes*/) noexcept {}

  // Blocking helpers for the handshake, before the data path starts.
  Status send_all(std::span<const uint8_t> bytes, int timeout_ms);
  Status recv_exact(std::span<uint8_t> out, int timeout_ms);
};

// Accepts transports from peers.
class Listener {
 public:
  virtual ~Listener() = default;
  // Waits up to timeout_ms (-1 = forever) for one peer.
  virtual Result<std::unique_ptr<Transport>> accept(int timeout_ms) = 0;
  // The fd that becomes readable when a peer is waiting (for a poll loop), or -1.
  virtual int poll_fd() const noexcept = 0;
  // What it listens on, for messages.
  virtual std::string where() const = 0;
};

// One row of the registration table.
struct TransportInfo {
  const char* name;       // the scheme in "name:ADDRESS"
  const char* summary;    // one line for --help / --version
  bool available;         // built into this binary
  bool in_process;        // both ends must live in one process (loopback)
  const char* why_not;    // when not available: the reason, one sentence
  Result<std::unique_ptr<Listener>> (*listen)(const std::string& address);
  Result<std::unique_ptr<Transport>> (*connect)(const std::string& address, int timeout_ms);
};

// Every transport ferry knows, available or not.
std::span<const TransportInfo> transports();

// "tcp:HOST:PORT", "loopback:NAME": picks the backend by scheme. Unknown or unavailable
// schemes give an error listing what this build has.
Result<std::unique_ptr<Listener>> listen_transport(const std::string& spec);
Result<std::unique_ptr<Transport>> connect_transport(const std::string& spec, int timeout_ms);
// Checks a spec without connecting (for command lines, before any waiting).
Status check_transport_spec(const std::string& spec);

}  // namespace ferry::dataplane
