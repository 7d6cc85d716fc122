// apps/cmd_send.cc — `ferry send`: the source side. Accepts the source QEMU's migration
// connections on a unix socket (or takes the stream on stdin/stdout with --stdio, for
// `migrate exec:`), opens one link to `ferry recv` per connection, in the order QEMU opened
// them (main first, then multifd channels), and pumps each on its own thread.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/stop_signals.h"
#include "dataplane/net.h"
#include "dataplane/protocol.h"
#include "dataplane/transport.h"
#include "pipeline/channel_set.h"
#include "pipeline/page_stream.h"
#include "pipeline/send_session.h"

namespace ferry::apps {
namespace {

using pipeline::SendOptions;
using pipeline::SendSession;

void send_usage(FILE* out) {
  std::fprintf(
      out,
      "usage: ferry send (--listen unix:PATH | --stdio) --peer TRANSPORT:ADDRESS\n"
      "                  [--codec none|fast|max|auto] [--cache-mib N] [--cache-policy P]\n"
      "                  [--encode-threads N] [--poll adaptive|busy] [--postcopy-backlog KIB]\n"
      "                  [--postcopy-hold MIB] [--postcopy-pace PCT] [--fabric-provider NAME]\n"
      "                  [--dpdk-args \"EAL ARGS\"] [--dpdk-local IPV4] [--dpdk-mtu N]\n"
      "                  [--connect-timeout S] [--link-timeout S] [--resume-within S]\n"
      "                  [--stats-json FILE] [--quiet]\n"
      "                  [--vm NAME]\n"
      "                  [--tls-x509-dir DIR | --tls-psk-file FILE | --insecure]\n"
      "                  [--tls-authz NAME,...] [--tls-hostname NAME]\n"
      "                  [--metrics tcp:HOST:PORT] [--log-level LEVEL]\n"
      "\n"
      "The source side of a migration through ferry. Start it, then tell the source QEMU\n"
      "  migrate unix:PATH                       (with --listen unix:PATH), or\n"
      "  migrate exec:ferry send --stdio --peer ...\n"
      "Each connection QEMU opens (the main stream, then one per multifd channel) gets its own\n"
      "link to ferry recv, opened in the same order; the return path flows back on the main\n"
      "one. With credentials every link is authenticated both ways (TLS 1.3) and every frame\n"
      "sealed (AES-256-GCM); without, ferry send talks only to a ferry recv on this host\n"
      "unless given --insecure. Exits 0 once QEMU closed every connection and ferry recv confirmed "
      "the end;\n"
      "otherwise 1 with a one-line reason (QEMU then sees its migration fail and the source\n"
      "VM keeps running).\n"
      "SIGINT, SIGTERM or SIGHUP in pre-copy cancels the migration (the source keeps the VM);\n"
      "in post-copy the first is refused (the VM would be lost), a second within 5 s forces.\n"
      "\n"
      "  --listen unix:PATH     where the source QEMU connects (created; removed at exit)\n"
      "  --stdio                the stream on stdin, the return path on stdout (one channel);\n"
      "                         detaches from QEMU, which kills its exec: child as soon as\n"
      "                         the stream ends: read the result from --stats-json\n"
      "  --peer tcp:HOST:PORT   ferry recv's address; transports in this build: %s\n"
      "  --codec LEVEL          how RAM pages of the main stream are encoded (default auto):\n"
      "                           none  forward QEMU's bytes unchanged\n"
      "                           fast  zero, same-as-sent, delta against the last sent copy,\n"
      "                                 run-length (cheap: keeps up with fast links)\n"
      "                           max   zero/same/delta, then one LZMA2 stream over all\n"
      "                                 pages (matches across pages; 20-50 MB/s per core:\n"
      "                                 for the slowest links)\n"
      "                           auto  fast while the link keeps up; zstd stream -1, -3, -9\n"
      "                                 while bytes still pile up toward the link; LZMA2 only\n"
      "                                 while zstd -9 leaves the encoder mostly idle\n"
      "  --cache-mib N          memory budget of the last-sent page copies kept for\n"
      "                         same/delta, on each end (default 1024, at most a quarter of\n"
      "                         the available memory). aged-clock sizes the cache within it\n"
      "                         to 1.25x the measured working set (pages re-sent per pass)\n"
      "                         and gives the rest back; lru uses all of it\n"
      "  --cache-policy P       which copies the cache keeps when the pages re-sent exceed it:\n"
      "                         aged-clock (default) keeps a stable part of a larger working\n"
      "                         set; lru (strict, as before) gets nothing once QEMU's passes\n"
      "                         sweep more pages than fit\n"
      "  --encode-threads N     encode the main stream's pages on N threads (1..64, default 1):\n"
      "                         page i goes to shard i %% N, each with its own thread, 1/N of\n"
      "                         the cache and its own streams. Pays off with the stream\n"
      "                         efforts (max, auto on a slow link) when cores are free;\n"
      "                         fast keeps up with 10 Gbit/s on one\n"
      "  --poll adaptive|busy   how the dataplane waits: adaptive (default) spins while there\n"
      "                         is work and then sleeps on its fds and timers; busy never\n"
      "                         sleeps (a core of its own per channel: for dedicated cores)\n"
      "  --postcopy-backlog KIB once the destination asks for pages (post-copy): keep ~3 ms\n"
      "                         of the link's rate of each channel queued toward the link\n"
      "                         (at least KIB KiB, at most 256 KiB), topped up as it drains,\n"
      "                         and ~2 ms unsent in the kernel, so that little bulk waits\n"
      "                         ahead of a page QEMU had already sent (0..256, default 32;\n"
      "                         0 = read and queue as in pre-copy)\n"
      "  --postcopy-hold MIB    in post-copy, with a codec: hold up to MIB MiB of the source\n"
      "                         QEMU's stream here (0..65536; default 0 = off; e.g. 512). A\n"
      "                         held page that is asked for goes out ahead of the rest, on\n"
      "                         the postcopy-preempt link when QEMU opened one, and the held\n"
      "                         pages after it next; for a page not held QEMU may write more\n"
      "                         for a moment (it serves a request only between two writes).\n"
      "                         ferry migrate sets 512 with postcopy-preempt; what it gained:\n"
      "                         docs/BENCHMARKS.md, \"Held pages on the preempt link\"\n"
      "  --postcopy-pace PCT    in post-copy (unless --postcopy-backlog 0): pace the main\n"
      "                         link at PCT %% of its rate over the last 2 s before the\n"
      "                         switch, in bursts of ~1 ms of it (tcp: the kernel's pacer,\n"
      "                         its send buffer kept to ~3 ms of the rate beyond the round\n"
      "                         trip; udp, dpdk: ferry's own pacer), so that no queue stands\n"
      "                         at the bottleneck for the pages asked for, on their own\n"
      "                         connection, to wait behind (0..200, default 85; 0 = not\n"
      "                         paced)\n"
      "  --fabric-provider NAME rdma: the libfabric provider (default verbs, for RoCE and\n"
      "                         InfiniBand; tcp when no verbs device serves the address, with\n"
      "                         a notice); fi_info -t FI_EP_MSG lists what this host has\n"
      "  --connect-timeout S    give up reaching ferry recv after S seconds (default 10)\n"
      "  --link-timeout S       fail a link whose peer is silent for S seconds (2..600,\n"
      "                         default 10): heartbeats flow both ways while it is idle, so\n"
      "                         this bounds how long a dead host or cable goes unnoticed\n"
      "  --resume-within S      a link that failed (aborted, or silent past --link-timeout)\n"
      "                         is replaced by a new connection within S seconds (0..3600,\n"
      "                         default 60; 0 = fail at once): ferry recv acknowledges what\n"
      "                         arrived, ferry send keeps and replays the rest, and QEMU\n"
      "                         sees only a pause. Past S, or if ferry recv restarted, the\n"
      "                         migration fails (in post-copy: ferry migrate --recover-uri)\n"
      "  --stats-json FILE      write the final counters: bytes from/to QEMU, bytes on the\n"
      "                         link, pages by class, return-path messages, channels, duration\n"
      "                         and how much of it went to setting up the first link\n"
      "  --quiet                no progress line (it is shown only on a terminal anyway)\n"
      "  --vm NAME              the VM's name, sent in the handshake: a `ferry recv --serve\n"
      "                         --qemu-dir DIR` feeds the destination QEMU at DIR/NAME.sock\n"
      "                         (NAME: 1-64 of A-Z a-z 0-9 . _ -, not starting with '.')\n"
      "%s%s%s%s",
      transport_names().c_str(), kSecurityUsage, kDpdkUsage, kMetricsUsage, kLogUsage);
}

struct SendArgs {
  std::string listen, stats_path, metrics;
  bool stdio = false, quiet = false;
  SendOptions session;
  dataplane::dpdk::DpdkSettings dpdk;
  SecurityFlags security;
};

}  // namespace

int run_send(int argc, char** argv) {
  SendArgs a;
  ArgReader args("ferry send", argc, argv);
  while (args.next()) {
    if (args.is("--help") || args.is("-h")) {
      send_usage(stdout);
      return 0;
    } else if (args.is("--listen")) {
      a.listen = args.value();
    } else if (args.is("--peer")) {
      a.session.peer = args.value();
    } else if (args.is("--stats-json")) {
      a.stats_path = args.value();
    } else if (args.is("--connect-timeout")) {
      a.session.connect_timeout_ms = static_cast<int>(args.seconds() * 1000);
    } else if (args.is("--codec")) {
      a.session.codec = args.codec();
    } else if (args.is("--cache-mib")) {
      a.session.cache_mib = static_cast<size_t>(args.count(0, 1 << 20));
    } else if (args.is("--cache-policy")) {
      a.session.cache_policy = args.cache_policy();
    } else if (args.is("--encode-threads")) {
      a.session.encode_threads = static_cast<unsigned>(args.count(1, pipeline::kMaxShards));
    } else if (args.is("--poll")) {
      a.session.poll_mode = args.poll_mode();
    } else if (args.is("--postcopy-backlog")) {
      a.session.postcopy_pending = static_cast<size_t>(args.count(0, 256)) << 10;
    } else if (args.is("--postcopy-hold")) {
      a.session.postcopy_hold = static_cast<size_t>(args.count(0, 65536)) << 20;
    } else if (args.is("--postcopy-pace")) {
      a.session.postcopy_pace = static_cast<double>(args.count(0, 200)) / 100;
    } else if (args.is("--fabric-provider")) {
      a.session.transport.fabric_provider = args.value();
    } else if (args.is("--link-timeout")) {
      a.session.transport.link_timeout = link_timeout_value(args);
    } else if (args.is("--resume-within")) {
      a.session.transport.resume_within = resume_within_value(args);
    } else if (take_dpdk_flag(args, a.dpdk)) {
    } else if (take_security_flag(args, a.security)) {
    } else if (take_log_flag(args)) {
    } else if (args.is("--metrics")) {
      a.metrics = args.value();
    } else if (args.is("--vm")) {
      a.session.vm_name = args.value();
    } else if (args.is("--stdio")) {
      a.stdio = true;
    } else if (args.is("--quiet")) {
      a.quiet = true;
    } else {
      args.unknown();
    }
  }
  if (!args.ok()) return 2;
  if ((a.listen.empty() == !a.stdio) || a.session.peer.empty()) {
    std::fprintf(stderr, "ferry send: give --peer and one of --listen or --stdio\n\n");
    send_usage(stderr);
    return 2;
  }

  if (auto st = dataplane::check_transport_spec(a.session.peer); !st) {
    std::fprintf(stderr, "ferry send: --peer: %s\n", st.message().c_str());
    return 2;
  }
  if (auto st = check_vm_flag(a.session.vm_name); !st) {
    std::fprintf(stderr, "ferry send: %s\n", st.message().c_str());
    return 2;
  }
  if (auto st = apply_dpdk_settings(a.dpdk); !st) {
    std::fprintf(stderr, "ferry send: %s\n", st.message().c_str());
    return 2;
  }
  auto credentials =
      load_security("ferry send", a.security, dataplane::TlsRole::kClient, a.session.peer);
  if (!credentials) {
    std::fprintf(stderr, "ferry send: %s\n", credentials.status().message().c_str());
    return 2;
  }
  a.session.security = *credentials;
  const bool progress = !a.quiet && ::isatty(2) && !a.stdio;

  if (a.stdio) {
    // QEMU ends an exec: migration by SIGTERM then SIGKILL to its child 10 ms after the
    // stream's last byte (io/channel-command.c), while the tail may still sit in our queues.
    // So the process QEMU waits for exits at once and a child carries the migration, holding
    // the same stdin/stdout.
    pid_t pid = ::fork();
    if (pid < 0) {
      std::fprintf(stderr, "ferry send: fork: %s\n", std::strerror(errno));
      return 1;
    }
    if (pid > 0) _exit(0);
  }
  StopSignals signals;  // before the session's threads: they inherit the blocked signals
  auto exporter = start_metrics(a.metrics);
  if (!exporter) {
    std::fprintf(stderr, "ferry send: %s\n", exporter.status().message().c_str());
    return 2;
  }
  SendSession session(a.session);
  metrics::SessionMetrics session_metrics(exporter->get(), session.channels(), "send");
  if (a.stdio) {
    session.start_stdio();
  } else {
    auto ep = dataplane::parse_endpoint(a.listen);
    if (!ep || ep->kind != dataplane::Endpoint::Kind::kUnix) {
      std::fprintf(stderr, "ferry send: --listen must be unix:PATH, got '%s'\n", a.listen.c_str());
      return 2;
    }
    if (auto st = session.listen(ep->path); !st) {
      std::fprintf(stderr, "ferry send: %s\n", st.message().c_str());
      return 1;
    }
    session.start();
  }
  std::string cancelled;
  std::string error = session.wait(stop_on_signal(
      "ferry send", signals, session.channels(), [&session] { session.abort(); },
      progress ? progress_tick(session.channels()) : nullptr, cancelled));
  session_metrics.end(session_outcome(error, cancelled));
  if (!cancelled.empty()) error = cancelled;
  if (progress) std::fprintf(stderr, "\n");
  return finish_session("ferry send", session.channels(), a.stats_path, error, a.quiet);
}

}  // namespace ferry::apps
