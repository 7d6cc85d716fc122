// dataplane/fault/fault_port.h — a DatagramPort decorator for tests (datagram.h): wraps a
// port and drops, duplicates, reorders, delays, rate-limits, blacks out or cuts the datagrams
// it sends, deterministically from a seed.
//
// Faults act on the egress of the wrapped port (wrap both ends for both directions), except
// the blackout and the cut, which silence the link both ways: during a blackout nothing is
// sent or received; after a cut, nothing ever again. The rate limit models a bottleneck
// queue (like tc tbf): datagrams leave at `rate` and a datagram that finds more than `queue`
// bytes waiting is dropped. Delayed datagrams wait in a fixed holding area (slots) and leave
// from progress(now); send_burst uses the time of the last progress().
//
// Spec, comma-separated key=value (e.g. "drop=0.05,dup=0.01,reorder=0.02,delay=5ms,seed=7"):
//   drop=P dup=P reorder=P    probabilities in [0, 1]
//   delay=D jitter=D          fixed delay and a uniform extra in [0, jitter)
//   reorder_gap=D             extra delay of a reordered datagram (default 1ms)
//   blackout=D@T              nothing passes for D, starting T after the first progress()
//   cut=BYTES                 after this many bytes sent, silence both ways forever
//   rate=R queue=BYTES        bottleneck rate (bit, kbit, mbit, gbit; bps, kbps, mbps, gbps
//                             are bytes/s) and its queue (default 64k)
//   burst=BYTES               the bottleneck's token bucket (tbf's burst): after idling, this
//                             much passes at once (default 0: a plain FIFO at the rate)
//   overhead=BYTES            bytes the rate limit adds per datagram (42: Ethernet+IPv4+UDP)
//   slots=N                   datagrams held at most (default 2048; more are dropped)
//   seed=N                    random seed (default 1)
// Durations take ns, us, ms or s; sizes k, m, g (binary).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "dataplane/datagram.h"

namespace ferry::dataplane::fault {

struct FaultOptions {
  double drop = 0;
  double dup = 0;
  double reorder = 0;
  std::chrono::nanoseconds delay{0};
  std::chrono::nanoseconds jitter{0};
  std::chrono::nanoseconds reorder_gap{std::chrono::milliseconds(1)};
  std::chrono::nanoseconds blackout_start{0};
  std::chrono::nanoseconds blackout_length{0};  // 0 = none
  uint64_t cut_after = 0;                       // bytes; 0 = never
  double rate = 0;                              // bytes per second; 0 = unlimited
  size_t queue = 64 * 1024;
  size_t burst = 0;
  size_t overhead = 0;
  size_t slots = 2048;
  uint64_t seed = 1;
};

// Parses a spec (grammar above); errors name the offending item and what is expected.
Result<FaultOptions> parse_fault_spec(std::string_view spec);

struct FaultStats {
  uint64_t sent = 0;        // datagrams offered to send_burst
  uint64_t dropped = 0;     // by drop=
  uint64_t duplicated = 0;  // extra copies made
  uint64_t reordered = 0;
  uint64_t queue_drops = 0;     // the rate limit's queue was full
  uint64_t blackout_drops = 0;  // both ways
  uint64_t cut_drops = 0;       // both ways
  uint64_t hold_drops = 0;      // no free slot to delay it in
};

class FaultPort final : public DatagramPort {
 public:
  static Result<std::unique_ptr<FaultPort>> create(std::unique_ptr<DatagramPort> inner,
                                                   const FaultOptions& options);

  const char* kind() const noexcept override { return "fault"; }
  size_t max_datagram() const noexcept override { return inner_->max_datagram(); }
  // Takes every datagram (a faulty link, not a full one).
  size_t send_burst(std::span<const DatagramOut> out) noexcept override;
  size_t recv_burst(std::span<DatagramIn> in) noexcept override;
  size_t progress(TimePoint now) noexcept override;
  TimePoint next_deadline() const noexcept override;
  int wait_fd() const noexcept override { return inner_->wait_fd(); }
  uint32_t wait_events(bool want_rx, bool want_tx) const noexcept override {
    return inner_->wait_events(want_rx, want_tx);
  }
  bool failed() const noexcept override { return inner_->failed(); }
  const Status& error() const noexcept override { return inner_->error(); }

  const FaultStats& stats() const noexcept { return stats_; }
  const FaultOptions& options() const noexcept { return opt_; }
  DatagramPort& inner() noexcept { return *inner_; }

 private:
  FaultPort() = default;
  double uniform() noexcept { return static_cast<double>(rng_() >> 11) * 0x1p-53; }
  bool silenced() const noexcept;
  void emit(const DatagramOut& d, DatagramOut* now_batch, size_t& now_count) noexcept;
  void hold(const DatagramOut& d, int64_t release) noexcept;
  size_t release_due() noexcept;

  FaultOptions opt_;
  std::unique_ptr<DatagramPort> inner_;
  std::mt19937_64 rng_;
  bool started_ = false;
  int64_t epoch_ns_ = 0;
  int64_t now_ns_ = 0;
  bool cut_ = false;
  uint64_t sent_bytes_ = 0;
  double link_free_ns_ = 0;  // when the bottleneck finishes what it has queued
  // Holding area: slots of max_datagram bytes, a free stack and a min-heap on release time.
  size_t slot_bytes_ = 0;
  std::vector<uint8_t> slab_;
  std::vector<uint32_t> len_;
  std::vector<int64_t> release_;
  std::vector<uint64_t> order_;  // FIFO among equal release times
  std::vector<uint32_t> free_;
  std::vector<uint32_t> heap_;
  uint64_t next_order_ = 0;
  FaultStats stats_;
};

}  // namespace ferry::dataplane::fault
