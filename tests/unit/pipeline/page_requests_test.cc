// tests/unit/pipeline/page_requests_test.cc — matching the destination's post-copy page
// requests with the pages ferry recv hands to it (page_requests.h), directly and through the
// taps of two channels (stream_stats.h).
#include "pipeline/page_requests.h"

#include <gtest/gtest.h>

#include "../qemu-channel/test_stream_writer.h"
#include "pipeline/stream_stats.h"

namespace ferry::pipeline {
namespace {

using namespace std::chrono_literals;
using qemu::testing::StreamWriter;

TEST(PageRequests, OnePageIsAnsweredByItsPage) {
  PageRequestTracker t;
  const TimePoint t0{};
  t.request("pc.ram", 0x5000, 4096, t0);
  t.page("pc.ram", 0x4000, t0 + 1ms);  // a neighbour: not it
  t.page("other", 0x5000, t0 + 2ms);   // same offset, another block: not it
  EXPECT_EQ(t.summary().answered, 0u);
  t.page("pc.ram", 0x5000, t0 + 7ms);
  auto s = t.summary();
  EXPECT_EQ(s.requests, 1u);
  EXPECT_EQ(s.answered, 1u);
  EXPECT_EQ(s.open, 0u);
  EXPECT_NEAR(s.max_ms, 7.0, 0.01);
  EXPECT_NEAR(s.p50_ms, 7.0, 0.01);
  // The same page once more (bulk copy behind the urgent one) changes nothing.
  t.page("pc.ram", 0x5000, t0 + 9ms);
  EXPECT_EQ(t.summary().answered, 1u);
}

TEST(PageRequests, PagesNobodyAskedForChangeNothing) {
  PageRequestTracker t;
  for (uint64_t off = 0; off < (1u << 20); off += 4096) t.page("pc.ram", off, false);
  auto s = t.summary();
  EXPECT_EQ(s.requests, 0u);
  EXPECT_EQ(s.answered, 0u);
  EXPECT_EQ(s.max_ms, 0.0);
}

TEST(PageRequests, ARangeWaitsForItsLastPage) {
  PageRequestTracker t;
  const TimePoint t0{};
  // A 2 MiB host page (hugepage-backed block): 512 target pages, in any order.
  t.request("pc.ram", 0x200000, 0x200000, t0);
  for (uint64_t i = 0; i < 512; ++i) {
    const uint64_t off = 0x200000 + ((i * 37) % 512) * 4096;
    t.page("pc.ram", off, t0 + std::chrono::milliseconds(i));
    if (i < 511) {
      ASSERT_EQ(t.summary().answered, 0u) << i;
      t.page("pc.ram", off, t0 + 1000ms);  // a duplicate does not count twice
    }
  }
  auto s = t.summary();
  EXPECT_EQ(s.answered, 1u);
  EXPECT_NEAR(s.max_ms, 511.0, 0.01);
}

TEST(PageRequests, OverlappingRequestsCloseTogether) {
  PageRequestTracker t;
  const TimePoint t0{};
  t.request("pc.ram", 0x1000, 4096, t0);
  t.request("pc.ram", 0x1000, 4096, t0 + 4ms);  // a second vCPU faults on the same page
  t.page("pc.ram", 0x1000, t0 + 10ms);
  auto s = t.summary();
  EXPECT_EQ(s.answered, 2u);
  EXPECT_NEAR(s.p50_ms, 6.0, 0.01);
  EXPECT_NEAR(s.max_ms, 10.0, 0.01);
}

TEST(PageRequests, PercentilesAndNeverAnswered) {
  PageRequestTracker t;
  const TimePoint t0{};
  for (int i = 0; i < 100; ++i) {
    t.request("pc.ram", uint64_t(i) * 4096, 4096, t0);
    t.page("pc.ram", uint64_t(i) * 4096, t0 + std::chrono::milliseconds(i + 1));
  }
  t.request("pc.ram", 0x10000000, 4096, t0);  // its page never comes
  auto s = t.summary();
  EXPECT_EQ(s.requests, 101u);
  EXPECT_EQ(s.answered, 100u);
  EXPECT_EQ(s.open, 1u);
  EXPECT_NEAR(s.p50_ms, 50.0, 0.01);
  EXPECT_NEAR(s.p99_ms, 99.0, 0.01);
  EXPECT_NEAR(s.max_ms, 100.0, 0.01);
}

TEST(PageRequests, TheTableIsBounded) {
  PageRequestTracker t;
  for (size_t i = 0; i < PageRequestTracker::kMaxOpen + 10; ++i) {
    t.request("pc.ram", i * 4096, 4096, TimePoint{});
  }
  auto s = t.summary();
  EXPECT_EQ(s.open, PageRequestTracker::kMaxOpen);
  EXPECT_EQ(s.dropped, 10u);
}

// A request whose page never passes (it reached QEMU before the request passed ferry recv)
// is forgotten once it is kForgetAfter old, so it does not stay in every page's scan.
TEST(PageRequests, StaleRequestsAreForgotten) {
  PageRequestTracker t;
  const TimePoint t0{};
  t.request("pc.ram", 0x1000, 4096, t0);
  t.request("pc.ram", 0x2000, 4096, t0 + 1s);
  t.request("pc.ram", 0x3000, 4096, t0 + PageRequestTracker::kForgetAfter + 500ms);
  auto s = t.summary();
  EXPECT_EQ(s.open, 2u);  // the first one is forgotten, the second is not old enough yet
  EXPECT_EQ(s.dropped, 1u);
  t.page("pc.ram", 0x2000, t0 + PageRequestTracker::kForgetAfter + 600ms);
  EXPECT_EQ(t.summary().answered, 1u);
}

// ferry send's tracker: the source answers within milliseconds or never (it had sent the page
// before the request), so it forgets after 2 s.
TEST(PageRequests, AShorterMemoryForgetsSooner) {
  PageRequestTracker t(4096, 2000ms);
  const TimePoint t0{};
  t.request("pc.ram", 0x1000, 4096, t0);
  t.request("pc.ram", 0x2000, 4096, t0 + 1500ms);
  t.request("pc.ram", 0x3000, 4096, t0 + 2500ms);
  auto s = t.summary();
  EXPECT_EQ(s.open, 2u);
  EXPECT_EQ(s.dropped, 1u);
  t.page("pc.ram", 0x1000, t0 + 2600ms);  // too late: forgotten
  t.page("pc.ram", 0x2000, t0 + 2600ms);
  s = t.summary();
  EXPECT_EQ(s.answered, 1u);
  EXPECT_NEAR(s.max_ms, 1100.0, 0.01);
}

// The request passes on the return path of the main channel (REQ_PAGES_ID names the block,
// REQ_PAGES reuses it) and its pages arrive on another channel's stream (the preempt one).
TEST(PageRequests, TheTimelineKeepsEachRequestInArrivalOrder) {
  PageRequestTracker t;
  const TimePoint t0{};
  t.request("pc.ram", 0x1000, 4096, t0);
  t.request("pc.ram", 0x2000, 4096, t0 + 3ms);
  t.request("pc.ram", 0x3000, 4096, t0 + 5ms);  // never answered
  t.page("pc.ram", 0x2000, t0 + 9ms, /*preempt=*/true);
  t.page("pc.ram", 0x1000, t0 + 20ms, /*preempt=*/false);
  const auto tl = t.timeline();
  ASSERT_EQ(tl.size(), 3u);
  EXPECT_EQ(tl[0].at, t0);
  EXPECT_EQ(tl[0].offset, 0x1000u);
  EXPECT_NEAR(tl[0].wait_ms, 20.0, 0.01);
  EXPECT_FALSE(tl[0].preempt);
  EXPECT_EQ(tl[1].at, t0 + 3ms);
  EXPECT_EQ(tl[1].offset, 0x2000u);
  EXPECT_NEAR(tl[1].wait_ms, 6.0, 0.01);
  EXPECT_TRUE(tl[1].preempt);
  EXPECT_EQ(tl[2].at, t0 + 5ms);
  EXPECT_LT(tl[2].wait_ms, 0.0f);
  // Bounded: requests past kTimelineMax are counted, not kept.
  for (size_t i = 0; i < PageRequestTracker::kTimelineMax; ++i)
    t.request("pc.ram", 0x100000 + i * 4096, 4096, t0 + 30ms);
  EXPECT_EQ(t.timeline().size(), PageRequestTracker::kTimelineMax);
  EXPECT_EQ(t.summary().requests, PageRequestTracker::kTimelineMax + 3);
}

TEST(PageRequests, ThroughTheTapsOfTwoChannels) {
  PageRequestTracker t;
  StreamStats rp(true), preempt(false);
  rp.track_requests(&t);
  preempt.track_requests(&t);
  StreamWriter r;
  r.rp_req_pages_id(0x3000, 4096, "pc.ram").rp_req_pages(0x9000, 4096);
  rp.on_bytes(r.bytes);
  EXPECT_EQ(t.summary().requests, 2u);
  StreamWriter p;
  p.page("pc.ram", 0x9000, 1).page("", 0x4000, 2).zero("", 0x3000).eos();
  preempt.on_bytes(p.bytes);
  preempt.on_end();
  auto s = t.summary();
  EXPECT_STREQ(preempt.role(), "preempt");
  EXPECT_EQ(s.answered, 2u);
  EXPECT_EQ(s.by_preempt, 2u);
  EXPECT_EQ(s.open, 0u);
  EXPECT_EQ(rp.rp_messages.load(), 2u);
  EXPECT_EQ(rp.page_requests.load(), 2u);
}

}  // namespace
}  // namespace ferry::pipeline
