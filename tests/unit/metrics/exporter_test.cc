// Unit tests of metrics/exporter.h: every family has HELP and TYPE, counters only grow while a
// real session runs (two ChannelSets joined by the loopback transport) and after it ended, its
// outcome is counted, and ferry migrate's families appear once enabled.
#include "metrics/exporter.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "dataplane/transport.h"
#include "metrics/exposition.h"

namespace ferry::metrics {
namespace {

// Parses an exposition: sample "name{labels}" -> value; checks the grammar as it goes.
std::map<std::string, double> parse(const std::string& text) {
  std::map<std::string, double> out;
  std::map<std::string, std::string> type;
  std::string help_of;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) {
      help_of = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_TRUE(valid_name(help_of)) << line;
      EXPECT_FALSE(type.count(help_of)) << "family twice: " << help_of;
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_EQ(name, help_of) << "TYPE without its HELP: " << line;
      const std::string t = line.substr(line.rfind(' ') + 1);
      EXPECT_TRUE(t == "counter" || t == "gauge") << line;
      if (t == "counter") {
        EXPECT_TRUE(name.ends_with("_total")) << name;
      }
      type[name] = t;
      continue;
    }
    const size_t sp = line.rfind(' ');
    const std::string key = line.substr(0, sp);
    const std::string name = key.substr(0, key.find('{'));
    EXPECT_TRUE(type.count(name)) << "sample before its TYPE: " << line;
    EXPECT_FALSE(out.count(key)) << "sample twice: " << line;
    out[key] = std::stod(line.substr(sp + 1));
  }
  return out;
}

TEST(Exporter, EveryFamilyHasHelpAndType) {
  Registry r;
  auto m = parse(r.render());
  EXPECT_EQ(m.at("ferry_sessions_total{side=\"send\",outcome=\"completed\"}"), 0);
  EXPECT_EQ(m.at("ferry_sessions_active{side=\"recv\"}"), 0);
  EXPECT_EQ(m.at("ferry_encoded_pages_total{form=\"rle\"}"), 0);
  EXPECT_EQ(m.count("ferry_migrations_total{outcome=\"completed\"}"), 0u);  // not migrate
  r.enable_migration();
  m = parse(r.render());
  EXPECT_EQ(m.at("ferry_migrations_total{outcome=\"completed\"}"), 0);
  EXPECT_EQ(m.at("ferry_policy_decisions_total{action=\"start-postcopy\"}"), 0);
  EXPECT_EQ(m.at("ferry_migration_phase{phase=\"setup\"}"), 1);
}

TEST(Exporter, MigrationState) {
  Registry r;
  r.enable_migration();
  policy::View v;
  v.link_bytes_per_s = 1.25e6;
  r.migration().update("postcopy-active", 3, 4096, v);
  r.migration().decision(policy::Action::kStartPostcopy);
  r.migration().decision(policy::Action::kSetEffort);
  r.migration().decision(policy::Action::kSetEffort);
  r.migration().update("odd \"state\"", 3, 0, v);  // a status this build does not know
  r.migration().end("completed");
  const auto m = parse(r.render());
  EXPECT_EQ(m.at("ferry_policy_decisions_total{action=\"start-postcopy\"}"), 1);
  EXPECT_EQ(m.at("ferry_policy_decisions_total{action=\"set-effort\"}"), 2);
  EXPECT_EQ(m.at("ferry_migration_phase{phase=\"postcopy-active\"}"), 0);
  EXPECT_EQ(m.at("ferry_migration_phase{phase=\"odd \\\"state\\\"\"}"), 1);
  EXPECT_EQ(m.at("ferry_migration_pass"), 3);
  EXPECT_EQ(m.at("ferry_policy_link_rate_bytes_per_second"), 1.25e6);
  EXPECT_EQ(m.at("ferry_migrations_total{outcome=\"completed\"}"), 1);
}

struct SocketPair {
  int qemu = -1, test = -1;
  SocketPair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    qemu = fds[0];
    test = fds[1];
  }
  ~SocketPair() {
    if (test >= 0) ::close(test);
  }
};

// A real session on both sides: counts that only grow while bytes flow, kept when it ends.
TEST(Exporter, CountersGrowAndOutliveTheirSession) {
  auto l = dataplane::listen_transport("loopback:metrics-test");
  ASSERT_TRUE(l.has_value());
  auto c = dataplane::connect_transport("loopback:metrics-test", 2000);
  ASSERT_TRUE(c.has_value());
  auto a = (*l)->accept(2000);
  ASSERT_TRUE(a.has_value());

  Registry r;
  SocketPair src, dst;
  uint64_t send_id, recv_id;
  {
    pipeline::ChannelSet send(pipeline::PumpRole::kSender), recv(pipeline::PumpRole::kReceiver);
    send_id = r.add(send, "send");
    recv_id = r.add(recv, "recv");
    send.start(0, {src.qemu, src.qemu}, true, std::move(*c),
               std::unique_ptr<pipeline::PageStreamEncoder>());
    recv.start(0, {dst.qemu, dst.qemu}, true, std::move(*a),
               std::unique_ptr<pipeline::PageStreamDecoder>());
    std::vector<uint8_t> chunk(64 << 10);
    std::mt19937 rng(7);
    for (auto& b : chunk) b = static_cast<uint8_t>(rng());
    // The destination reads everything as it comes.
    std::atomic<size_t> got{0};
    std::thread reader([&] {
      char buf[65536];
      ssize_t n;
      while ((n = ::read(dst.test, buf, sizeof buf)) > 0) got += static_cast<size_t>(n);
    });
    const std::string read_key = "ferry_qemu_read_bytes_total{side=\"send\"}";
    const std::string written_key = "ferry_qemu_written_bytes_total{side=\"recv\"}";
    const std::string link_key = "ferry_link_sent_bytes_total{side=\"send\"}";
    std::map<std::string, double> before = parse(r.render());
    EXPECT_EQ(before.at("ferry_sessions_active{side=\"send\"}"), 1);
    for (int round = 0; round < 4; ++round) {
      ASSERT_EQ(::write(src.test, chunk.data(), chunk.size()), static_cast<ssize_t>(chunk.size()));
      // Wait until the destination has this round's bytes: then the counters moved.
      // (The pump counts a write to QEMU just after it: wait for the count, not the bytes.)
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      std::map<std::string, double> now;
      for (;;) {
        now = parse(r.render());
        if (now.at(written_key) >= (round + 1) * chunk.size()) break;
        ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the bytes did not cross";
        std::this_thread::yield();
      }
      r.sample();
      for (const auto& [key, v] : now) {
        if (key.find("_total") != std::string::npos) {
          EXPECT_GE(v, before.at(key)) << key;
        }
      }
      EXPECT_GT(now.at(read_key), before.at(read_key));
      EXPECT_GT(now.at(link_key), before.at(link_key));
      EXPECT_GE(now.at(written_key), (round + 1) * chunk.size());
      before = now;
    }
    ::shutdown(src.test, SHUT_WR);  // the source QEMU is done
    reader.join();
    ::shutdown(dst.test, SHUT_WR);  // and the destination QEMU
    send.join_all();
    recv.join_all();
    EXPECT_FALSE(send.failed()) << send.first_error();
    r.remove(send_id, "completed");
    r.remove(recv_id, "failed");
  }
  // The sets are gone; their counts stay in the totals.
  const auto after = parse(r.render());
  EXPECT_EQ(after.at("ferry_qemu_read_bytes_total{side=\"send\"}"), 4.0 * (64 << 10));
  EXPECT_EQ(after.at("ferry_qemu_written_bytes_total{side=\"recv\"}"), 4.0 * (64 << 10));
  EXPECT_EQ(after.at("ferry_sessions_total{side=\"send\",outcome=\"completed\"}"), 1);
  EXPECT_EQ(after.at("ferry_sessions_total{side=\"recv\",outcome=\"failed\"}"), 1);
  EXPECT_EQ(after.at("ferry_sessions_active{side=\"send\"}"), 0);
}

TEST(Exporter, ServesOverHttpAndSessionMetricsIsOptional) {
  auto e = Exporter::start("tcp:127.0.0.1:0");
  ASSERT_TRUE(e.has_value()) << e.status().message();
  pipeline::ChannelSet set(pipeline::PumpRole::kSender);
  {
    SessionMetrics none(nullptr, set, "send");  // no --metrics: nothing happens
    none.end("completed");
  }
  { SessionMetrics s(e->get(), set, "send"); }  // ended without end(): failed
  const auto m = parse((*e)->registry().render());
  EXPECT_EQ(m.at("ferry_sessions_total{side=\"send\",outcome=\"failed\"}"), 1);
  EXPECT_EQ(m.at("ferry_sessions_total{side=\"send\",outcome=\"completed\"}"), 0);
  EXPECT_NE((*e)->port(), 0);
}

}  // namespace
}  // namespace ferry::metrics
