// pipeline/channel_pump.h — one channel's poller (engine.h): moves one QEMU migration
// connection across one dataplane::Transport, in both directions, on its engine's thread.
//
//   sender   (ferry send):  QEMU stream  -> OPAQUE frames -> transport
//                           transport    -> RETURN frames -> QEMU (return path)
//   receiver (ferry recv):  transport    -> OPAQUE frames -> QEMU
//   (with a StreamCodec, stream_codec.h, the stream also travels as CODEC/PAGES frames)
//                           QEMU         -> RETURN frames -> transport
//
// Each poll() step, in this order (DESIGN.md §3):
//   1. link receive: frames from the peer (on the sender the return path, so post-copy page
//      requests never wait behind bulk reads);
//   2. QEMU read, within credits: a free frame buffer and fewer than max_pending bytes
//      queued or in flight toward the link; without credits QEMU's socket fills and QEMU
//      measures the true link rate;
//   3. encode (with a StreamCodec) into frame buffers;
//   4. write toward QEMU what the link brought;
//   5. link transmit of whole frame buffers, reap of completed ones back to the pool;
//   6. progress(now): the transport's timers, the link buffer hint.
// In each direction of the transport only one kind of frame is bulk.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"
#include "dataplane/engine.h"
#include "dataplane/transport.h"
#include "pipeline/stream_codec.h"

namespace ferry::pipeline {

class PageRequestTracker;

// Sees every byte of one direction of the QEMU stream as it passes (a channel without an
// encoder plugs the stream parser in here to count pages and return-path messages). Called on the
// pump's thread; must not block.
class StreamTap {
 public:
  virtual ~StreamTap() = default;
  virtual void on_bytes(std::span<const uint8_t> bytes) noexcept = 0;
  // The direction ended cleanly (EOF after the last byte).
  virtual void on_end() noexcept {}
};

enum class PumpRole : uint8_t { kSender, kReceiver };

// The QEMU side of a channel: one socket (read_fd == write_fd) or a pair of pipes (stdio).
// The pump does not own them.
struct QemuEnd {
  int read_fd = -1;
  int write_fd = -1;
};

struct PumpOptions {
  size_t max_pending = 256u << 10;  // bytes queued toward either side before reading stops
  // Kernel buffering below ferry (dataplane::Transport::set_buffer_hint): the link's rate times
  // this, within [min, max] bytes. 0 = leave the transport's default.
  double link_buffer_s = 0.025;
  size_t link_buffer_min = 128u << 10;
  size_t link_buffer_max = 16u << 20;
  size_t read_chunk = 256u << 10;      // largest read, and so largest frame payload
  StreamTap* tap_from_qemu = nullptr;  // bytes QEMU wrote (sender: the stream; receiver: RP)
  StreamTap* tap_to_qemu = nullptr;    // bytes written to QEMU
  int abort_fd = -1;  // an eventfd; readable = give up now (another channel failed)
  dataplane::PollMode poll_mode = dataplane::PollMode::kAdaptive;  // for run()
  // Turns QEMU bytes into frames and back (page encoding); null = OPAQUE frames only.
  StreamCodec* codec = nullptr;
  // Sender, post-copy (issue 19): the destination's page requests forwarded to the source
  // QEMU so far (the return-path tap's count), or null. QEMU 7.2's migration thread sends a
  // requested page only once its current write to the main channel ended, so a requested
  // page waits behind that write, and one QEMU had already sent waits behind all the bulk
  // queued ahead of it. Read in big batches (read_chunk whenever max_pending allows) QEMU's
  // socket drains in bursts and ferry holds up to ~1 MB more of bulk; from the first request
  // on, or once QEMU's post-copy package (the device state the destination resumes with) is
  // in the kernel if the codec sees it, the pump keeps ~3 ms of the link's rate queued (at
  // least postcopy_pending, at most max_pending) and tops up what the link took.
  // postcopy_pending 0 = off (read and queue as in pre-copy). At 30 Mbit/s this cut the p99
  // page-request wait from 270-430 ms to 130-180 ms (docs/BENCHMARKS.md).
  const std::atomic<uint64_t>* page_requests = nullptr;
  size_t postcopy_pending = 32u << 10;
  // Sender: set once QEMU was told to switch to post-copy (ferry migrate knows; ferry send
  // alone does not), or null. The short backlog above begins then rather than at the
  // package: QEMU writes at most one more iteration of pre-copy before it stops the source,
  // and the package, written after the stop and QEMU's bitmap sync, no longer waits behind
  // pre-copy's bulk in the kernel (docs/BENCHMARKS.md, "The package behind pre-copy's
  // queues"). What QEMU wrote last then waits in its own socket instead, and drains during
  // that sync. Pacing from the request with reads as in pre-copy kept ferry's own queue of
  // up to max_pending ahead of the package: worse.
  const std::atomic<bool>* postcopy_requested = nullptr;
  // Post-copy, unless postcopy_pending is 0, with a codec that holds (StreamCodec::hold): the
  // most of QEMU's stream ferry holds, parsed, in memory ahead of the link. A held page that
  // is asked for goes out ahead of the held stream (on the preempt link when there is one,
  // preempt_route.h), the held pages after it next; a request for a page not held lets QEMU
  // write more into the hold for a short while (256 KiB every 5 ms for 30 ms, while requests
  // wait for it), so that the write it is blocked in ends and it answers. The link still
  // gets only the short backlog above. 0 = off (QEMU's writes wait for the link); ferry
  // migrate sets 512 MiB with postcopy-preempt (docs/BENCHMARKS.md, "Held pages on the
  // preempt link").
  size_t postcopy_hold = 0;
  // The requests still waiting for the source (page_requests.h): the hold takes more of
  // QEMU's stream for a request it missed only while some are. Null = for the whole while.
  const PageRequestTracker* open_requests = nullptr;
  // Post-copy, unless postcopy_pending is 0: what may wait in the kernel unsent (Transport::
  // set_unsent_limit), as seconds of the link's rate, at least 16 KiB; 0 = no limit. The
  // send buffer keeps its size for what is in flight. At 100 Mbit/s the kernel otherwise
  // queues ~25 ms of bulk ahead of a page QEMU sent just before the destination asked.
  double postcopy_unsent_s = 0.002;
  // Post-copy with the link paced (postcopy_pace): the kernel's buffering below ferry cut to
  // this many seconds of the link's rate plus its lowest round trip (Transport::min_rtt_s),
  // at least 16 KiB; 0 = keep link_buffer_s. The unsent limit alone leaves in flight what the
  // send buffer holds (link_buffer_min, which the kernel doubles): after the switch TCP put
  // ~260 KB into a 30 Mbit/s bottleneck's queue at once, and the pages asked for, on the
  // preempt link's connection through the same bottleneck, waited ~70 ms behind it.
  double postcopy_buffer_s = 0.003;
  // Post-copy, unless postcopy_pending is 0: the link paced (Transport::set_pacing_rate) at
  // this fraction of its rate over the last ~2 s before the switch, so that no queue stands
  // at the bottleneck for a page asked for, on its own connection through the same
  // bottleneck, to wait behind. That rate is what ferry handed the kernel, a few percent
  // above what the bottleneck carried (TCP/IP headers, the kernel's buffer): at 95 % a queue
  // of 30-70 KB still stood at 30 Mbit/s, at 85 % it drained. 0 = not paced.
  double postcopy_pace = 0.85;
};

// Counters another thread may read while the pump runs (progress, policy inputs).
struct PumpCounters {
  std::atomic<uint64_t> bytes_from_qemu{0};
  std::atomic<uint64_t> bytes_to_qemu{0};
  std::atomic<uint64_t> link_tx_bytes{0};  // frame bytes handed to the transport
  std::atomic<uint64_t> link_rx_bytes{0};
  std::atomic<uint64_t> frames_tx{0};
  std::atomic<uint64_t> frames_rx{0};
  std::atomic<uint64_t> link_backlog_bytes{0};  // queued for the link after the last flush
  // Data packets the link sent again (Transport::retransmits()), copied about every 250 ms.
  std::atomic<uint64_t> link_retransmits{0};
  // New connections that replaced a failed one (Transport::resumes()), copied as often.
  std::atomic<uint64_t> link_resumes{0};
  // Post-copy: the rate the link is paced at (PumpOptions::postcopy_pace), bytes/s; 0 = not.
  std::atomic<uint64_t> postcopy_pace_bytes_per_s{0};
  // Sender: when QEMU's post-copy package was framed and when all of it had left the link's
  // queue in ferry (on tcp: was in the kernel) (steady clock, ns; 0 = not yet), and the bytes
  // ferry still had for the link at the first, the package's included: what it waited
  // behind before the destination could resume.
  std::atomic<int64_t> package_framed_ns{0}, package_sent_ns{0};
  std::atomic<uint64_t> package_ahead_bytes{0};
};

class ChannelPump final : public dataplane::Poller {
 public:
  // The transport must have completed its handshake (its data frames start at kFirstDataSeq).
  // Neither fd nor transport is owned.
  ChannelPump(PumpRole role, QemuEnd qemu, dataplane::Transport& link, PumpOptions options);
  ~ChannelPump() override;

  // dataplane::Poller: one step of the order above, on the engine's thread.
  size_t poll(TimePoint now) noexcept override;
  void add_waits(dataplane::WaitSet& set) noexcept override;
  bool finished() const noexcept override;

  // The outcome once finished(): both directions closed cleanly (ok), or a failure on either
  // side (the Status names the side, the byte offset where it applies, and why).
  const Status& result() const;

  // Runs this pump alone on an engine of its own (options.poll_mode) until it finished.
  Status run();

  // Gives every frame buffer the pump still holds back to the transport's pools: before the
  // transport goes, when the pump outlives it (its counters are read later). Idempotent.
  void release_buffers();

  const PumpCounters& counters() const { return counters_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  PumpCounters counters_;
};

}  // namespace ferry::pipeline
