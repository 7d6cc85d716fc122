// Unit tests of the frame-buffer layer: the pool, the tcp backend's framing under any TCP
// segmentation and its paced bursts, the handshake (accept, reject with a reason, a stranger's
// bytes), and the polling engine (busy and adaptive modes, stop, bounded sleeps).
#include "dataplane/transport.h"

#include <gtest/gtest.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/engine.h"
#include "dataplane/frame_pool.h"
#include "dataplane/handshake.h"
#include "dataplane/net.h"
#include "dataplane/protocol.h"

namespace ferry::dataplane {
namespace {

TEST(FramePool, HandsOutEveryBufferOnceAndRefusesBadSizes) {
  auto pool = FramePool::create({.frames = 4, .frame_capacity = 1000});
  ASSERT_TRUE(pool.has_value());
  std::vector<FrameBuf*> got;
  while (FrameBuf* f = (*pool)->alloc()) got.push_back(f);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ((*pool)->available(), 0u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i]->cap, 1000u);
    EXPECT_EQ(got[i]->pool, pool->get());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(got[i]->data) % 64, 0u);
    // Inside the one region a NIC would register.
    EXPECT_GE(got[i]->data, (*pool)->memory().data());
    EXPECT_LE(got[i]->data + got[i]->cap, (*pool)->memory().data() + (*pool)->memory().size());
    std::memset(got[i]->data, static_cast<int>(i), got[i]->cap);  // no overlap (ASan/valgrind)
  }
  (*pool)->free(got[2]);
  EXPECT_EQ((*pool)->alloc(), got[2]);
  EXPECT_FALSE(FramePool::create({.frames = 0}).has_value());
  EXPECT_FALSE(FramePool::create({.frames = 1, .frame_capacity = 10}).has_value());
}

std::vector<uint8_t> random_bytes(size_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// A tcp listener on a free port of 127.0.0.1 and its address.
std::pair<std::unique_ptr<Listener>, std::string> tcp_listener() {
  static int next = 43000 + (::getpid() % 1000) * 5;
  for (int port = next;; ++port) {
    std::string address = "tcp:127.0.0.1:" + std::to_string(port);
    if (auto l = listen_transport(address)) {
      next = port + 1;
      return {std::move(*l), address};
    }
  }
}

TEST(TcpTransport, NothingListeningIsARefusal) {
  // A host that answers with a reset has no ferry recv there: kRefused, which ends a
  // resumable link's attempts to reconnect (a silent host would be retried).
  std::string address;
  {
    auto [listener, at] = tcp_listener();
    address = at;
  }
  auto link = connect_transport(address, 2000);
  ASSERT_FALSE(link.has_value());
  EXPECT_EQ(link.status().code(), ErrorCode::kRefused) << link.status().message();
}

TEST(TcpTransport, WholeFramesUnderAnySegmentation) {
  // A raw peer writes frames of every size class in random pieces: the transport must hand up
  // whole frames only, in order, byte-exact, each checked by FrameChecker.
  auto [listener, address] = tcp_listener();
  auto ep = parse_endpoint(address);
  ASSERT_TRUE(ep.has_value());
  auto raw = connect_to(*ep, 2000);
  ASSERT_TRUE(raw.has_value());
  auto link = listener->accept(2000);
  ASSERT_TRUE(link.has_value());

  std::mt19937 rng(11);
  std::vector<std::vector<uint8_t>> payloads;
  std::vector<uint8_t> wire;
  for (uint64_t seq = 0; seq < 300; ++seq) {
    const size_t cls = rng() % 4;
    const size_t n = cls == 0   ? rng() % 40
                     : cls == 1 ? rng() % 5000
                     : cls == 2 ? 60000 + rng() % 200000
                                : kMaxPayload - rng() % 1000;
    payloads.push_back(random_bytes(n, rng));
    append_frame(wire, FrameType::kOpaque, seq, payloads.back().data(), static_cast<uint32_t>(n));
  }
  std::thread writer([&, fd = *raw] {
    std::mt19937 r(12);
    for (size_t at = 0; at < wire.size();) {
      const size_t n = std::min(wire.size() - at, size_t{1} + r() % 70000);
      ASSERT_TRUE(write_all(fd, wire.data() + at, n, 10000).is_ok());
      at += n;
    }
    ::shutdown(fd, SHUT_WR);
  });
  FrameChecker check(0);
  size_t next = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while ((*link)->state() == LinkState::kOpen && Clock::now() < deadline) {
    FrameBuf* in[8];
    const size_t n = (*link)->rx_burst(in);
    for (size_t i = 0; i < n; ++i) {
      size_t pos = 0;
      FrameChecker::Frame f;
      for (;;) {
        auto got = check.next(in[i]->data, in[i]->len, &pos, f);
        ASSERT_TRUE(got.has_value()) << got.status().message();
        if (!*got) break;
        ASSERT_LT(next, payloads.size());
        ASSERT_EQ(f.header.len, payloads[next].size());
        ASSERT_EQ(0, std::memcmp(f.payload, payloads[next].data(), f.header.len)) << next;
        ++next;
      }
      in[i]->pool->free(in[i]);
    }
  }
  writer.join();
  EXPECT_EQ(next, payloads.size());
  EXPECT_EQ((*link)->state(), LinkState::kPeerClosed);
  ::close(*raw);
}

TEST(TcpTransport, PacedItKeepsAtMostABurstUnsentInTheKernel) {
  // The kernel's pacer sends all that waits unsent as one TSO burst, up to 64 KiB on a short
  // round trip whatever the rate: a bottleneck queues it at once, and an urgent page on
  // another connection waits behind it. Paced, the transport keeps ~1 ms of the rate (at
  // least a page) unsent in the kernel, wakes its writer through poll, and loses nothing.
  auto [listener, address] = tcp_listener();
  auto raw = connect_to(*parse_endpoint(address), 2000);
  ASSERT_TRUE(raw.has_value());
  auto link = listener->accept(2000);
  ASSERT_TRUE(link.has_value());
  Transport& tx = **link;
  constexpr double kRate = 2e6;    // bytes/s: ~1 ms of it is below the least burst
  constexpr size_t kBurst = 4200;  // TcpTransport::kMinPacedBurst
  tx.set_pacing_rate(kRate);

  std::mt19937 rng(5);
  std::vector<uint8_t> want;
  std::vector<FrameBuf*> frames;
  for (uint64_t seq = 0; seq < 24; ++seq) {
    FrameBuf* f = tx.pool().alloc();
    ASSERT_NE(f, nullptr);
    const auto payload = random_bytes(16u << 10, rng);
    std::memcpy(f->data + kFrameHeaderSize, payload.data(), payload.size());
    encode_frame_header(FrameType::kOpaque, seq, f->data + kFrameHeaderSize,
                        static_cast<uint32_t>(payload.size()), f->data);
    f->len = static_cast<uint32_t>(kFrameHeaderSize + payload.size());
    want.insert(want.end(), f->data, f->data + f->len);
    frames.push_back(f);
  }
  std::vector<uint8_t> got;
  std::thread reader([&, fd = *raw] {
    std::vector<uint8_t> buf(1u << 16);
    while (got.size() < want.size()) {
      const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
      if (r <= 0) break;
      got.insert(got.end(), buf.data(), buf.data() + r);
    }
  });
  auto unsent_now = [&] {
    int unsent = -1;
    return ::ioctl(tx.wait_fd(), SIOCOUTQNSD, &unsent) == 0 ? unsent : -1;
  };
  ASSERT_EQ(tx.tx_burst(frames), frames.size());
  int most_unsent = unsent_now();
  size_t reaped = 0;
  bool woken = true;
  const auto t0 = Clock::now();
  while (reaped < frames.size()) {
    pollfd p{tx.wait_fd(), POLLOUT, 0};
    if (::poll(&p, 1, 2000) != 1) {
      woken = false;
      ::shutdown(*raw, SHUT_RDWR);  // ends the reader
      break;
    }
    FrameBuf* done[32];
    const size_t n = tx.reap_tx(done);  // writes what the burst allows
    most_unsent = std::max(most_unsent, unsent_now());
    for (size_t i = 0; i < n; ++i) tx.pool().free(done[i]);
    reaped += n;
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  reader.join();
  ASSERT_TRUE(woken) << "no wakeup with " << tx.tx_in_flight_bytes() << " bytes still queued";
  EXPECT_LE(most_unsent, static_cast<int>(kBurst));
  EXPECT_GT(most_unsent, 0);
  EXPECT_TRUE(got == want);
  // Paced, not starved: the writer kept up with the pacer.
  EXPECT_LT(s, 4.0 * static_cast<double>(want.size()) / kRate) << s;
  ::close(*raw);
}

TEST(TcpTransport, TruncatedFrameAtCloseIsAnError) {
  auto [listener, address] = tcp_listener();
  auto raw = connect_to(*parse_endpoint(address), 2000);
  ASSERT_TRUE(raw.has_value());
  auto link = listener->accept(2000);
  ASSERT_TRUE(link.has_value());
  std::vector<uint8_t> wire;
  append_frame(wire, FrameType::kOpaque, 0, "abcdef", 6);
  ASSERT_TRUE(write_all(*raw, wire.data(), wire.size() - 2, 1000).is_ok());
  ::close(*raw);
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  FrameBuf* in[4];
  while ((*link)->state() == LinkState::kOpen && Clock::now() < deadline) (*link)->rx_burst(in);
  EXPECT_EQ((*link)->state(), LinkState::kFailed);
  EXPECT_NE((*link)->error().message().find("middle of a frame"), std::string::npos)
      << (*link)->error().message();
}

class Handshakes : public ::testing::TestWithParam<std::string> {};

std::pair<std::unique_ptr<Transport>, std::unique_ptr<Transport>> link_pair(
    const std::string& scheme) {
  static int n = 0;
  std::unique_ptr<Listener> l;
  std::string address;
  if (scheme == "tcp") {
    auto [tl, ta] = tcp_listener();
    l = std::move(tl);
    address = ta;
  } else if (scheme == "rdma") {
    // An rdma connect completes only once the other side accepted: accept runs beside it.
    for (int port = 46000 + (::getpid() % 1000) * 5 + n++;; ++port) {
      address = "rdma:127.0.0.1:" + std::to_string(port);
      if (auto r = listen_transport(address, {.fabric_provider = "tcp"})) {
        l = std::move(*r);
        break;
      }
    }
    Result<std::unique_ptr<Transport>> a = error(ErrorCode::kTimeout, "not accepted");
    std::thread acceptor([&] { a = l->accept(5000); });
    auto c = connect_transport(address, 5000, {.fabric_provider = "tcp"});
    acceptor.join();
    EXPECT_TRUE(c.has_value()) << c.status().message();
    EXPECT_TRUE(a.has_value()) << a.status().message();
    return {std::move(*c), std::move(*a)};
  } else {
    address = "loopback:hs" + std::to_string(n++);
    auto r = listen_transport(address);
    EXPECT_TRUE(r.has_value());
    l = std::move(*r);
  }
  auto c = connect_transport(address, 2000);
  EXPECT_TRUE(c.has_value());
  auto a = l->accept(2000);
  EXPECT_TRUE(a.has_value());
  return {std::move(*c), std::move(*a)};
}

// Runs the sender's handshake on a thread; the link (or the error) is there after join().
struct SenderThread {
  SenderThread(std::unique_ptr<Transport> link, SenderHello hello)
      : thread([this, l = std::move(link), h = std::move(hello)]() mutable {
          result = sender_handshake(std::move(l), std::move(h));
        }) {}
  void join() { thread.join(); }
  Result<std::unique_ptr<Transport>> result = Status(ErrorCode::kInternal, "not run");
  std::thread thread;
};

TEST_P(Handshakes, AcceptedThenDataFramesFollow) {
  auto [send, recv] = link_pair(GetParam());
  SenderHello hello;
  hello.hello.channel = 2;
  hello.hello.features = kFeaturePages;
  hello.hello.session_id = 0xfeedULL;
  SenderThread sender(std::move(send), hello);
  auto got = receiver_greet(*recv, nullptr, Clock::now() + std::chrono::seconds(10));
  ASSERT_TRUE(got.has_value()) << got.status().message();
  EXPECT_EQ(got->hello.channel, 2);
  EXPECT_EQ(got->hello.features, kFeaturePages);
  EXPECT_EQ(got->hello.session_id, 0xfeedULL);
  EXPECT_FALSE(got->keys.has_value());
  auto accepted = receiver_accept(std::move(recv), *got);
  EXPECT_TRUE(accepted.has_value()) << accepted.status().message();
  sender.join();
  EXPECT_TRUE(sender.result.has_value()) << sender.result.status().message();
}

TEST_P(Handshakes, RejectionCarriesTheReason) {
  auto [send, recv] = link_pair(GetParam());
  SenderThread sender(std::move(send), SenderHello{});
  ASSERT_TRUE(receiver_greet(*recv, nullptr, Clock::now() + std::chrono::seconds(10)).has_value());
  EXPECT_TRUE(receiver_refuse(*recv, "channel 0 is already connected", 2000).is_ok());
  sender.join();
  ASSERT_FALSE(sender.result.has_value());
  EXPECT_NE(sender.result.status().message().find("rejected: channel 0 is already connected"),
            std::string::npos)
      << sender.result.status().message();
}

TEST_P(Handshakes, SilentPeerTimesOut) {
  auto [send, recv] = link_pair(GetParam());
  const auto t0 = Clock::now();
  auto got = receiver_greet(*recv, nullptr, t0 + std::chrono::milliseconds(200));
  EXPECT_FALSE(got.has_value());
  EXPECT_EQ(got.status().code(), ErrorCode::kTimeout);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
}

TEST_P(Handshakes, CancelEndsTheWaitEarly) {
  auto [send, recv] = link_pair(GetParam());
  // Set before the wait: the wait still polls in 100 ms slices and sees it after the first.
  const std::atomic<bool> cancel{true};
  const auto t0 = Clock::now();
  auto got = receiver_greet(*recv, nullptr, t0 + std::chrono::seconds(30), &cancel);
  EXPECT_FALSE(got.has_value());
  EXPECT_NE(got.status().message().find("stopping"), std::string::npos) << got.status().message();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2));
}

INSTANTIATE_TEST_SUITE_P(Transports, Handshakes,
                         ::testing::Values("loopback", "tcp"
#if FERRY_HAVE_RDMA
                                           ,
                                           "rdma"
#endif
                                           ));

TEST(Handshake, StrangersBytesFailAtOffsetZero) {
  auto [listener, address] = tcp_listener();
  auto raw = connect_to(*parse_endpoint(address), 2000);
  ASSERT_TRUE(raw.has_value());
  auto link = listener->accept(2000);
  ASSERT_TRUE(link.has_value());
  const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(write_all(*raw, junk, sizeof junk - 1, 1000).is_ok());
  auto got = receiver_greet(**link, nullptr, Clock::now() + std::chrono::seconds(2));
  ASSERT_FALSE(got.has_value());
  EXPECT_NE(got.status().message().find("byte offset 0"), std::string::npos)
      << got.status().message();
  ::close(*raw);
}

TEST(Handshake, StrangerRefusedOnItsFirstFourBytes) {
  auto [listener, address] = tcp_listener();
  auto raw = connect_to(*parse_endpoint(address), 2000);
  ASSERT_TRUE(raw.has_value());
  auto link = listener->accept(2000);
  ASSERT_TRUE(link.has_value());
  ASSERT_TRUE(write_all(*raw, "SSH-", 4, 1000).is_ok());
  const auto t0 = Clock::now();
  auto got = receiver_greet(**link, nullptr, Clock::now() + std::chrono::seconds(5));
  ASSERT_FALSE(got.has_value());
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2)) << "waited for a whole header";
  EXPECT_NE(got.status().message().find("byte offset 0"), std::string::npos);
  ::close(*raw);
}

// A poller that does `work` steps of work, then idles until `wake_at`, then finishes.
class CountingPoller final : public Poller {
 public:
  CountingPoller(int work, TimePoint wake_at) : work_(work), wake_at_(wake_at) {}
  size_t poll(TimePoint now) noexcept override {
    ++polls_;
    if (work_ > 0) return static_cast<size_t>(work_--);
    if (now >= wake_at_) done_ = true;
    return 0;
  }
  void add_waits(WaitSet& set) noexcept override { set.deadline(wake_at_); }
  bool finished() const noexcept override { return done_; }
  int polls_ = 0;

 private:
  int work_;
  TimePoint wake_at_;
  bool done_ = false;
};

TEST(Engine, AdaptiveSleepsUntilTheDeadlineBusyNever) {
  for (PollMode mode : {PollMode::kAdaptive, PollMode::kBusy}) {
    const auto t0 = Clock::now();
    CountingPoller p(10, t0 + std::chrono::milliseconds(50));
    Engine e({.mode = mode});
    e.add(p);
    e.run();
    const auto took = Clock::now() - t0;
    EXPECT_TRUE(p.finished());
    EXPECT_GE(took, std::chrono::milliseconds(50));
    EXPECT_LT(took, std::chrono::milliseconds(2000));
    if (mode == PollMode::kAdaptive) {
      EXPECT_GE(e.counters().sleeps.load(), 1u);
      EXPECT_LT(p.polls_, 5000) << "adaptive mode spun instead of sleeping";
    } else {
      EXPECT_EQ(e.counters().sleeps.load(), 0u);
    }
  }
}

TEST(Engine, StopWakesASleepingEngine) {
  CountingPoller p(0, kNever);  // never finishes, sleeps up to max_sleep at a time
  Engine e({.mode = PollMode::kAdaptive, .spin_idle = 1, .max_sleep = std::chrono::seconds(5)});
  e.add(p);
  std::thread t([&] { e.run(); });
  while (e.counters().sleeps.load() == 0) std::this_thread::yield();  // it is asleep (or going)
  const auto t0 = Clock::now();
  e.stop();
  t.join();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(1));
}

TEST(Engine, PollModeNames) {
  EXPECT_EQ(*parse_poll_mode("busy"), PollMode::kBusy);
  EXPECT_EQ(*parse_poll_mode("adaptive"), PollMode::kAdaptive);
  auto bad = parse_poll_mode("fast");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.status().message().find("adaptive"), std::string::npos);
}

}  // namespace
}  // namespace ferry::dataplane
