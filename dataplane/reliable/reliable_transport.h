// dataplane/reliable/reliable_transport.h — ferry's own reliability over any DatagramPort
// (datagram.h): a Transport (transport.h) of whole frames, reliable and ordered, for the
// backends whose wire is datagrams (udp/, dpdk/).
//
// Frames are split into datagrams of at most the port's max_datagram(); each carries what the
// receiver needs to copy it straight into its frame's pool buffer. Per-packet numbers,
// cumulative + selective acks, loss detection by time order (RACK-like) and a retransmit
// timeout from the measured RTT (RFC 6298, floored and backed off); the sending rate is found
// by delivery-rate estimation (BBR-like: pace at the recent maximum delivery rate, probe up
// now and then, cwnd about 2 x BDP), so random loss does not collapse it. The receiver grants
// frames by its free pool buffers (a slow consumer back-pressures the sender). Idle links
// exchange heartbeats; silence past the liveness timeout fails the link.
//
// Time comes only from progress(now): the transport keeps the last `now` for tx_burst and
// rx_burst and never reads a clock itself, so tests drive it with a virtual clock.
//
// Opening a link: the client makes its end with create(port, options, Role::kClient); its
// first progress() sends a SYN with a random connection id, repeated until the SYN-ACK comes.
// A listener that sees a first datagram from a new peer checks it with parse_syn(), makes a
// port connected to that peer and calls create(port, options, Role::kServer, that datagram);
// the server answers with a SYN-ACK on its first progress(). Datagrams of other connection
// ids are dropped. Frames may be offered before the handshake completes; they wait.
//
// Differences from other backends worth knowing:
//   - rx_burst's frames live in a second, internal pool (ReliableOptions::rx_frames): free
//     them to frame->pool, not to pool(). pool() is for the owner's tx frames only, so an
//     owner that fills it cannot take buffers the peer was already granted.
//   - reap_tx returns a frame once the peer acked all of it (caps().tx_done); after a failure
//     frames not acked stay with the transport (they die with it).
//   - After close_tx, tx_in_flight_bytes() stays above zero until the peer acked the end
//     (FIN), so a caller that waits for zero before closing does not cut the peer off.
//   - set_buffer_hint(bytes): tx_burst takes frames only while fewer bytes than this wait
//     unsent (what is in flight is bounded by the window); 0, the default, = tx_frames only.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"
#include "dataplane/datagram.h"
#include "dataplane/transport.h"

namespace ferry::dataplane::reliable {

enum class Role : uint8_t { kClient, kServer };

struct ReliableOptions {
  // pool(): the buffers the owner allocates tx frames from.
  size_t pool_frames = 64;
  // Received frames arrive in a second pool of their own (rx_burst's frames return to it via
  // frame->pool), so an owner that fills pool() with tx frames cannot starve receiving: the
  // peer is granted exactly the free rx buffers.
  size_t rx_frames = 64;
  size_t frame_capacity = kFrameHeaderSize + kMaxPayload;
  // Frames tx_burst holds until they are acked (0 = pool_frames).
  size_t tx_frames = 0;
  // Packets tracked in flight and beyond the cumulative ack (power of two, 64 .. 2^20).
  size_t pkt_window = 16384;

  std::chrono::nanoseconds min_rto{std::chrono::milliseconds(5)};
  std::chrono::nanoseconds max_rto{std::chrono::seconds(1)};
  // RTT assumed before the first sample (the server's pacing before its first ack).
  std::chrono::nanoseconds initial_rtt{std::chrono::milliseconds(10)};
  // The receiver acks every second packet, at once on a gap, else within this delay.
  std::chrono::nanoseconds max_ack_delay{std::chrono::milliseconds(1)};
  std::chrono::nanoseconds heartbeat_interval{std::chrono::milliseconds(250)};
  // Silence from the peer longer than this fails the link.
  std::chrono::nanoseconds liveness_timeout{kLinkTimeout};
  // The client gives up the handshake after this.
  std::chrono::nanoseconds connect_timeout{std::chrono::seconds(10)};
  // Late timers may send this much (in time at the pacing rate) at once to catch up.
  std::chrono::nanoseconds pacing_slack{std::chrono::milliseconds(1)};

  size_t initial_cwnd_packets = 32;
  // Upper bound of the pacing rate in bytes/s (0 = none: the rate is found by measurement).
  uint64_t max_rate = 0;
  // Seeds the connection id (0 = from std::random_device).
  uint64_t seed = 0;
};

// Counters for stats; read by the owner thread (plain fields, updated on the data path).
struct ReliableStats {
  uint64_t packets_sent = 0;     // data packets, retransmissions included
  uint64_t bytes_sent = 0;       // datagram bytes of those
  uint64_t retransmits = 0;      // data packets sent again
  uint64_t losses_detected = 0;  // packets declared lost (by later acks or by timeout)
  uint64_t rto_timeouts = 0;
  uint64_t packets_received = 0;  // data packets accepted (first copy)
  uint64_t duplicates = 0;        // data packets received again
  uint64_t no_buffer_drops = 0;   // data packets dropped for want of a granted rx buffer
  uint64_t acks_sent = 0;         // acks and heartbeats
  uint64_t acks_received = 0;
  uint64_t stray = 0;            // datagrams dropped: malformed, other connection id, out of window
  uint64_t frames_sent = 0;      // frames fully acked
  uint64_t frames_received = 0;  // frames handed out by rx_burst
  uint64_t srtt_us = 0;
  uint64_t min_rtt_us = 0;
  uint64_t rto_us = 0;
  uint64_t delivery_rate = 0;  // bytes/s: the bandwidth estimate (max recent delivery rate)
  uint64_t pacing_rate = 0;    // bytes/s
  uint64_t cwnd_bytes = 0;
  uint64_t inflight_bytes = 0;
};

// What a listener learns from a client's first datagram.
struct SynInfo {
  uint32_t conn_id = 0;
  uint32_t max_datagram = 0;
};

// Is this datagram a SYN of this protocol? Returns its connection id (for the listener to
// tell a repeated SYN from a new client), or why not, in one sentence.
Result<SynInfo> parse_syn(std::span<const uint8_t> datagram);

class ReliableTransport : public Transport {
 public:
  // Takes the port (connected to the peer). A client passes no first datagram; a server
  // passes the client's SYN (parse_syn). Fails on invalid options or a bad SYN. Does no I/O:
  // the first progress(now) does.
  static Result<std::unique_ptr<ReliableTransport>> create(
      std::unique_ptr<DatagramPort> port, const ReliableOptions& options, Role role,
      std::span<const uint8_t> first_datagram = {});

  // True once the handshake completed (data flows).
  virtual bool established() const noexcept = 0;
  virtual const ReliableStats& stats() const noexcept = 0;
  // The stats above for --stats-json.
  json::Value link_stats() const override;
  uint64_t retransmits() const noexcept override { return stats().retransmits; }
  // The port under this transport (its own counters, e.g. a fault port's).
  virtual DatagramPort& port() noexcept = 0;
};

// Control path, blocking: drives progress() with the real clock (sleeping on the port's wait
// fd) until the handshake completes, the link fails, or timeout_ms passes.
Status wait_established(ReliableTransport& link, int timeout_ms);

}  // namespace ferry::dataplane::reliable
