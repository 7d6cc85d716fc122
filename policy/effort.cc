// policy/effort.cc — see effort.h.
#include "policy/effort.h"

#include "encoders/page_codec.h"

namespace ferry::policy {

// Heavier encoding while the link is the bottleneck (bytes pile up toward it), lighter while
// the link waits for the encoder. Never below fast (zero, same, delta, RLE cost little).
// The ladder skips 2 (per-page LZ4): once the link is the bottleneck the zstd stream (3)
// saves far more for little more CPU. It climbs while bytes still pile up toward the link
// (the encoder outruns it, so heavier encoding costs no time) and steps down once they do not
// while encoding keeps the thread over 80 % busy (the encoder is now the slower side).
// The top rung, LZMA2, costs about three times zstd -9 for 4-9 % fewer bytes: climbing to it
// and back would make the encoder the bottleneck half the time (measured: twice the CPU, no
// fewer bytes, a slower migration at 100 Mbit/s), so it is taken only while zstd -9 keeps the
// thread under 25 % busy — a link several times slower than the encoder.
// Back at effort 1 (after the encoder was the bottleneck) the zstd stream returns as soon as
// the link is the bottleneck again, or once effort 1 keeps the thread so idle that zstd -1
// (about 3x its CPU per byte, docs/BENCHMARKS.md) would stay well under the step-down
// threshold: a fast link that waits for QEMU, not for ferry, then still gets the fewer bytes.
int next_auto_effort(int effort, size_t backlog, double busy_fraction) {
  constexpr double kLzmaCostOverZstd9 = 3.0;
  constexpr double kZstd1CostOverFast = 3.0;
  constexpr double kHeadroom = 0.6;  // < kEncoderBottleneckBusy: no flapping between 1 and 3
  constexpr int kMaxEffort = encoders::kMaxEffort;
  if (effort == 1 && busy_fraction >= 0 && busy_fraction * kZstd1CostOverFast < kHeadroom) {
    return 3;
  }
  if (backlog > kBacklogLinkLimits && effort < kMaxEffort) {
    if (effort == 1) return 3;
    if (effort + 1 < kMaxEffort) return effort + 1;
    // busy_fraction < 0: not measured yet.
    if (busy_fraction >= 0 && busy_fraction * kLzmaCostOverZstd9 < 0.75) return effort + 1;
  }
  if (backlog < kBacklogLinkWaits && busy_fraction > kEncoderBottleneckBusy && effort > 1) {
    return effort == 3 ? 1 : effort - 1;
  }
  return effort;
}

}  // namespace ferry::policy
