// policy/simulator.cc — see simulator.h.
#include "policy/simulator.h"

#include <algorithm>
#include <tuple>

namespace ferry::policy {

SimResult simulate(const SimConfig& c, const Limits& limits) {
  Engine engine(limits);
  SimResult r;
  int effort = c.start_effort;
  double dirty_rate = c.dirty_bytes_per_s;
  double downtime_limit_ms = 300;  // QEMU's default until the engine sets it
  double max_bandwidth = 1e30;     // QEMU's max-bandwidth (ferry migrate lifts the default)
  double remaining = c.ram_bytes;  // of the current pass
  double next_set = 0;             // dirtied since the pass began
  double pass_start = remaining;
  uint64_t pass = 1;
  bool postcopy = false;
  double stream = 0, wire = 0, transferred = 0;
  double dirty_rate_seen = 0;  // QEMU reports the rate measured at the last sync
  double encode_s = 0;         // the encoder's busy time so far
  // Returns B now, the wire ratio and the mean B (without the content swing).
  auto rate = [&](double t, double& cpu_idle) {
    const int e = std::clamp(effort, 0, SimConfig::kEfforts - 1);
    const double ratio = effort < 0 ? 1.0 : c.ratio[e];
    const double cpu = effort < 0 ? 1e30 : c.encode_bytes_per_s[e] * c.cores_for_encoding;
    const double mean = std::min({c.link_bytes_per_s / ratio, cpu, c.qemu_bytes_per_s});
    const bool high = c.swing > 0 && static_cast<int64_t>(t / c.swing_period_s) % 2 == 0;
    double b = c.swing > 0 ? mean * (high ? 1 + c.swing : 1 - c.swing) : mean;
    const int64_t step = static_cast<int64_t>(t / c.step_s + 0.5);
    const int64_t every = static_cast<int64_t>(c.burst_every_s / c.step_s + 0.5);
    if (every > 0 && step % every == every - 1) b *= c.burst_factor;
    b = std::min(b, max_bandwidth);
    const double enc_cores = effort < 0 ? 0 : mean / c.encode_bytes_per_s[e];
    cpu_idle = std::clamp(1 - (c.other_cpu_cores + enc_cores) / c.host_cores, 0.0, 1.0);
    return std::tuple{b, ratio, mean};
  };
  for (double t = 0; t < c.time_limit_s; t += c.step_s) {
    double cpu_idle = 1;
    auto [b, ratio, mean_b] = rate(t, cpu_idle);
    r.min_cpu_idle = std::min(r.min_cpu_idle, cpu_idle);

    Sample s;
    s.time_s = t;
    s.cpu_idle = cpu_idle;
    s.qemu.status = postcopy ? "postcopy-active" : "active";
    s.qemu.transferred_bytes = static_cast<uint64_t>(transferred);
    s.qemu.remaining_bytes = static_cast<uint64_t>(remaining);
    s.qemu.total_bytes = static_cast<uint64_t>(c.ram_bytes);
    s.qemu.dirty_pages_per_s = dirty_rate_seen / 4096;
    s.qemu.dirty_sync_count = pass;
    if (c.sampled_dirty_from_s >= 0 && t >= c.sampled_dirty_from_s - c.step_s / 2) {
      const auto n = 1 + static_cast<uint64_t>((t - c.sampled_dirty_from_s + c.step_s / 2) /
                                               c.sampled_dirty_every_s);
      const bool first = n == 1 && c.sampled_dirty_first_factor >= 0;
      s.qemu.dirty_rate_samples = n;
      s.qemu.sampled_dirty_bytes_per_s =
          c.dirty_bytes_per_s * (first ? c.sampled_dirty_first_factor : c.sampled_dirty_factor);
    }
    s.ferry.bytes_from_qemu = static_cast<uint64_t>(stream);
    s.ferry.link_tx_bytes = static_cast<uint64_t>(wire);
    s.ferry.page_bytes_in = static_cast<uint64_t>(stream);
    s.ferry.page_wire_bytes = static_cast<uint64_t>(wire);
    s.ferry.effort = effort;
    // Link-bound when the encoder and QEMU could feed more than the link takes.
    const double encoder_cpu =
        effort < 0 ? 1e30
                   : c.encode_bytes_per_s[std::clamp(effort, 0, SimConfig::kEfforts - 1)] *
                         c.cores_for_encoding;
    const bool link_bound = c.link_bytes_per_s / ratio < std::min(encoder_cpu, c.qemu_bytes_per_s);
    s.ferry.link_backlog_bytes = link_bound ? (1u << 20) : 0;
    s.ferry.encode_ns = static_cast<uint64_t>(encode_s * 1e9);
    if (effort >= 0) encode_s += c.step_s * std::min(1.0, mean_b / encoder_cpu);
    for (const Decision& d : engine.step(s)) {
      r.decisions.push_back(d);
      switch (d.action) {
        case Action::kSetEffort:
          effort = static_cast<int>(d.value);
          break;
        case Action::kSetDowntimeLimit:
          downtime_limit_ms = d.value;
          break;
        case Action::kSetMaxBandwidth:
          max_bandwidth = d.value;
          break;
        case Action::kStartPostcopy:
          if (!postcopy) {
            postcopy = true;
            r.postcopy = true;
            r.postcopy_at_pass = pass;
            r.postcopy_left_bytes = remaining;
            r.pass_start_bytes = pass_start;
            // Final sync, then only the device state stops the guest.
            remaining += next_set;
            next_set = 0;
            r.downtime_ms = (c.device_state_bytes / b) * 1000;
          }
          break;
        case Action::kRecover:  // the engine never decides it: ferry migrate's own
          break;
        case Action::kStop:
          r.outcome = "stopped";
          r.total_time_s = t;
          r.link_bytes = wire;
          r.passes = pass;
          r.final_effort = effort;
          return r;
      }
    }
    if (engine.view().nonconvergence_predicted && r.predicted_at_pass == 0) {
      r.predicted_at_pass = pass;
    }

    // Send for one step.
    const bool stalled =
        c.stall_from_s >= 0 && t >= c.stall_from_s && t < c.stall_from_s + c.stall_s;
    const double sent = stalled ? 0 : std::min(remaining, b * c.step_s);
    remaining -= sent;
    stream += sent;
    transferred += sent;
    wire += sent * ratio;
    if (postcopy) {
      if (remaining <= 0) {
        r.outcome = "completed";
        r.total_time_s = t + c.step_s;
        break;
      }
      continue;
    }
    next_set = std::min(c.ws_bytes, next_set + dirty_rate * c.step_s);
    // QEMU's check, every step: what is left (this pass's rest and what was dirtied since its
    // start) fits downtime-limit at the rate it just measured -> sync and stop the guest.
    // (QEMU compares only the RAM left with its threshold; the device state comes on top.)
    const double bytes_at_stop = remaining + next_set + c.device_state_bytes;
    if ((remaining + next_set) / b * 1000 <= downtime_limit_ms) {
      next_set += remaining;
      remaining = 0;
      const double drain = mean_b * (1 - c.swing);
      const double downtime_ms = bytes_at_stop / drain * 1000;
      stream += next_set;
      wire += next_set * ratio;
      r.downtime_ms = downtime_ms;
      r.outcome = "completed";
      r.total_time_s = t + c.step_s + downtime_ms / 1000;
      break;
    }
    if (remaining > 0) continue;
    // Sync: QEMU measures the dirty rate; the next pass sends what was dirtied.
    dirty_rate_seen = dirty_rate;
    remaining = next_set;
    pass_start = remaining;
    next_set = 0;
    ++pass;
    if (limits.allow_throttle && pass >= 3) dirty_rate *= 0.8;
  }
  if (r.outcome.empty()) {
    r.outcome = "timeout";
    r.total_time_s = c.time_limit_s;
  }
  r.link_bytes = wire;
  r.passes = pass;
  r.final_effort = effort;
  return r;
}

}  // namespace ferry::policy
