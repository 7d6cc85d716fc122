// policy/effort.cc — see effort.h.
#include "policy/effort.h"

#include <iterator>

#include "encoders/page_codec.h"

namespace ferry::policy {

// Heavier encoding while the link is the bottleneck (bytes pile up toward it), lighter while
// the link waits for the encoder. Never below fast (zero, same, delta, RLE cost little).
// The ladder skips 2 (per-page LZ4): the zstd stream (3) saves far more for little more CPU.
// It climbs while bytes pile up toward the link, but only onto a zstd rung the encoder can
// sustain: its busy share times the rung's CPU cost over the current one stays under 100 %
// (a backlog at 1 Gbit/s is often a burst: measured, climbing on it alone took zstd -9 and
// made the encoder the bottleneck, 1.8 s against 1.4 s for multifd zstd). LZMA2 (3x zstd -9)
// is taken only while zstd -9 keeps the thread under 25 % busy: a link several times slower
// than the encoder (climbing to it and back cost twice the CPU for no fewer bytes).
// It steps down once the link waits while encoding keeps the thread over 80 % busy (the
// encoder is now the slower side).
// Back at effort 1 (after the encoder was the bottleneck) the zstd stream returns as soon as
// the link is the bottleneck again, or once effort 1 keeps the thread so idle that zstd -1
// would stay under the step-down threshold: a fast link that waits for QEMU, not for ferry,
// then still gets the fewer bytes (measured at 1 Gbit/s: a migration that stayed at 1 after
// one step down put 99 MB out against 75-78 MB at 3).
int next_auto_effort(int effort, size_t backlog, double busy_fraction) {
  // CPU per byte of each effort over the rung below it (3 over 1): `ferry inspect
  // --simulate-codec` on a captured 512 MiB mix stream gives 866, 262, 212, 55, 19 MB/s at
  // efforts 1, 3, 4, 5, 6 (docs/ENCODING.md §6).
  constexpr double kCostOverBelow[] = {1, 1, 1, 3.0, 1.3, 3.5, 3.0};
  // A zstd rung while the encoder would still keep up on it; LZMA2 only with room to spare.
  constexpr double kClimbBusy = 1.0, kClimbBusyLzma = 0.75;
  constexpr double kZstd1CostOverFast = kCostOverBelow[3];
  // Back to 3 when it would not be stepped down again: efforts that alternate then share the
  // time where neither alone fits (each change is judged on a fresh ~100 ms window).
  constexpr double kHeadroom = kEncoderBottleneckBusy;
  constexpr int kMaxEffort = encoders::kMaxEffort;
  static_assert(std::size(kCostOverBelow) == kMaxEffort + 1);
  if (effort == 1 && busy_fraction >= 0 && busy_fraction * kZstd1CostOverFast < kHeadroom) {
    return 3;
  }
  if (backlog > kBacklogLinkLimits && effort < kMaxEffort) {
    if (effort == 1) return 3;
    // busy_fraction < 0 (not measured yet) lets only the cheap rung (4) be taken.
    const int up = effort + 1;
    const double cost = kCostOverBelow[up];
    const double limit = up == kMaxEffort ? kClimbBusyLzma : kClimbBusy;
    if (busy_fraction < 0 ? cost < 2 : busy_fraction * cost < limit) return up;
  }
  if (backlog < kBacklogLinkWaits && busy_fraction > kEncoderBottleneckBusy && effort > 1) {
    return effort == 3 ? 1 : effort - 1;
  }
  return effort;
}

}  // namespace ferry::policy
