// Unit tests of the dataplane engine without a network: a sender ChannelPump and a receiver
// ChannelPump on two threads, joined by the `loopback` transport (and by `tcp` on 127.0.0.1),
// with socketpairs standing in for the two QEMUs. Checks: every stream byte arrives in order,
// the return path flows back, both clean endings (source closes first; destination closes
// first, as in post-copy), a link lost mid-stream fails the sender with a clear error, abort,
// back-pressure (bounded buffering), and the transport registry's errors.
#include "pipeline/channel_pump.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/protocol.h"
#include "dataplane/transport.h"

namespace ferry::pipeline {
namespace {

using namespace ferry::dataplane;  // the transports under test

struct SocketPair {
  int qemu = -1;  // the end the pump uses
  int test = -1;  // the end the test plays QEMU on
  SocketPair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    qemu = fds[0];
    test = fds[1];
  }
  ~SocketPair() {
    if (qemu >= 0) ::close(qemu);
    if (test >= 0) ::close(test);
  }
};

// Blocking helpers with a deadline, for the test's side of the socketpairs.
bool write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads until EOF (or the deadline); returns what arrived.
std::vector<uint8_t> read_to_eof(int fd, int timeout_ms = 20000) {
  std::vector<uint8_t> out;
  uint8_t buf[65536];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          deadline - std::chrono::steady_clock::now())
                                          .count());
    if (left <= 0 || ::poll(&p, 1, left) <= 0) {
      ADD_FAILURE() << "no EOF before the deadline";
      return out;
    }
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r <= 0) return out;
    out.insert(out.end(), buf, buf + r);
  }
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

struct LinkPair {
  std::unique_ptr<Transport> send_side, recv_side;
};

LinkPair connect_pair(const std::string& scheme) {
  static std::atomic<int> counter{0};
  std::string address;
  if (scheme == "loopback") {
    address = "loopback:pump" + std::to_string(counter++);
  } else {
    // A free port: bind to 0 through the registry is not offered; probe a few.
    for (int port = 42000 + (::getpid() % 1000) * 7 + counter++ * 3;; ++port) {
      address = scheme + ":127.0.0.1:" + std::to_string(port);
      auto l = listen_transport(address);
      if (l) {
        // udp's connect waits for the accepted end to answer (on its progress()), so accept
        // runs beside it and drives that end until the connect returned.
        Result<std::unique_ptr<Transport>> a = error(ErrorCode::kTimeout, "not accepted");
        std::atomic<bool> connected{false};
        std::thread acceptor([&] {
          a = (*l)->accept(5000);
          while (a && !connected.load()) {
            (*a)->progress(Clock::now());
            std::this_thread::yield();
          }
        });
        auto c = connect_transport(address, 5000);
        connected.store(true);
        acceptor.join();
        EXPECT_TRUE(c.has_value()) << c.status().message();
        EXPECT_TRUE(a.has_value()) << a.status().message();
        return {std::move(*c), std::move(*a)};
      }
    }
  }
  auto l = listen_transport(address);
  EXPECT_TRUE(l.has_value());
  auto c = connect_transport(address, 2000);
  EXPECT_TRUE(c.has_value()) << c.status().message();
  auto a = (*l)->accept(2000);
  EXPECT_TRUE(a.has_value());
  return {std::move(*c), std::move(*a)};
}

// Parameter: "SCHEME" or "SCHEME+busy" (the engine never sleeps).
class Pumps : public ::testing::TestWithParam<std::string> {
 protected:
  std::string scheme() const { return GetParam().substr(0, GetParam().find('+')); }
  PumpOptions options() const {
    PumpOptions o;
    if (GetParam().ends_with("+busy")) o.poll_mode = PollMode::kBusy;
    return o;
  }
};

TEST_P(Pumps, StreamAndReturnPathArriveWholeAndBothEnd) {
  LinkPair link = connect_pair(scheme());
  SocketPair src, dst;
  PumpOptions opt = options();
  ChannelPump sender(PumpRole::kSender, {src.qemu, src.qemu}, *link.send_side, opt);
  ChannelPump receiver(PumpRole::kReceiver, {dst.qemu, dst.qemu}, *link.recv_side, opt);
  Status sst, rst;
  std::thread ts([&] { sst = sender.run(); });
  std::thread tr([&] { rst = receiver.run(); });

  const auto stream = random_bytes(24u << 20, 1);
  const auto rp = random_bytes(100000, 2);
  std::thread source([&] {
    std::mt19937 rng(3);
    size_t at = 0;
    while (at < stream.size()) {
      size_t n = std::min(stream.size() - at, size_t{1} + rng() % 300000);
      ASSERT_TRUE(write_all(src.test, stream.data() + at, n));
      at += n;
    }
    ::shutdown(src.test, SHUT_WR);  // the source QEMU finished its stream
  });
  // The destination writes its return path while the stream flows.
  ASSERT_TRUE(write_all(dst.test, rp.data(), rp.size()));
  std::vector<uint8_t> got = read_to_eof(dst.test);
  source.join();
  ::shutdown(dst.test, SHUT_WR);  // the destination QEMU is done
  ts.join();
  tr.join();
  // The pumps do not own QEMU's fds (ChannelSet closes them after run()).
  ::close(src.qemu);
  src.qemu = -1;
  std::vector<uint8_t> back = read_to_eof(src.test);
  EXPECT_TRUE(sst.is_ok()) << sst.message();
  EXPECT_TRUE(rst.is_ok()) << rst.message();
  EXPECT_EQ(got, stream);
  EXPECT_EQ(back, rp);
  EXPECT_EQ(sender.counters().bytes_from_qemu.load(), stream.size());
  EXPECT_EQ(receiver.counters().bytes_to_qemu.load(), stream.size());
  EXPECT_EQ(sender.counters().link_tx_bytes.load(), receiver.counters().link_rx_bytes.load());
  EXPECT_EQ(receiver.counters().link_tx_bytes.load(), sender.counters().link_rx_bytes.load());
}

TEST_P(Pumps, DestinationClosingFirstEndsCleanly) {
  // Post-copy: the destination QEMU closes after its SHUT message; the source only after
  // reading it. Both pumps still end without an error.
  LinkPair link = connect_pair(scheme());
  SocketPair src, dst;
  ChannelPump sender(PumpRole::kSender, {src.qemu, src.qemu}, *link.send_side, options());
  ChannelPump receiver(PumpRole::kReceiver, {dst.qemu, dst.qemu}, *link.recv_side, options());
  Status sst, rst;
  std::thread ts([&] { sst = sender.run(); });
  std::thread tr([&] { rst = receiver.run(); });
  const auto stream = random_bytes(1u << 20, 4);
  // Written while the destination side reads: 1 MiB is more than the sockets and the pumps'
  // bounded queues hold, so writing it all first deadlocks whenever small writes to the
  // destination socket use up its buffer (a loaded host).
  bool wrote = false;
  std::thread source([&] { wrote = write_all(src.test, stream.data(), stream.size()); });
  std::vector<uint8_t> got(stream.size());
  size_t have = 0;
  while (have < got.size()) {
    ssize_t r = ::read(dst.test, got.data() + have, got.size() - have);
    if (r <= 0) break;
    have += static_cast<size_t>(r);
  }
  source.join();
  ASSERT_TRUE(wrote);
  ASSERT_EQ(have, got.size());
  const uint8_t shut[] = {0, 1, 0, 4, 0, 0, 0, 0};  // a return-path message, then close
  ASSERT_TRUE(write_all(dst.test, shut, sizeof shut));
  ::close(dst.test);
  dst.test = -1;
  uint8_t rp[sizeof shut];
  size_t n = 0;
  while (n < sizeof rp) {
    ssize_t r = ::read(src.test, rp + n, sizeof rp - n);
    ASSERT_GT(r, 0);
    n += static_cast<size_t>(r);
  }
  ::shutdown(src.test, SHUT_WR);  // the source read SHUT and closes
  ts.join();
  tr.join();
  EXPECT_TRUE(sst.is_ok()) << sst.message();
  EXPECT_TRUE(rst.is_ok()) << rst.message();
  EXPECT_EQ(got, stream);
  EXPECT_EQ(0, std::memcmp(rp, shut, sizeof shut));
}

TEST_P(Pumps, LinkLostMidStreamFailsTheSenderClearly) {
  LinkPair link = connect_pair(scheme());
  SocketPair src;
  ChannelPump sender(PumpRole::kSender, {src.qemu, src.qemu}, *link.send_side, options());
  Status sst;
  std::thread ts([&] { sst = sender.run(); });
  const auto chunk = random_bytes(64u << 10, 5);
  ASSERT_TRUE(write_all(src.test, chunk.data(), chunk.size()));
  link.recv_side.reset();  // ferry recv dies
  // The source keeps writing until the sender gives up and closes its QEMU side.
  ts.join();
  EXPECT_FALSE(sst.is_ok());
  EXPECT_NE(sst.message().find("ferry recv"), std::string::npos) << sst.message();
}

TEST_P(Pumps, AbortReturnsPromptly) {
  LinkPair link = connect_pair(scheme());
  SocketPair src;
  int abort_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  PumpOptions opt = options();
  opt.abort_fd = abort_fd;
  ChannelPump sender(PumpRole::kSender, {src.qemu, src.qemu}, *link.send_side, opt);
  Status sst;
  std::thread ts([&] { sst = sender.run(); });
  const uint64_t one = 1;
  ASSERT_EQ(::write(abort_fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  ts.join();
  EXPECT_FALSE(sst.is_ok());
  EXPECT_NE(sst.message().find("another channel"), std::string::npos);
  ::close(abort_fd);
}

TEST_P(Pumps, BackPressureBoundsWhatIsBuffered) {
  // The destination never reads: the source's writes must stall once the pumps' queues,
  // the link and the socket buffers are full, not grow without bound.
  LinkPair link = connect_pair(scheme());
  SocketPair src, dst;
  int abort_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  PumpOptions opt = options();
  opt.abort_fd = abort_fd;
  ChannelPump sender(PumpRole::kSender, {src.qemu, src.qemu}, *link.send_side, opt);
  ChannelPump receiver(PumpRole::kReceiver, {dst.qemu, dst.qemu}, *link.recv_side, opt);
  Status sst, rst;
  std::thread ts([&] { sst = sender.run(); });
  std::thread tr([&] { rst = receiver.run(); });
  const auto block = random_bytes(64u << 10, 6);
  size_t written = 0;
  const int fl = ::fcntl(src.test, F_GETFL);
  ::fcntl(src.test, F_SETFL, fl | O_NONBLOCK);
  for (;;) {
    ssize_t w = ::write(src.test, block.data(), block.size());
    if (w > 0) {
      written += static_cast<size_t>(w);
      ASSERT_LT(written, size_t{64} << 20) << "buffering without bound";
      continue;
    }
    // Stalled: give the pumps 300 ms to make room; if none comes, the path is full.
    pollfd p{src.test, POLLOUT, 0};
    if (::poll(&p, 1, 300) == 0) break;
  }
  EXPECT_GT(written, size_t{256} << 10);
  const uint64_t one = 1;
  (void)!::write(abort_fd, &one, sizeof one);
  ts.join();
  tr.join();
  ::close(abort_fd);
}

// Forwards everything to a transport and records the hints the pump sets on it.
class LinkHintRecorder final : public Transport {
 public:
  explicit LinkHintRecorder(Transport& inner) : in_(inner) {}
  const char* kind() const noexcept override { return in_.kind(); }
  TransportCaps caps() const noexcept override { return in_.caps(); }
  FramePool& pool() noexcept override { return in_.pool(); }
  size_t tx_burst(std::span<FrameBuf* const> f) noexcept override { return in_.tx_burst(f); }
  size_t reap_tx(std::span<FrameBuf*> out) noexcept override { return in_.reap_tx(out); }
  size_t rx_burst(std::span<FrameBuf*> out) noexcept override { return in_.rx_burst(out); }
  size_t progress(TimePoint now) noexcept override { return in_.progress(now); }
  TimePoint next_deadline() const noexcept override { return in_.next_deadline(); }
  void close_tx() noexcept override { in_.close_tx(); }
  LinkState state() const noexcept override { return in_.state(); }
  const Status& error() const noexcept override { return in_.error(); }
  size_t tx_in_flight_bytes() const noexcept override { return in_.tx_in_flight_bytes(); }
  size_t tx_unsent_bytes() const noexcept override { return in_.tx_unsent_bytes(); }
  int wait_fd() const noexcept override { return in_.wait_fd(); }
  uint32_t wait_events(bool rx, bool tx) const noexcept override { return in_.wait_events(rx, tx); }
  void set_buffer_hint(size_t bytes) noexcept override {
    in_.set_buffer_hint(bytes);
    buffer = bytes;
  }
  void set_unsent_limit(size_t bytes) noexcept override {
    in_.set_unsent_limit(bytes);
    last = bytes;
    ++calls;
  }
  void set_pacing_rate(double bytes_per_s) noexcept override {
    in_.set_pacing_rate(bytes_per_s);
    pacing = bytes_per_s;
    ++pacing_calls;
  }
  double min_rtt_s() const noexcept override { return in_.min_rtt_s(); }
  std::atomic<size_t> last{0};  // set_unsent_limit
  std::atomic<int> calls{0};
  std::atomic<size_t> buffer{0};  // the last set_buffer_hint
  std::atomic<double> pacing{0};
  std::atomic<int> pacing_calls{0};

 private:
  Transport& in_;
};

// Pumps `stream` through a sender on send_link and a receiver on recv_link, QEMU played by
// the test: the first `first` bytes, then a page request (at_request() runs just before
// it), then the rest; read_dst reads the destination's end to EOF. What the destination got.
std::vector<uint8_t> pump_across_a_request(
    PumpOptions opt, Transport& send_link, Transport& recv_link, const std::vector<uint8_t>& stream,
    size_t first, const std::function<void()>& at_request,
    const std::function<std::vector<uint8_t>(int)>& read_dst) {
  SocketPair src, dst;
  std::atomic<uint64_t> requests{0};
  opt.page_requests = &requests;
  ChannelPump sender(PumpRole::kSender, {src.qemu, src.qemu}, send_link, opt);
  ChannelPump receiver(PumpRole::kReceiver, {dst.qemu, dst.qemu}, recv_link, PumpOptions{});
  Status sst, rst;
  std::thread ts([&] { sst = sender.run(); });
  std::thread tr([&] { rst = receiver.run(); });
  std::thread source([&] {
    ASSERT_TRUE(write_all(src.test, stream.data(), first));
    at_request();
    requests.store(1);  // the destination asked for a page
    ASSERT_TRUE(write_all(src.test, stream.data() + first, stream.size() - first));
    ::shutdown(src.test, SHUT_WR);
  });
  std::vector<uint8_t> got = read_dst(dst.test);
  source.join();
  ::shutdown(dst.test, SHUT_WR);
  ts.join();
  tr.join();
  EXPECT_TRUE(sst.is_ok()) << sst.message();
  EXPECT_TRUE(rst.is_ok()) << rst.message();
  return got;
}

// A destination that reads ~6 MB/s: the link, not QEMU, is then the bottleneck, and the
// pump measures its rate.
std::vector<uint8_t> read_slowly(int fd) {
  std::vector<uint8_t> got;
  uint8_t buf[32768];
  for (ssize_t r; (r = ::read(fd, buf, sizeof buf)) > 0;) {
    got.insert(got.end(), buf, buf + r);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the slow destination
  }
  return got;
}

// Small socket buffers on a tcp pair: a slow destination holds the sender back at once,
// instead of after megabytes in loopback's autotuned buffers.
void small_socket_buffers(LinkPair& link) {
  const int small = 64 << 10;
  for (const auto& [fd, opt] : {std::pair{link.recv_side->wait_fd(), SO_RCVBUF},
                                std::pair{link.send_side->wait_fd(), SO_SNDBUF}}) {
    ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, opt, &small, sizeof small), 0);
  }
}

// A link that sends every frame it takes at once and never hears an ack: what it holds is all
// in flight, none of it unsent (a long, fast path whose acks are a round trip away).
class NeverAckedLink final : public Transport {
 public:
  NeverAckedLink()
      : pool_(std::move(FramePool::create({64, kFrameHeaderSize + kMaxPayload}).value())) {}
  const char* kind() const noexcept override { return "never-acked"; }
  TransportCaps caps() const noexcept override {
    return {kFrameHeaderSize + kMaxPayload, 32, true, true, false, false, "never"};
  }
  FramePool& pool() noexcept override { return *pool_; }
  size_t tx_burst(std::span<FrameBuf* const> frames) noexcept override {
    for (FrameBuf* f : frames) in_flight_ += f->len;
    return frames.size();
  }
  size_t reap_tx(std::span<FrameBuf*>) noexcept override { return 0; }
  size_t rx_burst(std::span<FrameBuf*>) noexcept override { return 0; }
  void close_tx() noexcept override {}
  LinkState state() const noexcept override { return LinkState::kOpen; }
  const Status& error() const noexcept override { return ok_; }
  size_t tx_in_flight_bytes() const noexcept override { return in_flight_.load(); }
  size_t tx_unsent_bytes() const noexcept override { return 0; }
  int wait_fd() const noexcept override { return -1; }
  uint32_t wait_events(bool, bool) const noexcept override { return 0; }

 private:
  std::unique_ptr<FramePool> pool_;
  std::atomic<size_t> in_flight_{0};  // read by the test's thread
  Status ok_;
};

TEST(SenderPump, BytesInFlightDoNotStopReadingQemu) {
  // QEMU's stream waits in its socket only while ferry holds max_pending unsent: bytes already
  // on the way (a window's worth on a long fast path) must not hold it back, or the link runs
  // at max_pending per round trip. Before, with them counted, this pump stopped at 256 KiB.
  NeverAckedLink link;
  SocketPair src;
  int abort_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  PumpOptions opt;
  opt.abort_fd = abort_fd;
  ChannelPump sender(PumpRole::kSender, {src.qemu, src.qemu}, link, opt);
  Status sst;
  std::thread ts([&] { sst = sender.run(); });
  const size_t total = 16 * opt.max_pending;
  const auto stream = random_bytes(total, 9);
  std::thread source([&] { EXPECT_TRUE(write_all(src.test, stream.data(), stream.size())); });
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (sender.counters().bytes_from_qemu.load() < total &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(
        std::chrono::milliseconds(1));  // polling a counter, not waiting in place of a signal
  }
  EXPECT_EQ(sender.counters().bytes_from_qemu.load(), total);
  EXPECT_GT(link.tx_in_flight_bytes(), total);  // every byte handed on, none acked
  const uint64_t one = 1;
  (void)!::write(abort_fd, &one, sizeof one);
  ::shutdown(src.test, SHUT_RDWR);
  source.join();
  ts.join();
  ::close(abort_fd);
}

TEST(SenderPump, PostCopyHoldsTheKernelsUnsentQueueShort) {
  // Once a page request went by, the sender limits what waits unsent in the kernel (on tcp
  // TCP_NOTSENT_LOWAT), so a page QEMU sent just before the destination asked for it waits
  // behind little bulk; before that, and with the post-copy backlog off, it sets nothing.
  for (const size_t pending : {size_t{32} << 10, size_t{0}}) {
    SCOPED_TRACE("postcopy_pending " + std::to_string(pending));
    LinkPair link = connect_pair("tcp");
    LinkHintRecorder rec(*link.send_side);
    PumpOptions opt;
    opt.postcopy_pending = pending;
    const auto stream = random_bytes(8u << 20, 7);
    int calls_before_request = -1;
    const auto got = pump_across_a_request(
        opt, rec, *link.recv_side, stream, stream.size() / 2,
        [&] { calls_before_request = rec.calls.load(); }, [](int fd) { return read_to_eof(fd); });
    EXPECT_EQ(got, stream);
    EXPECT_EQ(calls_before_request, 0);
    if (pending == 0) {
      EXPECT_EQ(rec.calls.load(), 0);
      continue;
    }
    ASSERT_GE(rec.calls.load(), 1);
    EXPECT_GE(rec.last.load(), size_t{16} << 10);
    unsigned lowat = 0;
    socklen_t len = sizeof lowat;
    ASSERT_EQ(::getsockopt(link.send_side->wait_fd(), IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, &len),
              0);
    EXPECT_EQ(lowat, rec.last.load());
  }
}

TEST(SenderPump, PostCopyPacesTheLinkUnderItsRateWithAShortBuffer) {
  // Once a page request went by, the sender paces the link at postcopy_pace of the rate it
  // measured before (on tcp SO_MAX_PACING_RATE) and cuts the kernel's buffer to a few ms of
  // it, so that no queue stands at a bottleneck for a page asked for to wait behind; with
  // postcopy_pace 0 it does neither. The destination reads ~6 MB/s: the link is the
  // bottleneck, and the pump measures its rate.
  for (const double pace : {0.85, 0.0}) {
    SCOPED_TRACE("postcopy_pace " + std::to_string(pace));
    LinkPair link = connect_pair("tcp");
    ASSERT_NO_FATAL_FAILURE(small_socket_buffers(link));
    LinkHintRecorder rec(*link.send_side);
    PumpOptions opt;
    opt.postcopy_pace = pace;
    const auto stream = random_bytes(10u << 20, 11);
    int pacing_before_request = -1;
    size_t buffer_before_request = 0;
    const auto got = pump_across_a_request(
        opt, rec, *link.recv_side, stream, 7u << 20,  // ~1 s at the destination's pace
        [&] {
          pacing_before_request = rec.pacing_calls.load();
          buffer_before_request = rec.buffer.load();
        },
        read_slowly);
    EXPECT_EQ(got, stream);
    EXPECT_EQ(pacing_before_request, 0);
    EXPECT_GE(buffer_before_request, PumpOptions{}.link_buffer_min);
    if (pace == 0) {
      EXPECT_EQ(rec.pacing_calls.load(), 0);
      EXPECT_GE(rec.buffer.load(), PumpOptions{}.link_buffer_min);
      continue;
    }
    ASSERT_EQ(rec.pacing_calls.load(), 1);
    // 0.85 of ~6 MB/s; wide bounds for a busy host.
    EXPECT_GT(rec.pacing.load(), 1e6);
    EXPECT_LT(rec.pacing.load(), 20e6);
    uint64_t max_rate = 0;
    socklen_t len = sizeof max_rate;
    ASSERT_EQ(
        ::getsockopt(link.send_side->wait_fd(), SOL_SOCKET, SO_MAX_PACING_RATE, &max_rate, &len),
        0);
    EXPECT_EQ(max_rate, static_cast<uint64_t>(rec.pacing.load()));
    EXPECT_GE(rec.buffer.load(), size_t{16} << 10);
    EXPECT_LT(rec.buffer.load(), PumpOptions{}.link_buffer_min);
  }
}

// A sender's codec that frames QEMU's bytes as OPAQUE and, once it framed package_end of
// them (0 = never), says QEMU's post-copy package went into frames.
class PackageCodec final : public StreamCodec {
 public:
  explicit PackageCodec(size_t package_end) : package_end_(package_end) {}
  Status encode(std::span<const uint8_t> bytes, FrameWriter& out) override {
    for (size_t at = 0; at < bytes.size();) {
      const size_t n = std::min(bytes.size() - at, size_t{64} << 10);
      std::memcpy(out.begin_frame(n), bytes.data() + at, n);
      out.end_frame(FrameType::kOpaque, n);
      at += n;
    }
    framed_ += bytes.size();
    return Status::ok();
  }
  Status finish(FrameWriter&) override { return Status::ok(); }
  Status decode(FrameType, std::span<const uint8_t>, ByteQueue&) override { return Status::ok(); }
  bool postcopy_package_framed() const override {
    return package_end_ > 0 && framed_ >= package_end_;
  }

 private:
  size_t package_end_;
  size_t framed_ = 0;
};

TEST(SenderPump, PostCopyPacingBeginsOnceThePackageIsInTheKernel) {
  // The first page requests come right after the destination loaded QEMU's post-copy
  // package: pacing that began with them found the bulk sent since already queued at the
  // bottleneck. So the sender paces from the package on, with no request yet; a stream
  // without one (package_end 0) is not paced before a request.
  for (const size_t package_end : {size_t{7} << 20, size_t{0}}) {
    SCOPED_TRACE("package_end " + std::to_string(package_end));
    LinkPair link = connect_pair("tcp");
    ASSERT_NO_FATAL_FAILURE(small_socket_buffers(link));
    LinkHintRecorder rec(*link.send_side);
    PackageCodec codec(package_end);
    PumpOptions opt;
    opt.codec = &codec;
    const auto stream = random_bytes(10u << 20, 13);
    int pacing_before_request = -1;
    // The request comes after QEMU wrote everything: by then the pump has taken all but its
    // socket's buffer, well past the package's end.
    const auto got = pump_across_a_request(
        opt, rec, *link.recv_side, stream, stream.size(),
        [&] { pacing_before_request = rec.pacing_calls.load(); }, read_slowly);
    EXPECT_EQ(got, stream);
    EXPECT_EQ(pacing_before_request, package_end > 0 ? 1 : 0);
    EXPECT_EQ(rec.pacing_calls.load(), 1);
  }
}

// A sender's codec that frames QEMU's bytes as OPAQUE, and once told to hold keeps them
// until release() (StreamCodec::hold); counts what it held at most.
class HoldingCodec final : public StreamCodec {
 public:
  Status encode(std::span<const uint8_t> bytes, FrameWriter& out) override {
    held_.append(bytes.data(), bytes.size());
    peak = std::max(peak.load(), held_.size());
    return holding_ ? Status::ok() : release(SIZE_MAX, out);
  }
  Status finish(FrameWriter& out) override { return release(SIZE_MAX, out); }
  Status decode(FrameType, std::span<const uint8_t>, ByteQueue&) override { return Status::ok(); }
  bool hold() override { return holding_ = true; }
  uint64_t requests_missed() const override { return missed.load(); }
  size_t held_bytes() const override { return held_.size(); }
  Status release(size_t bytes, FrameWriter& out) override {
    while (bytes > 0 && !held_.empty()) {
      const size_t n = std::min({bytes, held_.size(), size_t{64} << 10});
      std::memcpy(out.begin_frame(n), held_.pending().data(), n);
      out.end_frame(FrameType::kOpaque, n);
      held_.consume(n);
      bytes -= std::min(bytes, n);
    }
    return Status::ok();
  }
  std::atomic<size_t> peak{0};
  std::atomic<uint64_t> missed{0};  // as promote() would count them

 private:
  ByteQueue held_;
  bool holding_ = false;
};

// Polls cond every 2 ms until it holds or `within` passed; whether it held.
template <typename Cond>
bool eventually(Cond cond, std::chrono::milliseconds within) {
  const auto until = std::chrono::steady_clock::now() + within;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

TEST(SenderPump, PostCopyPacingBeginsWhenTheSwitchIsRequested) {
  // ferry migrate tells the pumps when QEMU accepted migrate-start-postcopy: the package
  // QEMU writes after it stopped the source then waits behind post-copy's short backlog,
  // not pre-copy's. Without that signal nothing changes before the package or a request.
  for (const bool requested : {true, false}) {
    SCOPED_TRACE(requested ? "switch requested" : "no signal");
    LinkPair link = connect_pair("tcp");
    ASSERT_NO_FATAL_FAILURE(small_socket_buffers(link));
    LinkHintRecorder rec(*link.send_side);
    std::atomic<bool> switch_requested{false};
    PumpOptions opt;
    opt.postcopy_requested = &switch_requested;
    const auto stream = random_bytes(10u << 20, 17);
    bool paced_before_request = false;
    const auto got = pump_across_a_request(
        opt, rec, *link.recv_side, stream, 7u << 20,  // ~1 s at the destination's pace
        [&] {
          if (requested) switch_requested.store(true);
          // The pump still drains its backlog to the slow destination, so it steps.
          paced_before_request = requested
                                     ? eventually([&] { return rec.pacing_calls.load() == 1; },
                                                  std::chrono::milliseconds(5000))
                                     : rec.pacing_calls.load() > 0;
        },
        read_slowly);
    EXPECT_EQ(got, stream);
    EXPECT_EQ(paced_before_request, requested);
    EXPECT_EQ(rec.pacing_calls.load(), 1);
    EXPECT_LT(rec.buffer.load(), PumpOptions{}.link_buffer_min);
  }
}

TEST(SenderPump, PostCopyRequestsForPagesNotHeldLetQemuWriteIntoTheHold) {
  // Post-copy with a codec that holds: however full the link (nobody reads it here), each
  // request for a page the codec does not hold lets QEMU write more into the hold (256 KiB
  // every 5 ms for 30 ms), so that its blocked write ends and it serves the request; no
  // more than that, so no burst of reading competes with the guests for the CPU. The link
  // still gets the stream in order. With postcopy_hold 0 a request changes nothing: the
  // pump reads what the link takes.
  for (const size_t hold : {size_t{256} << 20, size_t{0}}) {
    SCOPED_TRACE("postcopy_hold " + std::to_string(hold));
    LinkPair link = connect_pair("tcp");
    SocketPair src, dst;
    std::atomic<uint64_t> requests{1};  // post-copy from the start
    HoldingCodec codec;
    PumpOptions opt;
    opt.page_requests = &requests;
    opt.postcopy_hold = hold;
    opt.codec = &codec;
    ChannelPump sender(PumpRole::kSender, {src.qemu, src.qemu}, *link.send_side, opt);
    Status sst, rst;
    std::thread ts([&] { sst = sender.run(); });
    const auto stream = random_bytes(64u << 20, 8);
    std::thread source([&] {
      ASSERT_TRUE(write_all(src.test, stream.data(), stream.size()));
      ::shutdown(src.test, SHUT_WR);
    });
    // Until the link's kernel buffers are full and the pump stops reading.
    auto taken = [&] { return sender.counters().bytes_from_qemu.load(); };
    uint64_t last = 0;
    int still = 0;  // polls without a byte more (100 of them: 200 ms)
    ASSERT_TRUE(eventually(
        [&] {
          const uint64_t was = last;
          last = taken();
          still = last > 0 && last == was ? still + 1 : 0;
          return still == 100;
        },
        std::chrono::seconds(10)))
        << "the pump never stopped reading";
    for (int request = 0; request < 4; ++request) {
      const uint64_t before = taken();
      requests.fetch_add(1);
      codec.missed.fetch_add(1);
      const bool grew = eventually([&] { return taken() >= before + (400u << 10); },
                                   std::chrono::milliseconds(hold ? 5000 : 500));
      EXPECT_EQ(grew, hold > 0) << "request " << request << ": " << taken() - before
                                << " bytes taken from QEMU";
    }
    if (hold > 0) {
      // 7 credits of 256 KiB at most per request, and what was held before the first.
      EXPECT_LE(codec.peak.load(), size_t{4} * 7 * (256u << 10) + (1u << 20))
          << "the pump took more than the requests allowed";
    }
    ChannelPump receiver(PumpRole::kReceiver, {dst.qemu, dst.qemu}, *link.recv_side, PumpOptions{});
    std::thread tr([&] { rst = receiver.run(); });
    std::vector<uint8_t> got = read_to_eof(dst.test);
    source.join();
    ::shutdown(dst.test, SHUT_WR);
    ts.join();
    tr.join();
    EXPECT_TRUE(sst.is_ok()) << sst.message();
    EXPECT_TRUE(rst.is_ok()) << rst.message();
    EXPECT_TRUE(got == stream) << "the stream changed on the way (" << got.size() << " bytes)";
  }
}

// A receiver's codec that rebuilds 1 MiB from every frame, however small (as a PAGES frame
// of "same" pages may); counts its calls.
class Expander final : public StreamCodec {
 public:
  static constexpr size_t kOut = 1u << 20;
  Status encode(std::span<const uint8_t>, FrameWriter&) override { return Status::ok(); }
  Status finish(FrameWriter&) override { return Status::ok(); }
  Status decode(FrameType, std::span<const uint8_t>, ByteQueue& out) override {
    std::memset(out.reserve(kOut), static_cast<int>(calls.load()), kOut);
    out.commit(kOut);
    ++calls;
    return Status::ok();
  }
  std::atomic<int> calls{0};
};

TEST(ReceiverPump, StopsDecodingBetweenFramesOnceQemuHasEnoughQueued) {
  LinkPair link = connect_pair("loopback");
  SocketPair dst;
  int abort_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  Expander codec;
  PumpOptions opt;
  opt.abort_fd = abort_fd;
  opt.codec = &codec;
  ChannelPump receiver(PumpRole::kReceiver, {dst.qemu, dst.qemu}, *link.recv_side, opt);
  Status rst;
  std::thread tr([&] { rst = receiver.run(); });
  // 64 one-byte frames in one buffer: 64 MiB once rebuilt.
  constexpr int kFrames = 64;
  FrameBuf* f = link.send_side->pool().alloc();
  ASSERT_NE(f, nullptr);
  for (int i = 0; i < kFrames; ++i) {
    const uint8_t byte = static_cast<uint8_t>(i);
    encode_frame_header(FrameType::kOpaque, kFirstDataSeq + i, &byte, 1, f->data + f->len);
    f->data[f->len + kFrameHeaderSize] = byte;
    f->len += kFrameHeaderSize + 1;
  }
  ASSERT_EQ(link.send_side->tx_burst({&f, 1}), 1u);
  link.send_side->progress(Clock::now());
  // The pump writes to QEMU in the step after it decoded (channel_pump.h: link receive comes
  // first), so once QEMU's socket has bytes, that step's decoding is over: without the bound
  // it would have taken all 64 frames.
  pollfd readable{dst.test, POLLIN, 0};
  ASSERT_EQ(::poll(&readable, 1, 10000), 1) << "nothing reached QEMU";
  EXPECT_LE(codec.calls.load(), 2) << "decoded on while QEMU had megabytes queued";
  // QEMU reads: decoding resumes where it stopped, and every byte arrives in order.
  std::vector<uint8_t> buf(1u << 16);
  size_t got = 0;
  bool in_order = true;
  while (got < kFrames * Expander::kOut) {
    const ssize_t r = ::read(dst.test, buf.data(), buf.size());
    ASSERT_GT(r, 0);
    for (ssize_t j = 0; j < r; ++j) in_order &= buf[j] == static_cast<uint8_t>((got + j) >> 20);
    got += static_cast<size_t>(r);
  }
  EXPECT_TRUE(in_order);
  EXPECT_EQ(codec.calls.load(), kFrames);
  const uint64_t one = 1;
  (void)!::write(abort_fd, &one, sizeof one);
  tr.join();
  ::close(abort_fd);
}

INSTANTIATE_TEST_SUITE_P(Transports, Pumps,
                         ::testing::Values("loopback", "tcp", "udp", "loopback+busy", "tcp+busy",
                                           "udp+busy"
#if FERRY_HAVE_RDMA
                                           ,
                                           "rdma", "rdma+busy"
#endif
                                           ));

TEST(TransportRegistry, ErrorsNameWhatTheBuildHas) {
  auto u = connect_transport("carrier-pigeon:x", 100);
  ASSERT_FALSE(u.has_value());
  EXPECT_NE(u.status().message().find("tcp"), std::string::npos) << u.status().message();
  // Rows this build lacks (dpdk without libdpdk, rdma without libfabric) say so and why.
  for (const auto& row : transports()) {
    if (row.available) continue;
    auto d = listen_transport(std::string(row.name) + ":0");
    ASSERT_FALSE(d.has_value());
    EXPECT_NE(d.status().message().find("not in this build"), std::string::npos);
  }
  // A malformed dpdk address is refused before any DPDK set-up (built or not).
  auto d = listen_transport("dpdk:0");
  ASSERT_FALSE(d.has_value());
  auto l = connect_transport("loopback:nobody-listens", 100);
  ASSERT_FALSE(l.has_value());
  auto t = connect_transport("tcp:127.0.0.1:1", 1000);  // nothing listens on port 1
  ASSERT_FALSE(t.has_value());
}

// Fills a frame of the link's pool: header + `n` payload bytes from `src`.
FrameBuf* make_frame(Transport& t, uint64_t seq, const uint8_t* src, size_t n) {
  FrameBuf* f = t.pool().alloc();
  if (!f) return nullptr;
  std::memcpy(f->payload(), src, n);
  encode_frame_header(FrameType::kOpaque, seq, f->payload(), static_cast<uint32_t>(n), f->data);
  f->len = static_cast<uint32_t>(kFrameHeaderSize + n);
  return f;
}

TEST(LoopbackTransport, FullRingTakesNothingAndDoesNotBlock) {
  auto l = listen_transport("loopback:full");
  ASSERT_TRUE(l.has_value());
  auto c = connect_transport("loopback:full", 100);
  ASSERT_TRUE(c.has_value());
  auto a = (*l)->accept(100);
  ASSERT_TRUE(a.has_value());
  const auto block = random_bytes(64u << 10, 7);
  size_t taken = 0;
  for (uint64_t seq = 0; seq < 100; ++seq) {
    FrameBuf* f = make_frame(**c, seq, block.data(), block.size());
    if (!f) break;
    if ((*c)->tx_burst({&f, 1}) == 0) {
      (*c)->pool().free(f);
      break;
    }
    ++taken;
  }
  EXPECT_GT(taken, 0u);
  EXPECT_LT(taken, 100u);  // the ring (or the pool) filled, and tx_burst returned at once
  EXPECT_EQ((*c)->tx_in_flight_bytes(), taken * (kFrameHeaderSize + block.size()));
  FrameChecker check(0);
  size_t got = 0;
  FrameBuf* in[8];
  while (got < taken) {
    const size_t n = (*a)->rx_burst(in);
    for (size_t i = 0; i < n; ++i, ++got) {
      size_t pos = 0;
      FrameChecker::Frame fr;
      auto ok = check.next(in[i]->data, in[i]->len, &pos, fr);
      ASSERT_TRUE(ok.has_value() && *ok) << (ok ? "empty" : ok.status().message());
      ASSERT_EQ(0, std::memcmp(fr.payload, block.data(), block.size()));
      in[i]->pool->free(in[i]);
    }
  }
  // Every frame was copied by the peer: all come back through reap_tx.
  FrameBuf* done[128];
  EXPECT_EQ((*c)->reap_tx(done), taken);
  EXPECT_EQ((*c)->tx_in_flight_bytes(), 0u);
  for (size_t i = 0; i < taken; ++i) (*c)->pool().free(done[i]);
  (*c)->close_tx();
  EXPECT_EQ((*a)->rx_burst(in), 0u);
  EXPECT_EQ((*a)->state(), LinkState::kPeerClosed);
}

}  // namespace
}  // namespace ferry::pipeline
