// apps/cmd_recv.cc — `ferry recv`: accepts one `ferry send` link over TCP, validates its
// handshake, connects to the destination QEMU's incoming unix socket and writes the OPAQUE
// payloads to it; QEMU's return-path bytes go back as RETURN frames (main channel only).
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "apps/commands.h"
#include "dataplane/net.h"
#include "dataplane/protocol.h"

namespace ferry::apps {
namespace {

using dataplane::ByteQueue;
using dataplane::FrameDecoder;
using dataplane::FrameType;

constexpr size_t kMaxPending = 4u << 20;  // stop reading a side beyond this backlog
constexpr size_t kReadChunk = 256u << 10;
constexpr int kHandshakeTimeoutMs = 30000;

void recv_usage(FILE* out) {
  std::fprintf(out,
               "usage: ferry recv --listen tcp:HOST:PORT --qemu unix:PATH [--stats-json FILE]\n"
               "\n"
               "Accepts one ferry send link on HOST:PORT, validates its handshake, connects to\n"
               "the destination QEMU (-incoming unix:PATH) and writes the migration stream to\n"
               "it; QEMU's return path flows back. Exits 0 once QEMU closed the stream.\n"
               "  --stats-json FILE  write bytes_to_qemu, bytes_on_link, duration_s\n");
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "ferry recv: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int run_recv(int argc, char** argv) {
  std::string listen_s, qemu_s, stats_path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string& dst) {
      if (i + 1 >= argc) return false;
      dst = argv[++i];
      return true;
    };
    if (a == "--help" || a == "-h") {
      recv_usage(stdout);
      return 0;
    }
    std::string* dst = a == "--listen"       ? &listen_s
                       : a == "--qemu"       ? &qemu_s
                       : a == "--stats-json" ? &stats_path
                                             : nullptr;
    if (!dst || !value(*dst)) {
      recv_usage(stderr);
      return 2;
    }
  }
  if (listen_s.empty() || qemu_s.empty()) {
    recv_usage(stderr);
    return 2;
  }
  auto listen_ep = dataplane::parse_endpoint(listen_s);
  if (!listen_ep) return fail(listen_ep.status().message());
  if (listen_ep->kind != dataplane::Endpoint::Kind::kTcp)
    return fail("--listen must be tcp:HOST:PORT");
  auto qemu_ep = dataplane::parse_endpoint(qemu_s);
  if (!qemu_ep) return fail(qemu_ep.status().message());
  if (qemu_ep->kind != dataplane::Endpoint::Kind::kUnix) return fail("--qemu must be unix:PATH");

  auto lfd = dataplane::listen_on(*listen_ep);
  if (!lfd) return fail(lfd.status().message());
  auto lk = dataplane::accept_one(*lfd, -1);
  ::close(*lfd);
  if (!lk) return fail(lk.status().message());
  const int link = *lk;
  const auto t0 = std::chrono::steady_clock::now();

  // Handshake: nothing reaches QEMU unless it is valid.
  uint8_t hbuf[dataplane::kHandshakeSize];
  if (auto st = dataplane::read_exact(link, hbuf, sizeof(hbuf), kHandshakeTimeoutMs); !st) {
    return fail("handshake: " + st.message());
  }
  auto hs = dataplane::decode_handshake(hbuf);
  if (!hs) {
    uint8_t no = dataplane::kReject;
    (void)dataplane::write_all(link, &no, 1, 1000);
    return fail("rejected the link: " + hs.status().message());
  }
  if (hs->channel != 0) {
    uint8_t no = dataplane::kReject;
    (void)dataplane::write_all(link, &no, 1, 1000);
    return fail("rejected the link: channel " + std::to_string(hs->channel) +
                " at byte offset 6 (only the main channel 0 is supported)");
  }
  auto q = dataplane::connect_to(*qemu_ep);
  if (!q) {
    uint8_t no = dataplane::kReject;
    (void)dataplane::write_all(link, &no, 1, 1000);
    return fail("cannot connect to " + qemu_s + ": " + q.status().message());
  }
  const int qfd = *q;
  uint8_t yes = dataplane::kAccept;
  if (auto st = dataplane::write_all(link, &yes, 1, kHandshakeTimeoutMs); !st) {
    return fail("handshake: " + st.message());
  }
  if (!dataplane::set_nonblocking(qfd) || !dataplane::set_nonblocking(link)) {
    return fail("cannot make sockets non-blocking");
  }

  ByteQueue to_link, to_qemu;
  FrameDecoder dec;
  uint64_t seq = 0;
  uint64_t bytes_to_qemu = 0, bytes_on_link = 0;
  bool link_end = false, qemu_shut = false, qemu_eof = false;
  std::vector<uint8_t> chunk(kReadChunk);

  while (!qemu_eof) {
    pollfd fds[2] = {{qfd, POLLIN, 0}, {link, 0, 0}};
    if (to_link.size() >= kMaxPending) fds[0].events &= static_cast<short>(~POLLIN);
    if (!to_qemu.empty()) fds[0].events |= POLLOUT;
    if (!link_end && to_qemu.size() < kMaxPending) fds[1].events |= POLLIN;
    if (!to_link.empty()) fds[1].events |= POLLOUT;
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return fail(std::string("poll: ") + std::strerror(errno));
    }
    // Link -> QEMU.
    if ((fds[1].events & POLLIN) && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t r = ::recv(link, chunk.data(), chunk.size(), MSG_DONTWAIT);
      if (r > 0) {
        dec.push(chunk.data(), static_cast<size_t>(r));
        FrameDecoder::Frame f;
        for (;;) {
          auto got = dec.next(f);
          if (!got) return fail("link: " + got.status().message());
          if (!*got) break;
          if (f.header.type == FrameType::kOpaque) {
            if (link_end) return fail("link: frame after END");
            to_qemu.append(f.payload, f.header.len);
          } else if (f.header.type == FrameType::kEnd) {
            link_end = true;
          } else {
            return fail("link: unexpected RETURN frame from the sender at byte offset " +
                        std::to_string(dec.offset() - dataplane::kFrameHeaderSize - f.header.len));
          }
        }
      } else if (r == 0) {
        return fail("sender closed the link without END at byte offset " +
                    std::to_string(dec.offset() + dec.buffered()));
      } else if (errno != EAGAIN && errno != EINTR && errno != EWOULDBLOCK) {
        return fail(std::string("link: read: ") + std::strerror(errno));
      }
    }
    if (!to_qemu.empty()) {
      auto w = to_qemu.flush_to(qfd);
      if (!w) return fail("QEMU: " + w.status().message());
      bytes_to_qemu += *w;
    }
    if (link_end && to_qemu.empty() && !qemu_shut) {
      // Every byte is written: QEMU may see EOF after the stream's end.
      ::shutdown(qfd, SHUT_WR);
      qemu_shut = true;
    }
    // QEMU -> link (return path).
    if ((fds[0].events & POLLIN) && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t r = ::recv(qfd, chunk.data(), chunk.size(), MSG_DONTWAIT);
      if (r > 0) {
        dataplane::append_frame(to_link.tail(), FrameType::kReturn, seq++, chunk.data(),
                                static_cast<uint32_t>(r));
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR && errno != EWOULDBLOCK)) {
        if (!link_end || !to_qemu.empty()) {
          return fail("QEMU closed the migration socket after " + std::to_string(bytes_to_qemu) +
                      " bytes, before the stream ended");
        }
        qemu_eof = true;
        dataplane::append_frame(to_link.tail(), FrameType::kEnd, seq++, nullptr, 0);
      }
    }
    if (!to_link.empty()) {
      auto w = to_link.flush_to(link);
      if (!w) return fail("link: " + w.status().message());
      bytes_on_link += *w;
    }
  }
  // Flush the return path and END, then close.
  while (!to_link.empty()) {
    pollfd p{link, POLLOUT, 0};
    if (::poll(&p, 1, 10000) <= 0) return fail("link: timed out flushing the return path");
    auto w = to_link.flush_to(link);
    if (!w) return fail("link: " + w.status().message());
    bytes_on_link += *w;
  }
  ::close(qfd);
  ::close(link);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "ferry recv: done: %llu bytes to QEMU, %.3f s\n",
               static_cast<unsigned long long>(bytes_to_qemu), secs);
  if (!stats_path.empty()) {
    FILE* f = std::fopen(stats_path.c_str(), "w");
    if (!f) return fail("cannot write " + stats_path + ": " + std::strerror(errno));
    std::fprintf(f, "{\"bytes_to_qemu\": %llu, \"bytes_on_link\": %llu, \"duration_s\": %.6f}\n",
                 static_cast<unsigned long long>(bytes_to_qemu),
                 static_cast<unsigned long long>(bytes_on_link), secs);
    std::fclose(f);
  }
  return 0;
}

}  // namespace ferry::apps
