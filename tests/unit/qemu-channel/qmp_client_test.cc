// Unit tests of qemu-channel/qmp_client.h.
//  * Against a real QEMU (qemu-system-x86_64 -M none -S): handshake, query-status,
//    query-migrate, capabilities and parameters, QMP errors, a real migration to exec:cat and
//    its MIGRATION events, STOP/RESUME events. Skipped when QEMU is not installed.
//  * Against a scripted in-process server on a real unix socket: id matching with late
//    replies, timeouts, events between a command and its reply, broken peers.
#include "qemu-channel/qmp_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"

extern char** environ;

namespace ferry::qemu {
namespace {

namespace fs = std::filesystem;

std::string make_temp_dir() {
  char tmpl[] = "/tmp/ferry-qmp-test-XXXXXX";
  const char* d = mkdtemp(tmpl);
  return d ? std::string(d) : std::string();
}

std::string find_in_path(const char* exe) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string cand = p.substr(start, end - start) + "/" + exe;
    if (access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Real QEMU.

class RealQemu : public ::testing::Test {
 protected:
  void SetUp() override {
    qemu_ = find_in_path("qemu-system-x86_64");
    if (qemu_.empty()) GTEST_SKIP() << "qemu-system-x86_64 not installed";
    dir_ = make_temp_dir();
    ASSERT_FALSE(dir_.empty());
    sock_ = dir_ + "/qmp.sock";
    std::string qmp_arg = "unix:" + sock_ + ",server=on,wait=off";
    std::vector<std::string> args = {qemu_,  "-M",          "none", "-S",   "-display",
                                     "none", "-nodefaults", "-qmp", qmp_arg};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ASSERT_EQ(posix_spawn(&pid_, qemu_.c_str(), nullptr, nullptr, argv.data(), environ), 0);
  }

  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int st = 0;
      waitpid(pid_, &st, 0);
    }
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

  std::unique_ptr<QmpClient> connect_or_fail() {
    auto c = QmpClient::connect("unix:" + sock_, 10000);
    EXPECT_TRUE(c) << c.status().message();
    return c ? std::move(c).value() : nullptr;
  }

  std::string qemu_, dir_, sock_;
  pid_t pid_ = -1;
};

TEST_F(RealQemu, HandshakeAndQueries) {
  auto qmp = connect_or_fail();
  ASSERT_TRUE(qmp);
  EXPECT_GE(qmp->qemu_version_major(), 7);
  EXPECT_TRUE(qmp->greeting()["capabilities"].is_array());
  EXPECT_NE(qmp->qemu_version(), "0.0.0");

  auto st = qmp->execute("query-status");
  ASSERT_TRUE(st) << st.status().message();
  EXPECT_EQ((*st)["status"].as_string(), "prelaunch");
  EXPECT_EQ((*st)["running"].as_bool(true), false);

  // Before any migration query-migrate returns an empty object.
  auto mig = qmp->execute("query-migrate");
  ASSERT_TRUE(mig) << mig.status().message();
  EXPECT_TRUE(mig->is_object());
  EXPECT_FALSE(mig->contains("status"));
}

// QEMU offers out-of-band execution; the client enables it, and execute_oob() reaches the
// monitor's own thread: migrate-pause (allow-oob) answers with its own error, while an
// ordinary command sent out of band is refused by QEMU as not allowed there.
TEST_F(RealQemu, OutOfBandCommands) {
  auto qmp = connect_or_fail();
  ASSERT_TRUE(qmp);
  ASSERT_TRUE(qmp->oob());
  auto pause = qmp->execute_oob("migrate-pause");
  ASSERT_FALSE(pause);
  EXPECT_NE(pause.status().message().find("postcopy"), std::string::npos)
      << pause.status().message();
  auto status = qmp->execute_oob("query-status");
  ASSERT_FALSE(status);
  EXPECT_NE(status.status().message().find("does not support OOB"), std::string::npos)
      << status.status().message();
  // In-band commands still work after out-of-band ones.
  auto st = qmp->execute("query-status");
  ASSERT_TRUE(st) << st.status().message();
}

TEST_F(RealQemu, CapabilitiesParametersAndErrors) {
  auto qmp = connect_or_fail();
  ASSERT_TRUE(qmp);
  json::Value caps =
      json::Value::array({json::Value::object({{"capability", "events"}, {"state", true}}),
                          json::Value::object({{"capability", "postcopy-ram"}, {"state", true}})});
  auto r = qmp->execute("migrate-set-capabilities", json::Value::object({{"capabilities", caps}}));
  ASSERT_TRUE(r) << r.status().message();
  auto got = qmp->execute("query-migrate-capabilities");
  ASSERT_TRUE(got) << got.status().message();
  int seen = 0;
  for (const json::Value& c : got->items()) {
    const std::string& name = c["capability"].as_string();
    if (name == "events" || name == "postcopy-ram") {
      EXPECT_TRUE(c["state"].as_bool()) << name;
      ++seen;
    }
  }
  EXPECT_EQ(seen, 2);

  r = qmp->execute("migrate-set-parameters",
                   json::Value::object({{"downtime-limit", 750}, {"max-bandwidth", 1ull << 33}}));
  ASSERT_TRUE(r) << r.status().message();
  auto params = qmp->execute("query-migrate-parameters");
  ASSERT_TRUE(params) << params.status().message();
  EXPECT_EQ((*params)["downtime-limit"].as_int(), 750);
  EXPECT_EQ((*params)["max-bandwidth"].as_int(), int64_t(1) << 33);

  // QEMU's own range check comes back as one sentence, and the connection stays usable.
  r = qmp->execute("migrate-set-parameters", json::Value::object({{"downtime-limit", 99999999}}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("migrate-set-parameters"), std::string::npos);
  EXPECT_NE(r.status().message().find("GenericError"), std::string::npos);

  r = qmp->execute("no-such-command");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), ErrorCode::kUnavailable);
  EXPECT_NE(r.status().message().find("CommandNotFound"), std::string::npos);

  EXPECT_TRUE(qmp->execute("query-status"));
}

bool status_completed(const json::Value& data) { return data["status"].as_string() == "completed"; }

TEST_F(RealQemu, MigrationEventsAndQueryMigrate) {
  auto qmp = connect_or_fail();
  ASSERT_TRUE(qmp);
  json::Value caps =
      json::Value::array({json::Value::object({{"capability", "events"}, {"state", true}})});
  ASSERT_TRUE(
      qmp->execute("migrate-set-capabilities", json::Value::object({{"capabilities", caps}})));
  auto r = qmp->execute("migrate", json::Value::object({{"uri", "exec:cat > /dev/null"}}));
  ASSERT_TRUE(r) << r.status().message();

  auto done = qmp->wait_event("MIGRATION", 20000, status_completed);
  ASSERT_TRUE(done) << done.status().message();
  EXPECT_GT(done->timestamp_s, 1e9);

  // The events before "completed" stay queued, in order: setup, active, with passes between.
  std::vector<std::string> statuses;
  int passes = 0;
  while (auto ev = qmp->pop_event()) {
    if (ev->name == "MIGRATION") statuses.push_back(ev->data["status"].as_string());
    if (ev->name == "MIGRATION_PASS") {
      ++passes;
      EXPECT_GE(ev->data["pass"].as_int(), 1);
    }
  }
  ASSERT_GE(statuses.size(), 2u);
  EXPECT_EQ(statuses.front(), "setup");
  EXPECT_EQ(statuses.back(), "active");
  EXPECT_GE(passes, 1);

  auto info = qmp->execute("query-migrate");
  ASSERT_TRUE(info) << info.status().message();
  EXPECT_EQ((*info)["status"].as_string(), "completed");
  EXPECT_TRUE(info->get({"ram", "dirty-sync-count"}).is_int());
  EXPECT_GE(info->get({"ram", "dirty-sync-count"}).as_int(), 1);
  EXPECT_EQ(info->get({"ram", "page-size"}).as_int(), 4096);
  EXPECT_TRUE(info->get({"ram", "transferred"}).is_int());
}

TEST_F(RealQemu, StopResumeEventsAndPoll) {
  auto qmp = connect_or_fail();
  ASSERT_TRUE(qmp);
  ASSERT_TRUE(qmp->execute("cont"));
  ASSERT_TRUE(qmp->execute("stop"));
  // Both events were emitted before the replies, so they are already queued or in flight.
  auto resume = qmp->wait_event("RESUME", 5000);
  ASSERT_TRUE(resume) << resume.status().message();
  auto stop = qmp->wait_event("STOP", 5000);
  ASSERT_TRUE(stop) << stop.status().message();
  EXPECT_GE(stop->timestamp_s, resume->timestamp_s);
  // Nothing else is pending: a short wait times out with a clear sentence.
  auto none = qmp->wait_event("RESUME", 50);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.status().code(), ErrorCode::kTimeout);
  EXPECT_TRUE(qmp->poll(0).is_ok());
}

TEST_F(RealQemu, QemuExitIsClosed) {
  auto qmp = connect_or_fail();
  ASSERT_TRUE(qmp);
  auto r = qmp->execute("quit");
  // QEMU may close before or after replying to quit.
  if (r) {
    r = qmp->execute("query-status", {}, 5000);
    ASSERT_FALSE(r);
  }
  EXPECT_EQ(r.status().code(), ErrorCode::kClosed) << r.status().message();
  EXPECT_NE(r.status().message().find("closed"), std::string::npos);
  int st = 0;
  EXPECT_EQ(waitpid(pid_, &st, 0), pid_);
  pid_ = -1;
}

// ---------------------------------------------------------------------------------------------
// Scripted server on a real unix socket. The handler sees each received line and returns the
// bytes to send back (possibly several messages, possibly nothing).

class ScriptedServer {
 public:
  using Handler = std::function<std::string(const json::Value& msg)>;

  ScriptedServer(std::string greeting, Handler handler, bool close_after_greeting = false)
      : greeting_(std::move(greeting)),
        handler_(std::move(handler)),
        close_after_greeting_(close_after_greeting) {
    dir_ = make_temp_dir();
    path_ = dir_ + "/s.sock";
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path_.c_str(), sizeof sa.sun_path - 1);
    ok_ = bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
          listen(listen_fd_, 1) == 0;
    thread_ = std::thread([this] { run(); });
  }

  ~ScriptedServer() {
    shutdown(listen_fd_, SHUT_RDWR);
    if (conn_fd_ >= 0) shutdown(conn_fd_, SHUT_RDWR);
    thread_.join();
    close(listen_fd_);
    if (conn_fd_ >= 0) close(conn_fd_);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  bool ok() const { return ok_; }
  std::string address() const { return "unix:" + path_; }
  int commands_seen() const { return seen_.load(); }

 private:
  void send_all(const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
      ssize_t n = send(conn_fd_, s.data() + done, s.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return;
      done += size_t(n);
    }
  }

  void run() {
    if (!ok_) return;
    conn_fd_ = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn_fd_ < 0) return;
    send_all(greeting_);
    if (close_after_greeting_) {
      shutdown(conn_fd_, SHUT_RDWR);
      return;
    }
    std::string buf;
    char tmp[4096];
    for (;;) {
      ssize_t n = read(conn_fd_, tmp, sizeof tmp);
      if (n <= 0) return;
      buf.append(tmp, size_t(n));
      size_t nl;
      while ((nl = buf.find('\n')) != std::string::npos) {
        auto msg = json::parse(std::string_view(buf).substr(0, nl));
        buf.erase(0, nl + 1);
        if (!msg) return;
        ++seen_;
        std::string out = handler_(*msg);
        if (out == "<close>") {
          shutdown(conn_fd_, SHUT_RDWR);
          return;
        }
        send_all(out);
      }
    }
  }

  std::string greeting_;
  Handler handler_;
  bool close_after_greeting_;
  std::string dir_, path_;
  int listen_fd_ = -1;
  std::atomic<int> conn_fd_{-1};
  bool ok_ = false;
  std::atomic<int> seen_{0};
  std::thread thread_;
};

const char* kGreeting =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 1, \"minor\": 2, \"major\": 9}, "
    "\"package\": \"\"}, \"capabilities\": []}}\r\n";

std::string reply(const json::Value& msg, json::Value ret) {
  return json::Value::object({{"return", std::move(ret)}, {"id", msg["id"]}}).dump() + "\r\n";
}

std::string event(const char* name, json::Value data) {
  return json::Value::object(
             {{"timestamp", json::Value::object({{"seconds", 100}, {"microseconds", 250000}})},
              {"event", name},
              {"data", std::move(data)}})
             .dump() +
         "\r\n";
}

TEST(QmpScripted, LateRepliesAreNotHandedToTheNextCommand) {
  json::Value hung_id;
  ScriptedServer server(kGreeting, [&](const json::Value& msg) -> std::string {
    const std::string& cmd = msg["execute"].as_string();
    if (cmd == "qmp_capabilities") return reply(msg, json::Value::object());
    if (cmd == "hang") {
      hung_id = msg["id"];  // answered later, after the client gave up
      return "";
    }
    std::string out;
    if (!hung_id.is_null()) {
      out += json::Value::object({{"return", "stale"}, {"id", hung_id}}).dump() + "\n";
      hung_id = json::Value();
    }
    // An event between the command and its reply.
    out += event("MIGRATION", json::Value::object({{"status", "active"}}));
    out += reply(msg, json::Value::object({{"cmd", cmd}}));
    return out;
  });
  ASSERT_TRUE(server.ok());
  auto c = QmpClient::connect(server.address(), 5000);
  ASSERT_TRUE(c) << c.status().message();
  QmpClient& qmp = **c;
  EXPECT_EQ(qmp.qemu_version(), "9.2.1");
  EXPECT_EQ(qmp.qemu_version_minor(), 2);

  uint64_t t0 = now_ns();
  auto r = qmp.execute("hang", {}, 150);
  double waited_ms = double(now_ns() - t0) / 1e6;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), ErrorCode::kTimeout);
  EXPECT_NE(r.status().message().find("'hang'"), std::string::npos);
  EXPECT_GE(waited_ms, 140.0);
  EXPECT_LT(waited_ms, 2000.0);

  r = qmp.execute("query-x");
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ((*r)["cmd"].as_string(), "query-x");
  ASSERT_EQ(qmp.queued_events(), 1u);
  auto ev = qmp.pop_event();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->name, "MIGRATION");
  EXPECT_EQ(ev->data["status"].as_string(), "active");
  EXPECT_DOUBLE_EQ(ev->timestamp_s, 100.25);
  EXPECT_FALSE(qmp.pop_event());
}

TEST(QmpScripted, QmpErrorsBecomeOneSentence) {
  ScriptedServer server(kGreeting, [&](const json::Value& msg) -> std::string {
    if (msg["execute"].as_string() == "qmp_capabilities") return reply(msg, json::Value::object());
    return json::Value::object({{"id", msg["id"]},
                                {"error", json::Value::object({{"class", "GenericError"},
                                                               {"desc",
                                                                "There's a migration process in "
                                                                "progress"}})}})
               .dump() +
           "\n";
  });
  auto c = QmpClient::connect(server.address(), 5000);
  ASSERT_TRUE(c) << c.status().message();
  auto r = (*c)->execute("migrate-set-capabilities",
                         json::Value::object({{"capabilities", json::Value::array()}}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "QEMU rejected 'migrate-set-capabilities': There's a migration process in progress "
            "(GenericError)");
}

TEST(QmpScripted, GarbageLineIsAProtocolErrorWithOffset) {
  ScriptedServer server(kGreeting, [&](const json::Value& msg) -> std::string {
    if (msg["execute"].as_string() == "qmp_capabilities") return reply(msg, json::Value::object());
    return "{\"return\": tru}\n";
  });
  auto c = QmpClient::connect(server.address(), 5000);
  ASSERT_TRUE(c) << c.status().message();
  auto r = (*c)->execute("query-status");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), ErrorCode::kProtocol);
  // The bad line starts after the greeting and the capabilities reply.
  size_t offset = std::strlen(kGreeting) + std::string("{\"return\":{},\"id\":1}\r\n").size();
  EXPECT_NE(r.status().message().find("at byte " + std::to_string(offset)), std::string::npos)
      << r.status().message();
  // Latched: the client does not try to resynchronise.
  auto again = (*c)->execute("query-status", {}, 100);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.status().code(), ErrorCode::kProtocol);
}

TEST(QmpScripted, NonObjectMessageIsAProtocolError) {
  ScriptedServer server(kGreeting, [&](const json::Value& msg) -> std::string {
    if (msg["execute"].as_string() == "qmp_capabilities") return reply(msg, json::Value::object());
    return "[1,2]\n";
  });
  auto c = QmpClient::connect(server.address(), 5000);
  ASSERT_TRUE(c) << c.status().message();
  auto r = (*c)->execute("query-status");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), ErrorCode::kProtocol);
  EXPECT_NE(r.status().message().find("not a JSON object"), std::string::npos);
}

TEST(QmpScripted, NotAQmpServer) {
  ScriptedServer server("{\"hello\": 1}\n", [](const json::Value&) { return std::string(); });
  auto c = QmpClient::connect(server.address(), 5000);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().code(), ErrorCode::kProtocol);
  EXPECT_NE(c.status().message().find("not a QMP server"), std::string::npos);
}

TEST(QmpScripted, SilentServerTimesOutAtConnect) {
  ScriptedServer server("", [](const json::Value&) { return std::string(); });
  uint64_t t0 = now_ns();
  auto c = QmpClient::connect(server.address(), 200);
  double waited_ms = double(now_ns() - t0) / 1e6;
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().code(), ErrorCode::kTimeout);
  EXPECT_NE(c.status().message().find("greeting"), std::string::npos);
  EXPECT_LT(waited_ms, 2000.0);
}

TEST(QmpScripted, PeerClosingIsClosed) {
  ScriptedServer server(kGreeting, [&](const json::Value& msg) -> std::string {
    if (msg["execute"].as_string() == "qmp_capabilities") return reply(msg, json::Value::object());
    return "<close>";
  });
  auto c = QmpClient::connect(server.address(), 5000);
  ASSERT_TRUE(c) << c.status().message();
  auto r = (*c)->execute("query-status");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), ErrorCode::kClosed);
}

TEST(QmpScripted, EventsArriveThroughPoll) {
  std::atomic<bool> sent{false};
  ScriptedServer server(kGreeting, [&](const json::Value& msg) -> std::string {
    if (msg["execute"].as_string() == "qmp_capabilities") return reply(msg, json::Value::object());
    // Reply first, then two events: they arrive after execute() returned.
    std::string out = reply(msg, json::Value::object());
    out += event("MIGRATION_PASS", json::Value::object({{"pass", 3}}));
    out += event("MIGRATION", json::Value::object({{"status", "completed"}}));
    sent = true;
    return out;
  });
  auto c = QmpClient::connect(server.address(), 5000);
  ASSERT_TRUE(c) << c.status().message();
  QmpClient& qmp = **c;
  ASSERT_TRUE(qmp.execute("migrate"));
  auto done = qmp.wait_event("MIGRATION", 5000, status_completed);
  ASSERT_TRUE(done) << done.status().message();
  auto pass = qmp.pop_event();
  ASSERT_TRUE(pass);
  EXPECT_EQ(pass->name, "MIGRATION_PASS");
  EXPECT_EQ(pass->data["pass"].as_int(), 3);
  EXPECT_TRUE(sent.load());
}

TEST(QmpClientAddress, BadAddressesAreRejected) {
  auto c = QmpClient::connect("tcp:nohostport", 100);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().code(), ErrorCode::kInvalidArgument);
  c = QmpClient::connect("unix:" + std::string(200, 'x'), 100);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().code(), ErrorCode::kInvalidArgument);
  // A path that never appears: retried until the deadline, then a timeout naming the address.
  uint64_t t0 = now_ns();
  c = QmpClient::connect("unix:/tmp/ferry-qmp-test-does-not-exist.sock", 120);
  double waited_ms = double(now_ns() - t0) / 1e6;
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().code(), ErrorCode::kTimeout);
  EXPECT_NE(c.status().message().find("does-not-exist"), std::string::npos);
  EXPECT_GE(waited_ms, 100.0);
  EXPECT_LT(waited_ms, 2000.0);
}

TEST(QmpClientAddress, TcpConnects) {
  // A loopback TCP QMP server: scripted, on an ephemeral port.
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(listen(lfd, 1), 0);
  socklen_t len = sizeof sa;
  ASSERT_EQ(getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  std::thread srv([lfd] {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    std::string g = kGreeting;
    (void)!write(fd, g.data(), g.size());
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      auto msg = json::parse(std::string_view(buf, size_t(n)));
      if (msg) {
        std::string r = reply(*msg, json::Value::object());
        (void)!write(fd, r.data(), r.size());
      }
    }
    close(fd);
  });
  auto c = QmpClient::connect("tcp:127.0.0.1:" + std::to_string(ntohs(sa.sin_port)), 5000);
  srv.join();
  close(lfd);
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ((*c)->qemu_version_major(), 9);
}

// ---------------------------------------------------------------------------------------------
// connect_fd on a socketpair: the server's bytes are queued before each step (no thread).

constexpr char kPairGreeting[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, "
    "\"capabilities\": []}}\r\n{\"return\": {}, \"id\": 1}\n";

void send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    ASSERT_GT(n, 0);
    bytes.remove_prefix(size_t(n));
  }
}

TEST(QmpConnectFd, SplitsLinesAcrossReadsAndManyLinesInOneRead) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  send_all(sv[1], kPairGreeting);
  auto c = QmpClient::connect_fd(sv[0], "pair", 1000);
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ((*c)->qemu_version(), "7.2.0");
  // One event line arriving in three reads (the scan resumes where it stopped).
  const std::string ev =
      "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 500000}}\n";
  for (size_t at = 0; at < ev.size(); at += 30) {
    send_all(sv[1], std::string_view(ev).substr(at, 30));
    ASSERT_TRUE((*c)->poll(0).is_ok());
  }
  ASSERT_EQ((*c)->queued_events(), 1u);
  // Many short lines (blank ones and events) in one read, then a line that is not JSON: its
  // byte offset counts every line before it.
  std::string many(20000, '\n');
  for (int i = 0; i < 100; ++i) many += ev;
  const size_t bad_at = std::string(kPairGreeting).size() + ev.size() + many.size();
  many += "{oops}\n";
  send_all(sv[1], many);
  Status st = (*c)->poll(200);
  EXPECT_EQ((*c)->queued_events(), 101u);
  ASSERT_EQ(st.code(), ErrorCode::kProtocol);
  EXPECT_NE(st.message().find("at byte " + std::to_string(bad_at)), std::string::npos)
      << st.message();
  ::close(sv[1]);
}

TEST(QmpConnectFd, AnOverlongLineIsAProtocolError) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  send_all(sv[1], kPairGreeting);
  auto c = QmpClient::connect_fd(sv[0], "pair", 1000);
  ASSERT_TRUE(c) << c.status().message();
  // Written from a thread: the line is larger than the socket's buffer.
  std::thread writer([fd = sv[1]] {
    std::string line = "[";
    while (line.size() <= QmpClient::kMaxLineBytes) line += "[],";
    for (size_t at = 0; at < line.size();) {
      ssize_t n = ::send(fd, line.data() + at, line.size() - at, MSG_NOSIGNAL);
      if (n <= 0) break;  // the client gave up and closed
      at += size_t(n);
    }
    ::shutdown(fd, SHUT_WR);
  });
  Status st = (*c)->poll(5000);
  for (int i = 0; i < 100 && st.is_ok(); ++i) st = (*c)->poll(100);
  EXPECT_EQ(st.code(), ErrorCode::kProtocol) << st.message();
  EXPECT_NE(st.message().find("longer than"), std::string::npos) << st.message();
  c->reset();  // closes the client's end: the writer stops
  writer.join();
  ::close(sv[1]);
}

TEST(QmpConnectFd, DuplicateKeysAreAProtocolError) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  send_all(sv[1], "{\"QMP\": {}, \"QMP\": {}}\n");
  auto c = QmpClient::connect_fd(sv[0], "pair", 1000);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().code(), ErrorCode::kProtocol);
  EXPECT_NE(c.status().message().find("duplicate object key"), std::string::npos)
      << c.status().message();
  ::close(sv[1]);
}

}  // namespace
}  // namespace ferry::qemu
