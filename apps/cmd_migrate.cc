// apps/cmd_migrate.cc — `ferry migrate`: the one command an operator runs on the source host.
// Prepares both QEMUs over QMP, runs the source side of ferry (SendSession) in-process, starts
// the migration, and runs the policy loop (policy/, pure) every 100 ms: it samples QEMU,
// ferry's counters and host CPU, applies the engine's decisions, shows progress, and ends
// with a report of what happened and why. `ferry recv` must already run on the destination.
// With --libvirt the migration runs through the libvirt API instead of QMP
// (apps/migration_source.h): libvirt owns the domain's monitor.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/cpu_idle.h"
#include "apps/migration_source.h"
#include "apps/stop_signals.h"
#include "common/json.h"
#include "pipeline/page_stream.h"
#include "pipeline/send_session.h"
#include "policy/engine.h"
#include "qemu-channel/qmp_client.h"

namespace ferry::apps {
namespace {

using json::Value;
using pipeline::SendOptions;
using pipeline::SendSession;
using pipeline::SetCounters;
using policy::Action;
using policy::action_name;
using policy::Decision;
using policy::Engine;
using policy::Limits;
using policy::QemuSample;
using policy::Sample;

// --postcopy-hold when post-copy runs with postcopy-preempt. The benchmarks' post-copy cells
// held at most ~200 MB; a full hold only makes QEMU wait for the link, as without one.
constexpr size_t kDefaultPostcopyHold = size_t{512} << 20;

void migrate_usage(FILE* out) {
  std::fprintf(
      out,
      "usage: ferry migrate --src-qmp unix:PATH --dst-qmp unix:PATH --peer tcp:HOST:PORT\n"
      "       ferry migrate --libvirt DOMAIN --dest-uri URI --sock PATH --peer tcp:HOST:PORT\n"
      "                     [--connect URI]\n"
      "   and, for both:\n"
      "                     [--max-downtime MS] [--deadline S] [--allow-postcopy]\n"
      "                     [--allow-throttle] [--codec auto|fast|max|none] [--cache-mib N]\n"
      "                     [--cache-policy aged-clock|lru] [--encode-threads N]\n"
      "                     [--poll adaptive|busy] [--fabric-provider NAME] [--link-timeout S]\n"
      "                     [--resume-within S] [--postcopy-hold MIB] [--postcopy-pace PCT]\n"
      "                     [--postcopy-backlog-from request|package]\n"
      "                     [--dpdk-args \"EAL ARGS\"] [--dpdk-local IPV4] [--dpdk-mtu N]\n"
      "                     [--tls-x509-dir DIR | --tls-psk-file FILE | --insecure]\n"
      "                     [--tls-authz NAME,...] [--tls-hostname NAME]\n"
      "                     [--vm NAME] [--recover-uri unix:PATH] [--sock PATH] [--json]\n"
      "                     [--metrics tcp:HOST:PORT] [--log-level LEVEL]\n"
      "\n"
      "Migrates the VM of the source QEMU (its QMP socket: --src-qmp) to the destination QEMU\n"
      "(--dst-qmp; started with -incoming unix:PATH, where `ferry recv --qemu unix:PATH\n"
      "--listen tcp:HOST:PORT` feeds it) through ferry, and watches it: every 100 ms the\n"
      "policy engine (docs/POLICY.md) compares what the link can carry after encoding with\n"
      "what the guest dirties, sets QEMU's downtime limit from the budget, tunes a fixed\n"
      "codec's effort when the encoder starves the CPU (auto tunes its own), switches to\n"
      "post-copy as soon as pre-copy is predicted not to converge (only with\n"
      "--allow-postcopy), or stops early with the reason when nothing allowed can finish.\n"
      "QEMU's own bandwidth cap is lifted: ferry's bounded queues already make it see the\n"
      "link's real rate.\n"
      "Ends with a report: outcome, total time, downtime, bytes, and every decision with the\n"
      "numbers behind it. Exit 0 when the migration completed, 1 otherwise (failed, or\n"
      "stopped by the policy: the VM then keeps running on the source).\n"
      "The migration capabilities and parameters it changes in both QEMUs are put back as\n"
      "they were however it ends. SIGINT, SIGTERM or SIGHUP in pre-copy cancels the migration\n"
      "(the source keeps the VM); in post-copy the first is refused (the VM would be lost), a\n"
      "second within 5 s forces ferry migrate to exit.\n"
      "\n"
      "With --libvirt the source is a libvirt domain and the migration runs through the\n"
      "libvirt API, as `virsh migrate --live --p2p DOMAIN URI --migrateuri unix://PATH`: the\n"
      "source libvirtd starts it into ferry's socket PATH (--sock), the destination libvirtd\n"
      "has its QEMU listen on the same PATH on its host, where a `ferry recv --serve\n"
      "--qemu-dir DIR` (PATH = DIR/NAME.sock) delivers. The policy engine works through\n"
      "libvirt's job statistics, maximum downtime and speed, post-copy switch and abort.\n"
      "\n"
      "  --libvirt DOMAIN    the domain to migrate (--vm defaults to its name)\n"
      "  --dest-uri URI      the destination libvirtd as the source libvirtd reaches it\n"
      "                      (qemu+tls://HOST/system, qemu+ssh://...)\n"
      "  --connect URI       the source libvirtd (default qemu:///system)\n"
      "  --max-downtime MS   the pause the guest may see at switchover (default 300)\n"
      "  --deadline S        give up (migrate_cancel, VM keeps running on the source) after S\n"
      "                      seconds (default 600)\n"
      "  --allow-postcopy    may switch to post-copy (sets postcopy-ram on both QEMUs, and\n"
      "                      postcopy-preempt: the pages the running destination asks for\n"
      "                      go on a channel of their own, not behind the bulk)\n"
      "  --no-postcopy-preempt\n"
      "                      post-copy without postcopy-preempt (QEMU before 7.1, or to\n"
      "                      compare); the requested pages then queue behind the bulk\n"
      "  --allow-throttle    may let QEMU slow the guest's vCPUs (auto-converge)\n"
      "  --postcopy-hold MIB in post-copy, hold up to MIB MiB of the source QEMU's stream in\n"
      "                      ferry send, so that a page the guest asks for leaves at once on\n"
      "                      the preempt link and its neighbours next (as ferry send; default\n"
      "                      512 with postcopy-preempt and a codec, otherwise 0 = off)\n"
      "  --postcopy-backlog-from request|package\n"
      "                      when ferry's queues toward the link shrink to post-copy's few\n"
      "                      ms of bulk (ferry send's --postcopy-backlog, --postcopy-pace):\n"
      "                      once QEMU accepted migrate-start-postcopy (default), so that\n"
      "                      the device state QEMU sends after stopping the source waits\n"
      "                      behind little pre-copy bulk; or at that device state (as ferry\n"
      "                      send, which does not see the request)\n"
      "  --codec, --cache-mib, --cache-policy, --encode-threads, --poll, --fabric-provider,\n"
      "  --link-timeout, --resume-within, --postcopy-pace\n"
      "                      as ferry send (default auto, 256, aged-clock, 1, adaptive, verbs,\n"
      "                      10 s, 60 s, 85)\n"
      "  --dpdk-args, --dpdk-local, --dpdk-mtu  as ferry send (for a dpdk: --peer)\n"
      "  --tls-x509-dir, --tls-psk-file, --tls-authz, --tls-hostname, --insecure\n"
      "                     as ferry send: credentials for the link to ferry recv (without\n"
      "                     them, only a ferry recv on this host unless --insecure)\n"
      "  --vm NAME           as ferry send: the VM's name, for a `ferry recv --serve\n"
      "                      --qemu-dir DIR` (its destination QEMU listens on DIR/NAME.sock)\n"
      "  --recover-uri unix:PATH\n"
      "                      post-copy recovery: when the link fails in post-copy both QEMUs\n"
      "                      pause (the VM waits on the destination); ferry migrate then has\n"
      "                      the destination listen on PATH (migrate-recover), where a\n"
      "                      restarted or --serve ferry recv delivers, opens a new link and\n"
      "                      resumes the source (migrate resume=true), retrying until\n"
      "                      --deadline. Without it, a pause is reported and waited out\n"
      "  --sock PATH         the unix socket the source QEMU migrates into (default\n"
      "                      /tmp/ferry-migrate-<pid>.sock)\n"
      "  --json              one JSON object per line on stdout: progress samples, decisions,\n"
      "                      the final report (the terminal line goes away)\n"
      "%s%s",
      kMetricsUsage, kLogUsage);
}

struct MigrateArgs {
  std::string src_qmp, dst_qmp, sock, metrics;
  LibvirtTarget libvirt;    // --libvirt: the domain, and where it goes
  std::string recover_uri;  // where the destination QEMU listens for post-copy recovery
  Limits limits;
  bool postcopy_preempt = true;         // with --allow-postcopy: QEMU's postcopy-preempt capability
  std::optional<size_t> postcopy_hold;  // --postcopy-hold; unset: kDefaultPostcopyHold or off
  bool postcopy_backlog_at_request = true;  // --postcopy-backlog-from request|package
  SendOptions send;
  dataplane::dpdk::DpdkSettings dpdk;
  SecurityFlags security;
  bool json = false;
};

Status set_caps(qemu::QmpClient& q, const std::vector<std::pair<std::string, bool>>& caps) {
  Value list = Value::array();
  for (const auto& [name, on] : caps) {
    list.push_back(Value::object({{"capability", Value(name)}, {"state", Value(on)}}));
  }
  auto r = q.execute("migrate-set-capabilities", Value::object({{"capabilities", list}}));
  return r ? Status::ok() : r.status();
}

// What post-copy cost the guest, as the destination QEMU counted it (capability
// postcopy-blocktime): how long its vCPUs were stopped on pages that had not arrived.
struct PostcopyBlocktime {
  bool known = false;
  int64_t all_ms = 0;       // every vCPU blocked at once
  int64_t max_vcpu_ms = 0;  // the vCPU that waited longest, in all
  Value vcpu_ms;            // per vCPU
};

bool postcopy_started(const std::vector<Decision>& decisions) {
  for (const Decision& d : decisions) {
    if (d.action == Action::kStartPostcopy) return true;
  }
  return false;
}

// The destination finishes loading after the source completed; its counts are final then.
PostcopyBlocktime query_blocktime(qemu::QmpClient& dst) {
  PostcopyBlocktime b;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    auto r = dst.execute("query-migrate");
    if (!r) return b;
    if ((*r)["status"].as_string() == "completed" || std::chrono::steady_clock::now() > until) {
      if (!r->get({"postcopy-blocktime"}).is_number()) return b;
      b.known = true;
      b.all_ms = r->get({"postcopy-blocktime"}).as_int();
      b.vcpu_ms = Value::array();
      const Value& per = r->get({"postcopy-vcpu-blocktime"});
      for (size_t i = 0; per.is_array() && i < per.size(); ++i) {
        b.vcpu_ms.push_back(Value(per[i].as_int()));
        b.max_vcpu_ms = std::max(b.max_vcpu_ms, per[i].as_int());
      }
      return b;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Status set_param(qemu::QmpClient& q, const char* name, int64_t value) {
  auto r = q.execute("migrate-set-parameters", Value::object({{name, Value(value)}}));
  return r ? Status::ok() : r.status();
}

// The migration capabilities and parameters ferry migrate changes in one QEMU, put back as
// they were on every way out: an operator's settings must not depend on whether a migration
// through ferry ran, or how it ended.
class QemuSettings {
 public:
  QemuSettings(qemu::QmpClient& q, const char* which) : q_(q), which_(which) {}
  ~QemuSettings() { restore(); }
  QemuSettings(const QemuSettings&) = delete;
  QemuSettings& operator=(const QemuSettings&) = delete;

  Status set_caps(const std::vector<std::pair<std::string, bool>>& caps) {
    auto now = q_.execute("query-migrate-capabilities");
    if (!now) return now.status();
    for (const auto& [name, on] : caps) {
      if (std::any_of(caps_.begin(), caps_.end(), [&](const auto& c) { return c.first == name; }))
        continue;
      for (size_t i = 0; i < now->size(); ++i) {
        if ((*now)[i]["capability"].as_string() == name) {
          caps_.push_back({name, (*now)[i]["state"].as_bool()});
        }
      }
    }
    return ::ferry::apps::set_caps(q_, caps);
  }
  Status set_param(const char* name, int64_t value) {
    if (std::none_of(params_.begin(), params_.end(),
                     [&](const auto& p) { return p.first == name; })) {
      auto now = q_.execute("query-migrate-parameters");
      if (!now) return now.status();
      params_.push_back({name, (*now)[name].as_int()});
    }
    return ::ferry::apps::set_param(q_, name, value);
  }

 private:
  void restore() {
    std::string failed;
    if (!caps_.empty()) {
      if (auto st = ::ferry::apps::set_caps(q_, caps_); !st) failed = st.message();
    }
    for (const auto& [name, value] : params_) {
      if (auto st = ::ferry::apps::set_param(q_, name.c_str(), value); !st) failed = st.message();
    }
    if (!failed.empty()) {
      std::fprintf(stderr,
                   "ferry migrate: could not restore the %s QEMU's migration settings: %s\n",
                   which_, failed.c_str());
    }
  }

  qemu::QmpClient& q_;
  const char* which_;
  std::vector<std::pair<std::string, bool>> caps_;
  std::vector<std::pair<std::string, int64_t>> params_;
};

std::string fmt_bytes(double b) {
  char buf[32];
  if (b >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
  }
  return buf;
}

// Reads one query-migrate into the policy's view of QEMU.
QemuSample qemu_sample(const Value& m) {
  QemuSample s;
  s.status = m["status"].as_string();
  const Value& ram = m["ram"];
  s.transferred_bytes = static_cast<uint64_t>(ram["transferred"].as_int());
  s.remaining_bytes = static_cast<uint64_t>(ram["remaining"].as_int());
  s.total_bytes = static_cast<uint64_t>(ram["total"].as_int());
  s.dirty_pages_per_s = ram["dirty-pages-rate"].as_double();
  s.page_size_bytes = static_cast<uint64_t>(ram["page-size"].as_int(4096));
  s.dirty_sync_count = static_cast<uint64_t>(ram["dirty-sync-count"].as_int());
  s.expected_downtime_ms = m["expected-downtime"].as_double();
  s.total_time_ms = static_cast<uint64_t>(m["total-time"].as_int());
  s.downtime_ms = static_cast<uint64_t>(m["downtime"].as_int());
  s.postcopy_requests = static_cast<uint64_t>(ram["postcopy-requests"].as_int());
  return s;
}

std::string fmt_seconds(std::chrono::nanoseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", std::chrono::duration<double>(d).count());
  return buf;
}

// One decision, as it is taken: a JSON line, or a line on the terminal.
void record_decision(const Decision& d, bool json_lines, bool tty) {
  if (json_lines) {
    std::printf("%s\n", Value::object({{"event", Value("decision")},
                                       {"t_s", Value(d.time_s)},
                                       {"action", Value(action_name(d.action))},
                                       {"value", Value(d.value)},
                                       {"reason", Value(d.reason)}})
                            .dump()
                            .c_str());
    std::fflush(stdout);
  } else {
    std::fprintf(stderr, "%s[%6.1f s] %s: %s\n", tty ? "\r\033[K" : "", d.time_s,
                 action_name(d.action), d.reason.c_str());
  }
}

// The source side of ferry's path: a SendSession and its metrics. Post-copy recovery replaces
// both; the old path's metrics end (as failed) before its session goes.
// The source QEMU over QMP, for the policy loop.
class QmpSource : public MigrationSource {
 public:
  QmpSource(qemu::QmpClient& q, QemuSettings& settings) : q_(q), settings_(settings) {}
  Result<QemuSample> sample(std::string& error_desc) override {
    auto m = q_.execute("query-migrate");
    if (!m) return error(m.status().code(), "source QMP: " + m.status().message());
    error_desc = (*m)["error-desc"].as_string();
    return qemu_sample(*m);
  }
  Status set_max_bandwidth(int64_t v) override { return settings_.set_param("max-bandwidth", v); }
  Status set_downtime_limit(int64_t v) override { return settings_.set_param("downtime-limit", v); }
  Status start_postcopy() override {
    auto r = q_.execute("migrate-start-postcopy");
    return r ? Status::ok() : r.status();
  }
  void cancel() override { (void)q_.execute("migrate_cancel"); }

 private:
  qemu::QmpClient& q_;
  QemuSettings& settings_;
};

struct FerryPath {
  metrics::Exporter* exporter = nullptr;
  std::unique_ptr<SendSession> session;
  std::unique_ptr<metrics::SessionMetrics> metrics;

  void open(const SendOptions& options) {
    metrics.reset();
    session = std::make_unique<SendSession>(options);
    metrics = std::make_unique<metrics::SessionMetrics>(exporter, session->channels(), "send");
  }
};

// Post-copy paused (the link failed): since when, why, and QEMU's recovery so far.
struct PostcopyPause {
  TimePoint since{};         // {} = not paused
  std::string why;           // how the ferry path ended
  int attempts = 0;          // recovery attempts in this pause
  TimePoint next_attempt{};  // back-off
  bool resuming = false;     // the source was told to resume into the current path
  int recoveries = 0;        // pauses recovered from
  double total_s = 0;        // time paused, summed over recovered pauses
};

// One attempt of QEMU's post-copy recovery through a new ferry path, in the order that never
// leaves a QEMU stuck: the destination listens on --recover-uri (migrate-recover, out of band:
// its main loop may be blocked on a missing page); a new SendSession opens its main link,
// which ferry recv (restarted, or --serve) accepts only once it reached that socket; only
// then is the source told to resume into it (migrate resume=true) — QEMU 7.2 cannot leave
// its recovery state if the path fails after that. A failed step ends the attempt; the next
// comes after a back-off of 1, 2, 4, then 5 s. Returns the decision to record, or nothing
// while the destination has not paused yet.
std::optional<Decision> recover(qemu::QmpClient& src, qemu::QmpClient& dst, const MigrateArgs& a,
                                FerryPath& path, PostcopyPause& pause, TimePoint now) {
  std::unique_ptr<SendSession>& session = path.session;
  auto listening =
      dst.execute_oob("migrate-recover", Value::object({{"uri", Value(a.recover_uri)}}));
  const std::string refused = listening ? "" : listening.status().message();
  // "Migrate recovery is triggered already": it listens since an earlier attempt.
  const bool failed = !refused.empty() && refused.find("already") == std::string::npos;
  if (failed && refused.find("only be run when postcopy is paused") != std::string::npos) {
    return std::nullopt;  // the destination has not noticed the failure yet
  }
  ++pause.attempts;
  pause.next_attempt =
      now + std::chrono::seconds(pause.attempts > 3 ? 5 : 1 << (pause.attempts - 1));
  Decision d;
  d.action = Action::kRecover;
  d.value = pause.attempts;
  d.reason = "post-copy paused for " + fmt_seconds(now - pause.since) + ": recovery attempt " +
             std::to_string(pause.attempts) + " via " + a.recover_uri;
  if (failed) {
    d.reason += " failed: the destination refused migrate-recover: " + refused;
    return d;
  }
  session->abort();
  (void)session->wait();
  path.open(a.send);
  Status st = session->listen(a.sock);
  if (st) st = session->connect_main();
  if (!st) {
    d.reason += " failed: " + st.message();  // the next attempt replaces this path
    return d;
  }
  session->start();
  auto r = src.execute("migrate",
                       Value::object({{"uri", Value("unix:" + a.sock)}, {"resume", Value(true)}}));
  if (!r) {
    d.reason += " failed: the source refused to resume: " + r.status().message();
    session->abort();
    return d;
  }
  pause.resuming = true;
  return d;
}

}  // namespace

int run_migrate(int argc, char** argv) {
  MigrateArgs a;
  a.send.codec = encoders::CodecLevel::kAuto;
  ArgReader args("ferry migrate", argc, argv);
  while (args.next()) {
    if (args.is("--help") || args.is("-h")) {
      migrate_usage(stdout);
      return 0;
    } else if (args.is("--src-qmp")) {
      a.src_qmp = args.value();
    } else if (args.is("--dst-qmp")) {
      a.dst_qmp = args.value();
    } else if (args.is("--peer")) {
      a.send.peer = args.value();
    } else if (args.is("--max-downtime")) {
      a.limits.max_downtime_ms = static_cast<double>(args.count(1, 3600000));
    } else if (args.is("--deadline")) {
      a.limits.deadline_s = args.seconds();
    } else if (args.is("--allow-postcopy")) {
      a.limits.allow_postcopy = true;
    } else if (args.is("--no-postcopy-preempt")) {
      a.postcopy_preempt = false;
    } else if (args.is("--allow-throttle")) {
      a.limits.allow_throttle = true;
    } else if (args.is("--codec")) {
      a.send.codec = args.codec();
    } else if (args.is("--cache-mib")) {
      a.send.cache_mib = static_cast<size_t>(args.count(0, 1 << 20));
    } else if (args.is("--cache-policy")) {
      a.send.cache_policy = args.cache_policy();
    } else if (args.is("--encode-threads")) {
      a.send.encode_threads = static_cast<unsigned>(args.count(1, pipeline::kMaxShards));
    } else if (args.is("--postcopy-hold")) {
      a.postcopy_hold = static_cast<size_t>(args.count(0, 65536)) << 20;
    } else if (args.is("--postcopy-pace")) {
      a.send.postcopy_pace = static_cast<double>(args.count(0, 200)) / 100;
    } else if (args.is("--postcopy-backlog-from")) {
      a.postcopy_backlog_at_request = args.choice({"request", "package"}) == 0;
    } else if (args.is("--poll")) {
      a.send.poll_mode = args.poll_mode();
    } else if (args.is("--fabric-provider")) {
      a.send.transport.fabric_provider = args.value();
    } else if (args.is("--link-timeout")) {
      a.send.transport.link_timeout = link_timeout_value(args);
    } else if (args.is("--resume-within")) {
      a.send.transport.resume_within = resume_within_value(args);
    } else if (take_dpdk_flag(args, a.dpdk)) {
    } else if (take_security_flag(args, a.security)) {
    } else if (take_log_flag(args)) {
    } else if (args.is("--vm")) {
      a.send.vm_name = args.value();
    } else if (args.is("--sock")) {
      a.sock = args.value();
    } else if (args.is("--recover-uri")) {
      a.recover_uri = args.value();
      if (a.recover_uri.rfind("unix:", 0) != 0 || a.recover_uri.size() == 5) {
        std::fprintf(stderr, "ferry migrate: --recover-uri wants unix:PATH, got '%s'\n",
                     a.recover_uri.c_str());
        return 2;
      }
    } else if (args.is("--libvirt")) {
      a.libvirt.domain = args.value();
    } else if (args.is("--dest-uri")) {
      a.libvirt.dest_uri = args.value();
    } else if (args.is("--connect")) {
      a.libvirt.connect_uri = args.value();
    } else if (args.is("--json")) {
      a.json = true;
    } else if (args.is("--metrics")) {
      a.metrics = args.value();
    } else {
      args.unknown();
    }
  }
  if (!args.ok()) return 2;
  const bool libvirt = !a.libvirt.domain.empty();
  if (libvirt) {
    // The destination QEMU listens on the same path on its host: the path must be given.
    if (a.libvirt.dest_uri.empty() || a.sock.empty() || a.sock[0] != '/' || a.send.peer.empty() ||
        !a.src_qmp.empty() || !a.dst_qmp.empty() || !a.recover_uri.empty()) {
      std::fprintf(stderr,
                   "ferry migrate: --libvirt wants --dest-uri, --sock /PATH and --peer, and "
                   "neither --src-qmp, --dst-qmp nor --recover-uri\n\n");
      migrate_usage(stderr);
      return 2;
    }
    if (!libvirt_available()) {
      std::fprintf(stderr, "ferry migrate: this ferry was built without libvirt (libvirt-dev)\n");
      return 2;
    }
    a.libvirt.migrate_uri = "unix://" + a.sock;
    a.libvirt.postcopy = a.limits.allow_postcopy;
    a.libvirt.auto_converge = a.limits.allow_throttle;
    if (a.send.vm_name.empty()) a.send.vm_name = a.libvirt.domain;
  } else if (a.src_qmp.empty() || a.dst_qmp.empty() || a.send.peer.empty()) {
    std::fprintf(stderr, "ferry migrate: give --src-qmp, --dst-qmp and --peer\n\n");
    migrate_usage(stderr);
    return 2;
  }
  if (auto st = dataplane::check_transport_spec(a.send.peer); !st) {
    std::fprintf(stderr, "ferry migrate: --peer: %s\n", st.message().c_str());
    return 2;
  }
  if (auto st = check_vm_flag(a.send.vm_name); !st) {
    std::fprintf(stderr, "ferry migrate: %s\n", st.message().c_str());
    return 2;
  }
  if (auto st = apply_dpdk_settings(a.dpdk); !st) {
    std::fprintf(stderr, "ferry migrate: %s\n", st.message().c_str());
    return 2;
  }
  auto credentials =
      load_security("ferry migrate", a.security, dataplane::TlsRole::kClient, a.send.peer);
  if (!credentials) {
    std::fprintf(stderr, "ferry migrate: %s\n", credentials.status().message().c_str());
    return 2;
  }
  a.send.security = *credentials;
  if (a.sock.empty()) a.sock = "/tmp/ferry-migrate-" + std::to_string(::getpid()) + ".sock";
  // The held stream shortens the guest's pauses in post-copy when held pages asked for can go
  // on the preempt link (docs/BENCHMARKS.md, "Held pages on the preempt link"); without
  // preempt (libvirt, --no-postcopy-preempt) it was not measured to help, so it is off there.
  const bool preempt_on = !libvirt && a.limits.allow_postcopy && a.postcopy_preempt;
  a.send.postcopy_hold = a.postcopy_hold.value_or(preempt_on ? kDefaultPostcopyHold : 0);
  const bool tty = !a.json && ::isatty(2);
  auto fail = [&](const std::string& msg) {
    if (a.json) {
      std::printf(
          "%s\n",
          Value::object({{"event", Value("error")}, {"message", Value(msg)}}).dump().c_str());
    }
    std::fprintf(stderr, "%sferry migrate: %s\n", log::journal_prefix(log::Level::kError),
                 msg.c_str());
    return 1;
  };

  // A taken metrics port fails before either QEMU is touched.
  auto exporter = start_metrics(a.metrics);
  if (!exporter) return fail(exporter.status().message());
  metrics::MigrationMetrics* mm = nullptr;  // the policy loop's state, when exported
  if (*exporter) {
    (*exporter)->registry().enable_migration();
    mm = &(*exporter)->registry().migration();
  }

  // 1. Both QEMUs, prepared (with --libvirt, libvirt prepares them when the migration starts).
  std::unique_ptr<qemu::QmpClient> src, dst;
  std::optional<QemuSettings> src_settings, dst_settings;  // destroyed before the clients
  std::unique_ptr<MigrationSource> source;
  if (!libvirt) {
    auto s = qemu::QmpClient::connect(a.src_qmp);
    if (!s) return fail("source QMP " + a.src_qmp + ": " + s.status().message());
    src = std::move(*s);
    auto d = qemu::QmpClient::connect(a.dst_qmp);
    if (!d) return fail("destination QMP " + a.dst_qmp + ": " + d.status().message());
    dst = std::move(*d);
    auto st = dst->execute("query-status");
    if (!st || (*st)["status"].as_string() != "inmigrate") {
      return fail(
          "the destination QEMU is not waiting for a migration (start it with "
          "-incoming unix:PATH and run ferry recv --qemu unix:PATH)");
    }
    src_settings.emplace(*src, "source");
    dst_settings.emplace(*dst, "destination");
    // postcopy-preempt (QEMU 7.1+): a requested page leaves on a connection of its own, which
    // ferry carries as a link of its own, so it does not wait behind the bulk queued on the
    // main one (issue 19). QEMU refuses it without postcopy-ram, so it is set only with it.
    std::vector<std::pair<std::string, bool>> caps = {{"postcopy-ram", a.limits.allow_postcopy}};
    if (a.limits.allow_postcopy) caps.push_back({"postcopy-preempt", a.postcopy_preempt});
    // The destination counts how long its vCPUs wait for pages in post-copy: the guest-visible
    // cost the report states (QEMU's downtime does not include it).
    std::vector<std::pair<std::string, bool>> dst_caps = caps;
    dst_caps.push_back({"postcopy-blocktime", a.limits.allow_postcopy});
    if (auto st = dst_settings->set_caps(dst_caps); !st) {
      return fail("destination: " + st.message());
    }
    caps.push_back({"auto-converge", a.limits.allow_throttle});
    if (auto st = src_settings->set_caps(caps); !st) return fail("source: " + st.message());
    // QEMU sizes its last pass from the bandwidth it measures; ferry's back-pressure makes
    // that the real link rate, so QEMU's own cap (128 MiB/s by default) only gets in the way.
    if (auto st = src_settings->set_param("max-bandwidth", int64_t{1} << 40); !st) {
      return fail("source: " + st.message());
    }
    source = std::make_unique<QmpSource>(*src, *src_settings);
  }

  // 2. The ferry path, then the migration.
  StopSignals signals;  // before the session's threads: they inherit the blocked signals
  // Replaced by a new one for each post-copy recovery attempt.
  FerryPath path;
  path.exporter = exporter->get();
  path.open(a.send);
  std::unique_ptr<SendSession>& session = path.session;
  if (auto st = session->listen(a.sock); !st) return fail(st.message());
  session->start();
  const auto t0 = std::chrono::steady_clock::now();
  if (libvirt) {
    auto s = start_libvirt_migration(a.libvirt);
    if (!s) {
      session->abort();
      return fail(s.status().message());
    }
    source = std::move(*s);
  } else if (auto r = src->execute("migrate", Value::object({{"uri", Value("unix:" + a.sock)}}));
             !r) {
    session->abort();
    return fail("source: " + r.status().message());
  }

  // Estimates of the dirty rate, for the policy's prediction during pass 1 (QEMU only
  // measures it at the end of a pass, a minute away on a slow link): calc-dirty-rate hashes a
  // sample of guest pages twice, 1 s apart, and is asked again each time it has measured, until
  // pass 1 ends (one 1 s window can catch a burst). It only reads guest memory; the
  // migration's dirty log is untouched. It takes QEMU's most pages per GiB (1 in 16; QEMU >=
  // 6.1): at its default of 512, a 512 MiB guest dirtying 2 % of its pages a second shows ~5
  // dirty samples and the estimate falls either side of the link's rate by chance. An older
  // QEMU without calc-dirty-rate just leaves the engine QEMU's own numbers. (libvirt's
  // dirty-rate calculation is not used: QEMU's own numbers only.)
  constexpr int64_t kDirtyRateSamplePages = 16384;
  Value dirty_rate_args = Value::object(
      {{"calc-time", Value(int64_t{1})}, {"sample-pages", Value(kDirtyRateSamplePages)}});
  bool sampling = false;
  if (src) {
    sampling = static_cast<bool>(src->execute("calc-dirty-rate", dirty_rate_args));
    if (!sampling) {
      dirty_rate_args = Value::object({{"calc-time", Value(int64_t{1})}});
      sampling = static_cast<bool>(src->execute("calc-dirty-rate", dirty_rate_args));
    }
  }
  double sampled_dirty_bytes_per_s = 0;  // the latest
  uint64_t dirty_rate_samples = 0;
  Value dirty_rate_series = Value::array();  // [seconds since start, bytes/s] per sample
  int64_t dirty_rate_sample_pages = 0;       // per GiB, as QEMU took them

  // 3. The policy loop.
  a.limits.codec_adapts = a.send.codec == encoders::CodecLevel::kAuto;
  Engine engine(a.limits);
  CpuIdleMeter cpu;
  std::vector<Decision> decisions;
  QemuSample q;
  std::string outcome, reason;
  std::string cancelled_by;       // a signal made us cancel the migration
  TimePoint signal_refused_at{};  // a signal refused in post-copy (a second forces)
  PostcopyPause pause;            // post-copy paused: when, and the recovery attempts
  SetCounters earlier;            // the ferry paths that recovery replaced, summed
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::string error_desc;
    auto m = source->sample(error_desc);
    if (!m) {
      reason = m.status().message();
      outcome = "failed";
      break;
    }
    // A cancelled or failed migration reports no counters: keep the last ones that came.
    const QemuSample now = *m;
    if (now.total_time_ms || now.transferred_bytes || q.status.empty()) {
      q = now;
    } else {
      q.status = now.status;
    }
    const double now_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (sampling && now_s >= 1.0) {
      auto d = src->execute("query-dirty-rate");
      if (!d) {
        sampling = false;
      } else if ((*d)["status"].as_string() == "measured") {
        sampled_dirty_bytes_per_s = (*d)["dirty-rate"].as_double() * 1048576.0;  // MiB/s
        dirty_rate_sample_pages = (*d)["sample-pages"].as_int();
        ++dirty_rate_samples;
        dirty_rate_series.push_back(Value::array({Value(now_s), Value(sampled_dirty_bytes_per_s)}));
        const bool pass_one =
            (q.status == "active" || q.status == "setup") && q.dirty_sync_count <= 1;
        sampling = pass_one && static_cast<bool>(src->execute("calc-dirty-rate", dirty_rate_args));
      }
    }
    Sample s;
    s.time_s = now_s;
    s.qemu = q;
    s.qemu.sampled_dirty_bytes_per_s = sampled_dirty_bytes_per_s;
    s.qemu.dirty_rate_samples = dirty_rate_samples;
    const SetCounters c = session->channels().counters().after(earlier);
    s.ferry.bytes_from_qemu = c.bytes_from_qemu;
    s.ferry.link_tx_bytes = c.link_tx_bytes;
    s.ferry.page_bytes_in = c.page_bytes_in;
    s.ferry.page_wire_bytes = c.page_wire_bytes;
    s.ferry.effort = c.effort;
    s.ferry.link_backlog_bytes = c.link_backlog_bytes;
    s.ferry.encode_ns = c.encode_ns;
    s.cpu_idle = cpu.sample();

    if (q.status == "completed") {
      outcome = "completed";
      break;
    }
    if (q.status == "failed" || q.status == "cancelled") {
      const bool we_stopped = !decisions.empty() && decisions.back().action == Action::kStop;
      outcome = we_stopped ? "stopped" : q.status;
      reason = we_stopped ? decisions.back().reason : error_desc;
      if (!cancelled_by.empty() && !we_stopped) {
        outcome = "cancelled";
        reason = "cancelled by " + cancelled_by + " (the source keeps the VM)";
      }
      // ferry's path failed first (a link timeout, ferry recv gone) and QEMU failed on the
      // socket it closed: QEMU's own error ("Unable to write to socket") does not say why.
      if (outcome == "failed" && session->done()) {
        if (const std::string why = session->wait(); !why.empty()) {
          reason = "ferry: " + why + (reason.empty() ? "" : " (QEMU: " + reason + ")");
        }
      }
      if (reason.empty()) reason = "QEMU reports the migration " + q.status;
      break;
    }
    // The link failed in post-copy: both QEMUs pause, the VM waits on the destination for
    // pages only the source has. Recover through a new ferry path (QEMU's post-copy recovery)
    // until the deadline.
    if (q.status == "postcopy-paused") {
      const TimePoint wall = Clock::now();
      if (pause.since == TimePoint{}) {
        pause.since = wall;
        pause.why = session->done() ? session->wait() : "";
        std::fprintf(stderr,
                     "%sferry migrate: post-copy paused at %.1f s%s%s: the VM waits on "
                     "the destination%s\n",
                     tty ? "\r\033[K" : "", now_s, pause.why.empty() ? "" : ": ", pause.why.c_str(),
                     a.recover_uri.empty() ? " (no --recover-uri: recover it by hand with "
                                             "migrate-recover and migrate resume=true)"
                                           : "; recovering");
      }
      if (now_s > a.limits.deadline_s) {
        outcome = "paused";
        reason = "post-copy paused for " + fmt_seconds(wall - pause.since) +
                 " and not recovered by the deadline of " +
                 std::to_string(static_cast<int>(a.limits.deadline_s)) +
                 " s: the VM waits on the destination for QEMU's post-copy recovery" +
                 (pause.why.empty() ? "" : " (" + pause.why + ")");
        break;
      }
      // A new attempt once the path the source resumed into (if any) ended, and the last
      // attempt's back-off passed.
      if (pause.resuming && session->done()) pause.resuming = false;
      if (!a.recover_uri.empty() && !pause.resuming && wall >= pause.next_attempt) {
        const SendSession* before = session.get();
        const SetCounters retiring = session->channels().counters();
        if (auto d = recover(*src, *dst, a, path, pause, wall)) {
          if (session.get() != before) earlier = retiring.after(earlier);
          d->time_s = now_s;
          record_decision(*d, a.json, tty);
          decisions.push_back(*d);
        }
      }
    } else if (pause.since != TimePoint{} && q.status == "postcopy-active") {
      const double paused_s = std::chrono::duration<double>(Clock::now() - pause.since).count();
      pause.total_s += paused_s;
      std::fprintf(stderr, "%sferry migrate: post-copy resumed after %.1f s paused (attempt %d)\n",
                   tty ? "\r\033[K" : "", paused_s, pause.attempts);
      const PostcopyPause done = pause;
      pause = PostcopyPause();
      pause.recoveries = done.recoveries + 1;
      pause.total_s = done.total_s;
    }
    // A stop signal: in pre-copy, cancel (QEMU keeps the VM on the source); in post-copy the
    // VM runs on the destination with pages still here, so the first one is refused.
    if (const char* name = signals.take()) {
      const bool postcopy = q.status.rfind("postcopy", 0) == 0;
      const TimePoint wall = Clock::now();
      if (!postcopy) {
        if (cancelled_by.empty()) {
          std::fprintf(stderr, "%sferry migrate: %s: cancelling the migration\n",
                       tty ? "\r\033[K" : "", name);
          source->cancel();
          cancelled_by = name;
        }
      } else if (signal_refused_at == TimePoint{} || wall - signal_refused_at > kForceWithin) {
        signal_refused_at = wall;
        std::fprintf(stderr,
                     "%sferry migrate: %s: not stopping: the migration is in post-copy, so the VM "
                     "runs on the destination and still needs pages from the source; stopping "
                     "now would lose it. Send it again within %lld s to force.\n",
                     tty ? "\r\033[K" : "", name, static_cast<long long>(kForceWithin.count()));
      } else {
        outcome = "abandoned";
        reason = std::string("forced by a second ") + name +
                 " in post-copy: unless QEMU's post-copy recovery resumes it, the VM is lost";
        break;
      }
    }
    for (Decision& d : engine.step(s)) {
      d.time_s = now_s;
      if (d.action == Action::kSetEffort) {
        session->channels().set_effort(static_cast<int>(d.value));
      } else if (d.action == Action::kSetMaxBandwidth) {
        (void)source->set_max_bandwidth(static_cast<int64_t>(d.value));
      } else if (d.action == Action::kSetDowntimeLimit) {
        (void)source->set_downtime_limit(static_cast<int64_t>(d.value));
      } else if (d.action == Action::kStartPostcopy) {
        if (auto st = source->start_postcopy(); !st) {
          d.reason +=
              std::string(libvirt ? " (libvirt" : " (QEMU") + " refused: " + st.message() + ")";
        } else if (a.postcopy_backlog_at_request) {
          session->channels().postcopy_requested();
        }
      } else if (d.action == Action::kStop) {
        source->cancel();
      }
      record_decision(d, a.json, tty);
      if (mm) mm->decision(d.action);
      decisions.push_back(d);
    }
    const policy::View& v = engine.view();
    if (mm) mm->update(q.status, q.dirty_sync_count, q.remaining_bytes, v);
    if (a.json) {
      std::printf("%s\n", Value::object(
                              {{"event", Value("progress")},
                               {"t_s", Value(now_s)},
                               {"status", Value(q.status)},
                               {"pass", Value(static_cast<int64_t>(q.dirty_sync_count))},
                               {"remaining_bytes", Value(static_cast<int64_t>(q.remaining_bytes))},
                               {"link_bytes_per_s", Value(v.link_bytes_per_s)},
                               {"effective_bytes_per_s", Value(v.effective_bytes_per_s)},
                               {"dirty_bytes_per_s", Value(v.dirty_bytes_per_s)},
                               {"eta_s", Value(v.eta_s)},
                               {"effort", Value(static_cast<int64_t>(c.effort))}})
                              .dump()
                              .c_str());
      std::fflush(stdout);
    } else if (tty) {
      std::fprintf(stderr,
                   "\r\033[K%6.1f s  %-15s pass %-3llu remaining %-9s link %6.1f MB/s  "
                   "dirty %6.1f MB/s  effort %d  ETA %s",
                   now_s, q.status.c_str(), static_cast<unsigned long long>(q.dirty_sync_count),
                   fmt_bytes(static_cast<double>(q.remaining_bytes)).c_str(),
                   v.link_bytes_per_s / 1e6, v.dirty_bytes_per_s / 1e6, c.effort,
                   std::isfinite(v.eta_s)
                       ? (std::to_string(static_cast<int>(v.eta_s)) + " s").c_str()
                       : "never");
    }
  }
  if (tty) std::fprintf(stderr, "\n");

  // 4. The end: the ferry path drains (post-copy's last pages, the return path), then report.
  if (outcome != "completed") session->abort();
  std::string path_error = session->wait();
  if (outcome == "completed" && !path_error.empty()) {
    outcome = "failed";
    reason = "ferry: " + path_error;
  }
  if (outcome != "completed" && reason.empty()) reason = path_error;
  const PostcopyBlocktime blocktime = outcome == "completed" && dst && postcopy_started(decisions)
                                          ? query_blocktime(*dst)
                                          : PostcopyBlocktime();
  path.metrics->end(outcome == "completed"   ? "completed"
                    : outcome == "cancelled" ? "cancelled"
                                             : "failed");
  if (mm) {
    mm->update(q.status, q.dirty_sync_count, q.remaining_bytes, engine.view());
    mm->end(outcome);
  }
  const SetCounters c = session->channels().counters().after(earlier);
  const double total_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const bool downtime_ok = outcome != "completed" || q.downtime_ms <= a.limits.max_downtime_ms;
  // The page cache's policy and how well it served (null without page encoding).
  const Value stats = session->channels().stats_json(outcome, reason);
  const Value cache = stats.get({"page_cache"});
  // How the link was protected, and who the receiver proved to be.
  const std::string protection =
      a.send.security ? std::string("TLS 1.3 + AES-256-GCM (") + a.send.security->mode() + ")"
                      : std::string(dataplane::spec_is_local(a.send.peer) ? "none (loopback)"
                                                                          : "none (--insecure)");
  const std::string receiver =
      stats.get({"per_channel"})[size_t{0}].get({"link", "peer"}).as_string();

  if (a.json) {
    Value ds = Value::array();
    for (const auto& d : decisions) {
      ds.push_back(Value::object({{"t_s", Value(d.time_s)},
                                  {"action", Value(action_name(d.action))},
                                  {"value", Value(d.value)},
                                  {"reason", Value(d.reason)}}));
    }
    std::printf("%s\n",
                Value::object(
                    {{"event", Value("report")},
                     {"outcome", Value(outcome)},
                     {"reason", Value(reason)},
                     {"total_time_ms", Value(static_cast<int64_t>(q.total_time_ms))},
                     {"wall_s", Value(total_s)},
                     {"downtime_ms", Value(static_cast<int64_t>(q.downtime_ms))},
                     {"downtime_within_budget", Value(downtime_ok)},
                     {"qemu_transferred_bytes", Value(static_cast<int64_t>(q.transferred_bytes))},
                     {"link_bytes", Value(static_cast<int64_t>(c.link_tx_bytes + c.link_rx_bytes))},
                     {"postcopy_requests", Value(static_cast<int64_t>(q.postcopy_requests))},
                     {"postcopy_preempt", Value(preempt_on)},
                     // The source QEMU's part of each page request (pipeline/page_requests.h).
                     {"postcopy_source", stats.get({"postcopy"})},
                     {"channels", Value(static_cast<int64_t>(c.channels))},
                     {"passes", Value(static_cast<int64_t>(q.dirty_sync_count))},
                     {"link_resumes", Value(static_cast<int64_t>(c.link_resumes))},
                     {"postcopy_recoveries", Value(static_cast<int64_t>(pause.recoveries))},
                     {"postcopy_paused_s", Value(pause.total_s)},
                     {"postcopy_blocktime_ms", blocktime.known ? Value(blocktime.all_ms) : Value()},
                     {"postcopy_vcpu_blocktime_ms", blocktime.known ? blocktime.vcpu_ms : Value()},
                     {"sampled_dirty_bytes_per_s", Value(sampled_dirty_bytes_per_s)},
                     {"sampled_dirty_series", dirty_rate_series},
                     {"dirty_rate_sample_pages", Value(dirty_rate_sample_pages)},
                     {"page_cache", cache},
                     // Pages encoded at each effort 0..6 (null without encoding): where auto went.
                     {"pages_per_effort", stats.get({"encoding", "pages_per_effort"})},
                     {"link_protection", Value(protection)},
                     {"receiver_identity", Value(receiver)},
                     {"decisions", ds}})
                    .dump()
                    .c_str());
  } else {
    std::fprintf(stderr,
                 "ferry migrate: %s%s%s\n"
                 "  total time   %llu ms (QEMU), %.1f s wall\n"
                 "  downtime     %llu ms (budget %.0f ms%s)\n"
                 "  passes       %llu\n"
                 "  bytes        %s from QEMU, %s on the link\n",
                 outcome.c_str(), reason.empty() ? "" : ": ", reason.c_str(),
                 static_cast<unsigned long long>(q.total_time_ms), total_s,
                 static_cast<unsigned long long>(q.downtime_ms), a.limits.max_downtime_ms,
                 downtime_ok ? "" : ", EXCEEDED",
                 static_cast<unsigned long long>(q.dirty_sync_count),
                 fmt_bytes(static_cast<double>(c.bytes_from_qemu)).c_str(),
                 fmt_bytes(static_cast<double>(c.link_tx_bytes + c.link_rx_bytes)).c_str());
    if (blocktime.known) {
      std::fprintf(stderr,
                   "  post-copy    the guest's vCPUs waited for pages %lld ms (the longest-"
                   "waiting vCPU), all vCPUs at once %lld ms\n",
                   static_cast<long long>(blocktime.max_vcpu_ms),
                   static_cast<long long>(blocktime.all_ms));
    }
    if (pause.recoveries > 0) {
      std::fprintf(stderr, "  post-copy    paused and recovered %d time%s, %.1f s paused in all\n",
                   pause.recoveries, pause.recoveries == 1 ? "" : "s", pause.total_s);
    }
    std::fprintf(stderr, "  link         %s%s%s\n", protection.c_str(),
                 receiver.empty() ? "" : ", receiver ", receiver.c_str());
    if (c.link_resumes > 0) {
      std::fprintf(stderr, "  resumed      %llu broken connection%s, QEMU unaware\n",
                   static_cast<unsigned long long>(c.link_resumes), c.link_resumes == 1 ? "" : "s");
    }
    if (cache.is_object()) {
      std::fprintf(
          stderr,
          "  page cache   %s, %s used of a %s budget (capacity now %s), %.1f %% of %llu "
          "lookups hit\n",
          cache["policy"].as_string().c_str(), fmt_bytes(cache["peak_bytes"].as_double()).c_str(),
          fmt_bytes(cache["budget_bytes"].as_double()).c_str(),
          fmt_bytes(cache["capacity_bytes"].as_double()).c_str(),
          100.0 * cache["hit_rate"].as_double(),
          static_cast<unsigned long long>(cache["hits"].as_int() + cache["misses"].as_int()));
    }
    if (decisions.empty()) std::fprintf(stderr, "  decisions    none (pre-copy converged)\n");
    for (const auto& d : decisions) {
      std::fprintf(stderr, "  [%6.1f s] %s: %s\n", d.time_s, action_name(d.action),
                   d.reason.c_str());
    }
  }
  return outcome == "completed" ? 0 : 1;
}

}  // namespace ferry::apps
