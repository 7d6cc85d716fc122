// dataplane/engine.h — the polling engine: pollers registered on one engine run to completion
// on the engine's thread, in registration order, every iteration. A poller does one step of
// its own fixed order (for a channel: link receive with the return path first, QEMU read
// within credits, encode, link transmit, reap, progress(now)) and says how much work it did.
//
// Modes:
//   busy      never sleeps (a dedicated core).
//   adaptive  spins while any poller has work; after spin_idle idle iterations in a row it
//             sleeps on every poller's wait fds, at most until the earliest poller deadline
//             and never longer than max_sleep (no unbounded wait anywhere).
// One engine per thread; several channels may share one.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace ferry::dataplane {

enum class PollMode : uint8_t { kAdaptive, kBusy };

// "adaptive" | "busy"; anything else is an error naming both.
Result<PollMode> parse_poll_mode(const std::string& text);
const char* poll_mode_name(PollMode mode);

// What a poller sleeps on in adaptive mode.
class WaitSet {
 public:
  // events: kWait* bits (transport.h); fd < 0 or events == 0 is ignored.
  void add(int fd, uint32_t events);
  // Wake no later than t.
  void deadline(TimePoint t) {
    if (t < deadline_) deadline_ = t;
  }

  struct Entry {
    int fd;
    uint32_t events;
  };
  const std::vector<Entry>& entries() const { return entries_; }
  TimePoint earliest() const { return deadline_; }
  void clear() {
    entries_.clear();
    deadline_ = kNever;
  }

 private:
  std::vector<Entry> entries_;
  TimePoint deadline_ = kNever;
};

class Poller {
 public:
  virtual ~Poller() = default;
  // One step. Returns the work done (0 = idle: nothing moved, nothing was due).
  virtual size_t poll(TimePoint now) noexcept = 0;
  // Adaptive mode, after an idle step: the fds and deadline that should wake this poller.
  virtual void add_waits(WaitSet& set) noexcept = 0;
  // Finished pollers are dropped from the engine (the channel ended or failed).
  virtual bool finished() const noexcept = 0;
};

struct EngineOptions {
  PollMode mode = PollMode::kAdaptive;
  // Idle iterations before sleeping: a few only, since on a small host the cores a spinning
  // pump burns are the ones the QEMUs need.
  unsigned spin_idle = 8;
  std::chrono::milliseconds max_sleep{100};  // the longest single sleep
};

// Counters the owner may read after run() (or racily, for progress).
struct EngineCounters {
  std::atomic<uint64_t> iterations{0};
  std::atomic<uint64_t> idle_iterations{0};
  std::atomic<uint64_t> sleeps{0};
};

class Engine {
 public:
  explicit Engine(EngineOptions options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Before run(), from the owning thread. The engine does not own the poller.
  void add(Poller& poller);
  // Runs until every poller finished or stop() was called; returns at once if it has none.
  void run();
  // Any thread: makes run() return soon (within one iteration or sleep).
  void stop() noexcept;
  bool stopping() const noexcept { return stop_.load(std::memory_order_relaxed); }

  const EngineCounters& counters() const { return counters_; }
  const EngineOptions& options() const { return options_; }

 private:
  void sleep_until_work(TimePoint now);

  EngineOptions options_;
  std::vector<Poller*> pollers_;
  WaitSet waits_;
  std::atomic<bool> stop_{false};
  int wake_fd_ = -1;  // eventfd: stop() wakes a sleeping engine
  EngineCounters counters_;
};

}  // namespace ferry::dataplane
