// Unit tests of dataplane/fault/ (the fault-injecting DatagramPort) and
// dataplane/loopback/loopback_datagram.h: spec parsing and its errors, each fault on its own
// (drop, duplicate, reorder, delay, rate + queue, blackout, cut), determinism from the seed,
// and the loopback ring's drops when full.
#include "dataplane/fault/fault_port.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "dataplane/loopback/loopback_datagram.h"

namespace ferry::dataplane::fault {
namespace {

using namespace std::chrono_literals;

const TimePoint kT0 = TimePoint(std::chrono::seconds(100));

TEST(FaultSpec, ParsesEveryKey) {
  auto o = parse_fault_spec(
      "drop=0.05,dup=0.01,reorder=0.02,delay=5ms,jitter=250us,reorder_gap=3ms,seed=7,"
      "cut=1000000,blackout=2s@3s,rate=100mbit,queue=64k,burst=32k,overhead=42,slots=128");
  ASSERT_TRUE(o.has_value()) << o.status().message();
  EXPECT_DOUBLE_EQ(o->drop, 0.05);
  EXPECT_DOUBLE_EQ(o->dup, 0.01);
  EXPECT_DOUBLE_EQ(o->reorder, 0.02);
  EXPECT_EQ(o->delay, 5ms);
  EXPECT_EQ(o->jitter, 250us);
  EXPECT_EQ(o->reorder_gap, 3ms);
  EXPECT_EQ(o->seed, 7u);
  EXPECT_EQ(o->cut_after, 1000000u);
  EXPECT_EQ(o->blackout_length, 2s);
  EXPECT_EQ(o->blackout_start, 3s);
  EXPECT_DOUBLE_EQ(o->rate, 12.5e6);
  EXPECT_EQ(o->queue, 65536u);
  EXPECT_EQ(o->burst, 32768u);
  EXPECT_EQ(o->overhead, 42u);
  EXPECT_EQ(o->slots, 128u);
  auto empty = parse_fault_spec("");
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->drop, 0);
  auto units = parse_fault_spec("rate=1Gbit,cut=2m,delay=0");
  ASSERT_TRUE(units.has_value());
  EXPECT_DOUBLE_EQ(units->rate, 125e6);
  EXPECT_EQ(units->cut_after, 2u << 20);
}

TEST(FaultSpec, ErrorsSayWhatIsWrong) {
  struct Case {
    const char* spec;
    const char* says;
  } cases[] = {
      {"drop=1.5", "'drop=1.5': need a probability between 0 and 1"},
      {"drop=abc", "need a probability"},
      {"dup=-0.1", "need a probability"},
      {"delay=5", "need a duration with a unit"},
      {"delay=5parsecs", "need a duration"},
      {"blackout=2s", "need LENGTH@START"},
      {"rate=100", "need a rate"},
      {"queue=lots", "need a byte count"},
      {"seed=x", "need a whole number"},
      {"drop=0.1,drop=0.2", "given twice"},
      {"loss=0.1", "unknown key 'loss' (known: drop, dup"},
      {"drop", "expected key=value"},
      {"=1", "expected key=value"},
  };
  for (const Case& c : cases) {
    auto r = parse_fault_spec(c.spec);
    ASSERT_FALSE(r.has_value()) << c.spec;
    EXPECT_NE(r.status().message().find(c.says), std::string::npos)
        << c.spec << " -> " << r.status().message();
    EXPECT_EQ(r.status().message().rfind("fault spec: ", 0), 0u) << r.status().message();
  }
}

// A fault port on one end of a loopback pair; the test sends numbered datagrams through it
// and reads them at the other end.
struct Rig {
  std::unique_ptr<FaultPort> port;
  std::unique_ptr<loopback::LoopbackDatagramPort> peer;
  TimePoint now = kT0;

  explicit Rig(const std::string& spec, size_t slots = 4096) {
    auto pair = loopback::make_loopback_datagram_pair({1472, slots});
    peer = std::move(pair->b);
    auto o = parse_fault_spec(spec);
    EXPECT_TRUE(o.has_value()) << o.status().message();
    auto p = FaultPort::create(std::move(pair->a), *o);
    port = std::move(p.value());
    port->progress(now);
  }
  void send(uint32_t id, size_t size = 100) {
    std::vector<uint8_t> body(size - 4, 0xab);
    uint8_t head[4];
    std::memcpy(head, &id, 4);
    const DatagramOut d{head, body};
    EXPECT_EQ(port->send_burst({&d, 1}), 1u);
  }
  void advance(std::chrono::nanoseconds dt) {
    now += dt;
    port->progress(now);
  }
  // Ids received at the far end, in order.
  std::vector<uint32_t> received() {
    std::vector<uint32_t> ids;
    uint8_t buf[32][1472];
    DatagramIn in[32];
    for (;;) {
      for (int i = 0; i < 32; ++i) in[i] = {buf[i], sizeof buf[i], 0};
      const size_t n = peer->recv_burst(in);
      for (size_t i = 0; i < n; ++i) {
        uint32_t id;
        std::memcpy(&id, in[i].buf, 4);
        ids.push_back(id);
      }
      if (n < 32) return ids;
    }
  }
};

TEST(FaultPort, DropsAboutTheRateAndIsDeterministic) {
  Rig a("drop=0.1,seed=5"), b("drop=0.1,seed=5"), c("drop=0.1,seed=6");
  for (uint32_t i = 0; i < 2000; ++i) {
    a.send(i);
    b.send(i);
    c.send(i);
    if (i % 500 == 499) {  // drain before the ring fills
      a.received();
      b.received();
      c.received();
    }
  }
  EXPECT_EQ(a.port->stats().dropped, b.port->stats().dropped);
  EXPECT_NE(a.port->stats().dropped, c.port->stats().dropped);
  EXPECT_GT(a.port->stats().dropped, 150u);
  EXPECT_LT(a.port->stats().dropped, 250u);
}

TEST(FaultPort, DuplicatesArriveTwice) {
  Rig r("dup=0.5,seed=3");
  for (uint32_t i = 0; i < 100; ++i) r.send(i);
  const auto ids = r.received();
  EXPECT_EQ(ids.size(), 100 + r.port->stats().duplicated);
  EXPECT_GT(r.port->stats().duplicated, 30u);
}

TEST(FaultPort, DelayHoldsUntilProgressAndSetsTheDeadline) {
  Rig r("delay=5ms");
  r.send(1);
  EXPECT_TRUE(r.received().empty());
  EXPECT_EQ(r.port->next_deadline(), r.now + 5ms);
  r.advance(4ms);
  EXPECT_TRUE(r.received().empty());
  r.advance(1ms);
  EXPECT_EQ(r.received(), std::vector<uint32_t>{1});
  EXPECT_EQ(r.port->next_deadline(), kNever);
}

TEST(FaultPort, ReorderOvertakes) {
  Rig r("reorder=0.3,reorder_gap=1ms,seed=9");
  for (uint32_t i = 0; i < 50; ++i) r.send(i);
  auto ids = r.received();
  r.advance(1ms);
  const auto late = r.received();
  ids.insert(ids.end(), late.begin(), late.end());
  ASSERT_EQ(ids.size(), 50u);
  EXPECT_GT(r.port->stats().reordered, 5u);
  EXPECT_FALSE(std::is_sorted(ids.begin(), ids.end()));
}

TEST(FaultPort, RateLimitDrainsAtTheRateAndDropsWhenTheQueueIsFull) {
  // 8 Mbit/s = 1000 bytes per ms; 1000-byte datagrams, a 10 kB queue.
  Rig r("rate=8mbit,queue=10000");
  for (uint32_t i = 0; i < 30; ++i) r.send(i, 1000);
  EXPECT_EQ(r.port->stats().queue_drops, 20u);
  size_t got = 0;
  for (int ms = 1; ms <= 10; ++ms) {
    r.advance(1ms);
    got += r.received().size();
    EXPECT_EQ(got, static_cast<size_t>(ms));
  }
}

TEST(FaultPort, TokenBucketLetsABurstThroughAfterIdling) {
  // 8 Mbit/s, a 3000-byte bucket: after idling, three 1000-byte datagrams leave at once,
  // then one per ms.
  Rig r("rate=8mbit,queue=10000,burst=3000");
  r.advance(10ms);
  for (uint32_t i = 0; i < 6; ++i) r.send(i, 1000);
  EXPECT_EQ(r.received().size(), 3u);
  for (int ms = 1; ms <= 3; ++ms) {
    r.advance(1ms);
    EXPECT_EQ(r.received().size(), 1u) << ms;
  }
  EXPECT_EQ(r.port->stats().queue_drops, 0u);
}

TEST(FaultPort, BlackoutSilencesBothWaysForItsWindow) {
  Rig r("blackout=2s@1s");
  r.send(1);
  EXPECT_EQ(r.received().size(), 1u);
  r.advance(1500ms);
  r.send(2);
  const uint8_t back[8] = {};
  const DatagramOut d{back, {}};
  r.peer->send_burst({&d, 1});
  uint8_t buf[64];
  DatagramIn in{buf, sizeof buf, 0};
  EXPECT_EQ(r.port->recv_burst({&in, 1}), 0u);
  EXPECT_TRUE(r.received().empty());
  EXPECT_EQ(r.port->stats().blackout_drops, 2u);
  r.advance(1500ms);
  r.send(3);
  EXPECT_EQ(r.received(), std::vector<uint32_t>{3});
  r.peer->send_burst({&d, 1});
  EXPECT_EQ(r.port->recv_burst({&in, 1}), 1u);
}

TEST(FaultPort, CutIsForever) {
  Rig r("cut=250");
  r.send(1);
  r.send(2);
  r.send(3);  // would pass 250 bytes
  r.send(4, 10);
  EXPECT_EQ(r.received(), (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(r.port->stats().cut_drops, 2u);
  const uint8_t back[8] = {};
  const DatagramOut d{back, {}};
  r.peer->send_burst({&d, 1});
  uint8_t buf[64];
  DatagramIn in{buf, sizeof buf, 0};
  r.advance(1h);
  EXPECT_EQ(r.port->recv_burst({&in, 1}), 0u);
}

TEST(LoopbackDatagram, FullRingDropsLikeANic) {
  auto pair = loopback::make_loopback_datagram_pair({256, 8});
  ASSERT_TRUE(pair.has_value());
  EXPECT_EQ(pair->a->max_datagram(), 256u);
  EXPECT_EQ(pair->a->wait_fd(), -1);
  uint8_t msg[200];
  std::vector<DatagramOut> outs(12, DatagramOut{msg, {}});
  for (size_t i = 0; i < outs.size(); ++i) msg[0] = static_cast<uint8_t>(i);
  EXPECT_EQ(pair->a->send_burst(outs), 12u);  // taken, 4 of them dropped
  EXPECT_EQ(pair->a->full_drops(), 4u);
  uint8_t big[300] = {};
  const DatagramOut too_big{big, {}};
  pair->a->send_burst({&too_big, 1});
  EXPECT_EQ(pair->a->full_drops(), 5u);
  uint8_t bufs[16][256];
  DatagramIn in[16];
  for (int i = 0; i < 16; ++i) in[i] = {bufs[i], sizeof bufs[i], 0};
  EXPECT_EQ(pair->b->recv_burst(in), 8u);
  EXPECT_EQ(in[0].len, 200u);
  // Slots came back: the ring takes more.
  EXPECT_EQ(pair->a->send_burst({outs.data(), 3}), 3u);
  EXPECT_EQ(pair->b->recv_burst(in), 3u);
  // And the other direction is its own ring.
  EXPECT_EQ(pair->b->send_burst({outs.data(), 2}), 2u);
  EXPECT_EQ(pair->a->recv_burst(in), 2u);
  EXPECT_FALSE(loopback::make_loopback_datagram_pair({16, 8}).has_value());
}

}  // namespace
}  // namespace ferry::dataplane::fault
