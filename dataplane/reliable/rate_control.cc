// dataplane/reliable/rate_control.cc — see internal/rate_control.h.
#include "dataplane/reliable/internal/rate_control.h"

#include <algorithm>

namespace ferry::dataplane::reliable {
namespace {

constexpr double kHighGain = 2.885;  // 2/ln 2: doubles the delivery rate every round
constexpr double kCycleGains[8] = {1.25, 0.75, 1, 1, 1, 1, 1, 1};
constexpr int64_t kBwWindowRounds = 10;
constexpr int64_t kMinRttWindowNs = 10'000'000'000;
// Pacing never drops below 100 full datagrams a second (a bandwidth estimate from a handful
// of app-limited packets must not strand a link).
constexpr uint64_t kMinPacketsPerSecond = 100;
// The round trip that sizes the window and the probing phases is at least this: below it
// (a veth's 20 us) acks, timers and pacing move in steps of about a millisecond (delayed
// acks, late wake-ups), and a window of 2 x 20 us at the bandwidth could not cover one.
constexpr int64_t kRttFloorNs = 2'000'000;
constexpr int kExtraAckedRounds = 5;
// The window never grows by more than this much time at the bandwidth for late acks.
constexpr int64_t kExtraAckedMaxNs = 100'000'000;

}  // namespace

void WindowedFilter::update(int64_t t, int64_t window, uint64_t v) {
  const Sample val{t, v};
  if (better(v, s_[0].v) || t - s_[2].t > window) {
    reset(t, v);
    return;
  }
  if (better(v, s_[1].v)) {
    s_[2] = s_[1] = val;
  } else if (better(v, s_[2].v)) {
    s_[2] = val;
  }
  // Keep the three choices spread over the window.
  const int64_t dt = t - s_[0].t;
  if (dt > window) {
    s_[0] = s_[1];
    s_[1] = s_[2];
    s_[2] = val;
    if (t - s_[0].t > window) {
      s_[0] = s_[1];
      s_[1] = s_[2];
      s_[2] = val;
    }
  } else if (s_[1].t == s_[0].t && dt > window / 4) {
    s_[2] = s_[1] = val;
  } else if (s_[2].t == s_[1].t && dt > window / 2) {
    s_[2] = val;
  }
}

void RateControl::init(uint32_t mss, uint64_t initial_cwnd_packets, int64_t rtt_ns,
                       uint64_t max_rate) {
  mss_ = mss;
  max_rate_ = max_rate;
  cwnd_ = std::max<uint64_t>(initial_cwnd_packets, 4) * mss;
  pacing_gain_ = cwnd_gain_ = kHighGain;
  const double rtt_s = static_cast<double>(std::max<int64_t>(rtt_ns, 1000)) * 1e-9;
  pacing_rate_ = static_cast<uint64_t>(kHighGain * static_cast<double>(cwnd_) / rtt_s);
  if (max_rate_) pacing_rate_ = std::min(pacing_rate_, max_rate_);
}

void RateControl::set_max_rate(uint64_t max_rate) {
  max_rate_ = max_rate;
  if (max_rate_) {
    pacing_rate_ = std::min(pacing_rate_, max_rate_);
  } else {
    set_pacing(pacing_gain_, /*only_up=*/true);
  }
}

uint64_t RateControl::bdp(double gain) const {
  if (bw_.get() == 0 || min_rtt_ns_ <= 0) return cwnd_;
  const double rtt = static_cast<double>(std::max(min_rtt_ns_, kRttFloorNs));
  const double bytes = static_cast<double>(bw_.get()) * rtt * 1e-9 * gain;
  return static_cast<uint64_t>(bytes);
}

void RateControl::set_pacing(double gain, bool only_up) {
  if (bw_.get() == 0) return;
  uint64_t rate = static_cast<uint64_t>(gain * static_cast<double>(bw_.get()));
  rate = std::max<uint64_t>(rate, kMinPacketsPerSecond * mss_);
  if (max_rate_) rate = std::min(rate, max_rate_);
  if (!only_up || rate > pacing_rate_) pacing_rate_ = rate;
}

// How many more bytes were acked since the epoch began than the bandwidth estimate explains.
void RateControl::update_ack_aggregation(uint64_t acked, bool round_start, int64_t now) {
  if (acked == 0) return;
  if (round_start && ++extra_rounds_ >= kExtraAckedRounds) {
    extra_rounds_ = 0;
    extra_idx_ ^= 1;
    extra_acked_[extra_idx_] = 0;
  }
  const double elapsed_s = static_cast<double>(now - epoch_start_) * 1e-9;
  uint64_t expected = static_cast<uint64_t>(static_cast<double>(bw_.get()) * elapsed_s);
  // Acks at or below the expected rate (or an epoch grown old) start a new epoch.
  if (epoch_acked_ <= expected || epoch_acked_ + acked >= (1u << 30)) {
    epoch_acked_ = 0;
    epoch_start_ = now;
    expected = 0;
  }
  epoch_acked_ += acked;
  const uint64_t extra = std::min(epoch_acked_ - std::min(epoch_acked_, expected), cwnd_);
  extra_acked_[extra_idx_] = std::max(extra_acked_[extra_idx_], extra);
}

void RateControl::on_ack(const RateSample& rs, uint64_t delivered, uint64_t inflight, int64_t now) {
  // A round trip ends when a packet sent after the previous round's end is acked.
  bool round_start = false;
  if (rs.acked && rs.prior_delivered >= next_round_delivered_) {
    next_round_delivered_ = delivered;
    ++round_;
    round_start = true;
  }

  // Bandwidth: the max delivery rate; an app-limited sample only counts when it is higher
  // (the sender, not the path, was the limit).
  if (rs.interval_ns > 0 && rs.delivered > 0) {
    uint64_t rate = static_cast<uint64_t>(static_cast<double>(rs.delivered) * 1e9 /
                                          static_cast<double>(rs.interval_ns));
    // Faster than the pacer sends at its highest gain is measurement error (acks bunched
    // by a stalled receiver or a late engine, a burst a bucket absorbed): counted, it would
    // raise the pacing, whose next bunch reads faster still.
    if (bw_.get() > 0) {
      const double most =
          static_cast<double>(bw_.get()) * (filled_pipe_ ? kCycleGains[0] : kHighGain);
      rate = std::min(rate, static_cast<uint64_t>(most));
    }
    const bool counts = !rs.no_raise && (!rs.app_limited || rate >= bw_.get());
    if (counts) {
      bw_.update(static_cast<int64_t>(round_), kBwWindowRounds, rate);
      bw_round_ = round_;
    }
    if (!rs.no_raise) round_best_ = std::max(round_best_, rate);
  }
  if (rs.no_raise) round_lossy_ = true;
  // The max filter ages only when fed. A sender pacing far above a spurious peak sends all
  // it has at once, so every sample is app-limited (and below the peak: not counted), and
  // the peak would stand for good. A whole window without a counted sample makes it stale:
  // the best delivery rate of the last round (app-limited ones included: the path carried at
  // least that) takes its place, but only after a round that delivered resent packets (the
  // pacing overran the path): an application that merely sends less must not pull it down.
  // It falls by at most half a window: one round's samples, taken while the sender was
  // mostly idle, say little of the path.
  if (round_start) {
    if (round_ > bw_round_ + kBwWindowRounds && last_round_best_ > 0 && round_lossy_) {
      bw_.update(static_cast<int64_t>(round_), kBwWindowRounds,
                 std::max(last_round_best_, bw_.get() / 2));
      bw_round_ = round_;
    }
    last_round_best_ = round_best_;
    round_best_ = 0;
    round_lossy_ = false;
  }
  // The pipe is full when three rounds in a row did not raise the bandwidth by 25 %.
  if (!filled_pipe_ && round_start && !rs.app_limited) {
    if (bw_.get() >= full_bw_ + full_bw_ / 4) {
      full_bw_ = bw_.get();
      full_bw_rounds_ = 0;
    } else if (++full_bw_rounds_ >= 3) {
      filled_pipe_ = true;
    }
  }
  if (rs.rtt_ns > 0) {
    if (min_rtt_ns_ <= 0) {
      min_rtt_.reset(now, static_cast<uint64_t>(rs.rtt_ns));
    } else {
      min_rtt_.update(now, kMinRttWindowNs, static_cast<uint64_t>(rs.rtt_ns));
    }
    min_rtt_ns_ = static_cast<int64_t>(min_rtt_.get());
  }

  if (mode_ == Mode::kStartup && filled_pipe_) {
    mode_ = Mode::kDrain;
    pacing_gain_ = 1.0 / kHighGain;
    cwnd_gain_ = kHighGain;
  }
  if (mode_ == Mode::kDrain && inflight <= bdp(1.0)) {
    mode_ = Mode::kProbeBw;
    cycle_ = 2;  // cruise first: probing right after the drain would refill the queue
    cycle_start_ = now;
    pacing_gain_ = kCycleGains[cycle_];
    cwnd_gain_ = 2.0;
  }
  if (mode_ == Mode::kProbeBw) {
    const bool phase_done = now - cycle_start_ > std::max(min_rtt_ns_, kRttFloorNs);
    // Draining ends early once the queue that probing built is gone.
    const bool drained = pacing_gain_ < 1.0 && inflight <= bdp(1.0);
    if (phase_done || drained) {
      cycle_ = (cycle_ + 1) % 8;
      cycle_start_ = now;
      pacing_gain_ = kCycleGains[cycle_];
    }
  }
  set_pacing(pacing_gain_, !filled_pipe_);

  update_ack_aggregation(rs.acked, round_start, now);
  uint64_t target = bdp(cwnd_gain_) + 3ull * mss_;
  if (filled_pipe_) {
    const auto cap =
        static_cast<uint64_t>(static_cast<double>(bw_.get()) * kExtraAckedMaxNs * 1e-9);
    target += std::min(extra_acked(), cap);
  }
  if (filled_pipe_) {
    cwnd_ = std::min(cwnd_ + rs.acked, target);
  } else if (cwnd_ < target) {
    cwnd_ += rs.acked;
  }
  cwnd_ = std::max<uint64_t>(cwnd_, 4ull * mss_);
}

}  // namespace ferry::dataplane::reliable
