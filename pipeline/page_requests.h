// pipeline/page_requests.h — how long the destination QEMU's post-copy page requests wait
// (issue 19), matched by page on either side of the link, on whichever channel the page
// comes (main, preempt, multifd):
//   ferry recv: from a REQ_PAGES / REQ_PAGES_ID passing through on the return path until
//               every page of the range was handed to the destination QEMU (ferry's part);
//   ferry send: from the request written to the source QEMU until QEMU wrote the pages (the
//               source's part). A page QEMU had written before the request does not answer
//               it: such requests stay open here (QEMU does not send a page twice).
//
// QEMU's own postcopy-blocktime also counts the destination's fault handling and, under TCG,
// its vCPU threads. One per ChannelSet, shared by its channels' taps (stream_stats.h).
//
// Thread safety: request() and page() may be called from any pump thread; summary() from any
// thread. page() is on the per-page path: with no request open it costs one relaxed load.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"

namespace ferry::pipeline {

class PageRequestTracker {
 public:
  // target_page_size: the granularity of QEMU's page records (4096 on x86). forget_after:
  // how long a request may stay open (kForgetAfter, or shorter where most never close).
  explicit PageRequestTracker(uint32_t target_page_size = 4096,
                              std::chrono::milliseconds forget_after = kForgetAfter);

  // The destination asked for [start, start + length) of block (length is the block's host
  // page size: one or more target pages). A request for pages not yet seen opens an entry.
  void request(std::string_view block, uint64_t start, uint32_t length, TimePoint now);
  // The page at offset of block was handed to the destination QEMU: closes every open
  // request whose last missing page it was. Pages nobody asked for change nothing.
  // preempt: it came on the postcopy-preempt channel (sent because it was asked for), else
  // on the main or a multifd channel (mostly bulk QEMU had sent before the request).
  void page(std::string_view block, uint64_t offset, TimePoint now, bool preempt = false) noexcept;
  void page(std::string_view block, uint64_t offset, bool preempt) noexcept {
    if (open_count_.load(std::memory_order_relaxed) == 0) return;
    page(block, offset, Clock::now(), preempt);
  }

  struct Summary {
    uint64_t requests = 0;    // REQ_PAGES(_ID) seen
    uint64_t answered = 0;    // whose pages all arrived
    uint64_t by_preempt = 0;  // of them, whose last page came on the preempt channel
    uint64_t open = 0;        // still waiting (never answered when read at the end)
    uint64_t dropped = 0;     // open for forget_after, or beyond kMaxOpen: stopped counting
    double p50_ms = 0, p99_ms = 0, max_ms = 0, mean_ms = 0;  // of the answered ones
  };
  Summary summary() const;

  // The first kTimelineMax requests in the order they came: when (the host's monotonic
  // clock, which the benchmark's tick stamps also use), the page asked for (its offset in its
  // block), how long it waited (negative: not answered) and whether its last page came on the
  // preempt channel. The runner lines them up with the guest's ticks: how many faults the
  // guest waited on before its first tick after the switch, for which pages, on which path.
  struct TimelineEntry {
    TimePoint at{};
    uint64_t offset = 0;
    float wait_ms = -1;
    bool preempt = false;
  };
  std::vector<TimelineEntry> timeline() const;
  static constexpr size_t kTimelineMax = 1024;
  // Requests open now (any thread).
  uint32_t open() const noexcept { return open_count_.load(std::memory_order_relaxed); }

  // Requests open at once beyond which the oldest is forgotten (QEMU keeps a handful: one
  // per faulting vCPU plus its own prefetch; a request whose page never comes again, e.g.
  // one already written when QEMU faulted, must not grow the table).
  static constexpr size_t kMaxOpen = 4096;
  // A request still open this long is forgotten when the next one comes (counted as dropped):
  // post-copy answers in milliseconds to a few seconds.
  static constexpr std::chrono::seconds kForgetAfter{30};

 private:
  struct Open {
    std::string block;
    uint64_t start = 0, end = 0;  // byte range [start, end)
    TimePoint since{};
    std::vector<bool> got;  // per target page
    uint32_t missing = 0;
    size_t timeline_index = SIZE_MAX;  // its entry in timeline_, if it has one
  };

  const uint32_t tp_;
  const std::chrono::milliseconds forget_after_;
  std::atomic<uint32_t> open_count_{0};
  mutable std::mutex mu_;
  std::vector<Open> open_;
  std::vector<float> waits_ms_;  // answered requests, in the order they were answered
  std::vector<TimelineEntry> timeline_;
  uint64_t requests_ = 0, dropped_ = 0, by_preempt_ = 0;
};

}  // namespace ferry::pipeline
