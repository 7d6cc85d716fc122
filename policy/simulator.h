// policy/simulator.h — a fluid model of one QEMU migration through ferry, stepped every 100 ms,
// that feeds the Engine the samples `ferry migrate` would and applies its decisions. Unit tests
// use it to check each decision deterministically (tests/unit/policy/).
//
// Model: pre-copy sends the dirty set of each pass at B = min(link / ratio[effort],
// encoder speed[effort] x cores for encoding) QEMU-stream bytes per second, while the guest
// dirties D bytes per second into the next pass's set (capped at the working set). Every step
// QEMU checks, as it does, whether the RAM still to send (the pass's rest and what was dirtied
// since) fits its downtime-limit at the rate of that step; if so it stops the guest, and the
// downtime is that RAM plus the device state at the drain rate. With a content swing the rate
// alternates around B and a burst step multiplies it; the last set drains at the low end.
// QEMU's max-bandwidth (set by the engine) caps the rate it sends and measures. Post-copy: a
// short stop for device state, then everything left drains at B while the guest
// runs on the destination. auto-converge (when allowed) cuts D by 20 % per pass from the third
// pass on. Host CPU idle = what the other load and the encoder leave.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "policy/engine.h"

namespace ferry::policy {

struct SimConfig {
  double ram_bytes = 1024.0 * (1 << 20);
  double ws_bytes = 256.0 * (1 << 20);
  double dirty_bytes_per_s = 20e6;
  double link_bytes_per_s = 12.5e6;  // on the wire (100 Mbit/s)
  // Wire bytes per stream byte, and single-core encoder speed (stream bytes/s), per effort
  // 0..6 (encoders/page_codec.h, pipeline/page_stream.h).
  static constexpr int kEfforts = 7;
  double ratio[kEfforts] = {1.0, 0.60, 0.50, 0.35, 0.30, 0.27, 0.25};
  double encode_bytes_per_s[kEfforts] = {8e9, 1.5e9, 800e6, 350e6, 180e6, 50e6, 18e6};
  double cores_for_encoding = 1.0;
  int host_cores = 2;
  double other_cpu_cores = 1.0;  // QEMU, the guest, the rest
  // Stream bytes/s QEMU can produce at most (its migration thread; slow under TCG).
  double qemu_bytes_per_s = 1e30;
  int start_effort = 1;  // -1: no encoding (ratio 1, no CPU)
  double device_state_bytes = 2e6;
  // From this time on the engine also gets sampled dirty rates (as `ferry migrate` takes
  // with QEMU's calc-dirty-rate in pass 1), a new one every sampled_dirty_every_s: the true
  // rate x sampled_dirty_factor, the first one x sampled_dirty_first_factor if that is set
  // (>= 0: a sample that caught a burst). < 0: never.
  double sampled_dirty_from_s = -1;
  double sampled_dirty_every_s = 1.2;
  double sampled_dirty_factor = 1.0;
  double sampled_dirty_first_factor = -1;
  // Content swing: the stream rate alternates every swing_period_s between B x (1 + swing) and
  // B x (1 - swing) (zero and text pages fly, random ones crawl). QEMU sizes the last pass
  // from the rate of its latest step; the last set drains at the low end (worst case).
  double swing = 0;
  double swing_period_s = 0.2;
  // Bursts: one step every burst_every_s carries burst_factor x B (a run of pages that encode
  // to nothing). QEMU checks at every step whether what is left fits its downtime-limit at
  // the rate of that step, as it does (it syncs early when the estimate fits).
  double burst_every_s = 0;
  double burst_factor = 1;
  // QEMU's stream stalls (sends nothing) for stall_s from stall_from_s on; < 0: never.
  double stall_from_s = -1;
  double stall_s = 0;
  double step_s = 0.1;
  double time_limit_s = 3600;
};

struct SimResult {
  std::string outcome;  // "completed", "stopped", "timeout"
  bool postcopy = false;
  double total_time_s = 0;
  double downtime_ms = 0;
  double link_bytes = 0;
  uint64_t passes = 0;
  int final_effort = 0;
  double min_cpu_idle = 1;
  std::vector<Decision> decisions;
  uint64_t predicted_at_pass = 0;  // first pass at which the engine saw non-convergence (0: never)
  uint64_t postcopy_at_pass = 0;
  double postcopy_left_bytes = 0;  // QEMU's remaining at the switch
  double pass_start_bytes = 0;     // ... and at the start of that pass
};

SimResult simulate(const SimConfig& config, const Limits& limits);

}  // namespace ferry::policy
