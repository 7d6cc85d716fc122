// apps/stop_signals.h — SIGINT, SIGTERM and SIGHUP for ferry send and ferry recv. They are
// read on the thread that waits for the session (a signalfd), not in a handler, so that the
// decision can look at the session: in pre-copy a signal cancels the migration (QEMU sees it
// fail and the source keeps the VM); once post-copy began the VM's memory is split between
// the hosts, and one signal alone does not abandon it.
#pragma once

#include <functional>
#include <string>

#include "common/clock.h"
#include "pipeline/channel_set.h"

namespace ferry::apps {

class StopSignals {
 public:
  // Blocks the three signals in the calling thread and every thread it starts afterwards;
  // construct it before the session starts its threads.
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The next pending signal's name ("SIGTERM"), or nullptr. Never blocks.
  const char* take();

 private:
  int fd_ = -1;
};

// A second signal within this long after one that was refused in post-copy forces the stop.
inline constexpr std::chrono::seconds kForceWithin{5};

// The tick for a session's wait(): acts on a pending signal, then runs `then` (a progress
// line, or nothing). When it stops the session it calls `stop` and leaves the reason in
// `cancelled` (wait() returns after that).
std::function<void()> stop_on_signal(const char* command, StopSignals& signals,
                                     const pipeline::ChannelSet& set, std::function<void()> stop,
                                     std::function<void()> then, std::string& cancelled);

}  // namespace ferry::apps
