// dataplane/tcp/tcp_transport.cc — control path of the `tcp` transport: listen, accept,
// connect with a deadline, socket options.
#include "dataplane/tcp/tcp_transport.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "dataplane/net.h"
#include "dataplane/tcp/tcp_transport_internal.h"

namespace ferry::dataplane::tcp {
namespace {

// Keepalive probes of an idle link: the first after this much silence, then one a second;
// TCP_USER_TIMEOUT (the link timeout) ends them, as it ends retransmissions of unacked data.
constexpr int kKeepaliveIdleS = 2;
constexpr int kKeepaliveIntervalS = 1;

Status prepare(int fd, std::chrono::seconds link_timeout) {
  // The pump already writes whole batches of frames; Nagle would only add latency to the
  // small return-path frames that post-copy waits on.
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // A peer that vanished without a FIN or RST (host down, cable pulled, a half-open link)
  // fails the link after link_timeout, whether data was waiting for its ack or not.
  const int user_timeout_ms =
      static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(link_timeout).count());
  const int probes = static_cast<int>(link_timeout.count()) / kKeepaliveIntervalS;
  if (::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &kKeepaliveIdleS, sizeof kKeepaliveIdleS) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &kKeepaliveIntervalS,
                   sizeof kKeepaliveIntervalS) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms) !=
          0) {
    return error(ErrorCode::kIo,
                 std::string("tcp: cannot set the link timeout: ") + std::strerror(errno));
  }
  return set_nonblocking(fd);
}

// BBR paces at the bottleneck's measured rate and keeps its queue near one BDP, where loss-based
// cubic (Debian's default) pushes all the send buffer holds into the bottleneck's queue, ahead
// of the post-copy pages the preempt link carries: at 30 Mbit/s behind a 500 ms tbf queue a
// requested page crossed in 7 ms with BBR, 35 ms with cubic (docs/BENCHMARKS.md, issue 19).
// Best effort: without tcp_bbr loaded (scripts/setup.sh) the host's default stays.
// FERRY_TCP_CONGESTION names another algorithm, only to measure what BBR changes.
void choose_congestion_control(int fd) {
  const char* name = std::getenv("FERRY_TCP_CONGESTION");
  if (!name || !*name) name = "bbr";
  ::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, static_cast<socklen_t>(std::strlen(name)));
}

// Takes fd (closed on failure).
Result<std::unique_ptr<Transport>> make(int fd, std::chrono::seconds link_timeout) {
  if (auto st = prepare(fd, link_timeout); !st) {
    ::close(fd);
    return st;
  }
  choose_congestion_control(fd);
  auto pool = FramePool::create({.frames = kPoolFrames});
  if (!pool) {
    ::close(fd);
    return pool.status();
  }
  return std::unique_ptr<Transport>(new TcpTransport(fd, std::move(*pool), link_timeout));
}

class TcpListener final : public Listener {
 public:
  TcpListener(int fd, std::string where, std::chrono::seconds link_timeout)
      : fd_(fd), where_(std::move(where)), link_timeout_(link_timeout) {}
  ~TcpListener() override { ::close(fd_); }

  Result<std::unique_ptr<Transport>> accept(int timeout_ms) override {
    auto fd = accept_one(fd_, timeout_ms);
    if (!fd) return fd.status();
    return make(*fd, link_timeout_);
  }
  int wait_fd() const noexcept override { return fd_; }
  std::string where() const override { return "tcp:" + where_; }

 private:
  int fd_;
  std::string where_;
  std::chrono::seconds link_timeout_;
};

}  // namespace

TcpTransport::TcpTransport(int fd, std::unique_ptr<FramePool> pool,
                           std::chrono::seconds link_timeout)
    : fd_(fd), pool_(std::move(pool)), link_timeout_(link_timeout), tx_ring_(pool_->size()) {}

TransportCaps TcpTransport::caps() const noexcept {
  TransportCaps c;
  c.max_frame = pool_->frame_capacity();
  c.max_burst = kIov;
  c.reliable = true;
  c.ordered = true;
  c.registered = false;
  c.paced = true;
  c.tx_done = "copied into the kernel's socket buffer";
  return c;
}

// Fixing SO_SNDBUF turns off the kernel's autotuning for this socket, which would otherwise
// grow it to tcp_wmem's maximum (4 MiB here: a third of a second at 100 Mbit/s).
void TcpTransport::set_buffer_hint(size_t bytes) noexcept {
  int v = static_cast<int>(std::min<size_t>(bytes, size_t{1} << 30));
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
}

// TCP_NOTSENT_LOWAT: writes stop while more than this is queued and not yet sent, so the
// queue in the kernel stays short without the send buffer (the window in flight) shrinking.
void TcpTransport::set_unsent_limit(size_t bytes) noexcept {
  unsent_limit_ = bytes;
  if (paced_burst_ > 0) return;  // paced: the burst is the limit
  unsigned v = bytes ? static_cast<unsigned>(std::min<size_t>(bytes, UINT_MAX)) : UINT_MAX;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, sizeof v);
}

// SO_MAX_PACING_RATE: the kernel's own pacer (TCP's internal one; fq not needed). It spaces
// what it sends, but each send is one TSO burst of all that waits unsent, and the kernel
// sizes those by the lowest round trip too (tcp_tso_rtt_log): below 0.5 ms, up to 64 KiB
// whatever the rate, which a bottleneck queues at once. So while paced, flush() keeps no
// more than ~1 ms of the rate unsent in the kernel, and TCP_NOTSENT_LOWAT wakes the writer
// when there is room again.
void TcpTransport::set_pacing_rate(double bytes_per_s) noexcept {
  const uint64_t v = bytes_per_s > 0 ? static_cast<uint64_t>(bytes_per_s) : ~uint64_t{0};
  ::setsockopt(fd_, SOL_SOCKET, SO_MAX_PACING_RATE, &v, sizeof v);
  paced_burst_ = bytes_per_s > 0
                     ? std::max(static_cast<size_t>(bytes_per_s * kPacedBurstS), kMinPacedBurst)
                     : 0;
  if (paced_burst_ == 0) {
    set_unsent_limit(unsent_limit_);
    return;
  }
  unsigned lowat = static_cast<unsigned>(std::min<size_t>(paced_burst_, UINT_MAX));
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
}

Result<std::unique_ptr<Listener>> listen(const std::string& address,
                                         const TransportSettings& settings) {
  auto ep = parse_endpoint("tcp:" + address);
  if (!ep) return ep.status();
  auto fd = listen_on(*ep);
  if (!fd) return fd.status();
  return std::unique_ptr<Listener>(new TcpListener(*fd, address, settings.link_timeout));
}

Result<std::unique_ptr<Transport>> connect(const std::string& address, int timeout_ms,
                                           const TransportSettings& settings) {
  auto ep = parse_endpoint("tcp:" + address);
  if (!ep) return ep.status();
  auto fd = connect_to(*ep, timeout_ms);
  if (!fd) return fd.status();
  return make(*fd, settings.link_timeout);
}

}  // namespace ferry::dataplane::tcp
