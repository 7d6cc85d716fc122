// apps/cmd_recv.cc — `ferry recv`: the destination side. Arguments, then a RecvSession
// (pipeline/recv_session.h: accepts links from one `ferry send` session, checks each handshake
// before anything reaches QEMU, connects the destination QEMU once per channel in the sender's
// order), progress while it runs, the final line and --stats-json. With --serve, a RecvServer
// (pipeline/recv_server.h: migration after migration, several at once) and its log.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <string>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/stop_signals.h"
#include "common/sd_notify.h"
#include "dataplane/net.h"
#include "pipeline/recv_server.h"
#include "pipeline/recv_session.h"

namespace ferry::apps {
namespace {

void recv_usage(FILE* out) {
  std::fprintf(
      out,
      "usage: ferry recv --listen TRANSPORT:ADDRESS --qemu unix:PATH [--stats-json FILE]\n"
      "       ferry recv --serve --listen TRANSPORT:ADDRESS (--qemu-dir DIR | --qemu unix:PATH)\n"
      "                  [--stats-dir DIR] [--max-sessions N]\n"
      "   and, for both: [--max-cache-mib N] [--poll adaptive|busy] [--fabric-provider NAME]\n"
      "                  [--dpdk-args \"EAL ARGS\"] [--dpdk-local IPV4] [--dpdk-mtu N]\n"
      "                  [--link-timeout S] [--resume-within S]\n"
      "                  [--quiet]\n"
      "                  [--tls-x509-dir DIR | --tls-psk-file FILE | --insecure]\n"
      "                  [--tls-authz NAME,...] [--metrics tcp:HOST:PORT] [--log-level LEVEL]\n"
      "\n"
      "The destination side of a migration through ferry. Start the destination QEMU with\n"
      "-incoming unix:PATH, then ferry recv, then ferry send and the migration on the source.\n"
      "Each link ferry send opens is authenticated (TLS 1.3 with the credentials given) and\n"
      "checked (magic, version, features, session) before anything reaches QEMU; a bad one is\n"
      "refused with a one-line reason and ferry recv keeps waiting for its sender; every frame\n"
      "after that is sealed (AES-256-GCM), and one that fails its check fails the migration.\n"
      "Without credentials ferry recv listens only on 127.0.0.1/::1 unless given --insecure.\n"
      "Channels are connected to QEMU in the order the source QEMU opened them. Exits 0 once the "
      "destination QEMU took the whole stream and closed;\n"
      "otherwise 1 with a one-line reason.\n"
      "SIGINT, SIGTERM or SIGHUP in pre-copy cancels the migration (the source keeps the VM);\n"
      "in post-copy the first is refused (the VM would be lost), a second within 5 s forces.\n"
      "\n"
      "Long-running receiver (--serve): serves migration after migration, several at once,\n"
      "until SIGINT or SIGTERM. Each session is one `ferry send` (or `ferry migrate`) that\n"
      "authenticated as above; its destination QEMU is DIR/NAME.sock, NAME being the VM name\n"
      "the sender gave (ferry send --vm NAME). A link without a name, with one that is not\n"
      "1-64 of A-Z a-z 0-9 . _ - (not starting with '.'), for a VM that is already migrating\n"
      "here, or whose socket does not exist is refused with a one-line reason the sender\n"
      "prints. With --qemu unix:PATH instead of --qemu-dir, every session goes to that one\n"
      "socket, one at a time (the next sender is refused while one runs). One session's\n"
      "failure (sender killed, bad handshake, QEMU gone) ends that session only. One line on\n"
      "stderr per session when it starts and when it ends: VM, session id, outcome, bytes to\n"
      "QEMU, seconds (and the reason when it failed).\n"
      "With $NOTIFY_SOCKET set (systemd Type=notify) it sends READY=1 once listening and\n"
      "STOPPING=1 when it begins to stop. On SIGINT or SIGTERM it stops accepting, cancels the\n"
      "sessions still in pre-copy (their sources keep the VMs) and lets those in post-copy\n"
      "finish (it names them); the same signal again within 5 s forces those too (their VMs\n"
      "are lost unless QEMU's post-copy recovery resumes them). SIGHUP is ignored. Exit 0 when\n"
      "it stopped on a signal and no session in post-copy was forced or failed after it;\n"
      "earlier sessions' failures are logged (their senders report them too) and do not\n"
      "change it. Exit 1 when it was forced or its listener failed, 2 for bad arguments.\n"
      "\n"
      "  --listen tcp:HOST:PORT  where ferry send connects; transports in this build: %s\n"
      "  --qemu unix:PATH        the destination QEMU's -incoming socket\n"
      "  --max-cache-mib N       refuse a sender whose --cache-mib is larger (default 4096):\n"
      "                          ferry recv keeps a page cache of the sender's size\n"
      "  --poll adaptive|busy    how the dataplane waits (as ferry send; default adaptive)\n"
      "  --fabric-provider NAME  rdma: the libfabric provider (as ferry send; default verbs)\n"
      "  --link-timeout S        fail a link whose peer is silent for S seconds (as ferry\n"
      "                          send; 2..600, default 10)\n"
      "  --resume-within S       wait S seconds for ferry send to replace a failed link by\n"
      "                          a new connection (as ferry send; 0..3600, default 60)\n"
      "  --stats-json FILE       write the final counters: bytes to/from QEMU, bytes on the\n"
      "                          link, pages by class, return-path messages, channels, duration,\n"
      "                          post-copy page requests and how long each waited for its page\n"
      "  --quiet                 no progress line (it is shown only on a terminal anyway);\n"
      "                          with --serve, no line when a session starts\n"
      "  --serve                 the long-running receiver above\n"
      "  --qemu-dir DIR          each session's destination QEMU at DIR/NAME.sock\n"
      "  --stats-dir DIR         one JSON per session, DIR/NAME-SESSIONID.json (the content\n"
      "                          of --stats-json, plus \"vm\" and \"session_id\")\n"
      "  --max-sessions N        sessions at once (default 16); more are refused\n"
      "%s%s%s%s",
      transport_names().c_str(), kSecurityUsage, kDpdkUsage, kMetricsUsage, kLogUsage);
}

struct ServeArgs {
  std::string listen, qemu, qemu_dir, stats_dir;
  size_t max_sessions = 16;
  bool quiet = false;
};

std::string session_name(const pipeline::ServedSession& s) {
  char id[17];
  std::snprintf(id, sizeof id, "%016" PRIx64, s.id);
  return (s.vm.empty() ? std::string("session") : "VM " + s.vm) + " (session " + id + ")";
}

std::string stats_file(const std::string& dir, const pipeline::ServedSession& s) {
  char id[17];
  std::snprintf(id, sizeof id, "%016" PRIx64, s.id);
  return dir + "/" + (s.vm.empty() ? std::string("session") : s.vm) + "-" + id + ".json";
}

bool is_dir(const std::string& path) {
  struct stat sb;
  return ::stat(path.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode);
}

// The flag combinations of --serve, or why not ("" = fine).
std::string check_serve_flags(bool serve, const std::string& qemu, const ServeArgs& a,
                              const std::string& stats_json) {
  if (!serve) {
    if (!a.qemu_dir.empty() || !a.stats_dir.empty()) {
      return "--qemu-dir and --stats-dir go with --serve (one migration: --qemu unix:PATH and "
             "--stats-json FILE)";
    }
    return "";
  }
  if (!stats_json.empty()) {
    return "--serve writes one file per session: give --stats-dir DIR, not --stats-json";
  }
  if (qemu.empty() == a.qemu_dir.empty()) {
    return "--serve needs one of --qemu-dir DIR (a QEMU per VM name) or --qemu unix:PATH (one "
           "migration at a time)";
  }
  if (!a.qemu_dir.empty() && !is_dir(a.qemu_dir)) {
    return "--qemu-dir " + a.qemu_dir + " is not a directory";
  }
  if (!a.stats_dir.empty() && !is_dir(a.stats_dir)) {
    return "--stats-dir " + a.stats_dir + " is not a directory";
  }
  return "";
}

// `ferry recv --serve`: runs a RecvServer until a signal stopped it and its sessions ended.
int run_serve(const ServeArgs& a, pipeline::RecvOptions recv, metrics::Exporter* exporter) {
  const char* cmd = "ferry recv";
  pipeline::ServeOptions opt;
  opt.recv = std::move(recv);
  opt.qemu_dir = a.qemu_dir;
  opt.qemu_spec = a.qemu;
  opt.max_sessions = a.max_sessions;
  // Written on this thread, read in on_end on the server's thread, and the other way round.
  std::atomic<bool> stopping{false};
  std::atomic<bool> lost{false};  // a session in post-copy failed after the stop began
  // Each session's metrics, from its start to its end (both on the server's thread).
  std::map<uint64_t, std::unique_ptr<metrics::SessionMetrics>> session_metrics;
  opt.on_start = [&](const pipeline::ServedSession& s, pipeline::ChannelSet& set) {
    if (exporter) {
      session_metrics[s.id] = std::make_unique<metrics::SessionMetrics>(exporter, set, "recv");
    }
    if (a.quiet) return;
    std::fprintf(stderr, "%s%s: %s: started%s%s, destination QEMU %s\n",
                 log::journal_prefix(log::Level::kInfo), cmd, session_name(s).c_str(),
                 s.peer.empty() ? "" : " by ", s.peer.c_str(), s.qemu.c_str());
  };
  opt.on_end = [&](const pipeline::ServedSession& s, pipeline::ChannelSet& set,
                   const std::string& error) {
    const pipeline::SetCounters c = set.counters();
    if (auto m = session_metrics.find(s.id); m != session_metrics.end()) {
      m->second->end(!s.stopped.empty() ? "cancelled" : error.empty() ? "completed" : "failed");
      session_metrics.erase(m);
    }
    if (!a.stats_dir.empty()) {
      json::Value j = set.stats_json(error.empty() ? "completed" : "failed", error);
      j.set("vm", s.vm.empty() ? json::Value() : json::Value(s.vm));
      char id[17];
      std::snprintf(id, sizeof id, "%016" PRIx64, s.id);
      j.set("session_id", json::Value(std::string(id)));
      if (auto st = write_text_file(stats_file(a.stats_dir, s), j.dump() + "\n"); !st) {
        std::fprintf(stderr, "%s: %s: %s\n", cmd, session_name(s).c_str(), st.message().c_str());
      }
    }
    std::fprintf(stderr, "%s%s: %s: %s, %.1f MB to QEMU, %.1f MB on the link, %.1f s%s%s\n",
                 log::journal_prefix(error.empty() ? log::Level::kInfo : log::Level::kError), cmd,
                 session_name(s).c_str(), error.empty() ? "completed" : "failed",
                 c.bytes_to_qemu / 1e6, (c.link_rx_bytes + c.link_tx_bytes) / 1e6, c.seconds,
                 error.empty() ? "" : ": ", error.c_str());
    if (stopping && !error.empty() && set.postcopy_started()) lost = true;
  };

  StopSignals signals;  // before the server's threads: they inherit the blocked signals
  pipeline::RecvServer server(std::move(opt));
  if (auto st = server.listen(a.listen); !st) {
    std::fprintf(stderr, "%s: %s\n", cmd, st.message().c_str());
    return 1;
  }
  server.start();
  std::fprintf(stderr, "%s%s: serving on %s, destination QEMUs at %s\n",
               log::journal_prefix(log::Level::kInfo), cmd, server.where().c_str(),
               a.qemu_dir.empty() ? (a.qemu + " (one migration at a time)").c_str()
                                  : (a.qemu_dir + "/NAME.sock").c_str());
  if (auto st = sd_notify("READY=1"); !st) {
    std::fprintf(stderr, "%s: %s\n", cmd, st.message().c_str());
  }
  TimePoint refused_at{};
  bool forced = false;
  // The signals are read here, between short waits for the server's end.
  while (!server.wait_for(std::chrono::milliseconds(200))) {
    const char* name = signals.take();
    if (!name) continue;
    if (std::string(name) == "SIGHUP") {
      std::fprintf(stderr, "%s: SIGHUP ignored (nothing to reload; SIGTERM stops)\n", cmd);
      continue;
    }
    const TimePoint now = Clock::now();
    const bool force = stopping && refused_at != TimePoint{} && now - refused_at <= kForceWithin;
    if (!stopping) {
      stopping = true;
      (void)sd_notify("STOPPING=1");
    }
    size_t aborted = 0;
    const std::string reason = std::string("cancelled by ") + name +
                               (force ? " (forced in post-copy: unless QEMU's post-copy "
                                        "recovery resumes it, the VM is lost)"
                                      : ": ferry recv is stopping (the source keeps the VM)");
    auto left = server.stop(reason, force, &aborted);
    if (force && aborted) forced = true;
    std::string names;
    for (const auto& s : left) names += (names.empty() ? "" : ", ") + session_name(s);
    std::fprintf(stderr, "%s: %s: %s; %zu session%s cancelled%s", cmd, name,
                 force ? "forced" : "stopping: no new migrations", aborted, aborted == 1 ? "" : "s",
                 left.empty() ? "\n" : "");
    if (!left.empty()) {
      refused_at = now;
      std::fprintf(stderr,
                   "; waiting for %zu in post-copy to finish (%s): their VMs run here and still "
                   "need pages from their sources. Send it again within %lld s to force.\n",
                   left.size(), names.c_str(), static_cast<long long>(kForceWithin.count()));
    }
  }
  if (const std::string err = server.error(); !err.empty()) {
    std::fprintf(stderr, "%s: %s\n", cmd, err.c_str());
    return 1;
  }
  return forced || lost ? 1 : 0;
}

}  // namespace

int run_recv(int argc, char** argv) {
  std::string listen_s, qemu_s, stats_path, metrics_spec;
  bool quiet = false, serve = false;
  ServeArgs sa;
  size_t max_cache_mib = 4096;
  dataplane::PollMode poll_mode = dataplane::PollMode::kAdaptive;
  dataplane::TransportSettings transport;
  dataplane::dpdk::DpdkSettings dpdk;
  SecurityFlags security;
  ArgReader args("ferry recv", argc, argv);
  while (args.next()) {
    if (args.is("--help") || args.is("-h")) {
      recv_usage(stdout);
      return 0;
    } else if (args.is("--listen")) {
      listen_s = args.value();
    } else if (args.is("--qemu")) {
      qemu_s = args.value();
    } else if (args.is("--serve")) {
      serve = true;
    } else if (args.is("--qemu-dir")) {
      sa.qemu_dir = args.value();
    } else if (args.is("--stats-dir")) {
      sa.stats_dir = args.value();
    } else if (args.is("--max-sessions")) {
      sa.max_sessions = static_cast<size_t>(args.count(1, 1024));
    } else if (args.is("--stats-json")) {
      stats_path = args.value();
    } else if (args.is("--metrics")) {
      metrics_spec = args.value();
    } else if (args.is("--quiet")) {
      quiet = true;
    } else if (args.is("--max-cache-mib")) {
      max_cache_mib = static_cast<size_t>(args.count(0, 1 << 20));
    } else if (args.is("--poll")) {
      poll_mode = args.poll_mode();
    } else if (args.is("--fabric-provider")) {
      transport.fabric_provider = args.value();
    } else if (args.is("--link-timeout")) {
      transport.link_timeout = link_timeout_value(args);
    } else if (args.is("--resume-within")) {
      transport.resume_within = resume_within_value(args);
    } else if (take_dpdk_flag(args, dpdk)) {
    } else if (take_security_flag(args, security)) {
    } else if (take_log_flag(args)) {
    } else {
      args.unknown();
    }
  }
  if (!args.ok()) return 2;
  if (auto bad = check_serve_flags(serve, qemu_s, sa, stats_path); !bad.empty()) {
    std::fprintf(stderr, "ferry recv: %s\n\n", bad.c_str());
    recv_usage(stderr);
    return 2;
  }
  if (listen_s.empty() || (qemu_s.empty() && !serve)) {
    std::fprintf(stderr, "ferry recv: give --listen and --qemu\n\n");
    recv_usage(stderr);
    return 2;
  }
  if (!qemu_s.empty()) {  // --serve --qemu-dir has none
    auto qemu_ep = dataplane::parse_endpoint(qemu_s);
    if (!qemu_ep || qemu_ep->kind != dataplane::Endpoint::Kind::kUnix) {
      std::fprintf(stderr, "ferry recv: --qemu must be unix:PATH, got '%s'\n", qemu_s.c_str());
      return 2;
    }
  }
  if (auto st = apply_dpdk_settings(dpdk); !st) {
    std::fprintf(stderr, "ferry recv: %s\n", st.message().c_str());
    return 2;
  }
  auto credentials = load_security("ferry recv", security, dataplane::TlsRole::kServer, listen_s);
  if (!credentials) {
    std::fprintf(stderr, "ferry recv: %s\n", credentials.status().message().c_str());
    return 2;
  }
  const bool progress = !quiet && ::isatty(2);
  pipeline::RecvOptions opt;
  opt.security = *credentials;
  opt.max_cache_bytes = max_cache_mib << 20;
  opt.poll_mode = poll_mode;
  opt.transport = transport;
  opt.on_refused = [](const std::string& where, const std::string& why) {
    std::fprintf(stderr, "%sferry recv: refused a link on %s: %s\n",
                 log::journal_prefix(log::Level::kWarn), where.c_str(), why.c_str());
  };
  auto exporter = start_metrics(metrics_spec);
  if (!exporter) {
    std::fprintf(stderr, "ferry recv: %s\n", exporter.status().message().c_str());
    return 2;
  }
  if (serve) {
    sa.listen = listen_s;
    sa.qemu = qemu_s;
    sa.quiet = quiet;
    return run_serve(sa, std::move(opt), exporter->get());
  }
  StopSignals signals;  // before the session's threads: they inherit the blocked signals
  pipeline::RecvSession session(std::move(opt));
  metrics::SessionMetrics session_metrics(exporter->get(), session.channels(), "recv");
  if (auto st = session.listen(listen_s, qemu_s); !st) {
    std::fprintf(stderr, "ferry recv: %s\n", st.message().c_str());
    return 1;
  }
  session.start();
  std::string cancelled;
  std::string error = session.wait(stop_on_signal(
      "ferry recv", signals, session.channels(), [&session] { session.abort(); },
      progress ? progress_tick(session.channels()) : nullptr, cancelled));
  session_metrics.end(session_outcome(error, cancelled));
  if (!cancelled.empty()) error = cancelled;
  if (progress) std::fprintf(stderr, "\n");
  return finish_session("ferry recv", session.channels(), stats_path, error, quiet);
}

}  // namespace ferry::apps
