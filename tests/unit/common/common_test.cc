#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/crc32c.h"
#include "common/fork_join.h"
#include "common/log.h"
#include "common/spsc_ring.h"
#include "common/status.h"

namespace ferry {
namespace {

// Every part runs once per call, on distinct threads at once, and run() returns only after
// all of them finished (their writes are visible).
TEST(ForkJoin, RunsEveryPartOnceConcurrentlyAndJoins) {
  for (unsigned parts : {1u, 2u, 4u}) {
    ForkJoin fj(parts);
    std::vector<int> hits(parts, 0);
    std::vector<std::thread::id> ids(parts);
    for (int round = 0; round < 200; ++round) {
      fj.run([&](unsigned p) {
        ++hits[p];
        ids[p] = std::this_thread::get_id();
      });
    }
    for (unsigned p = 0; p < parts; ++p) EXPECT_EQ(hits[p], 200) << "part " << p;
    EXPECT_EQ(ids[0], std::this_thread::get_id()) << "part 0 runs on the caller";
    for (unsigned p = 1; p < parts; ++p) EXPECT_NE(ids[p], ids[0]);
  }
  // Parts really overlap: each waits until all have started.
  ForkJoin fj(3);
  std::atomic<int> started{0};
  fj.run([&](unsigned) {
    started.fetch_add(1);
    while (started.load() < 3) std::this_thread::yield();
  });
  EXPECT_EQ(started.load(), 3);
}

TEST(Crc32c, StandardCheckValue) {
  const char* s = "123456789";
  EXPECT_EQ(crc32c(s, 9), 0xE3069283u);
  EXPECT_EQ(crc32c_extend_scalar(0, s, 9), 0xE3069283u);
}

TEST(Crc32c, ChainedEqualsWholeAndMatchesScalar) {
  std::mt19937 rng(7);
  std::vector<uint8_t> buf(10007);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  for (size_t split : {0ul, 1ul, 63ul, 4096ul, 10007ul}) {
    uint32_t a = crc32c_extend(0, buf.data(), split);
    a = crc32c_extend(a, buf.data() + split, buf.size() - split);
    EXPECT_EQ(a, crc32c(buf.data(), buf.size()));
    EXPECT_EQ(a, crc32c_extend_scalar(0, buf.data(), buf.size()));
  }
}

TEST(SpscRing, FullAndEmpty) {
  SpscRing<int> ring(3);
  EXPECT_EQ(ring.capacity(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(ring.try_push(i));
  EXPECT_FALSE(ring.try_push(9));
  int v = -1;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(ring.try_pop(v));
    EXPECT_EQ(v, i);
  }
  EXPECT_FALSE(ring.try_pop(v));
}

TEST(SpscRing, TwoThreadsKeepOrder) {
  SpscRing<uint64_t> ring(64);
  constexpr uint64_t kCount = 200000;
  std::thread producer([&] {
    for (uint64_t i = 0; i < kCount;) {
      if (ring.try_push(i)) ++i;
    }
  });
  uint64_t expect = 0;
  uint64_t v;
  while (expect < kCount) {
    if (ring.try_pop(v)) {
      ASSERT_EQ(v, expect);
      ++expect;
    }
  }
  producer.join();
}

TEST(Status, ResultCarriesValueOrError) {
  Result<int> ok = 5;
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(*ok, 5);
  Result<int> bad = error(ErrorCode::kProtocol, "bad frame at offset 3");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.status().code(), ErrorCode::kProtocol);
  EXPECT_EQ(bad.status().message(), "bad frame at offset 3");
}

// journal_prefix() decides once per process, so each case runs in a child of its own.
int journal_prefix_in_child(bool stream_is_stderr) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    struct stat st;
    ::fstat(2, &st);
    const std::string stream =
        std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + (stream_is_stderr ? 0 : 1));
    ::setenv("JOURNAL_STREAM", stream.c_str(), 1);
    const std::string error = log::journal_prefix(log::Level::kError);
    const std::string info = log::journal_prefix(log::Level::kInfo);
    ::_exit(error == "<3>" && info == "<6>" ? 1 : error.empty() && info.empty() ? 2 : 3);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(Log, SyslogPrioritiesOnlyWhenStderrIsTheJournal) {
  EXPECT_EQ(journal_prefix_in_child(true), 1);   // stderr is the stream systemd named
  EXPECT_EQ(journal_prefix_in_child(false), 2);  // another stream: plain lines
  log::Level l = log::Level::kWarn;
  EXPECT_TRUE(log::parse_level("debug", &l));
  EXPECT_EQ(l, log::Level::kDebug);
  EXPECT_FALSE(log::parse_level("verbose", &l));
}

}  // namespace
}  // namespace ferry
