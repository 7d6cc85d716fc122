// dataplane/reliable/internal/rate_control.h — the sending rate and window of a reliable link,
// found by measurement (BBR v1 in spirit): the bottleneck bandwidth is the maximum delivery
// rate over the last rounds, the base RTT the minimum RTT over the last seconds; the sender
// paces at gain x bandwidth (startup 2.89, then a cycle of 1.25 / 0.75 / 1 x 6 that probes
// for more and drains what probing queued) and keeps at most 2 x BDP in flight, plus what acks
// arriving in bursts need (a receiver or a host that acks late and then all at once, measured
// as in Linux BBR's extra_acked: without it a late-acking peer caps the window, the capped
// window caps the delivery rate, and the estimate spirals down). Loss does not
// lower the rate by itself (a random-loss link keeps its throughput).
//
// Pure: the link feeds it rate samples and times in ns; no I/O, no clock.
#pragma once

#include <algorithm>
#include <cstdint>

namespace ferry::dataplane::reliable {

// Kathleen Nichols' windowed min/max filter (as in Linux lib/minmax.c): the best of three
// samples spread over the window.
class WindowedFilter {
 public:
  explicit WindowedFilter(bool keep_max) : max_(keep_max) {}
  uint64_t get() const { return s_[0].v; }
  void reset(int64_t t, uint64_t v) { s_[0] = s_[1] = s_[2] = {t, v}; }
  // t: time or round number, monotonic; window in the same unit.
  void update(int64_t t, int64_t window, uint64_t v);

 private:
  struct Sample {
    int64_t t = 0;
    uint64_t v = 0;
  };
  bool better(uint64_t a, uint64_t b) const { return max_ ? a >= b : a <= b; }
  bool max_;
  Sample s_[3];
};

// One delivery-rate sample (draft-cheng-iccrg-delivery-rate-estimation), made by the link
// per ack that delivered something.
struct RateSample {
  uint64_t delivered = 0;        // bytes delivered over the interval
  int64_t interval_ns = 0;       // max(send elapsed, ack elapsed); <= 0: no rate
  uint64_t prior_delivered = 0;  // the link's delivered count when the newest packet was sent
  bool app_limited = false;      // the sender had nothing to send back then
  int64_t rtt_ns = -1;           // an RTT sample with this ack, or -1
  uint64_t acked = 0;            // bytes newly acked by this ack
  // The ack delivered packets declared lost or resent: their bytes may come from outside
  // the flight the interval measures (after a timeout, a whole window in one round trip),
  // so the sample is not counted; it marks the round as lossy (see RateControl::on_ack).
  bool no_raise = false;
};

class RateControl {
 public:
  // mss: bytes per full datagram; rtt_ns: the first RTT (handshake) or a guess.
  void init(uint32_t mss, uint64_t initial_cwnd_packets, int64_t rtt_ns, uint64_t max_rate);

  // After an ack; delivered = the link's total delivered bytes, inflight after the ack.
  void on_ack(const RateSample& rs, uint64_t delivered, uint64_t inflight, int64_t now);
  // Bytes acked beyond what the bandwidth explains, max over the last 5-10 rounds.
  uint64_t extra_acked() const { return std::max(extra_acked_[0], extra_acked_[1]); }

  // The pacing rate's upper bound in bytes/s from now on (0 = none).
  void set_max_rate(uint64_t max_rate);

  uint64_t pacing_rate() const { return pacing_rate_; }  // bytes per second
  uint64_t cwnd() const { return cwnd_; }
  uint64_t bandwidth() const { return bw_.get(); }
  int64_t min_rtt_ns() const { return min_rtt_ns_; }

 private:
  enum class Mode : uint8_t { kStartup, kDrain, kProbeBw };
  uint64_t bdp(double gain) const;
  void set_pacing(double gain, bool only_up);
  void update_ack_aggregation(uint64_t acked, bool round_start, int64_t now);

  uint32_t mss_ = 1400;
  uint64_t max_rate_ = 0;
  Mode mode_ = Mode::kStartup;
  WindowedFilter bw_{true};        // bytes/s over rounds
  WindowedFilter min_rtt_{false};  // ns over time
  int64_t min_rtt_ns_ = 0;
  uint64_t round_ = 0;
  uint64_t bw_round_ = 0;         // the round of the last sample the max filter counted
  uint64_t round_best_ = 0;       // the best delivery rate of this round, of any sample
  uint64_t last_round_best_ = 0;  // and of the previous round
  bool round_lossy_ = false;      // this round delivered resent packets
  uint64_t next_round_delivered_ = 0;
  uint64_t full_bw_ = 0;
  int full_bw_rounds_ = 0;
  bool filled_pipe_ = false;
  int cycle_ = 0;
  int64_t cycle_start_ = 0;
  double pacing_gain_ = 0;
  double cwnd_gain_ = 0;
  uint64_t pacing_rate_ = 0;
  uint64_t cwnd_ = 0;
  // Ack aggregation: two windows of 5 rounds each, the current one at extra_idx_.
  uint64_t extra_acked_[2] = {0, 0};
  int extra_idx_ = 0;
  int extra_rounds_ = 0;
  int64_t epoch_start_ = 0;
  uint64_t epoch_acked_ = 0;
};

}  // namespace ferry::dataplane::reliable
