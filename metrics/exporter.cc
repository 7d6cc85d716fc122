// metrics/exporter.cc — see exporter.h; the metric names and their meaning are listed in
// docs/METRICS.md (keep the two in step).
#include "metrics/exporter.h"

#include <sys/resource.h>

#include "common/clock.h"
#include "metrics/exposition.h"

namespace ferry::metrics {
namespace {

constexpr const char* kSides[] = {"send", "recv"};
constexpr const char* kPageClasses[] = {"zero", "normal", "xbzrle", "compressed"};
// Outcomes exported from the start (at 0), so that rate() and alerts see the first one.
constexpr const char* kSessionOutcomes[] = {"completed", "failed", "cancelled"};
constexpr const char* kMigrationOutcomes[] = {"completed", "failed", "cancelled", "stopped",
                                              "abandoned"};
constexpr policy::Action kActions[] = {policy::Action::kSetEffort, policy::Action::kSetMaxBandwidth,
                                       policy::Action::kSetDowntimeLimit,
                                       policy::Action::kStartPostcopy, policy::Action::kStop};
// QEMU's MigrationStatus values (qapi/migration.json), exported as a state set.
constexpr const char* kPhases[] = {
    "none",      "setup",           "active",          "pre-switchover",
    "device",    "postcopy-active", "postcopy-paused", "postcopy-recover",
    "completed", "failed",          "cancelling",      "cancelled",
    "colo",      "wait-unplug"};

}  // namespace

void SideTotals::add(const pipeline::SetCounters& c) {
  from_qemu += c.bytes_from_qemu;
  to_qemu += c.bytes_to_qemu;
  link_tx += c.link_tx_bytes;
  link_rx += c.link_rx_bytes;
  pages[0] += c.pages_zero;
  pages[1] += c.pages_normal;
  pages[2] += c.pages_xbzrle;
  pages[3] += c.pages_compressed;
  for (size_t f = 0; f < encoders::kFormCount; ++f) {
    form_pages[f] += c.form_pages[f];
    form_bytes[f] += c.form_bytes[f];
  }
  page_bytes_in += c.page_bytes_in;
  wire_bytes += c.page_wire_bytes;
  encode_ns += c.encode_ns;
  retransmits += c.link_retransmits;
  resumes += c.link_resumes;
}

void SideTotals::add(const SideTotals& t) {
  from_qemu += t.from_qemu;
  to_qemu += t.to_qemu;
  link_tx += t.link_tx;
  link_rx += t.link_rx;
  for (int i = 0; i < 4; ++i) pages[i] += t.pages[i];
  for (size_t f = 0; f < encoders::kFormCount; ++f) {
    form_pages[f] += t.form_pages[f];
    form_bytes[f] += t.form_bytes[f];
  }
  page_bytes_in += t.page_bytes_in;
  wire_bytes += t.wire_bytes;
  encode_ns += t.encode_ns;
  retransmits += t.retransmits;
  resumes += t.resumes;
}

void MigrationMetrics::update(const std::string& status, uint64_t pass, uint64_t remaining_bytes,
                              const policy::View& view) {
  std::lock_guard lk(mu_);
  status_ = status;
  pass_ = pass;
  remaining_ = remaining_bytes;
  link_rate_ = view.link_bytes_per_s;
  effective_rate_ = view.effective_bytes_per_s;
  dirty_rate_ = view.dirty_bytes_per_s;
}

void MigrationMetrics::decision(policy::Action action) {
  std::lock_guard lk(mu_);
  const auto i = static_cast<size_t>(action);
  if (i < std::size(decisions_)) ++decisions_[i];
}

void MigrationMetrics::end(const std::string& outcome) {
  std::lock_guard lk(mu_);
  ++outcomes_[outcome];
}

Registry::Registry() {
  const double now = now_seconds();
  for (const char* side : kSides) {
    rate_mark_[side] = {now, 0};  // nothing counted yet: the first tick gives a rate
    ended_[side];
    for (const char* o : kSessionOutcomes) outcomes_[side][o] = 0;
  }
}

uint64_t Registry::add(const pipeline::ChannelSet& set, const char* side) {
  std::lock_guard lk(mu_);
  const uint64_t id = next_id_++;
  live_.push_back({id, &set, side});
  return id;
}

void Registry::remove(uint64_t id, const std::string& outcome) {
  std::lock_guard lk(mu_);
  for (auto it = live_.begin(); it != live_.end(); ++it) {
    if (it->id != id) continue;
    ended_[it->side].add(it->set->counters());
    ++outcomes_[it->side][outcome];
    live_.erase(it);
    return;
  }
}

SideTotals Registry::totals_locked(const std::string& side, size_t* live, uint64_t* backlog,
                                   size_t* channels, int* effort) const {
  SideTotals t;
  if (auto it = ended_.find(side); it != ended_.end()) t.add(it->second);
  for (const Live& l : live_) {
    if (l.side != side) continue;
    const pipeline::SetCounters c = l.set->counters();
    t.add(c);
    if (live) ++*live;
    if (backlog) *backlog += c.link_backlog_bytes;
    if (channels) *channels += c.channels;
    if (effort && c.effort > *effort) *effort = c.effort;
  }
  return t;
}

void Registry::sample() {
  std::lock_guard lk(mu_);
  const double now = now_seconds();
  for (const char* side : kSides) {
    const SideTotals t = totals_locked(side, nullptr, nullptr, nullptr, nullptr);
    const uint64_t bytes = t.link_tx + t.link_rx;
    auto mark = rate_mark_.find(side);
    if (mark != rate_mark_.end() && now > mark->second.first && bytes >= mark->second.second) {
      link_rate_[side] =
          static_cast<double>(bytes - mark->second.second) / (now - mark->second.first);
    }
    rate_mark_[side] = {now, bytes};
  }
}

std::string Registry::render() {
  TextWriter w;
  std::lock_guard lk(mu_);
  struct Side {
    const char* name;
    SideTotals t;
    size_t live = 0, channels = 0;
    uint64_t backlog = 0;
    int effort = -1;
  };
  std::vector<Side> sides;
  for (const char* s : kSides) {
    Side side{.name = s, .t = {}};
    side.t = totals_locked(s, &side.live, &side.backlog, &side.channels, &side.effort);
    sides.push_back(side);
  }
  using MT = MetricType;

  w.family("ferry_sessions_total",
           "Sessions (one ferry send or ferry recv path) that ended, by outcome.", MT::kCounter);
  for (const Side& s : sides) {
    for (const auto& [outcome, n] : outcomes_[s.name]) {
      w.sample(n, {{"side", s.name}, {"outcome", outcome}});
    }
  }
  w.family("ferry_sessions_active", "Sessions running now.", MT::kGauge);
  for (const Side& s : sides) w.sample(uint64_t{s.live}, {{"side", s.name}});
  w.family("ferry_channels", "QEMU connections (main, multifd, preempt) of the running sessions.",
           MT::kGauge);
  for (const Side& s : sides) w.sample(uint64_t{s.channels}, {{"side", s.name}});

  w.family("ferry_qemu_read_bytes_total",
           "Bytes read from QEMU: the source's migration stream (send), the destination's "
           "return path (recv).",
           MT::kCounter);
  for (const Side& s : sides) w.sample(s.t.from_qemu, {{"side", s.name}});
  w.family("ferry_qemu_written_bytes_total",
           "Bytes written to QEMU: the source's return path (send), the rebuilt migration "
           "stream (recv).",
           MT::kCounter);
  for (const Side& s : sides) w.sample(s.t.to_qemu, {{"side", s.name}});
  w.family("ferry_link_sent_bytes_total", "Frame bytes handed to the link.", MT::kCounter);
  for (const Side& s : sides) w.sample(s.t.link_tx, {{"side", s.name}});
  w.family("ferry_link_received_bytes_total", "Frame bytes received from the link.", MT::kCounter);
  for (const Side& s : sides) w.sample(s.t.link_rx, {{"side", s.name}});
  w.family("ferry_link_rate_bytes_per_second",
           "Link bytes (both ways) per second over the last second.", MT::kGauge);
  for (const Side& s : sides) {
    auto it = link_rate_.find(s.name);
    w.sample(it == link_rate_.end() ? 0.0 : it->second, {{"side", s.name}});
  }
  w.family("ferry_link_backlog_bytes", "Bytes queued for the link in the running sessions.",
           MT::kGauge);
  for (const Side& s : sides) w.sample(s.backlog, {{"side", s.name}});
  w.family("ferry_link_retransmits_total",
           "Data packets sent again by ferry's reliable layer (udp, dpdk); tcp and rdma "
           "retransmit below ferry and count 0.",
           MT::kCounter);
  for (const Side& s : sides) w.sample(s.t.retransmits, {{"side", s.name}});
  w.family("ferry_link_resumes_total",
           "Failed link connections replaced by new ones of the same channel, QEMU unaware.",
           MT::kCounter);
  for (const Side& s : sides) w.sample(s.t.resumes, {{"side", s.name}});

  w.family("ferry_qemu_pages_total",
           "RAM page records in QEMU's migration stream, by QEMU's class.", MT::kCounter);
  for (const Side& s : sides) {
    for (int i = 0; i < 4; ++i) {
      w.sample(s.t.pages[i], {{"side", s.name}, {"class", kPageClasses[i]}});
    }
  }
  // Page encoding happens on the sender only.
  const SideTotals& snd = sides[0].t;
  w.family("ferry_encoded_pages_total", "Pages the sender encoded, by the form each took.",
           MT::kCounter);
  for (size_t f = 0; f < encoders::kFormCount; ++f) {
    w.sample(snd.form_pages[f], {{"form", encoders::form_name(static_cast<encoders::Form>(f))}});
  }
  w.family("ferry_encoded_record_bytes_total",
           "Bytes of the sender's page records (headers included), by form.", MT::kCounter);
  for (size_t f = 0; f < encoders::kFormCount; ++f) {
    w.sample(snd.form_bytes[f], {{"form", encoders::form_name(static_cast<encoders::Form>(f))}});
  }
  w.family("ferry_encode_input_bytes_total", "Page bytes that went into the sender's encoder.",
           MT::kCounter);
  w.sample(snd.page_bytes_in);
  w.family("ferry_encode_output_bytes_total",
           "Bytes of encoded pages as sent (after any stream codec).", MT::kCounter);
  w.sample(snd.wire_bytes);
  w.family("ferry_encode_seconds_total",
           "Time the sender's main channel spent parsing and encoding QEMU's stream.",
           MT::kCounter);
  w.sample(static_cast<double>(snd.encode_ns) * 1e-9);
  w.family("ferry_encode_effort",
           "Encoding effort of the running sender's main channel (0..5; -1 = no page encoding "
           "or no session).",
           MT::kGauge);
  w.sample(static_cast<double>(sides[0].effort));

  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  w.family("ferry_cpu_seconds_total", "CPU time of this ferry process, by mode.", MT::kCounter);
  w.sample(static_cast<double>(ru.ru_utime.tv_sec) + ru.ru_utime.tv_usec * 1e-6,
           {{"mode", "user"}});
  w.sample(static_cast<double>(ru.ru_stime.tv_sec) + ru.ru_stime.tv_usec * 1e-6,
           {{"mode", "system"}});

  if (migration_on_.load()) {
    const MigrationMetrics& m = migration_;
    std::lock_guard mlk(m.mu_);
    w.family("ferry_migrations_total", "Migrations ferry migrate drove to an end, by outcome.",
             MT::kCounter);
    std::map<std::string, uint64_t> outcomes = m.outcomes_;
    for (const char* o : kMigrationOutcomes) outcomes[o];
    for (const auto& [outcome, n] : outcomes) w.sample(n, {{"outcome", outcome}});
    w.family("ferry_policy_decisions_total", "Decisions of the policy engine, by action.",
             MT::kCounter);
    for (policy::Action a : kActions) {
      w.sample(m.decisions_[static_cast<size_t>(a)], {{"action", policy::action_name(a)}});
    }
    w.family("ferry_migration_phase",
             "QEMU's migration status as a state set: 1 for the current one.", MT::kGauge);
    bool known = false;
    for (const char* p : kPhases) {
      known = known || m.status_ == p;
      w.sample(uint64_t{m.status_ == p}, {{"phase", p}});
    }
    if (!known) w.sample(uint64_t{1}, {{"phase", m.status_}});
    w.family("ferry_migration_pass", "QEMU's pre-copy pass (dirty-sync-count).", MT::kGauge);
    w.sample(m.pass_);
    w.family("ferry_migration_remaining_bytes", "RAM QEMU still has to send.", MT::kGauge);
    w.sample(m.remaining_);
    w.family("ferry_policy_link_rate_bytes_per_second",
             "The policy engine's estimate of the link rate on the wire.", MT::kGauge);
    w.sample(m.link_rate_);
    w.family("ferry_policy_effective_rate_bytes_per_second",
             "The policy engine's estimate of QEMU stream bytes carried per second (after "
             "encoding).",
             MT::kGauge);
    w.sample(m.effective_rate_);
    w.family("ferry_policy_dirty_rate_bytes_per_second",
             "The policy engine's estimate of the bytes per second the guest dirties.", MT::kGauge);
    w.sample(m.dirty_rate_);
  }
  return w.take();
}

Result<std::unique_ptr<Exporter>> Exporter::start(const std::string& spec) {
  std::unique_ptr<Exporter> e(new Exporter());
  Registry* r = &e->registry_;
  HttpServerOptions opt;
  opt.on_tick = [r] { r->sample(); };
  auto server = HttpServer::start(
      spec, [r] { return r->render(); }, std::move(opt));
  if (!server) return server.status();
  e->server_ = std::move(*server);
  return e;
}

SessionMetrics::SessionMetrics(Exporter* exporter, const pipeline::ChannelSet& set,
                               const char* side) {
  if (!exporter) return;
  registry_ = &exporter->registry();
  id_ = registry_->add(set, side);
}

SessionMetrics::~SessionMetrics() { end("failed"); }

void SessionMetrics::end(const std::string& outcome) {
  if (!registry_) return;
  registry_->remove(id_, outcome);
  registry_ = nullptr;
}

}  // namespace ferry::metrics
