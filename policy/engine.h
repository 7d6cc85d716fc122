// policy/engine.h — the AdaMig policy engine, made concrete (DESIGN.md §4, docs/POLICY.md).
//
// Pure and deterministic: a Sample in (QEMU's query-migrate, ferry's counters, host CPU idle,
// about every 100 ms), Decisions out. No I/O, no clocks, no threads: `ferry migrate` feeds it
// and applies what it decides; the simulator (simulator.h) does the same in unit tests.
//
// Model. B = the QEMU-stream bytes per second the path carries (after ferry's encoding: the
// link's rate divided by the encoding ratio); D = the bytes per second the guest dirties
// (dirty-pages-rate x page size). Pre-copy converges when D stays well below B, so that each
// pass is shorter than the last, until what is left fits the downtime budget at rate B.
//
// Ladder of actions, cheapest first:
//   1. downtime-limit := 50 % of the operator's budget at the start (QEMU's estimate of the
//      last pass is noisy when encoding makes the stream rate swing). Then QEMU's sizing of
//      the last pass is bounded: it uses its bandwidth of the latest 100 ms, which may be a
//      burst, while the last dirty set may drain at the low end — so max-bandwidth := 1.5x
//      B's 90th percentile over the last 3 s, and downtime-limit := 50 % x (B's 10th
//      percentile / max-bandwidth);
//   2. encoding effort (a fixed codec only; `--codec auto` adapts by itself): lowered when the
//      host CPU is starved (< 10 % idle) while the link waits for ferry (its backlog is short)
//      and the encoder is > 80 % busy, raised back when the link limits again (backlog long)
//      and CPU is free (> 30 % idle);
//   3. switch to post-copy (if allowed) as soon as non-convergence is predicted, at a local
//      minimum of the remaining bytes (the end of a pass), not after a timeout;
//   4. stop (migrate_cancel: the VM keeps running on the source) with the reason when nothing
//      allowed can finish within the deadline.
// Non-convergence is predicted at a pass boundary (from the second on, once QEMU has measured
// D) when D >= 0.9 B, or when the bytes left at the start of the last two passes did not
// shrink by at least 5 %, or when converging at B - D would overrun the deadline. In the first
// pass, which on a slow link can take a minute, QEMU has no D yet; sampled estimates
// (QEMU's calc-dirty-rate, taken by `ferry migrate` one after another through pass 1) stand
// in for it once B has settled, and the last two samples >= 0.9 B each predict
// non-convergence too — then the switch to post-copy comes at pass 1's end (a tenth of it
// left), at the latest at the start of pass 2 (what is left is then just pass 1's dirty set),
// instead of a pass or two later. A sampled estimate only ever leads to post-copy, never to a
// stop: stopping waits for QEMU's own measurement.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ferry::policy {

struct Limits {
  double max_downtime_ms = 300;
  double deadline_s = 600;
  bool allow_postcopy = false;
  bool allow_throttle = false;  // QEMU's auto-converge is on: give it until the deadline
  int min_effort = 1;           // encoding effort range the engine may use (encoders/)
  int max_effort = 6;
  // The codec runs `--codec auto`: it already steps down every read when the encoder is the
  // bottleneck (policy/effort.h) and steps back up; the engine then leaves the effort to it.
  bool codec_adapts = false;
};

// One query-migrate, as the engine needs it.
struct QemuSample {
  std::string status;  // "setup", "active", "postcopy-active", "completed", ...
  uint64_t transferred_bytes = 0;
  uint64_t remaining_bytes = 0;
  uint64_t total_bytes = 0;
  double dirty_pages_per_s = 0;
  uint64_t page_size_bytes = 4096;
  uint64_t dirty_sync_count = 0;  // the pass number
  double expected_downtime_ms = 0;
  uint64_t total_time_ms = 0;
  uint64_t downtime_ms = 0;
  uint64_t postcopy_requests = 0;
  // The latest sampled dirty rate in bytes/s (QEMU calc-dirty-rate, page sampling), 0 = not
  // measured, and how many samples have been measured so far (each a new 1 s window).
  double sampled_dirty_bytes_per_s = 0;
  uint64_t dirty_rate_samples = 0;
};

// ferry's own counters (cumulative).
struct FerrySample {
  uint64_t bytes_from_qemu = 0;     // QEMU stream bytes taken in
  uint64_t link_tx_bytes = 0;       // bytes put on the link
  uint64_t page_bytes_in = 0;       // RAM page bytes encoded
  uint64_t page_wire_bytes = 0;     // what they became on the wire
  int effort = -1;                  // current encoding effort, -1 = no encoding
  uint64_t link_backlog_bytes = 0;  // queued in ferry for the link right now: high = the
                                    // link is the bottleneck, ~0 = the link waits for us
  uint64_t encode_ns = 0;           // time ferry send's encoder spent encoding
};

struct Sample {
  double time_s = 0;  // since the migration started
  QemuSample qemu;
  FerrySample ferry;
  double cpu_idle = 1;  // host CPU idle fraction since the previous sample
};

enum class Action : uint8_t {
  kSetEffort,         // value: encoding effort 0..5
  kSetMaxBandwidth,   // value: bytes/s (QEMU max-bandwidth)
  kSetDowntimeLimit,  // value: ms (QEMU downtime-limit)
  kStartPostcopy,     // migrate-start-postcopy
  kStop,              // migrate_cancel
  kRecover,           // value: attempt; QEMU's post-copy recovery (ferry migrate's, not the
                      // engine's: recorded with the decisions so the report tells it all)
};
const char* action_name(Action a);

struct Decision {
  Action action;
  double value = 0;
  std::string reason;  // one sentence with the numbers behind it
  double time_s = 0;   // when it was taken (the sample's time)
};

// What the engine currently believes, for progress displays.
struct View {
  double link_bytes_per_s = 0;       // on the wire
  double effective_bytes_per_s = 0;  // B: QEMU stream bytes per second carried
  double dirty_bytes_per_s = 0;      // D
  double eta_s = 0;                  // to convergence at B - D (inf when D >= B)
  bool nonconvergence_predicted = false;
};

class Engine {
 public:
  explicit Engine(const Limits& limits);

  // One step; returns the actions to take now (often none). Samples must come in time order.
  std::vector<Decision> step(const Sample& s);
  const View& view() const { return view_; }
  const Limits& limits() const { return limits_; }

 private:
  void update_rates(const Sample& s);
  void on_pass_start(const Sample& s, std::vector<Decision>& out);
  void predict_from_sample(const Sample& s);
  void predict(const Sample& s, std::vector<Decision>& out, const std::string& why);
  void tune_effort(const Sample& s, std::vector<Decision>& out);
  void tune_switchover(const Sample& s, std::vector<Decision>& out);
  void add(std::vector<Decision>& out, const Sample& s, Action a, double value, std::string reason);

  Limits limits_;
  View view_;
  bool started_ = false;
  bool have_prev_ = false;
  double backlog_ = 0;  // EWMA of ferry's link backlog
  Sample prev_;
  // Bytes left at the start of each pass.
  uint64_t pass_ = 0;
  std::vector<uint64_t> pass_start_remaining_;
  bool predicted_ = false;
  uint64_t predicted_at_pass_ = 0;
  std::string predicted_why_;  // the numbers behind the prediction, for the switch's reason
  // The sampled dirty rates measured so far, oldest first.
  std::vector<double> dirty_samples_;
  bool postcopy_started_ = false;
  bool stopped_ = false;
  // B of each recent sample (not smoothed), newest last, for its spread.
  std::vector<double> recent_b_;
  double downtime_limit_ms_ = 0;  // what QEMU was last told
  double cap_ = 0;                // QEMU's max-bandwidth as last set (0: uncapped)
  double last_switchover_change_s_ = -1e9;
  // Effort control: the engine takes over from the codec's own choice once it first acts.
  int effort_ = -1;
  double last_effort_change_s_ = -1e9;
};

}  // namespace ferry::policy
