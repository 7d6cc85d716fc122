// policy/engine.cc — see engine.h.
#include "policy/engine.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "policy/effort.h"

namespace ferry::policy {
namespace {

// Weight of the newest rate sample: ~1 s memory at 100 ms steps, so one noisy sample does
// not flip a decision.
constexpr double kEwma = 0.3;
// D >= this x B counts as "dirtying as fast as we send".
constexpr double kTooFast = 0.9;
// The sampled dirty rate is judged once B has settled: `auto` encoding climbs its effort in
// the first seconds (B roughly doubles), and the sample counts every page touched in its 1 s
// window, so an early verdict called a converging 100 Mbit/s run (dirty 24.6 MB/s, sampled
// 31.5, B 22.9 at 3 s and ~40 later) non-converging.
constexpr double kSampleSettleS = 8.0;
// A 1 s sample can catch a burst: 30 Mbit/s pgbench once sampled 5.2 MB/s (0.93x the path),
// switched to post-copy and paused 338 ms, where its two other runs sampled 3.1 and converged.
// This many samples in a row, each in its own window, must read >= kTooFast x B.
constexpr size_t kSamplesThatAgree = 2;
// A pass must leave at least 5 % fewer bytes than the one before to count as progress.
constexpr double kShrink = 0.95;
// Effort changes at most every 2 s: each needs time to show in the rates.
constexpr double kEffortHoldS = 2.0;
// downtime-limit given to QEMU, as a fraction of the operator's budget.
constexpr double kDowntimeMargin = 0.5;
// B's spread is judged over this many samples (~3 s) once at least kSpreadMin are in;
// max-bandwidth and downtime-limit follow it (the limit within [kSpreadFloor, 1] x the
// margin), each changing only by >= 30 % and at most once a second (QEMU re-reads both every
// 100 ms).
constexpr size_t kSpreadWindow = 30;
constexpr size_t kSpreadMin = 10;
constexpr double kSpreadFloor = 0.2;
// QEMU's max-bandwidth: this much above B's 90th percentile.
constexpr double kCapHeadroom = 1.5;
constexpr double kSwitchoverStep = 1.3;
constexpr double kSwitchoverHoldS = 1.0;

std::string mb(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f MB", bytes / 1e6);
  return b;
}
std::string mbps(double bytes_per_s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f MB/s", bytes_per_s / 1e6);
  return b;
}
std::string pct(double f) {
  char b[16];
  std::snprintf(b, sizeof b, "%.0f %%", f * 100);
  return b;
}

}  // namespace

const char* action_name(Action a) {
  switch (a) {
    case Action::kSetEffort:
      return "set-effort";
    case Action::kSetMaxBandwidth:
      return "set-max-bandwidth";
    case Action::kSetDowntimeLimit:
      return "set-downtime-limit";
    case Action::kStartPostcopy:
      return "start-postcopy";
    case Action::kStop:
      return "stop";
    case Action::kRecover:
      return "recover";
  }
  return "?";
}

Engine::Engine(const Limits& limits) : limits_(limits) {}

void Engine::add(std::vector<Decision>& out, const Sample& s, Action a, double value,
                 std::string reason) {
  out.push_back({a, value, std::move(reason), s.time_s});
}

void Engine::update_rates(const Sample& s) {
  view_.dirty_bytes_per_s = s.qemu.dirty_pages_per_s * static_cast<double>(s.qemu.page_size_bytes);
  if (view_.dirty_bytes_per_s <= 0) view_.dirty_bytes_per_s = s.qemu.sampled_dirty_bytes_per_s;
  if (!have_prev_) return;
  const double dt = s.time_s - prev_.time_s;
  if (dt <= 0) return;
  // QEMU stream bytes carried: ferry's intake when it is in the path, else QEMU's own count.
  const uint64_t stream =
      s.ferry.bytes_from_qemu ? s.ferry.bytes_from_qemu : s.qemu.transferred_bytes;
  const uint64_t prev_stream =
      prev_.ferry.bytes_from_qemu ? prev_.ferry.bytes_from_qemu : prev_.qemu.transferred_bytes;
  const double b = static_cast<double>(stream - std::min(stream, prev_stream)) / dt;
  const double l = static_cast<double>(s.ferry.link_tx_bytes -
                                       std::min(s.ferry.link_tx_bytes, prev_.ferry.link_tx_bytes)) /
                   dt;
  auto ewma = [](double& v, double x) { v = v == 0 ? x : (1 - kEwma) * v + kEwma * x; };
  // B's spread counts only samples in which QEMU had more to send than the path carried:
  // at the end of a short pass the intake falls because QEMU ran out, not the path.
  if (b > 0 && static_cast<double>(prev_.qemu.remaining_bytes) >= 2 * b * dt) {
    recent_b_.push_back(b);
    if (recent_b_.size() > kSpreadWindow) recent_b_.erase(recent_b_.begin());
  }
  backlog_ = (1 - kEwma) * backlog_ + kEwma * static_cast<double>(s.ferry.link_backlog_bytes);
  ewma(view_.effective_bytes_per_s, b);
  ewma(view_.link_bytes_per_s, l > 0 ? l : b);
  const double margin = view_.effective_bytes_per_s - view_.dirty_bytes_per_s;
  view_.eta_s = margin > 0 ? static_cast<double>(s.qemu.remaining_bytes) / margin
                           : std::numeric_limits<double>::infinity();
}

std::vector<Decision> Engine::step(const Sample& s) {
  std::vector<Decision> out;
  if (stopped_) return out;
  update_rates(s);
  if (!started_) {
    started_ = true;
    // QEMU sizes the last pass from its recent bandwidth, measured in stream bytes; with
    // encoding the stream rate swings with page content (zero and text pages fly, random ones
    // crawl), so the last pass can take longer than QEMU predicted. Aim below the budget.
    const double limit = limits_.max_downtime_ms * kDowntimeMargin;
    downtime_limit_ms_ = limit;
    last_switchover_change_s_ = s.time_s;
    add(out, s, Action::kSetDowntimeLimit, limit,
        "downtime-limit set to " + std::to_string(static_cast<int>(limit)) + " ms, " +
            std::to_string(static_cast<int>(kDowntimeMargin * 100)) + " % of the " +
            std::to_string(static_cast<int>(limits_.max_downtime_ms)) +
            " ms budget (QEMU's estimate of the last pass is noisy)");
  }
  const bool precopy = s.qemu.status == "active" || s.qemu.status == "setup";
  if (precopy && s.time_s > limits_.deadline_s) {
    stopped_ = true;
    add(out, s, Action::kStop, 0,
        "deadline of " + std::to_string(static_cast<int>(limits_.deadline_s)) +
            " s passed in pre-copy with " + mb(static_cast<double>(s.qemu.remaining_bytes)) +
            " left");
    return out;
  }
  if (precopy) {
    if (s.qemu.dirty_sync_count > pass_) {
      pass_ = s.qemu.dirty_sync_count;
      on_pass_start(s, out);
      if (stopped_) return out;
    }
    predict_from_sample(s);
    // Post-copy at a local minimum of what is left. Within a pass QEMU's remaining only falls
    // (it grows at the next sync), so the minimum is the pass's end: switch once it is down to
    // a tenth of the pass's start, or at the latest at the start of the pass after the
    // prediction (what is left is then that pass's dirty set). A sample in which it did not
    // fall is QEMU stalled, not a minimum: in pass 1 the pages not yet sent include the top
    // of RAM, where the guest's kernel lives, and the guest faults on each one it touches.
    if (predicted_ && limits_.allow_postcopy && !postcopy_started_ && have_prev_) {
      const uint64_t start = pass_start_remaining_.empty() ? 0 : pass_start_remaining_.back();
      const bool same_pass = s.qemu.dirty_sync_count == prev_.qemu.dirty_sync_count;
      const bool low = same_pass && s.qemu.remaining_bytes <= start / 10;
      if (low || pass_ > predicted_at_pass_) {
        postcopy_started_ = true;
        add(out, s, Action::kStartPostcopy, 0,
            "pre-copy will not converge (" + predicted_why_ + "; predicted in pass " +
                std::to_string(predicted_at_pass_) + "): post-copy in pass " +
                std::to_string(pass_) + " from " + mb(static_cast<double>(s.qemu.remaining_bytes)) +
                (low ? " left, a tenth of the pass's " + mb(static_cast<double>(start))
                     : " left, the last pass's dirty set"));
      }
    }
    tune_effort(s, out);
    if (!postcopy_started_) tune_switchover(s, out);
  }
  prev_ = s;
  have_prev_ = true;
  return out;
}

void Engine::on_pass_start(const Sample& s, std::vector<Decision>& out) {
  const uint64_t remaining = s.qemu.remaining_bytes;
  pass_start_remaining_.push_back(remaining);
  view_.nonconvergence_predicted = predicted_;
  const size_t n = pass_start_remaining_.size();
  // QEMU measures D at each sync: judge from the second pass boundary on (pass 2 starts).
  if (predicted_ || pass_ < 2 || view_.effective_bytes_per_s <= 0) return;
  const bool too_fast = view_.dirty_bytes_per_s >= kTooFast * view_.effective_bytes_per_s;
  const bool no_shrink = n >= 3 &&
                         pass_start_remaining_[n - 1] >= kShrink * pass_start_remaining_[n - 2] &&
                         pass_start_remaining_[n - 2] >= kShrink * pass_start_remaining_[n - 3];
  const double left_s = limits_.deadline_s - s.time_s;
  const bool too_late = std::isfinite(view_.eta_s) ? view_.eta_s > left_s : true;
  if (!(too_fast || no_shrink || (too_late && view_.dirty_bytes_per_s > 0))) return;
  predict(s, out,
          too_fast ? "the guest dirties " + mbps(view_.dirty_bytes_per_s) +
                         " while the path carries " + mbps(view_.effective_bytes_per_s)
          : no_shrink
              ? "the bytes left at the start of the last passes did not shrink (" +
                    mb(static_cast<double>(pass_start_remaining_[n - 3])) + ", " +
                    mb(static_cast<double>(pass_start_remaining_[n - 2])) + ", " +
                    mb(static_cast<double>(pass_start_remaining_[n - 1])) + ")"
              : "converging at " + mbps(view_.effective_bytes_per_s - view_.dirty_bytes_per_s) +
                    " would take past the deadline");
}

// Pass 1 only, post-copy only: the sampled dirty rates against the B measured so far.
void Engine::predict_from_sample(const Sample& s) {
  if (s.qemu.dirty_rate_samples > dirty_samples_.size()) {
    dirty_samples_.push_back(s.qemu.sampled_dirty_bytes_per_s);
  }
  if (predicted_ || !limits_.allow_postcopy || pass_ > 1 ||
      dirty_samples_.size() < kSamplesThatAgree || s.time_s < kSampleSettleS ||
      view_.effective_bytes_per_s <= 0) {
    return;
  }
  const auto last = dirty_samples_.end() - kSamplesThatAgree;
  const double lowest = *std::min_element(last, dirty_samples_.end());
  if (lowest < kTooFast * view_.effective_bytes_per_s) return;
  std::string rates;
  for (auto it = last; it != dirty_samples_.end(); ++it) {
    rates += (rates.empty() ? "" : ", ") + mbps(*it);
  }
  predicted_ = true;
  predicted_at_pass_ = pass_;
  view_.nonconvergence_predicted = true;
  predicted_why_ = "sampled in pass 1: the guest dirties " + rates + " in the last " +
                   std::to_string(kSamplesThatAgree) + " samples while the path carries " +
                   mbps(view_.effective_bytes_per_s);
}

void Engine::predict(const Sample& s, std::vector<Decision>& out, const std::string& why) {
  predicted_ = true;
  predicted_at_pass_ = pass_;
  view_.nonconvergence_predicted = true;
  predicted_why_ = why;
  const double left_s = limits_.deadline_s - s.time_s;
  if (limits_.allow_postcopy) return;  // step() switches at the next local minimum
  // Nothing can finish: QEMU's throttle (if allowed) gets until the deadline; otherwise stop.
  if (limits_.allow_throttle && std::isfinite(left_s) && left_s > 0) return;
  stopped_ = true;
  add(out, s, Action::kStop, 0,
      "pre-copy cannot finish within the " +
          std::to_string(static_cast<int>(limits_.max_downtime_ms)) +
          " ms downtime budget: " + why + "; post-copy is not allowed" +
          (limits_.allow_throttle ? "" : " and neither is throttling"));
}

// Encoding effort: heavier encoding only helps while the link is the bottleneck and costs
// CPU that the guest and QEMU need. Starved CPU (< 10 % idle) while the link waits and the
// encoder was busy (> 80 % of the interval) means the encoder holds the migration back: one
// step lighter. A starved host whose encoder idles waits for QEMU (a TCG guest alone can keep
// the host busy): lighter encoding would only put more bytes out. CPU to spare (> 30 % idle)
// while bytes wait for the link: one step heavier (once the engine has taken over). The steps
// skip 2 as the codec's own `auto` does (effort.cc).
void Engine::tune_effort(const Sample& s, std::vector<Decision>& out) {
  if (s.ferry.effort < 0 || !have_prev_ || s.time_s < 1.0) return;  // no encoding; no rates yet
  // Its own rule sees the same signals at every read and climbs back; a step here would pin
  // the effort (measured at 1 Gbit/s: pinned at 1 after 1.1 s, 111 MB against 77 MB).
  if (limits_.codec_adapts) return;
  const int current = effort_ >= 0 ? effort_ : s.ferry.effort;
  if (s.time_s - last_effort_change_s_ < kEffortHoldS) return;
  // The same thresholds as the encoder's own `auto` (effort.h), on the smoothed backlog.
  const bool link_waits = backlog_ < static_cast<double>(kBacklogLinkWaits);
  const bool link_limits = backlog_ > static_cast<double>(kBacklogLinkLimits);
  const double ratio = s.ferry.page_bytes_in
                           ? static_cast<double>(s.ferry.page_wire_bytes) / s.ferry.page_bytes_in
                           : 1.0;
  const double dt = s.time_s - prev_.time_s;
  const double encoder_busy =
      dt > 0 ? static_cast<double>(s.ferry.encode_ns -
                                   std::min(s.ferry.encode_ns, prev_.ferry.encode_ns)) /
                   (dt * 1e9)
             : 0;
  int next = current;
  std::string reason;
  if (s.cpu_idle < 0.10 && link_waits && encoder_busy > kEncoderBottleneckBusy &&
      current > limits_.min_effort) {
    next = std::max(current == 3 ? 1 : current - 1, limits_.min_effort);
    reason = "host CPU " + pct(s.cpu_idle) + " idle, the encoder " + pct(encoder_busy) +
             " busy and the " + mbps(view_.link_bytes_per_s) + " link waiting for it (ratio " +
             std::to_string(ratio).substr(0, 5) + "): encoding effort " + std::to_string(current) +
             " -> " + std::to_string(next);
  } else if (effort_ >= 0 && s.cpu_idle > 0.30 && link_limits && current < limits_.max_effort) {
    // Only once the engine has taken over (after a starvation step); until then the codec's
    // own `auto` already climbs while the link is the bottleneck.
    next = std::min(current == 1 ? 3 : current + 1, limits_.max_effort);
    reason = "host CPU " + pct(s.cpu_idle) + " idle and " + mb(backlog_) + " waiting for the " +
             mbps(view_.link_bytes_per_s) + " link: encoding effort " + std::to_string(current) +
             " -> " + std::to_string(next);
  }
  if (next == current) return;
  effort_ = next;
  last_effort_change_s_ = s.time_s;
  add(out, s, Action::kSetEffort, next, reason);
}

// QEMU switches over once what is left fits downtime-limit at its bandwidth of the last
// 100 ms. ferry's stream rate swings with page content (zero, same and text pages fly through
// the encoder, random or fresh ones crawl), so that bandwidth may be a burst while the last
// dirty set drains at the low end: the pause then runs burst/low times longer than QEMU meant
// (1 Gbit/s redis, encoder-bound, B 100-320 MB/s: 509 ms for a 300 ms budget; 100 Mbit/s
// random pages after a burst of unchanged ones: 18 MB planned for 122 ms, 1716 ms). Two knobs:
// max-bandwidth caps what QEMU can measure at 1.5x B's 90th percentile over ~3 s (bursts
// above it are only paced, the link is not the limit then), and downtime-limit is scaled by
// low / cap (low = B's 10th percentile): a set QEMU sizes at the cap still drains within the
// budget at the low end.
void Engine::tune_switchover(const Sample& s, std::vector<Decision>& out) {
  if (recent_b_.size() < kSpreadMin || s.time_s - last_switchover_change_s_ < kSwitchoverHoldS) {
    return;
  }
  std::vector<double> sorted = recent_b_;
  std::sort(sorted.begin(), sorted.end());
  const double low = sorted[sorted.size() / 10];
  const double high = sorted[sorted.size() - 1 - sorted.size() / 10];
  if (high <= 0) return;
  const double cap = kCapHeadroom * high;
  bool changed = false;
  if (cap_ <= 0 || cap > cap_ * kSwitchoverStep || cap * kSwitchoverStep < cap_) {
    char why[400];
    std::snprintf(why, sizeof why,
                  "max-bandwidth %s: %.2fx the path's 90th percentile (%s over the last %zu "
                  "samples), so QEMU's bandwidth estimate, from which it sizes the last pass, "
                  "cannot follow a burst of pages that encode to almost nothing",
                  mbps(cap).c_str(), kCapHeadroom, mbps(high).c_str(), recent_b_.size());
    cap_ = cap;
    changed = true;
    add(out, s, Action::kSetMaxBandwidth, cap, why);
  }
  const double spread = std::clamp(low / cap_, kSpreadFloor, 1.0);
  const double target = limits_.max_downtime_ms * kDowntimeMargin * spread;
  if (changed) last_switchover_change_s_ = s.time_s;
  if (target < downtime_limit_ms_ * kSwitchoverStep &&
      target * kSwitchoverStep > downtime_limit_ms_) {
    return;  // within 30 %: not worth a change (B is sampled coarsely)
  }
  char why[400];
  std::snprintf(why, sizeof why,
                "downtime-limit %.0f -> %.0f ms: the path carries %s at its low end (10th "
                "percentile of the last %zu samples) while QEMU may measure up to %s, so the "
                "last pass may drain %.1fx slower than QEMU plans (%.0f %% of the %.0f ms budget "
                "x %.2f)",
                downtime_limit_ms_, target, mbps(low).c_str(), recent_b_.size(), mbps(cap_).c_str(),
                cap_ / low, kDowntimeMargin * 100, limits_.max_downtime_ms, spread);
  downtime_limit_ms_ = target;
  last_switchover_change_s_ = s.time_s;
  add(out, s, Action::kSetDowntimeLimit, target, why);
}

}  // namespace ferry::policy
