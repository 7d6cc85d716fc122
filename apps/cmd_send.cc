// apps/cmd_send.cc — `ferry send`: the source side. Accepts the source QEMU's migration
// connections on a unix socket (or takes the stream on stdin/stdout with --stdio, for
// `migrate exec:`), opens one link to `ferry recv` per connection, in the order QEMU opened
// them (main first, then multifd channels), and pumps each on its own thread.
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "apps/channel_set.h"
#include "apps/cli.h"
#include "apps/commands.h"
#include "dataplane/net.h"
#include "dataplane/protocol.h"
#include "dataplane/transport.h"

namespace ferry::apps {
namespace {

constexpr int kHandshakeTimeoutMs = 30000;

void send_usage(FILE* out) {
  std::fprintf(
      out,
      "usage: ferry send (--listen unix:PATH | --stdio) --peer TRANSPORT:ADDRESS\n"
      "                  [--codec none|fast|max|auto] [--cache-mib N]\n"
      "                  [--connect-timeout S] [--stats-json FILE] [--quiet]\n"
      "\n"
      "The source side of a migration through ferry. Start it, then tell the source QEMU\n"
      "  migrate unix:PATH                       (with --listen unix:PATH), or\n"
      "  migrate exec:ferry send --stdio --peer ...\n"
      "Each connection QEMU opens (the main stream, then one per multifd channel) gets its own\n"
      "link to ferry recv, opened in the same order; the return path flows back on the main\n"
      "one. Exits 0 once QEMU closed every connection and ferry recv confirmed the end;\n"
      "otherwise 1 with a one-line reason (QEMU then sees its migration fail and the source\n"
      "VM keeps running).\n"
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
      "                           max   zero/same/delta, then one zstd -9 stream over all\n"
      "                                 pages (matches across pages)\n"
      "                           auto  fast while the link keeps up; zstd stream -1, -3, -9\n"
      "                                 while bytes still pile up toward the link\n"
      "  --cache-mib N          last-sent page copies kept for same/delta, on both ends\n"
      "                         (default 256; ferry recv allocates the same)\n"
      "  --connect-timeout S    give up reaching ferry recv after S seconds (default 10)\n"
      "  --stats-json FILE      write the final counters: bytes from/to QEMU, bytes on the\n"
      "                         link, pages by class, return-path messages, channels, duration\n"
      "  --quiet                no progress line (it is shown only on a terminal anyway)\n",
      transport_names().c_str());
}

struct SendArgs {
  std::string listen, peer, stats_path;
  bool stdio = false, quiet = false;
  int connect_timeout_ms = 10000;
  encoders::CodecLevel codec = encoders::CodecLevel::kAuto;
  size_t cache_mib = 256;
};

std::unique_ptr<dataplane::StreamCodec> make_codec(const SendArgs& a) {
  if (a.codec == encoders::CodecLevel::kNone) return nullptr;
  PageCodecOptions opt;
  opt.level = a.codec;
  opt.cache_bytes = a.cache_mib << 20;
  return std::make_unique<PageStreamEncoder>(opt);
}

// Opens channel `index` to ferry recv: connect, handshake, wait for the accept byte.
Result<std::unique_ptr<dataplane::Transport>> open_link(const SendArgs& a, uint16_t index,
                                                        uint64_t session) {
  auto link = dataplane::connect_transport(a.peer, a.connect_timeout_ms);
  if (!link) {
    return Status(link.status().code(),
                  "cannot reach ferry recv at " + a.peer + ": " + link.status().message());
  }
  dataplane::Handshake hs;
  hs.channel = index;
  hs.session_id = session;
  if (a.codec != encoders::CodecLevel::kNone) hs.features |= dataplane::kFeaturePages;
  uint8_t hbuf[dataplane::kHandshakeSize];
  dataplane::encode_handshake(hs, hbuf);
  if (auto st = (*link)->send_all(hbuf, kHandshakeTimeoutMs); !st) {
    return Status(st.code(), "handshake with " + a.peer + ": " + st.message());
  }
  uint8_t answer = 0;
  if (auto st = (*link)->recv_exact({&answer, 1}, kHandshakeTimeoutMs); !st) {
    return Status(st.code(), "ferry recv at " + a.peer + " did not accept channel " +
                                 std::to_string(index) + ": " + st.message() +
                                 " (see its log)");
  }
  if (answer != dataplane::kAccept) {
    return Status(ErrorCode::kProtocol, "ferry recv at " + a.peer + " rejected channel " +
                                            std::to_string(index) + " (see its log)");
  }
  return link;
}

int finish(ChannelSet& set, const SendArgs& a, std::string error) {
  set.join_all();
  if (error.empty() && set.failed()) error = set.first_error();
  const std::string outcome = error.empty() ? "completed" : "failed";
  if (!a.stats_path.empty()) {
    if (auto st = write_text_file(a.stats_path, set.stats_json(outcome, error)); !st) {
      std::fprintf(stderr, "ferry send: %s\n", st.message().c_str());
      if (error.empty()) return 1;
    }
  }
  if (!error.empty()) {
    std::fprintf(stderr, "ferry send: %s\n", error.c_str());
    return 1;
  }
  if (!a.quiet) std::fprintf(stderr, "ferry send: done: %s\n", set.progress_line().c_str());
  return 0;
}

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
      a.peer = args.value();
    } else if (args.is("--stats-json")) {
      a.stats_path = args.value();
    } else if (args.is("--connect-timeout")) {
      a.connect_timeout_ms = static_cast<int>(args.seconds() * 1000);
    } else if (args.is("--codec")) {
      std::string v = args.value();
      if (v == "none") {
        a.codec = encoders::CodecLevel::kNone;
      } else if (v == "fast") {
        a.codec = encoders::CodecLevel::kFast;
      } else if (v == "max") {
        a.codec = encoders::CodecLevel::kMax;
      } else if (v == "auto") {
        a.codec = encoders::CodecLevel::kAuto;
      } else if (args.ok()) {
        std::fprintf(stderr, "ferry send: --codec wants none, fast, max or auto, got '%s'\n",
                     v.c_str());
        return 2;
      }
    } else if (args.is("--cache-mib")) {
      a.cache_mib = static_cast<size_t>(args.count(0, 1 << 20));
    } else if (args.is("--stdio")) {
      a.stdio = true;
    } else if (args.is("--quiet")) {
      a.quiet = true;
    } else {
      args.unknown();
    }
  }
  if (!args.ok()) return 2;
  if ((a.listen.empty() == !a.stdio) || a.peer.empty()) {
    std::fprintf(stderr, "ferry send: give --peer and one of --listen or --stdio\n\n");
    send_usage(stderr);
    return 2;
  }

  if (auto st = dataplane::check_transport_spec(a.peer); !st) {
    std::fprintf(stderr, "ferry send: --peer: %s\n", st.message().c_str());
    return 2;
  }
  const uint64_t session =
      std::random_device{}() | (static_cast<uint64_t>(std::random_device{}()) << 32);
  ChannelSet set(dataplane::PumpRole::kSender);
  const bool progress = !a.quiet && ::isatty(2);

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
    auto link = open_link(a, 0, session);
    if (!link) return finish(set, a, link.status().message());
    set.start(0, {0, 1}, /*own_fds=*/false, std::move(*link), make_codec(a));
  } else {
    auto ep = dataplane::parse_endpoint(a.listen);
    if (!ep || ep->kind != dataplane::Endpoint::Kind::kUnix) {
      std::fprintf(stderr, "ferry send: --listen must be unix:PATH, got '%s'\n",
                   a.listen.c_str());
      return 2;
    }
    auto lfd = dataplane::listen_on(*ep);
    if (!lfd) {
      std::fprintf(stderr, "ferry send: %s\n", lfd.status().message().c_str());
      return 1;
    }
    // Accept QEMU's connections until the main channel ended; each gets the next index.
    std::string error;
    uint16_t next_index = 0;
    while (error.empty() && !set.main_done() && !set.failed()) {
      pollfd fds[2] = {{*lfd, POLLIN, 0}, {set.wake_fd(), POLLIN, 0}};
      int r = ::poll(fds, 2, progress ? 1000 : -1);
      if (r < 0 && errno != EINTR) error = std::string("poll: ") + std::strerror(errno);
      if (fds[1].revents & POLLIN) set.reap();
      if (fds[0].revents & POLLIN) {
        auto q = dataplane::accept_one(*lfd, 0);
        if (!q) continue;
        auto link = open_link(a, next_index, session);
        if (!link) {
          ::close(*q);  // QEMU sees its migration fail at once
          error = link.status().message();
          break;
        }
        set.start(next_index++, {*q, *q}, /*own_fds=*/true, std::move(*link), make_codec(a));
      }
      if (progress && set.size()) std::fprintf(stderr, "\r%s", set.progress_line().c_str());
    }
    ::close(*lfd);
    ::unlink(ep->path.c_str());
    if (progress) std::fprintf(stderr, "\n");
    if (!error.empty() || set.failed()) set.abort_all();
    return finish(set, a, error);
  }
  return finish(set, a, "");
}

}  // namespace ferry::apps
