// Unit tests of policy/effort.h: `--codec auto`'s ladder as the encoder walks it.
#include "policy/effort.h"

#include <gtest/gtest.h>

namespace ferry::policy {
namespace {

// auto's ladder: 1, 3, 4, 5 while bytes pile up; LZMA2 (6) only while zstd -9 leaves the
// encoder mostly idle; down one rung when the link waits and the encoder is busy.
TEST(AutoEffort, Ladder) {
  const size_t full = kBacklogLinkLimits + 1, empty = kBacklogLinkWaits - 1,
               mid = kBacklogLinkWaits + 1;
  EXPECT_EQ(next_auto_effort(1, full, 0.9), 3);
  EXPECT_EQ(next_auto_effort(3, full, 0.4), 4);
  EXPECT_EQ(next_auto_effort(3, full, -1), 4) << "zstd -3 costs little more: no need to wait";
  EXPECT_EQ(next_auto_effort(4, full, 0.2), 5);
  EXPECT_EQ(next_auto_effort(5, full, 0.5), 5) << "LZMA2 would make the encoder the bottleneck";
  EXPECT_EQ(next_auto_effort(5, full, -1), 5) << "not measured yet";
  EXPECT_EQ(next_auto_effort(5, full, 0.1), 6);
  EXPECT_EQ(next_auto_effort(6, full, 0.1), 6);
  EXPECT_EQ(next_auto_effort(6, empty, 0.9), 5);
  EXPECT_EQ(next_auto_effort(6, empty, 0.5), 6) << "the link waits, but not for the encoder";
  EXPECT_EQ(next_auto_effort(3, empty, 0.9), 1);
  EXPECT_EQ(next_auto_effort(1, empty, 0.9), 1);
  EXPECT_EQ(next_auto_effort(4, mid, 0.9), 4);
}

// A backlog alone does not climb onto a rung that would make the encoder the bottleneck
// (1 Gbit/s: bursts fill the queue while zstd -9 could not keep up).
TEST(AutoEffort, ClimbsOnlyOntoAffordableRungs) {
  const size_t full = kBacklogLinkLimits + 1;
  EXPECT_EQ(next_auto_effort(3, full, 0.8), 3) << "zstd -3: 1.3x zstd -1's CPU, > 100 %";
  EXPECT_EQ(next_auto_effort(3, full, 0.7), 4);
  EXPECT_EQ(next_auto_effort(4, full, 0.3), 4) << "zstd -9: 3.5x zstd -3's CPU";
  EXPECT_EQ(next_auto_effort(4, full, -1), 4) << "not measured: no expensive rung";
  EXPECT_EQ(next_auto_effort(4, full, 0.25), 5);
  EXPECT_EQ(next_auto_effort(5, full, 0.3), 5) << "LZMA2 only with room to spare";
}

// auto starts on the zstd stream and keeps it while the link waits for QEMU rather than for
// the encoder (a fast link: the queue stays short, the encoder idles).
TEST(AutoEffort, FastLinkKeepsTheZstdStream) {
  const size_t empty = kBacklogLinkWaits - 1, mid = kBacklogLinkWaits + 1;
  EXPECT_EQ(kAutoFirstEffort, 3);
  EXPECT_EQ(next_auto_effort(3, empty, -1), 3) << "not measured yet";
  EXPECT_EQ(next_auto_effort(3, empty, 0.5), 3) << "the link waits for QEMU, not the encoder";
  EXPECT_EQ(next_auto_effort(3, empty, 0.79), 3);
  EXPECT_EQ(next_auto_effort(3, mid, 0.95), 3) << "bytes still queue: the link keeps up";
  EXPECT_EQ(next_auto_effort(3, empty, 0.81), 1) << "the encoder is the bottleneck";
}

// Back at effort 1, zstd -1 (~3x the CPU per byte) returns once effort 1 leaves the encoder
// idle enough that zstd -1 would not be stepped down again.
TEST(AutoEffort, HeadroomBringsTheStreamBack) {
  const size_t empty = kBacklogLinkWaits - 1;
  EXPECT_EQ(next_auto_effort(1, empty, 0.1), 3);
  EXPECT_EQ(next_auto_effort(1, empty, 0.26), 3);
  EXPECT_EQ(next_auto_effort(1, empty, 0.28), 1) << "zstd -1 would keep it > 80 % busy";
  EXPECT_EQ(next_auto_effort(1, empty, 0.5), 1) << "the encoder stays the bottleneck";
  EXPECT_EQ(next_auto_effort(1, empty, -1), 1) << "not measured yet";
}

// The thresholds are the ones the policy engine reads the link by (engine.cc): the socket
// buffer full above 64 KiB, the link waiting below 16 KiB.
TEST(AutoEffort, Thresholds) {
  EXPECT_EQ(kBacklogLinkLimits, 64u << 10);
  EXPECT_EQ(kBacklogLinkWaits, 16u << 10);
}

}  // namespace
}  // namespace ferry::policy
