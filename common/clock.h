// common/clock.h — monotonic time in the units the code uses.
#pragma once

#include <chrono>
#include <cstdint>

namespace ferry {

// The one clock of timers, deadlines and rates (monotonic).
using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
// "No deadline": later than any real time point.
inline constexpr TimePoint kNever = TimePoint::max();

inline uint64_t now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// Milliseconds until deadline, for poll-style waits: 0 once it passed, never more than 2^30.
inline int ms_left(TimePoint deadline) {
  const TimePoint now = Clock::now();
  if (deadline <= now) return 0;
  const int64_t left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
  return static_cast<int>(left < (int64_t{1} << 30) ? left : (int64_t{1} << 30));
}

inline double now_seconds() { return static_cast<double>(now_ns()) * 1e-9; }

}  // namespace ferry
