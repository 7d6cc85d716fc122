// policy/effort.h — the encoding-effort rules that run inside ferry send's encoder
// (`--codec auto`, pipeline/page_stream.h) between two reads from QEMU, and the link-backlog
// thresholds they share with the policy engine (engine.h).
//
// Pure: the caller measures (bytes queued toward the link, how busy encoding kept its thread)
// and applies the effort returned. Efforts are encoders/'s ladder (encoders/page_codec.h).
#pragma once

#include <cstddef>

namespace ferry::policy {

// Bytes ferry holds for the link. Above kBacklogLinkLimits the kernel's socket buffer is full:
// the link is the bottleneck, so heavier encoding costs no time. Below kBacklogLinkWaits the
// link is waiting for ferry.
inline constexpr size_t kBacklogLinkLimits = 64u << 10;
inline constexpr size_t kBacklogLinkWaits = 16u << 10;

// `--codec auto`'s first effort: the zstd -1 stream (what QEMU's multifd zstd does per channel).
// Link-bound or not, it puts ~40 % fewer bytes out than effort 1 at ~1/3 of its speed (still
// above 1 Gbit/s on one core); next_auto_effort steps down when the encoder is the bottleneck.
inline constexpr int kAutoFirstEffort = 3;

// Encoder busy share above which, with the link waiting, the encoder is the bottleneck.
inline constexpr double kEncoderBottleneckBusy = 0.8;

// `--codec auto`'s next effort, from the current one, the bytes queued toward the link when
// QEMU's next bytes arrive, and the share of the last ~100 ms the encoder was busy (< 0: not
// measured yet). Returns the current effort when nothing should change. Any thread.
int next_auto_effort(int effort, size_t backlog, double busy_fraction);

}  // namespace ferry::policy
