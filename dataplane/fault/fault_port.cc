// dataplane/fault/fault_port.cc — see fault_port.h.
#include "dataplane/fault/fault_port.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace ferry::dataplane::fault {
namespace {

int64_t ns_of(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

Result<std::unique_ptr<FaultPort>> FaultPort::create(std::unique_ptr<DatagramPort> inner,
                                                     const FaultOptions& options) {
  if (!inner) return ferry::error(ErrorCode::kInvalidArgument, "fault port: nothing to wrap");
  if (options.slots == 0 || options.slots > (1u << 20)) {
    return ferry::error(ErrorCode::kInvalidArgument, "fault port: slots must be 1 .. 1048576");
  }
  std::unique_ptr<FaultPort> p(new FaultPort());
  p->opt_ = options;
  p->inner_ = std::move(inner);
  p->rng_.seed(options.seed);
  p->slot_bytes_ = p->inner_->max_datagram();
  p->slab_.resize(options.slots * p->slot_bytes_);
  p->len_.resize(options.slots);
  p->release_.resize(options.slots);
  p->order_.resize(options.slots);
  p->heap_.reserve(options.slots);
  p->free_.reserve(options.slots);
  for (size_t i = options.slots; i-- > 0;) p->free_.push_back(static_cast<uint32_t>(i));
  return p;
}

bool FaultPort::silenced() const noexcept {
  if (cut_) return true;
  if (opt_.blackout_length.count() <= 0) return false;
  const int64_t t = now_ns_ - epoch_ns_ - opt_.blackout_start.count();
  return t >= 0 && t < opt_.blackout_length.count();
}

size_t FaultPort::send_burst(std::span<const DatagramOut> out) noexcept {
  DatagramOut now_batch[64];
  size_t now_count = 0;
  for (const DatagramOut& d : out) {
    ++stats_.sent;
    if (!cut_ && opt_.cut_after && sent_bytes_ + d.size() > opt_.cut_after) cut_ = true;
    if (cut_) {
      ++stats_.cut_drops;
      continue;
    }
    sent_bytes_ += d.size();
    if (silenced()) {
      ++stats_.blackout_drops;
      continue;
    }
    if (opt_.drop > 0 && uniform() < opt_.drop) {
      ++stats_.dropped;
      continue;
    }
    const bool dup = opt_.dup > 0 && uniform() < opt_.dup;
    stats_.duplicated += dup;
    for (int copy = 0; copy <= int{dup}; ++copy) {
      emit(d, now_batch, now_count);
      if (now_count + 2 > std::size(now_batch)) {
        inner_->send_burst({now_batch, now_count});
        now_count = 0;
      }
    }
  }
  if (now_count) inner_->send_burst({now_batch, now_count});
  return out.size();
}

// Through the bottleneck queue, then the delay line; what is due now joins now_batch.
void FaultPort::emit(const DatagramOut& d, DatagramOut* now_batch, size_t& now_count) noexcept {
  double release = static_cast<double>(now_ns_);
  if (opt_.rate > 0) {
    const double wire = static_cast<double>(d.size() + opt_.overhead);
    const double backlog_ns = std::max(0.0, link_free_ns_ - release);
    if (backlog_ns * opt_.rate * 1e-9 + wire > static_cast<double>(opt_.queue)) {
      ++stats_.queue_drops;
      return;
    }
    // The schedule may lag `now` by up to a bucket's worth of tokens: that much leaves at once.
    const double bucket_ns = static_cast<double>(opt_.burst) * 1e9 / opt_.rate;
    link_free_ns_ = std::max(link_free_ns_, release - bucket_ns) + wire * 1e9 / opt_.rate;
    release = std::max(release, link_free_ns_);
  }
  release += static_cast<double>(opt_.delay.count());
  if (opt_.jitter.count() > 0) release += uniform() * static_cast<double>(opt_.jitter.count());
  if (opt_.reorder > 0 && uniform() < opt_.reorder) {
    release += static_cast<double>(opt_.reorder_gap.count());
    ++stats_.reordered;
  }
  const auto at = static_cast<int64_t>(release);
  if (at <= now_ns_) {
    now_batch[now_count++] = d;
  } else {
    hold(d, at);
  }
}

void FaultPort::hold(const DatagramOut& d, int64_t release) noexcept {
  if (free_.empty() || d.size() > slot_bytes_) {
    ++stats_.hold_drops;
    return;
  }
  const uint32_t s = free_.back();
  free_.pop_back();
  uint8_t* p = slab_.data() + size_t{s} * slot_bytes_;
  if (!d.head.empty()) std::memcpy(p, d.head.data(), d.head.size());
  if (!d.body.empty()) std::memcpy(p + d.head.size(), d.body.data(), d.body.size());
  len_[s] = static_cast<uint32_t>(d.size());
  release_[s] = release;
  order_[s] = next_order_++;
  heap_.push_back(s);
  std::push_heap(heap_.begin(), heap_.end(), [this](uint32_t a, uint32_t b) {
    return release_[a] != release_[b] ? release_[a] > release_[b] : order_[a] > order_[b];
  });
}

size_t FaultPort::release_due() noexcept {
  const auto later = [this](uint32_t a, uint32_t b) {
    return release_[a] != release_[b] ? release_[a] > release_[b] : order_[a] > order_[b];
  };
  size_t released = 0;
  while (!heap_.empty() && release_[heap_.front()] <= now_ns_) {
    DatagramOut batch[32];
    uint32_t slots[32];
    size_t n = 0;
    while (n < 32 && !heap_.empty() && release_[heap_.front()] <= now_ns_) {
      std::pop_heap(heap_.begin(), heap_.end(), later);
      const uint32_t s = heap_.back();
      heap_.pop_back();
      slots[n] = s;
      batch[n] = {{slab_.data() + size_t{s} * slot_bytes_, len_[s]}, {}};
      ++n;
    }
    // A link that went down meanwhile loses what was on it.
    if (silenced()) {
      (cut_ ? stats_.cut_drops : stats_.blackout_drops) += n;
    } else {
      inner_->send_burst({batch, n});
    }
    for (size_t i = 0; i < n; ++i) free_.push_back(slots[i]);
    released += n;
  }
  return released;
}

size_t FaultPort::progress(TimePoint now) noexcept {
  now_ns_ = ns_of(now);
  if (!started_) {
    started_ = true;
    epoch_ns_ = now_ns_;
  }
  return release_due() + inner_->progress(now);
}

TimePoint FaultPort::next_deadline() const noexcept {
  TimePoint t = inner_->next_deadline();
  if (!heap_.empty()) {
    t = std::min(t, TimePoint(std::chrono::duration_cast<Clock::duration>(
                        std::chrono::nanoseconds(release_[heap_.front()]))));
  }
  return t;
}

size_t FaultPort::recv_burst(std::span<DatagramIn> in) noexcept {
  if (!silenced()) return inner_->recv_burst(in);
  // Down both ways: what arrives is lost.
  for (;;) {
    const size_t n = inner_->recv_burst(in);
    (cut_ ? stats_.cut_drops : stats_.blackout_drops) += n;
    if (n < in.size()) return 0;
  }
}

}  // namespace ferry::dataplane::fault
