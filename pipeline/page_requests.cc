// pipeline/page_requests.cc — see page_requests.h.
#include "pipeline/page_requests.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace ferry::pipeline {

PageRequestTracker::PageRequestTracker(uint32_t target_page_size,
                                       std::chrono::milliseconds forget_after)
    : tp_(target_page_size ? target_page_size : 4096), forget_after_(forget_after) {}

void PageRequestTracker::request(std::string_view block, uint64_t start, uint32_t length,
                                 TimePoint now) {
  const uint64_t first = start / tp_ * tp_;
  const uint64_t end = start + std::max<uint32_t>(length, 1);
  const uint64_t pages = (end - first + tp_ - 1) / tp_;
  std::lock_guard lk(mu_);
  ++requests_;
  // Oldest first: a request unanswered for forget_after will not be (its page reached QEMU
  // before the request passed here), and every page scans the table.
  size_t stale = 0;
  while (stale < open_.size() && now - open_[stale].since > forget_after_) ++stale;
  if (stale == 0 && open_.size() >= kMaxOpen) stale = 1;
  open_.erase(open_.begin(), open_.begin() + static_cast<ptrdiff_t>(stale));
  dropped_ += stale;
  Open o;
  o.block.assign(block);
  o.start = first;
  o.end = first + pages * tp_;
  o.since = now;
  o.got.assign(pages, false);
  o.missing = static_cast<uint32_t>(pages);
  if (timeline_.size() < kTimelineMax) {
    o.timeline_index = timeline_.size();
    timeline_.push_back({now, start, -1, false});
  }
  open_.push_back(std::move(o));
  open_count_.store(static_cast<uint32_t>(open_.size()), std::memory_order_relaxed);
}

void PageRequestTracker::page(std::string_view block, uint64_t offset, TimePoint now,
                              bool preempt) noexcept {
  std::lock_guard lk(mu_);
  for (auto it = open_.begin(); it != open_.end();) {
    Open& o = *it;
    if (offset < o.start || offset >= o.end || o.block != block) {
      ++it;
      continue;
    }
    const size_t i = (offset - o.start) / tp_;
    if (!o.got[i]) {
      o.got[i] = true;
      --o.missing;
    }
    if (o.missing == 0) {
      const float wait = std::chrono::duration<float, std::milli>(now - o.since).count();
      waits_ms_.push_back(wait);
      if (preempt) ++by_preempt_;
      if (o.timeline_index != SIZE_MAX) {
        timeline_[o.timeline_index].wait_ms = wait;
        timeline_[o.timeline_index].preempt = preempt;
      }
      it = open_.erase(it);
    } else {
      ++it;
    }
  }
  open_count_.store(static_cast<uint32_t>(open_.size()), std::memory_order_relaxed);
}

std::vector<PageRequestTracker::TimelineEntry> PageRequestTracker::timeline() const {
  std::lock_guard lk(mu_);
  return timeline_;
}

PageRequestTracker::Summary PageRequestTracker::summary() const {
  std::vector<float> w;
  Summary s;
  {
    std::lock_guard lk(mu_);
    w = waits_ms_;
    s.requests = requests_;
    s.open = open_.size();
    s.dropped = dropped_;
    s.by_preempt = by_preempt_;
  }
  s.answered = w.size();
  if (w.empty()) return s;
  std::sort(w.begin(), w.end());
  // Nearest rank: the smallest wait that at least p of the requests did not exceed.
  auto rank = [&](double p) {
    size_t k = static_cast<size_t>(std::ceil(p * static_cast<double>(w.size())));
    return static_cast<double>(w[std::clamp<size_t>(k, 1, w.size()) - 1]);
  };
  s.p50_ms = rank(0.50);
  s.p99_ms = rank(0.99);
  s.max_ms = w.back();
  double sum = 0;
  for (float x : w) sum += x;
  s.mean_ms = sum / static_cast<double>(w.size());
  return s;
}

}  // namespace ferry::pipeline
