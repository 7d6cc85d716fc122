// apps/cmd_recv.cc — `ferry recv`: the destination side. Accepts links from one `ferry send`
// session, validates each handshake before anything reaches QEMU, connects to the destination
// QEMU's incoming socket once per channel in the sender's channel order (QEMU takes the first
// connection as the main stream), and pumps each channel on its own thread.
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "apps/cli.h"
#include "apps/commands.h"
#include "dataplane/net.h"
#include "dataplane/protocol.h"
#include "dataplane/transport.h"
#include "pipeline/channel_set.h"

namespace ferry::apps {
namespace {

constexpr int kHandshakeTimeoutMs = 10000;

void recv_usage(FILE* out) {
  std::fprintf(
      out,
      "usage: ferry recv --listen TRANSPORT:ADDRESS --qemu unix:PATH [--stats-json FILE]\n"
      "                  [--max-cache-mib N] [--quiet]\n"
      "\n"
      "The destination side of a migration through ferry. Start the destination QEMU with\n"
      "-incoming unix:PATH, then ferry recv, then ferry send and the migration on the source.\n"
      "Each link ferry send opens is checked (magic, version, features, session) before\n"
      "anything reaches QEMU; a bad one is refused with a one-line reason and ferry recv keeps\n"
      "waiting for its sender. Channels are connected to QEMU in the order the source QEMU\n"
      "opened them. Exits 0 once the destination QEMU took the whole stream and closed;\n"
      "otherwise 1 with a one-line reason.\n"
      "\n"
      "  --listen tcp:HOST:PORT  where ferry send connects; transports in this build: %s\n"
      "  --qemu unix:PATH        the destination QEMU's -incoming socket\n"
      "  --max-cache-mib N       refuse a sender whose --cache-mib is larger (default 4096):\n"
      "                          ferry recv keeps a page cache of the sender's size\n"
      "  --stats-json FILE       write the final counters: bytes to/from QEMU, bytes on the\n"
      "                          link, pages by class, return-path messages, channels, duration\n"
      "  --quiet                 no progress line (it is shown only on a terminal anyway)\n",
      transport_names().c_str());
}

void reject(dataplane::Transport& t) {
  const uint8_t no = dataplane::kReject;
  (void)t.send_all({&no, 1}, 1000);
}

// Reads and checks one handshake. The magic is checked as soon as its 4 bytes arrive, so a
// stray client is refused without waiting for a whole handshake.
Result<dataplane::Handshake> read_handshake(dataplane::Transport& t) {
  uint8_t h[dataplane::kHandshakeSize];
  if (auto st = t.recv_exact({h, 4}, kHandshakeTimeoutMs); !st) {
    return Status(st.code(), "handshake: " + st.message() + " (byte offset 0)");
  }
  if (std::memcmp(h, dataplane::kMagic, 4) != 0) {
    return Status(ErrorCode::kProtocol, "handshake: bad magic at byte offset 0 (not ferry send)");
  }
  if (auto st = t.recv_exact({h + 4, sizeof h - 4}, kHandshakeTimeoutMs); !st) {
    return Status(st.code(), "handshake: " + st.message() + " (from byte offset 4)");
  }
  return dataplane::decode_handshake(h);
}

}  // namespace

int run_recv(int argc, char** argv) {
  std::string listen_s, qemu_s, stats_path;
  bool quiet = false;
  size_t max_cache_mib = 4096;
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
    } else if (args.is("--quiet")) {
      quiet = true;
    } else if (args.is("--max-cache-mib")) {
      max_cache_mib = static_cast<size_t>(args.count(0, 1 << 20));
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
  auto listener = dataplane::listen_transport(listen_s);
  if (!listener) {
    std::fprintf(stderr, "ferry recv: %s\n", listener.status().message().c_str());
    return 1;
  }
  const bool progress = !quiet && ::isatty(2);

  pipeline::ChannelSet set(dataplane::PumpRole::kReceiver);
  bool have_session = false;
  uint64_t session = 0;
  uint16_t next_channel = 0;  // the next channel to connect to QEMU
  struct Waiting {
    std::unique_ptr<dataplane::Transport> link;
    uint32_t features = 0;
  };
  std::map<uint16_t, Waiting> waiting;  // arrived before their turn
  std::string error;

  while (error.empty() && !set.main_done() && !set.failed()) {
    pollfd fds[2] = {{(*listener)->poll_fd(), POLLIN, 0}, {set.wake_fd(), POLLIN, 0}};
    int r = ::poll(fds, 2, progress ? 1000 : -1);
    if (r < 0 && errno != EINTR) error = std::string("poll: ") + std::strerror(errno);
    if (fds[1].revents & POLLIN) set.reap();
    if (progress && set.size()) std::fprintf(stderr, "\r%s", set.progress_line().c_str());
    if (!(fds[0].revents & POLLIN)) continue;

    auto t = (*listener)->accept(0);
    if (!t) continue;
    auto hs = read_handshake(**t);
    std::string why;
    if (!hs) {
      why = hs.status().message();
    } else if (have_session && hs->session_id != session) {
      why =
          "handshake: session id at byte offset 12 belongs to another migration (one at a "
          "time)";
    } else if (hs->channel < next_channel || waiting.count(hs->channel)) {
      why = "handshake: channel " + std::to_string(hs->channel) +
            " at byte offset 6 is already connected";
    }
    if (!why.empty()) {
      // Refuse this link only; the real sender may still come.
      reject(**t);
      std::fprintf(stderr, "ferry recv: refused a link on %s: %s\n", (*listener)->where().c_str(),
                   why.c_str());
      continue;
    }
    have_session = true;
    session = hs->session_id;
    waiting[hs->channel] = {std::move(*t), hs->features};
    // Connect QEMU in channel order: channel k only after 0..k-1.
    for (auto it = waiting.find(next_channel); it != waiting.end();
         it = waiting.find(next_channel)) {
      auto q = dataplane::connect_to(*qemu_ep);
      if (!q) {
        reject(*it->second.link);
        error = "cannot connect to the destination QEMU at " + qemu_s + ": " +
                q.status().message() + " (is it running with -incoming " + qemu_s + "?)";
        break;
      }
      const uint8_t yes = dataplane::kAccept;
      if (auto st = it->second.link->send_all({&yes, 1}, kHandshakeTimeoutMs); !st) {
        ::close(*q);
        error = "channel " + std::to_string(next_channel) + ": handshake: " + st.message();
        break;
      }
      std::unique_ptr<pipeline::PageStreamDecoder> codec;
      if (it->second.features & dataplane::kFeaturePages) {
        codec = std::make_unique<pipeline::PageStreamDecoder>(max_cache_mib << 20);
      }
      set.start(next_channel++, {*q, *q}, /*own_fds=*/true, std::move(it->second.link),
                std::move(codec));
      waiting.erase(it);
    }
  }
  listener->reset();
  if (progress) std::fprintf(stderr, "\n");
  if (!error.empty() || set.failed()) set.abort_all();
  set.join_all();
  if (error.empty() && set.failed()) error = set.first_error();
  return finish_session("ferry recv", set, stats_path, error, quiet);
}

}  // namespace ferry::apps
