// metrics/exporter.h — what ferry exports to Prometheus (docs/METRICS.md lists every metric),
// and the --metrics endpoint that serves it (http_server.h, exposition.h).
//
// Where it sits: metrics/ is a module of its own between apps/ and the modules it reads
// (apps -> metrics -> pipeline, policy -> ...). It reads the snapshots that progress lines and
// --stats-json already read (ChannelSet::counters(): relaxed atomics plus the set's control
// mutex, never a lock on a pump's thread), prints nothing and parses no arguments.
//
// Sessions register while they run (a SessionMetrics each, so a receiver serving many sessions
// registers many); when one ends its last counts move into the totals of its side, so every
// counter only grows whatever sessions come and go. ferry migrate adds its policy loop's state
// (MigrationMetrics). Rendering runs on the HTTP server's thread, one scrape at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "metrics/http_server.h"
#include "pipeline/channel_set.h"
#include "policy/engine.h"

namespace ferry::metrics {

// Counters of one side (send or recv), summed over sessions.
struct SideTotals {
  uint64_t from_qemu = 0, to_qemu = 0, link_tx = 0, link_rx = 0;
  uint64_t pages[4] = {};  // QEMU's page records: zero, normal, xbzrle, compressed
  uint64_t form_pages[encoders::kFormCount] = {}, form_bytes[encoders::kFormCount] = {};
  uint64_t page_bytes_in = 0, wire_bytes = 0, encode_ns = 0, retransmits = 0, resumes = 0;

  void add(const pipeline::SetCounters& c);
  void add(const SideTotals& t);
};

// ferry migrate's policy loop, as it goes: set from that loop (control path, ~10 Hz).
class MigrationMetrics {
 public:
  // One sample of QEMU's query-migrate: status ("active", "postcopy-active", ...), pass
  // (dirty-sync-count), remaining bytes, and the policy engine's view of the rates.
  void update(const std::string& status, uint64_t pass, uint64_t remaining_bytes,
              const policy::View& view);
  void decision(policy::Action action);
  // The migration ended with outcome (completed, failed, cancelled, stopped, abandoned).
  void end(const std::string& outcome);

 private:
  friend class Registry;
  mutable std::mutex mu_;
  std::string status_ = "setup";
  uint64_t pass_ = 0, remaining_ = 0;
  double link_rate_ = 0, effective_rate_ = 0, dirty_rate_ = 0;
  uint64_t decisions_[5] = {};  // by policy::Action
  std::map<std::string, uint64_t> outcomes_;
};

class Registry {
 public:
  Registry();

  // A running session's channels; side: "send" or "recv". The set must stay alive until
  // remove() (SessionMetrics does both).
  uint64_t add(const pipeline::ChannelSet& set, const char* side);
  // Folds the session's last counts into its side's totals and counts its outcome.
  void remove(uint64_t id, const std::string& outcome);
  MigrationMetrics& migration() { return migration_; }
  // Once any migration state was set, the migration families are exported too.
  void enable_migration() { migration_on_.store(true); }

  // The whole exposition (exposition.h); any thread.
  std::string render();
  // Samples the link rate gauge's bytes (the HTTP server's tick, about every second).
  void sample();

 private:
  struct Live {
    uint64_t id;
    const pipeline::ChannelSet* set;
    std::string side;
  };
  // Totals of one side: ended sessions plus the live ones now. Under mu_.
  SideTotals totals_locked(const std::string& side, size_t* live, uint64_t* backlog,
                           size_t* channels, int* effort) const;

  std::mutex mu_;
  uint64_t next_id_ = 1;
  std::list<Live> live_;
  std::map<std::string, SideTotals> ended_;                          // by side
  std::map<std::string, std::map<std::string, uint64_t>> outcomes_;  // side -> outcome -> n
  std::map<std::string, double> link_rate_;                          // side -> bytes/s
  std::map<std::string, std::pair<double, uint64_t>> rate_mark_;     // side -> (t, link bytes)
  MigrationMetrics migration_;
  std::atomic<bool> migration_on_{false};
};

// The --metrics endpoint: a Registry served over HTTP.
class Exporter {
 public:
  // spec: tcp:HOST:PORT (PORT 0: any free port). Fails in one sentence (port taken, ...).
  static Result<std::unique_ptr<Exporter>> start(const std::string& spec);
  Registry& registry() { return registry_; }
  uint16_t port() const { return server_->port(); }

 private:
  Exporter() = default;
  Registry registry_;
  std::unique_ptr<HttpServer> server_;  // after registry_: stops before it goes
};

// A session's registration for as long as it lives. exporter may be null (no --metrics):
// then it does nothing.
class SessionMetrics {
 public:
  SessionMetrics(Exporter* exporter, const pipeline::ChannelSet& set, const char* side);
  ~SessionMetrics();  // end("failed") unless end() was called
  SessionMetrics(const SessionMetrics&) = delete;
  SessionMetrics& operator=(const SessionMetrics&) = delete;
  // outcome: completed, failed or cancelled.
  void end(const std::string& outcome);

 private:
  Registry* registry_ = nullptr;
  uint64_t id_ = 0;
};

}  // namespace ferry::metrics
