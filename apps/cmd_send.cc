// apps/cmd_send.cc — `ferry send`: accepts the source QEMU's migration connection on a unix
// socket and forwards it to `ferry recv` as framed OPAQUE bytes over TCP (main channel only).
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "apps/commands.h"
#include "dataplane/net.h"
#include "dataplane/protocol.h"

namespace ferry::apps {
namespace {

using dataplane::ByteQueue;
using dataplane::FrameDecoder;
using dataplane::FrameType;

constexpr size_t kMaxPending = 4u << 20;  // stop reading QEMU beyond this backlog
constexpr size_t kReadChunk = 256u << 10;
constexpr int kHandshakeTimeoutMs = 30000;

void send_usage(FILE* out) {
  std::fprintf(out,
               "usage: ferry send --listen unix:PATH --peer tcp:HOST:PORT [--stats-json FILE]\n"
               "\n"
               "Listens on PATH for the source QEMU (migrate unix:PATH), connects to ferry recv\n"
               "at HOST:PORT and forwards the migration stream (main channel) as framed bytes;\n"
               "the return path flows back. Exits 0 once QEMU closed and the peer finished.\n"
               "  --stats-json FILE  write bytes_from_qemu, bytes_on_link, duration_s\n");
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "ferry send: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int run_send(int argc, char** argv) {
  std::string listen_s, peer_s, stats_path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string& dst) {
      if (i + 1 >= argc) return false;
      dst = argv[++i];
      return true;
    };
    if (a == "--help" || a == "-h") {
      send_usage(stdout);
      return 0;
    } else if (a == "--listen") {
      if (!value(listen_s)) {
        fail("--listen needs a value");
        return 2;
      }
    } else if (a == "--peer") {
      if (!value(peer_s)) {
        fail("--peer needs a value");
        return 2;
      }
    } else if (a == "--stats-json") {
      if (!value(stats_path)) {
        fail("--stats-json needs a value");
        return 2;
      }
    } else {
      send_usage(stderr);
      return 2;
    }
  }
  if (listen_s.empty() || peer_s.empty()) {
    send_usage(stderr);
    return 2;
  }
  auto listen_ep = dataplane::parse_endpoint(listen_s);
  if (!listen_ep) return fail(listen_ep.status().message());
  if (listen_ep->kind != dataplane::Endpoint::Kind::kUnix)
    return fail("--listen must be unix:PATH");
  auto peer_ep = dataplane::parse_endpoint(peer_s);
  if (!peer_ep) return fail(peer_ep.status().message());
  if (peer_ep->kind != dataplane::Endpoint::Kind::kTcp) return fail("--peer must be tcp:HOST:PORT");

  auto lfd = dataplane::listen_on(*listen_ep);
  if (!lfd) return fail(lfd.status().message());
  auto qfd_r = dataplane::accept_one(*lfd, -1);
  ::close(*lfd);
  ::unlink(listen_ep->path.c_str());
  if (!qfd_r) return fail(qfd_r.status().message());
  const int qfd = *qfd_r;
  const auto t0 = std::chrono::steady_clock::now();

  auto lk = dataplane::connect_to(*peer_ep);
  if (!lk) return fail("cannot connect to " + peer_s + ": " + lk.status().message());
  const int link = *lk;

  // Handshake.
  dataplane::Handshake hs;
  hs.channel = 0;
  hs.session_id = std::random_device{}() | (static_cast<uint64_t>(std::random_device{}()) << 32);
  uint8_t hbuf[dataplane::kHandshakeSize];
  dataplane::encode_handshake(hs, hbuf);
  if (auto st = dataplane::write_all(link, hbuf, sizeof(hbuf), kHandshakeTimeoutMs); !st) {
    return fail("handshake: " + st.message());
  }
  uint8_t answer = 0;
  if (auto st = dataplane::read_exact(link, &answer, 1, kHandshakeTimeoutMs); !st) {
    return fail("handshake: no answer from " + peer_s + ": " + st.message());
  }
  if (answer != dataplane::kAccept) return fail("handshake rejected by " + peer_s);

  if (!dataplane::set_nonblocking(qfd) || !dataplane::set_nonblocking(link)) {
    return fail("cannot make sockets non-blocking");
  }

  ByteQueue to_link, to_qemu;
  FrameDecoder dec;
  uint64_t seq = 0;
  uint64_t bytes_from_qemu = 0, bytes_on_link = 0;
  bool qemu_eof = false, qemu_write_dead = false, peer_end = false;
  std::vector<uint8_t> chunk(kReadChunk);

  for (;;) {
    pollfd fds[2] = {{qfd, 0, 0}, {link, POLLIN, 0}};
    // Once QEMU is done in both directions, stop polling it (a hung-up fd polls ready forever).
    if (qemu_eof && (to_qemu.empty() || qemu_write_dead)) fds[0].fd = -1;
    if (!qemu_eof && to_link.size() < kMaxPending) fds[0].events |= POLLIN;
    if (!to_qemu.empty() && !qemu_write_dead) fds[0].events |= POLLOUT;
    if (!to_link.empty()) fds[1].events |= POLLOUT;
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return fail(std::string("poll: ") + std::strerror(errno));
    }
    // QEMU -> link.
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (!qemu_eof && (fds[0].events & POLLIN)) {
        ssize_t r = ::recv(qfd, chunk.data(), chunk.size(), MSG_DONTWAIT);
        if (r > 0) {
          bytes_from_qemu += static_cast<uint64_t>(r);
          dataplane::append_frame(to_link.tail(), FrameType::kOpaque, seq++, chunk.data(),
                                  static_cast<uint32_t>(r));
        } else if (r == 0 || (errno != EAGAIN && errno != EINTR && errno != EWOULDBLOCK)) {
          qemu_eof = true;
          dataplane::append_frame(to_link.tail(), FrameType::kEnd, seq++, nullptr, 0);
        }
      }
    }
    if (!to_qemu.empty() && !qemu_write_dead) {
      auto w = to_qemu.flush_to(qfd);
      if (!w) {
        // QEMU closed; whatever it would still have read is moot.
        qemu_write_dead = true;
      }
    }
    if (!to_link.empty()) {
      auto w = to_link.flush_to(link);
      if (!w) return fail("link: " + w.status().message());
      bytes_on_link += *w;
    }
    // Link -> QEMU (return path).
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = ::recv(link, chunk.data(), chunk.size(), MSG_DONTWAIT);
      if (r > 0) {
        dec.push(chunk.data(), static_cast<size_t>(r));
        FrameDecoder::Frame f;
        for (;;) {
          auto got = dec.next(f);
          if (!got) return fail("link: " + got.status().message());
          if (!*got) break;
          if (f.header.type == FrameType::kReturn) {
            if (!qemu_write_dead) to_qemu.append(f.payload, f.header.len);
          } else if (f.header.type == FrameType::kEnd) {
            peer_end = true;
          } else {
            return fail("link: unexpected OPAQUE frame from the receiver at byte offset " +
                        std::to_string(dec.offset() - dataplane::kFrameHeaderSize - f.header.len));
          }
        }
      } else if (r == 0) {
        if (!qemu_eof || !to_link.empty()) {
          return fail("peer closed the link before the migration stream ended (" +
                      std::to_string(bytes_from_qemu) + " bytes from QEMU)");
        }
        if (dec.buffered() != 0) {
          return fail("link: truncated frame at byte offset " + std::to_string(dec.offset()));
        }
        break;
      } else if (errno != EAGAIN && errno != EINTR && errno != EWOULDBLOCK) {
        return fail(std::string("link: read: ") + std::strerror(errno));
      }
    }
  }
  // Best effort: deliver remaining return-path bytes.
  if (!qemu_write_dead && !to_qemu.empty()) {
    while (!to_qemu.empty()) {
      pollfd p{qfd, POLLOUT, 0};
      if (::poll(&p, 1, 5000) <= 0) break;
      auto w = to_qemu.flush_to(qfd);
      if (!w) break;
    }
  }
  ::close(link);
  ::close(qfd);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "ferry send: done: %llu bytes from QEMU, %llu bytes on the link, %.3f s%s\n",
               static_cast<unsigned long long>(bytes_from_qemu),
               static_cast<unsigned long long>(bytes_on_link), secs,
               peer_end ? "" : " (peer sent no END)");
  if (!stats_path.empty()) {
    FILE* f = std::fopen(stats_path.c_str(), "w");
    if (!f) return fail("cannot write " + stats_path + ": " + std::strerror(errno));
    std::fprintf(f, "{\"bytes_from_qemu\": %llu, \"bytes_on_link\": %llu, \"duration_s\": %.6f}\n",
                 static_cast<unsigned long long>(bytes_from_qemu),
                 static_cast<unsigned long long>(bytes_on_link), secs);
    std::fclose(f);
  }
  return 0;
}

}  // namespace ferry::apps
