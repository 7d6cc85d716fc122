// dataplane/transport.h — the Transport contract: one bidirectional link between a ferry
// sender and a ferry receiver that carries whole ferry frames (protocol.h) in FrameBufs of the
// transport's own pool (frame_pool.h). Backends live in subfolders (tcp/, udp/ and dpdk/ over
// reliable/, loopback/, rdma/ on libfabric; fault/ decorates a datagram port for tests) and
// are listed in one registration table (transport.cc: the one file where optional backends
// may have an #if).
//
// Control methods (listen, accept, connect) may block and return Result<T>. Data methods take
// a burst, never block, are noexcept and return the count handled; one virtual call per
// burst. A Transport is owned and driven by one thread (its engine's, engine.h): data calls,
// progress() and the pool all belong to that thread.
//
// Frame life cycle:
//   sender:   f = pool().alloc(); write header+payload; tx_burst({f}) -> transport owns f
//             ... reap_tx() returns f once its bytes have left (copied to the kernel, acked
//             by the peer, or DMA done: caps().tx_done says which) -> pool().free(f)
//   receiver: rx_burst() returns buffers of the transport (pool(), or a receive pool of its
//             own), in order, each checked for length (not CRC or sequence: FrameChecker
//             does that above) -> the consumer frees each to frame->pool when done with it.
// A buffer holds one or more whole frames back to back (a codec's small frames share one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "dataplane/frame_pool.h"

namespace ferry::dataplane {

// What a backend guarantees and needs; constant for a transport's life.
struct TransportCaps {
  size_t max_frame = 0;      // largest frame (header + payload) tx_burst accepts
  size_t max_burst = 32;     // frames per tx_burst/rx_burst call worth offering
  bool reliable = false;     // every frame handed to tx_burst arrives, or the link fails
  bool ordered = false;      // frames arrive in tx order
  bool registered = false;   // tx frames must come from pool() (registered memory)
  bool paced = false;        // set_pacing_rate paces what it sends (tcp: the kernel's; reliable/)
  const char* tx_done = "";  // what "reaped" means, for docs and --version
};

enum class LinkState : uint8_t {
  kOpen,        // frames may flow both ways
  kPeerClosed,  // the peer closed its sending side; rx_burst has returned every frame
  kFailed,      // a hard error or the peer went silent past the liveness timeout: error()
};

// A peer silent this long fails the link, on every backend (reliable/'s liveness, tcp's
// TCP_USER_TIMEOUT and keepalive, rdma's heartbeats): long enough for a switch to reconverge
// or a busy host to answer, short enough that a migration whose peer vanished fails while
// the source still runs the VM. The default of --link-timeout (TransportSettings).
inline constexpr std::chrono::seconds kLinkTimeout{10};
// --link-timeout's bounds: under 2 s a heartbeat (every 250 ms) lost to a scheduling stall
// of a loaded host would end healthy links; over 10 minutes a dead peer hides too long.
inline constexpr std::chrono::seconds kMinLinkTimeout{2};
inline constexpr std::chrono::seconds kMaxLinkTimeout{600};
// How long after a link failed a new connection may take its place, QEMU none the wiser
// (resume/resumable_transport.h; --resume-within): long enough for a switch to reconverge, a
// cable to be re-seated or a link to flap a few times, short enough that a pre-copy whose
// peer is gone for good fails while the source still runs the VM. 0 = a failed link fails
// its channel at once.
inline constexpr std::chrono::seconds kResumeWithin{60};
inline constexpr std::chrono::seconds kMaxResumeWithin{3600};

// Readiness bits for an adaptive engine's sleep (no <poll.h> here; the engine translates).
inline constexpr uint32_t kWaitReadable = 1u << 0;
inline constexpr uint32_t kWaitWritable = 1u << 1;

class Transport {
 public:
  virtual ~Transport() = default;

  // Backend name ("tcp", "udp", "loopback").
  virtual const char* kind() const noexcept = 0;
  virtual TransportCaps caps() const noexcept = 0;
  // The buffers this transport sends from and receives into.
  virtual FramePool& pool() noexcept = 0;

  // Data path, owner thread only.
  // Takes the first n frames (n <= frames.size(), in order) for the peer; the transport owns
  // them until reap_tx. It may send them at once or at the next progress(now) (timed
  // backends: only progress knows the time), so the owner calls progress after tx_burst.
  // 0 = no room now (retry after reap_tx/progress, or when the wait fd says writable).
  // After close_tx or a failure, takes nothing.
  virtual size_t tx_burst(std::span<FrameBuf* const> frames) noexcept = 0;
  // Hands back up to out.size() frames whose transmission completed, oldest first.
  virtual size_t reap_tx(std::span<FrameBuf*> out) noexcept = 0;
  // Up to out.size() received frames, in order; the caller frees each to frame->pool.
  virtual size_t rx_burst(std::span<FrameBuf*> out) noexcept = 0;
  // Timers: acks, retransmits, pacing, heartbeats, liveness. Called every engine iteration;
  // returns the work done (0 = nothing was due).
  virtual size_t progress(TimePoint /*now*/) noexcept { return 0; }
  // When progress() next needs a call (kNever = only on I/O); an adaptive engine sleeps no
  // longer than this.
  virtual TimePoint next_deadline() const noexcept { return kNever; }
  // No more frames will be sent; the peer sees the end after every frame already taken.
  virtual void close_tx() noexcept = 0;

  virtual LinkState state() const noexcept = 0;
  // Why the link failed (state() == kFailed); ok otherwise.
  virtual const Status& error() const noexcept = 0;
  // Frames (or bytes, for stream backends: as frames' bytes) taken by tx_burst and not yet
  // reaped, in bytes.
  virtual size_t tx_in_flight_bytes() const noexcept = 0;
  // Of those, the bytes still waiting in ferry to leave (not yet written to the kernel, or cut
  // into packets): what a frame taken now waits behind. Sent but unacknowledged bytes are
  // the network's, as a kernel socket's buffer is, and bounded by the transport's window.
  virtual size_t tx_unsent_bytes() const noexcept { return tx_in_flight_bytes(); }

  // For an adaptive engine's sleep: the fd that becomes ready when this transport has work,
  // and the kWait* bits to wait for given what the owner wants (0 = no fd wait; -1 = no fd:
  // the engine sleeps until the next deadline only).
  virtual int wait_fd() const noexcept = 0;
  virtual uint32_t wait_events(bool want_rx, bool want_tx) const noexcept = 0;

  // How many bytes the transport should hold in flight below ferry (kernel socket buffers):
  // enough for the link's bandwidth-delay product, no more, so that what QEMU writes last
  // is not stuck behind seconds of queued data (its downtime estimate would be wrong).
  // A hint: backends may ignore it.
  virtual void set_buffer_hint(size_t /*bytes*/) noexcept {}
  // How many of those bytes may wait below ferry without having been sent yet (0 = no
  // limit), while the buffer still holds what is in flight: in post-copy a page QEMU sent
  // before the destination asked for it then waits behind little bulk. A hint.
  virtual void set_unsent_limit(size_t /*bytes*/) noexcept {}
  // The lowest round trip the backend measured on this link, in seconds (0 = not known):
  // with the rate, how much in flight keeps the link busy. Owner thread.
  virtual double min_rtt_s() const noexcept { return 0; }
  // Sends no faster than this many bytes per second (0 = as fast as the link takes them), and
  // in bursts of ~1 ms of it at most, so that no queue forms at a bottleneck the rate is
  // just under. Only where caps().paced (tcp, reliable/ over udp and dpdk); elsewhere a
  // no-op.
  virtual void set_pacing_rate(double /*bytes_per_s*/) noexcept {}

  // What the backend measured about the link (retransmits, RTT, pacing rate, ...) for
  // --stats-json, or null when it has nothing beyond the byte counts. Owner thread, or any
  // thread once the data path stopped.
  virtual json::Value link_stats() const { return {}; }
  // Data packets this transport sent again (reliable/ over datagrams); 0 where the kernel or
  // the NIC retransmits (tcp, rdma). Owner thread; cheap (a counter), for live metrics.
  virtual uint64_t retransmits() const noexcept { return 0; }
  // New connections that took a failed one's place (resume/resumable_transport.h); 0 where
  // links are not resumable. Owner thread; a counter.
  virtual uint64_t resumes() const noexcept { return 0; }
};

// Accepts transports from peers.
class Listener {
 public:
  virtual ~Listener() = default;
  // Waits up to timeout_ms (>= 0) for one peer.
  virtual Result<std::unique_ptr<Transport>> accept(int timeout_ms) = 0;
  // The fd that becomes readable when a peer may be waiting (for a poll loop), or -1.
  virtual int wait_fd() const noexcept = 0;
  // What it listens on, for messages.
  virtual std::string where() const = 0;
};

// Settings of particular backends, from the command line; each backend reads its own and
// ignores the rest.
struct TransportSettings {
  // rdma: the libfabric provider ("verbs", "tcp", ...); empty = verbs, else tcp with a notice.
  std::string fabric_provider;
  // Every backend: silence from the peer this long fails the link (--link-timeout).
  std::chrono::seconds link_timeout{kLinkTimeout};
  // The sessions above every backend: a failed link is replaced within this (--resume-within).
  std::chrono::seconds resume_within{kResumeWithin};
};

// One row of the registration table.
struct TransportInfo {
  const char* name;     // the scheme in "name:ADDRESS"
  const char* summary;  // one line for --help / --version
  bool available;       // built into this binary
  bool in_process;      // both ends must live in one process (loopback)
  const char* why_not;  // when not available: the reason and how to get it, one sentence
  Result<std::unique_ptr<Listener>> (*listen)(const std::string& address,
                                              const TransportSettings& settings);
  Result<std::unique_ptr<Transport>> (*connect)(const std::string& address, int timeout_ms,
                                                const TransportSettings& settings);
};

// Every transport ferry knows, available or not.
std::span<const TransportInfo> transports();

// "tcp:HOST:PORT", "udp:HOST:PORT", "loopback:NAME": picks the backend by scheme. Unknown or
// unavailable schemes give an error listing what this build has.
Result<std::unique_ptr<Listener>> listen_transport(const std::string& spec,
                                                   const TransportSettings& settings = {});
Result<std::unique_ptr<Transport>> connect_transport(const std::string& spec, int timeout_ms,
                                                     const TransportSettings& settings = {});
// Checks a spec without connecting (for command lines, before any waiting).
Status check_transport_spec(const std::string& spec);

// Blocking helpers for the handshake, before the data path starts: drive the transport
// (tx, reap, progress, rx) until one frame is sent / received, or the deadline passes.
// send_frame copies payload into a pool frame of the given type and sequence number.
Status send_frame(Transport& link, FrameType type, uint64_t seq, std::span<const uint8_t> payload,
                  int timeout_ms);
// Waits for the next frame; the caller frees it to its pool.
Result<FrameBuf*> recv_frame(Transport& link, int timeout_ms);
// Waits until every frame taken has been reaped (e.g. the END frame left), up to timeout_ms.
Status drain_tx(Transport& link, int timeout_ms);

}  // namespace ferry::dataplane
