// Unit tests of pipeline/recv_server.h over kernel TCP on 127.0.0.1, with a unix socket
// standing in for each destination QEMU: which senders start a session and which are refused
// (and why, as the sender reads it), sessions side by side, a session whose sender went away
// ending alone, a session without channel 0, stop(); and plain RecvSession taking a named VM.
#include "pipeline/recv_server.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "dataplane/handshake.h"
#include "dataplane/protocol.h"
#include "dataplane/resume/resumable_transport.h"
#include "dataplane/transport.h"

namespace ferry::pipeline {
namespace {

// A listening unix socket where a destination QEMU would be. backlog 0: one connection
// waits to be accepted, the next connect() blocks until then.
class FakeQemu {
 public:
  explicit FakeQemu(const std::string& path, int backlog = 8) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, backlog), 0);
  }
  ~FakeQemu() {
    for (int c : conns_) ::close(c);
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  // True when ferry connected within timeout_ms (the connection is kept open).
  bool connected(int timeout_ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return false;
    conns_.push_back(::accept(fd_, nullptr, nullptr));
    return conns_.back() >= 0;
  }
  // Up to n bytes ferry wrote on the newest connection, within timeout_ms.
  std::string read_some(size_t n, int timeout_ms) {
    pollfd p{conns_.back(), POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return "";
    std::string got(n, '\0');
    const ssize_t r = ::read(conns_.back(), got.data(), n);
    got.resize(r > 0 ? static_cast<size_t>(r) : 0);
    return got;
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<int> conns_;
};

// What the callbacks saw, awaited from the test thread.
struct Events {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ServedSession> started;
  std::vector<std::pair<ServedSession, std::string>> ended;
  std::vector<std::string> refused;

  bool wait_ended(size_t n) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(10), [&] { return ended.size() >= n; });
  }
  // The sender reads a refusal before the server reports it: wait for the report.
  bool wait_refused(size_t n) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(10), [&] { return refused.size() >= n; });
  }
};

class RecvServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-recv-server-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }
  // A server on 127.0.0.1 with --qemu-dir dir_ (or the one socket qemu_spec).
  void serve(const std::string& qemu_spec = "", size_t max_sessions = 16,
             int handshake_timeout_ms = 10000) {
    ServeOptions opt;
    opt.recv.handshake_timeout_ms = handshake_timeout_ms;
    if (qemu_spec.empty()) {
      opt.qemu_dir = dir_;
    } else {
      opt.qemu_spec = qemu_spec;
    }
    opt.max_sessions = max_sessions;
    opt.recv.on_refused = [this](const std::string&, const std::string& why) {
      {
        std::lock_guard lk(ev_.mu);
        ev_.refused.push_back(why);
      }
      ev_.cv.notify_all();
    };
    opt.on_start = [this](const ServedSession& s, ChannelSet&) {
      std::lock_guard lk(ev_.mu);
      ev_.started.push_back(s);
    };
    opt.on_end = [this](const ServedSession& s, ChannelSet&, const std::string& error) {
      {
        std::lock_guard lk(ev_.mu);
        ev_.ended.push_back({s, error});
      }
      ev_.cv.notify_all();
    };
    server_ = std::make_unique<RecvServer>(std::move(opt));
    // where() shows the port asked for: a free one is found by trying.
    static int next = 45000 + (::getpid() % 1000) * 5;
    while (!server_->listen("tcp:127.0.0.1:" + std::to_string(next++)).is_ok()) {
    }
    server_->start();
  }
  // ferry send's side of one link: the link when accepted, else the receiver's reason.
  Result<std::unique_ptr<dataplane::Transport>> send(uint64_t session, const std::string& vm,
                                                     uint16_t channel = 0) {
    auto link = dataplane::connect_transport(server_->where(), 2000, {});
    if (!link) return link.status();
    dataplane::SenderHello h;
    h.hello.session_id = session;
    h.hello.vm_name = vm;
    h.hello.channel = channel;
    h.timeout_ms = 5000;
    return dataplane::sender_handshake(std::move(*link), std::move(h));
  }
  std::string sock(const std::string& vm) { return dir_ + "/" + vm + ".sock"; }

  std::string dir_;
  Events ev_;
  std::unique_ptr<RecvServer> server_;
};

std::string why(const Result<std::unique_ptr<dataplane::Transport>>& r) {
  return r ? std::string("accepted") : r.status().message();
}

TEST_F(RecvServerTest, RefusesNoNameAndMissingSocket) {
  serve();
  auto r = send(1, "");
  EXPECT_NE(why(r).find("give ferry send (or ferry migrate) --vm NAME"), std::string::npos)
      << why(r);
  r = send(2, "ghost");
  EXPECT_NE(why(r).find(sock("ghost") + " does not exist"), std::string::npos) << why(r);
  // A file that is not a socket is no QEMU either.
  {
    FILE* f = std::fopen(sock("file").c_str(), "w");
    std::fclose(f);
  }
  r = send(3, "file");
  EXPECT_NE(why(r).find("is not a socket"), std::string::npos) << why(r);
  EXPECT_EQ(server_->active(), 0u);
  EXPECT_TRUE(ev_.wait_refused(3));
  std::lock_guard lk(ev_.mu);
  EXPECT_EQ(ev_.refused.size(), 3u);
  EXPECT_TRUE(ev_.started.empty());
}

TEST_F(RecvServerTest, SessionsSideBySideAndOneFailingAlone) {
  serve();
  FakeQemu qa(sock("a")), qb(sock("b"));
  auto a = send(10, "a");
  ASSERT_TRUE(a.has_value()) << why(a);
  ASSERT_TRUE(qa.connected(5000));
  auto b = send(20, "b");
  ASSERT_TRUE(b.has_value()) << why(b);
  ASSERT_TRUE(qb.connected(5000));
  EXPECT_EQ(server_->active(), 2u);
  // The same VM again while it migrates: refused; its session goes on.
  auto a2 = send(11, "a");
  EXPECT_NE(why(a2).find("a migration of VM 'a' is already running here"), std::string::npos)
      << why(a2);
  // Another link of session 10 naming another VM: refused.
  auto mixed = send(10, "b", 1);
  EXPECT_NE(why(mixed).find("VM name differs"), std::string::npos) << why(mixed);

  // a's sender goes away: a ends, failed; b runs on.
  a->reset();
  ASSERT_TRUE(ev_.wait_ended(1));
  {
    std::lock_guard lk(ev_.mu);
    EXPECT_EQ(ev_.ended[0].first.vm, "a");
    EXPECT_EQ(ev_.ended[0].first.id, 10u);
    EXPECT_FALSE(ev_.ended[0].second.empty());
    ASSERT_EQ(ev_.started.size(), 2u);
    EXPECT_EQ(ev_.started[1].qemu, "unix:" + sock("b"));
  }
  EXPECT_EQ(server_->active(), 1u);
  // a may migrate here again.
  auto a3 = send(12, "a");
  ASSERT_TRUE(a3.has_value()) << why(a3);
  ASSERT_TRUE(qa.connected(5000));

  // Stop: both sessions are in pre-copy (no stream at all), so both are cancelled.
  size_t aborted = 0;
  auto left = server_->stop("cancelled by test", false, &aborted);
  EXPECT_TRUE(left.empty());
  EXPECT_EQ(aborted, 2u);
  EXPECT_TRUE(server_->wait_for(std::chrono::seconds(10)));
  EXPECT_EQ(server_->active(), 0u);
  EXPECT_TRUE(server_->error().empty());
  std::lock_guard lk(ev_.mu);
  ASSERT_EQ(ev_.ended.size(), 3u);
  EXPECT_EQ(ev_.ended[1].second, "cancelled by test");
  EXPECT_EQ(ev_.ended[2].second, "cancelled by test");
}

TEST_F(RecvServerTest, OneSocketOneSessionAtATime) {
  FakeQemu q(dir_ + "/in.sock");
  serve("unix:" + dir_ + "/in.sock");
  auto first = send(1, "");  // no name needed
  ASSERT_TRUE(first.has_value()) << why(first);
  ASSERT_TRUE(q.connected(5000));
  auto second = send(2, "x");
  EXPECT_NE(why(second).find("one migration at a time"), std::string::npos) << why(second);
  first->reset();
  ASSERT_TRUE(ev_.wait_ended(1));
  auto third = send(3, "");
  EXPECT_TRUE(third.has_value()) << why(third);
}

TEST_F(RecvServerTest, MaxSessions) {
  serve("", 1);
  FakeQemu qa(sock("a")), qb(sock("b"));
  auto a = send(1, "a");
  ASSERT_TRUE(a.has_value()) << why(a);
  auto b = send(2, "b");
  EXPECT_NE(why(b).find("its limit (--max-sessions)"), std::string::npos) << why(b);
}

// A session opened by channel 1 whose channel 0 never comes ends on its own (and frees the
// VM's name) instead of waiting forever.
TEST_F(RecvServerTest, SessionWithoutMainChannelEnds) {
  serve("", 16, 500);
  FakeQemu qa(sock("a"));
  auto ch1 = send(7, "a", 1);
  EXPECT_NE(why(ch1).find("no main channel"), std::string::npos) << why(ch1);
  ASSERT_TRUE(ev_.wait_ended(1));
  {
    std::lock_guard lk(ev_.mu);
    EXPECT_NE(ev_.ended[0].second.find("no main channel (channel 0)"), std::string::npos)
        << ev_.ended[0].second;
  }
  EXPECT_FALSE(qa.connected(0)) << "a channel reached QEMU before channel 0";
  auto again = send(8, "a");
  EXPECT_TRUE(again.has_value()) << why(again);
}

// Plain ferry recv (one RecvSession with its own listener) takes a sender that names its VM
// and ignores the name: --vm does not need --serve.
TEST_F(RecvServerTest, PlainRecvIgnoresTheName) {
  FakeQemu q(dir_ + "/in.sock");
  RecvSession session({});
  static int port = 47000 + (::getpid() % 1000) * 3;
  std::string where;
  do {
    where = "tcp:127.0.0.1:" + std::to_string(port++);
  } while (!session.listen(where, "unix:" + dir_ + "/in.sock").is_ok());
  session.start();
  auto link = dataplane::connect_transport(where, 2000, {});
  ASSERT_TRUE(link.has_value());
  dataplane::SenderHello h;
  h.hello.session_id = 5;
  h.hello.vm_name = "web-1";
  auto r = dataplane::sender_handshake(std::move(*link), std::move(h));
  EXPECT_TRUE(r.has_value()) << why(r);
  EXPECT_TRUE(q.connected(5000));
}

// A sender's HELLO arrives, then its connection is reset while ferry recv connects the
// destination QEMU: the ACCEPT goes into a dead connection (the transport learns it when it
// writes). The channel's link is resumable from the start, so ferry send's resuming
// connection (send_session.cc: its first handshake broke) carries the channel's stream, and
// QEMU is connected once.
TEST_F(RecvServerTest, AChannelWhoseFirstConnectionDiedBeforeItsAcceptTakesTheNextOne) {
  const std::string qemu_sock = dir_ + "/in.sock";
  FakeQemu q(qemu_sock, /*backlog=*/0);
  // Fills QEMU's backlog: ferry recv's connect() waits until the test accepts.
  const int filler = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, qemu_sock.c_str(), sizeof a.sun_path - 1);
  ASSERT_EQ(::connect(filler, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);

  RecvOptions opt;
  opt.transport.resume_within = std::chrono::seconds(10);
  RecvSession session(opt);
  static int port = 48000 + (::getpid() % 1000) * 3;
  std::string where;
  do {
    where = "tcp:127.0.0.1:" + std::to_string(port++);
  } while (!session.listen(where, "unix:" + qemu_sock).is_ok());
  session.start();

  dataplane::Handshake hello;
  hello.session_id = 9;
  hello.features = dataplane::kFeatureAcked;
  {
    // The first connection: HELLO, then a reset (SO_LINGER 0). The bytes stay readable.
    auto raw = dataplane::connect_transport(where, 2000, {});
    ASSERT_TRUE(raw.has_value());
    const int fd = (*raw)->wait_fd();
    const std::vector<uint8_t> body = dataplane::encode_handshake(hello);
    std::vector<uint8_t> frame(dataplane::kFrameHeaderSize + body.size());
    std::memcpy(frame.data() + dataplane::kFrameHeaderSize, body.data(), body.size());
    dataplane::encode_frame_header(dataplane::FrameType::kHello, 0,
                                   frame.data() + dataplane::kFrameHeaderSize,
                                   static_cast<uint32_t>(body.size()), frame.data());
    ASSERT_EQ(::write(fd, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
    const linger reset{1, 0};
    ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset), 0);
  }                                // closed: reset
  ASSERT_TRUE(q.connected(5000));  // the filler
  ASSERT_TRUE(q.connected(5000));  // ferry recv, for channel 0

  // ferry send's next connection resumes the channel.
  auto link = dataplane::connect_transport(where, 2000, {});
  ASSERT_TRUE(link.has_value());
  dataplane::SenderHello again;
  again.hello = hello;
  again.hello.features |= dataplane::kFeatureResuming;
  auto accepted = dataplane::sender_handshake(std::move(*link), std::move(again));
  ASSERT_TRUE(accepted.has_value()) << why(accepted);
  dataplane::ResumeOptions ro;
  ro.first_resumes = true;
  ro.reopen = [](TimePoint) -> Result<std::unique_ptr<dataplane::Transport>> {
    return Status(ErrorCode::kRefused, "no more connections in this test");
  };
  auto sender = dataplane::make_resumable(std::move(*accepted), std::move(ro));
  ASSERT_TRUE(sender.has_value());
  dataplane::FrameBuf* f = (*sender)->pool().alloc();
  ASSERT_NE(f, nullptr);
  const std::string stream = "QEVM, as QEMU's stream would start";
  std::memcpy(f->payload(), stream.data(), stream.size());
  dataplane::encode_frame_header(dataplane::FrameType::kOpaque, dataplane::kFirstDataSeq,
                                 f->payload(), static_cast<uint32_t>(stream.size()), f->data);
  f->len = static_cast<uint32_t>(dataplane::kFrameHeaderSize + stream.size());
  ASSERT_EQ((*sender)->tx_burst({&f, 1}), 1u);
  std::string got;
  for (int i = 0; i < 500 && got.size() < stream.size(); ++i) {
    (*sender)->progress(Clock::now());
    dataplane::FrameBuf* in[8];
    const size_t n = (*sender)->rx_burst(in);
    for (size_t k = 0; k < n; ++k) in[k]->pool->free(in[k]);
    got += q.read_some(stream.size() - got.size(), 10);
  }
  EXPECT_EQ(got, stream);
  EXPECT_FALSE(q.connected(0)) << "ferry recv connected QEMU twice for one channel";
  EXPECT_EQ((*sender)->resumes(), 1u);
  ::close(filler);
}

TEST_F(RecvServerTest, StoppedServerRefusesConnections) {
  serve();
  const std::string where = server_->where();
  size_t aborted = 0;
  EXPECT_TRUE(server_->stop("stop", false, &aborted).empty());
  EXPECT_TRUE(server_->wait_for(std::chrono::seconds(5)));
  auto link = dataplane::connect_transport(where, 1000, {});
  EXPECT_FALSE(link.has_value());
}

}  // namespace
}  // namespace ferry::pipeline
