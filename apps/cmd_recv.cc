// apps/cmd_recv.cc — `ferry recv`: the destination side. Arguments, then a RecvSession
// (pipeline/recv_session.h: accepts links from one `ferry send` session, checks each handshake
// before anything reaches QEMU, connects the destination QEMU once per channel in the sender's
// order), progress while it runs, the final line and --stats-json.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/stop_signals.h"
#include "dataplane/net.h"
#include "pipeline/recv_session.h"

namespace ferry::apps {
namespace {

void recv_usage(FILE* out) {
  std::fprintf(
      out,
      "usage: ferry recv --listen TRANSPORT:ADDRESS --qemu unix:PATH [--stats-json FILE]\n"
      "                  [--max-cache-mib N] [--poll adaptive|busy] [--fabric-provider NAME]\n"
      "                  [--dpdk-args \"EAL ARGS\"] [--dpdk-local IPV4] [--link-timeout S]\n"
      "                  [--quiet]\n"
      "                  [--tls-x509-dir DIR | --tls-psk-file FILE | --insecure]\n"
      "                  [--tls-authz NAME,...] [--metrics tcp:HOST:PORT]\n"
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
      "  --listen tcp:HOST:PORT  where ferry send connects; transports in this build: %s\n"
      "  --qemu unix:PATH        the destination QEMU's -incoming socket\n"
      "  --max-cache-mib N       refuse a sender whose --cache-mib is larger (default 4096):\n"
      "                          ferry recv keeps a page cache of the sender's size\n"
      "  --poll adaptive|busy    how the dataplane waits (as ferry send; default adaptive)\n"
      "  --fabric-provider NAME  rdma: the libfabric provider (as ferry send; default verbs)\n"
      "  --link-timeout S        fail a link whose peer is silent for S seconds (as ferry\n"
      "                          send; 2..600, default 10)\n"
      "  --stats-json FILE       write the final counters: bytes to/from QEMU, bytes on the\n"
      "                          link, pages by class, return-path messages, channels, duration\n"
      "  --quiet                 no progress line (it is shown only on a terminal anyway)\n"
      "%s%s%s",
      transport_names().c_str(), kSecurityUsage, kDpdkUsage, kMetricsUsage);
}

}  // namespace

int run_recv(int argc, char** argv) {
  std::string listen_s, qemu_s, stats_path, metrics_spec;
  bool quiet = false;
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
    } else if (take_dpdk_flag(args, dpdk)) {
    } else if (take_security_flag(args, security)) {
    } else {
      args.unknown();
    }
  }
  if (!args.ok()) return 2;
  if (listen_s.empty() || qemu_s.empty()) {
    std::fprintf(stderr, "ferry recv: give --listen and --qemu\n\n");
    recv_usage(stderr);
    return 2;
  }
  auto qemu_ep = dataplane::parse_endpoint(qemu_s);
  if (!qemu_ep || qemu_ep->kind != dataplane::Endpoint::Kind::kUnix) {
    std::fprintf(stderr, "ferry recv: --qemu must be unix:PATH, got '%s'\n", qemu_s.c_str());
    return 2;
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
    std::fprintf(stderr, "ferry recv: refused a link on %s: %s\n", where.c_str(), why.c_str());
  };
  StopSignals signals;  // before the session's threads: they inherit the blocked signals
  auto exporter = start_metrics(metrics_spec);
  if (!exporter) {
    std::fprintf(stderr, "ferry recv: %s\n", exporter.status().message().c_str());
    return 2;
  }
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
