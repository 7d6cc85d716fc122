// pipeline/channel_set.h — the channels of one migration on one side (ferry send or ferry recv):
// one ChannelPump thread per QEMU connection (main, then multifd ones in the order QEMU opened
// them), a shared abort signal so one failed channel stops the others, progress, and the
// final --stats-json.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/json.h"
#include "dataplane/transport.h"
#include "pipeline/channel_pump.h"
#include "pipeline/page_requests.h"
#include "pipeline/page_stream.h"
#include "pipeline/preempt_route.h"
#include "pipeline/stream_stats.h"

namespace ferry::pipeline {

// Totals over every channel, for progress and the policy engine.
struct SetCounters {
  bool sender = true;  // which side: the QEMU stream is bytes_from_qemu, else bytes_to_qemu
  double seconds = 0;
  size_t channels = 0;
  uint64_t bytes_from_qemu = 0, bytes_to_qemu = 0;
  uint64_t link_tx_bytes = 0, link_rx_bytes = 0;
  uint64_t pages_normal = 0, pages_zero = 0;
  uint64_t page_bytes_in = 0, page_wire_bytes = 0;  // page encoding, when on
  int effort = -1;                                  // main channel's encoding effort, -1 = off
  uint64_t link_backlog_bytes = 0;                  // queued for the link, all channels
  // For metrics (metrics/exporter.h): QEMU's page records by class, the encoder's records
  // by form (encoders::Form), its time, and the datagram transports' retransmits.
  uint64_t pages_xbzrle = 0, pages_compressed = 0;
  uint64_t form_pages[encoders::kFormCount] = {}, form_bytes[encoders::kFormCount] = {};
  uint64_t encode_ns = 0;
  uint64_t link_retransmits = 0;
  uint64_t link_resumes = 0;  // failed connections replaced by new ones (QEMU saw a pause)

  // These counters following `earlier`'s, of a set this one replaced (ferry migrate's
  // post-copy recovery): sums, except the state of now (effort, backlog).
  SetCounters after(const SetCounters& earlier) const;
};

// Thread safety: start(), reap(), abort_all(), join_all() and the read-outs may be called from
// different threads (a mutex guards the channel list); each channel's pump runs on its own.
class ChannelSet {
 public:
  explicit ChannelSet(PumpRole role);
  ~ChannelSet();  // aborts what still runs and joins every thread
  ChannelSet(const ChannelSet&) = delete;
  ChannelSet& operator=(const ChannelSet&) = delete;

  // How the engine of each channel started from now on waits (engine.h).
  void set_poll_mode(dataplane::PollMode mode) { poll_mode_ = mode; }
  // Sender: PumpOptions::postcopy_pending of each channel started from now on (0 = off).
  void set_postcopy_pending(size_t bytes) { postcopy_pending_ = bytes; }
  // Sender: PumpOptions::postcopy_hold, the same way.
  void set_postcopy_hold(size_t bytes) { postcopy_hold_ = bytes; }
  // Sender: PumpOptions::postcopy_pace, the same way.
  void set_postcopy_pace(double fraction) { postcopy_pace_ = fraction; }

  // Starts channel `index` on its own thread. The set owns link and, when own_fds, the QEMU
  // fds (closed when the channel ends, so QEMU sees the end at once).
  // Sender: encoder = this channel's page encoding (page_stream.h), or null to forward QEMU's
  // bytes as OPAQUE frames (--codec none). The encoder's own parse also counts the stream.
  void start(uint16_t index, QemuEnd qemu, bool own_fds, std::unique_ptr<dataplane::Transport> link,
             std::unique_ptr<PageStreamEncoder> encoder);
  // Receiver: decoder = page decoding when the sender encodes pages, else null.
  void start(uint16_t index, QemuEnd qemu, bool own_fds, std::unique_ptr<dataplane::Transport> link,
             std::unique_ptr<PageStreamDecoder> decoder);

  // Readable (poll) whenever a channel ended; call reap() then.
  int wake_fd() const { return wake_fd_; }
  void reap();
  bool main_done() const;
  bool failed() const;
  std::string first_error() const;
  size_t size() const;
  // Every channel has ended (and been reaped) and at least one ran.
  bool all_done() const;
  // QEMU's stream went past POSTCOPY_LISTEN: the VM may be running on the destination.
  bool postcopy_started() const;

  // Stops every channel (their pumps return at once) and waits for them.
  void abort_all();
  void join_all();

  SetCounters counters() const;
  // The destination's post-copy page requests and how long each waited for its pages:
  // on the receiver ferry's part, on the sender the source QEMU's (page_requests.h).
  PageRequestTracker::Summary page_requests() const { return requests_.summary(); }
  // Page encoding effort for every encoding channel: 0..5 fixed (the policy engine decides),
  // -1 = the codec's own choice (--codec).
  void set_effort(int effort);
  // Sender: QEMU was told to switch to post-copy (migrate-start-postcopy succeeded). Each
  // channel's pump goes to post-copy's short backlog now (PumpOptions::postcopy_requested),
  // so that the package QEMU writes once it stopped the source waits behind little bulk.
  void postcopy_requested() { postcopy_requested_.store(true, std::memory_order_relaxed); }
  // The final counters as one JSON object (--stats-json; see --help of send/recv). outcome:
  // "completed" or "failed"; error: the first error, or "" (written as null).
  json::Value stats_json(const std::string& outcome, const std::string& error) const;
  double seconds() const;

 private:
  // Seconds from the set's creation until its first link was up; caller holds mu_.
  json::Value link_setup_s() const;
  struct Channel;
  // The one way a channel starts: codec owns the page codec (either side), encoder is the same
  // object typed when this side encodes.
  void start_channel(uint16_t index, QemuEnd qemu, bool own_fds,
                     std::unique_ptr<dataplane::Transport> link, std::unique_ptr<StreamCodec> codec,
                     PageStreamEncoder* encoder);
  void reap_locked();

  PumpRole role_;
  dataplane::PollMode poll_mode_ = dataplane::PollMode::kAdaptive;
  size_t postcopy_pending_ = PumpOptions{}.postcopy_pending;
  size_t postcopy_hold_ = PumpOptions{}.postcopy_hold;
  double postcopy_pace_ = PumpOptions{}.postcopy_pace;
  std::atomic<bool> postcopy_requested_{false};
  // Sender with a held stream: held pages asked for go to the preempt channel's stream.
  // Before channels_: their codecs point to it.
  std::unique_ptr<PreemptRoute> preempt_route_;
  // The main channel's page caches, frozen at QEMU's post-copy package, for the preempt
  // channel's pages (postcopy_bases.h). Before channels_, as the route.
  PostcopyBases postcopy_bases_;
  std::mutex join_mu_;  // taken before mu_: one thread joins the channels' threads at a time
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Channel>> channels_;
  int abort_fd_ = -1;
  int wake_fd_ = -1;
  bool main_done_ = false;
  std::string first_error_;
  PageRequestTracker requests_;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  // When the first channel started: its link was up (EAL, ARP, handshakes done).
  std::chrono::steady_clock::time_point first_link_up_;
};

}  // namespace ferry::pipeline
