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

// `--codec auto`'s next effort, from the current one, the bytes queued toward the link when
// QEMU's next bytes arrive, and the share of the last ~100 ms the encoder was busy (< 0: not
// measured yet). Returns the current effort when nothing should change. Any thread.
int next_auto_effort(int effort, size_t backlog, double busy_fraction);

}  // namespace ferry::policy
