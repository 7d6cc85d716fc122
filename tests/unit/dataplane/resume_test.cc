// Unit tests of resume/resumable_transport.h over the in-process loopback transport: frames
// both ways arrive exactly once and in order across connections cut under them (both ends
// noticing, or only the sender), and the ways resuming ends (refused, out of time, off).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/endian.h"
#include "dataplane/protocol.h"
#include "dataplane/resume/resumable_transport.h"
#include "dataplane/transport.h"

namespace ferry::dataplane {
namespace {

using namespace std::chrono_literals;

// A connection the test can cut: from then on it is failed, takes nothing and delivers
// nothing (what was in flight is lost, as on a reset link).
class Cuttable final : public Transport {
 public:
  Cuttable(std::unique_ptr<Transport> inner, std::shared_ptr<std::atomic<bool>> cut)
      : inner_(std::move(inner)), cut_(std::move(cut)) {}
  const char* kind() const noexcept override { return inner_->kind(); }
  TransportCaps caps() const noexcept override { return inner_->caps(); }
  FramePool& pool() noexcept override { return inner_->pool(); }
  size_t tx_burst(std::span<FrameBuf* const> f) noexcept override {
    return *cut_ ? 0 : inner_->tx_burst(f);
  }
  size_t reap_tx(std::span<FrameBuf*> out) noexcept override { return inner_->reap_tx(out); }
  size_t rx_burst(std::span<FrameBuf*> out) noexcept override {
    return *cut_ ? 0 : inner_->rx_burst(out);
  }
  size_t progress(TimePoint now) noexcept override { return inner_->progress(now); }
  void close_tx() noexcept override { inner_->close_tx(); }
  LinkState state() const noexcept override { return *cut_ ? LinkState::kFailed : inner_->state(); }
  const Status& error() const noexcept override { return *cut_ ? cut_error_ : inner_->error(); }
  size_t tx_in_flight_bytes() const noexcept override { return inner_->tx_in_flight_bytes(); }
  int wait_fd() const noexcept override { return inner_->wait_fd(); }
  uint32_t wait_events(bool rx, bool tx) const noexcept override {
    return inner_->wait_events(rx, tx);
  }

 private:
  std::unique_ptr<Transport> inner_;
  std::shared_ptr<std::atomic<bool>> cut_;
  Status cut_error_{ErrorCode::kIo, "connection reset (cut by the test)"};
};

// One connection: both ends, each with its own cut switch.
struct Connection {
  std::unique_ptr<Transport> a, b;
  std::shared_ptr<std::atomic<bool>> cut_a = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<std::atomic<bool>> cut_b = std::make_shared<std::atomic<bool>>(false);
};

// The receiver's listener and what the sender's reopen attempts connect to.
struct Rig {
  std::string name;
  std::unique_ptr<Listener> listener;
  std::vector<std::shared_ptr<std::atomic<bool>>> sender_cuts, receiver_cuts;
  std::mutex mu;  // sender_cuts: the reopen thread adds to it

  explicit Rig(const std::string& n) : name("loopback:" + n) {
    auto l = listen_transport(name);
    EXPECT_TRUE(l.has_value());
    listener = std::move(*l);
  }
  // The sender's end of a new connection (the receiver takes the other with accept_end).
  Result<std::unique_ptr<Transport>> connect_end() {
    auto c = connect_transport(name, 1000);
    if (!c) return c.status();
    auto cut = std::make_shared<std::atomic<bool>>(false);
    std::lock_guard lk(mu);
    sender_cuts.push_back(cut);
    return std::unique_ptr<Transport>(new Cuttable(std::move(*c), cut));
  }
  std::unique_ptr<Transport> accept_end(int timeout_ms) {
    auto t = listener->accept(timeout_ms);
    if (!t) return nullptr;
    auto cut = std::make_shared<std::atomic<bool>>(false);
    receiver_cuts.push_back(cut);
    return std::unique_ptr<Transport>(new Cuttable(std::move(*t), cut));
  }
  void cut_sender_end() {
    std::lock_guard lk(mu);
    *sender_cuts.back() = true;
  }
  void cut_receiver_end() { *receiver_cuts.back() = true; }
};

// Payload bytes of frame seq: recognisable, so a frame delivered twice or out of place shows.
uint8_t byte_of(uint64_t seq, size_t i) { return static_cast<uint8_t>(seq * 131 + i * 7); }
size_t len_of(uint64_t seq) { return 1 + (seq * 7919) % 3000; }

// Sends frames numbered from kFirstDataSeq and checks what arrives.
struct End {
  End(Transport& l, FrameType t) : link(l), type(t) {}
  Transport& link;
  FrameType type;
  uint64_t tx_seq = kFirstDataSeq, rx_seq = kFirstDataSeq;
  size_t to_send = 0;
  bool sent_end = false, got_end = false;
  std::string error;

  size_t send(size_t max_frames) {
    size_t n = 0;
    while (n < max_frames && !sent_end) {
      FrameBuf* f = link.pool().alloc();
      if (!f) break;
      const bool end = to_send == 0;
      const size_t len = end ? 0 : len_of(tx_seq);
      for (size_t i = 0; i < len; ++i) f->payload()[i] = byte_of(tx_seq, i);
      encode_frame_header(end ? FrameType::kEnd : type, tx_seq, f->payload(),
                          static_cast<uint32_t>(len), f->data);
      f->len = static_cast<uint32_t>(kFrameHeaderSize + len);
      if (link.tx_burst({&f, 1}) != 1) {
        link.pool().free(f);
        break;
      }
      ++tx_seq;
      ++n;
      if (end)
        sent_end = true;
      else
        --to_send;
    }
    FrameBuf* done[32];
    for (size_t k; (k = link.reap_tx(done)) > 0;) {
      for (size_t i = 0; i < k; ++i) link.pool().free(done[i]);
    }
    return n;
  }
  void receive(FrameType want) {
    FrameBuf* got[32];
    const size_t n = link.rx_burst(got);
    for (size_t b = 0; b < n; ++b) {
      FrameChecker check(rx_seq);
      FrameChecker::Frame f;
      size_t pos = 0;
      for (;;) {
        auto r = check.next(got[b]->data, got[b]->len, &pos, f);
        if (!r) {
          error = r.status().message();
          break;
        }
        if (!*r) break;
        if (f.header.type == FrameType::kEnd) {
          got_end = true;
        } else if (f.header.type != want || f.header.len != len_of(f.header.seq)) {
          error = "frame " + std::to_string(f.header.seq) + ": wrong type or length";
        } else {
          for (size_t i = 0; i < f.header.len; ++i) {
            if (f.payload[i] != byte_of(f.header.seq, i)) {
              error = "frame " + std::to_string(f.header.seq) + ": wrong byte " + std::to_string(i);
              break;
            }
          }
        }
        rx_seq = f.header.seq + 1;
      }
      got[b]->pool->free(got[b]);
    }
  }
};

ResumeOptions sender_options(Rig& rig, std::chrono::seconds within = 10s) {
  ResumeOptions o;
  o.within = within;
  o.peer_name = "ferry recv";
  o.reopen = [&rig](TimePoint) { return rig.connect_end(); };
  return o;
}

// The first connection: the sender's end as it is, the receiver's made resumable (new
// connections reach it through slot).
struct FirstConnection {
  std::unique_ptr<Transport> sender_end, receiver;
  std::shared_ptr<ResumeSlot> slot = std::make_shared<ResumeSlot>();
};
FirstConnection first_connection(Rig& rig) {
  FirstConnection c;
  auto a = rig.connect_end();
  EXPECT_TRUE(a.has_value());
  auto b = rig.accept_end(1000);
  EXPECT_TRUE(b);
  if (!a || !b) return c;
  c.sender_end = std::move(*a);
  ResumeOptions ro;
  ro.slot = c.slot;
  ro.within = 10s;
  auto r = make_resumable(std::move(b), std::move(ro));
  EXPECT_TRUE(r.has_value());
  if (r) c.receiver = std::move(*r);
  return c;
}

// Both ends of a first connection made resumable: the sender's with sender_options, the
// receiver's through first_connection's slot.
struct ResumablePair {
  std::unique_ptr<Transport> sender, receiver;
  std::shared_ptr<ResumeSlot> slot;
};
ResumablePair resumable_pair(Rig& rig) {
  ResumablePair p;
  FirstConnection first = first_connection(rig);
  if (!first.receiver) return p;
  auto s = make_resumable(std::move(first.sender_end), sender_options(rig));
  EXPECT_TRUE(s.has_value());
  if (!s) return p;
  p.sender = std::move(*s);
  p.receiver = std::move(first.receiver);
  p.slot = first.slot;
  return p;
}

// One round of a test's exchange: both ends send (the sender more), progress, receive, and a
// new connection, if one came, goes to the receiver's slot.
void exchange_round(End& sender, End& receiver, Rig& rig, ResumeSlot& slot) {
  const TimePoint now = Clock::now();
  sender.send(8);
  receiver.send(1);
  sender.link.progress(now);
  receiver.link.progress(now);
  receiver.receive(FrameType::kOpaque);
  sender.receive(FrameType::kReturn);
  if (auto t = rig.accept_end(0)) slot.offer(std::move(t));
}

TEST(ResumableTransport, FramesArriveOnceAndInOrderAcrossCutConnections) {
  Rig rig("resume-cuts");
  auto [s, r, slot] = resumable_pair(rig);
  ASSERT_TRUE(s && r);
  End sender{*s, FrameType::kOpaque}, receiver{*r, FrameType::kReturn};
  sender.to_send = 3000;
  receiver.to_send = 300;

  const TimePoint give_up = Clock::now() + 60s;
  int cuts = 0, late_cut = 0;
  while (!(receiver.got_end && sender.got_end) && Clock::now() < give_up) {
    exchange_round(sender, receiver, rig, *slot);
    ASSERT_EQ(sender.error + receiver.error, "");
    ASSERT_NE(s->state(), LinkState::kFailed) << s->error().message();
    ASSERT_NE(r->state(), LinkState::kFailed) << r->error().message();
    // Cut 1: both ends see the reset. Cut 2: only the sender (the receiver's old connection
    // looks alive and is replaced when the new one arrives). Cut 3: the receiver first, the
    // sender a few rounds later (its own timeout).
    if (cuts == 0 && receiver.rx_seq > 500) {
      rig.cut_sender_end();
      rig.cut_receiver_end();
      ++cuts;
    } else if (cuts == 1 && receiver.rx_seq > 1500 && s->resumes() == 1) {
      rig.cut_sender_end();
      ++cuts;
    } else if (cuts == 2 && receiver.rx_seq > 2500 && s->resumes() == 2) {
      rig.cut_receiver_end();
      ++cuts;
      late_cut = 20;
    } else if (late_cut > 0 && --late_cut == 0) {
      rig.cut_sender_end();
    }
  }
  EXPECT_TRUE(receiver.got_end && sender.got_end)
      << "frames: " << receiver.rx_seq << " and " << sender.rx_seq;
  EXPECT_EQ(cuts, 3);
  EXPECT_EQ(receiver.rx_seq, kFirstDataSeq + 3001);  // every frame and the END, once
  EXPECT_EQ(sender.rx_seq, kFirstDataSeq + 301);
  EXPECT_EQ(s->resumes(), 3u);
  EXPECT_EQ(r->resumes(), 3u);
  // Both ENDs arrived and were acknowledged: a connection that breaks now (a peer exiting
  // before its transport closed) loses nothing, and is the end of the link, not a failure.
  for (int i = 0; i < 50; ++i) {
    s->progress(Clock::now());
    r->progress(Clock::now());
    receiver.receive(FrameType::kOpaque);
    sender.receive(FrameType::kReturn);
    sender.send(0);
    receiver.send(0);
  }
  rig.cut_sender_end();
  rig.cut_receiver_end();
  s->progress(Clock::now());
  r->progress(Clock::now());
  EXPECT_EQ(s->state(), LinkState::kPeerClosed) << s->error().message();
  EXPECT_EQ(r->state(), LinkState::kPeerClosed) << r->error().message();
  json::Value stats = s->link_stats();
  EXPECT_EQ(stats["resumes"].as_int(), 3);
  EXPECT_GT(stats["replayed_bytes"].as_int(), 0);
}

TEST(ResumableTransport, ASenderWhoseFirstConnectionBrokeBeforeItsAcceptStartsResumed) {
  // ferry recv accepted the channel and made its link resumable, then the connection broke
  // before the sender read the ACCEPT: the sender's link starts on a new connection as a
  // resumed one (first_resumes), and both ways every frame arrives once.
  Rig rig("resume-first-broken");
  FirstConnection first = first_connection(rig);
  ASSERT_TRUE(first.receiver);
  auto slot = first.slot;
  rig.cut_sender_end();
  rig.cut_receiver_end();
  first.sender_end.reset();  // the sender never used it
  auto again = rig.connect_end();
  ASSERT_TRUE(again.has_value());
  ResumeOptions o = sender_options(rig);
  o.first_resumes = true;
  auto s = make_resumable(std::move(*again), std::move(o));
  ASSERT_TRUE(s.has_value());
  auto* r = &first.receiver;
  End sender{**s, FrameType::kOpaque}, receiver{**r, FrameType::kReturn};
  sender.to_send = 400;
  receiver.to_send = 40;
  const TimePoint give_up = Clock::now() + 30s;
  while (!(receiver.got_end && sender.got_end) && Clock::now() < give_up) {
    exchange_round(sender, receiver, rig, *slot);
    ASSERT_EQ(sender.error + receiver.error, "");
    ASSERT_NE((*s)->state(), LinkState::kFailed) << (*s)->error().message();
    ASSERT_NE((*r)->state(), LinkState::kFailed) << (*r)->error().message();
  }
  EXPECT_EQ(receiver.rx_seq, kFirstDataSeq + 401);
  EXPECT_EQ(sender.rx_seq, kFirstDataSeq + 41);
  EXPECT_EQ((*s)->resumes(), 1u);
  EXPECT_EQ((*r)->resumes(), 1u);
}

TEST(ResumableTransport, AnEndThatFinishesFirstStillAcknowledgesThePeersEnd) {
  // The receiver ends and closes its direction long before the sender's END comes (ferry's
  // pump waits for that END first; the transport must not rely on it). Its connection must
  // stay open for the ACK of that END: otherwise the sender cannot tell the completed
  // exchange from a connection lost with its END, and a break at teardown (a peer exiting,
  // an RDMA endpoint flushed) fails a migration that completed.
  Rig rig("resume-end-first");
  auto [s, r, slot] = resumable_pair(rig);
  ASSERT_TRUE(s && r);
  End sender{*s, FrameType::kOpaque}, receiver{*r, FrameType::kReturn};
  sender.to_send = 300;
  receiver.to_send = 0;
  const TimePoint give_up = Clock::now() + 30s;
  while (!(receiver.got_end && sender.got_end && s->tx_in_flight_bytes() == 0 &&
           r->tx_in_flight_bytes() == 0) &&
         Clock::now() < give_up) {
    if (receiver.sent_end) r->close_tx();
    if (sender.sent_end) s->close_tx();
    exchange_round(sender, receiver, rig, *slot);
    ASSERT_EQ(sender.error + receiver.error, "");
    ASSERT_NE(s->state(), LinkState::kFailed) << s->error().message();
    ASSERT_NE(r->state(), LinkState::kFailed) << r->error().message();
  }
  ASSERT_EQ(receiver.rx_seq, kFirstDataSeq + 301);
  ASSERT_EQ(sender.rx_seq, kFirstDataSeq + 1);
  EXPECT_EQ(s->tx_in_flight_bytes(), 0u) << "the sender's END was never acknowledged";
  EXPECT_EQ(r->tx_in_flight_bytes(), 0u);
  rig.cut_sender_end();
  rig.cut_receiver_end();
  s->progress(Clock::now());
  r->progress(Clock::now());
  EXPECT_EQ(s->state(), LinkState::kPeerClosed) << s->error().message();
  EXPECT_EQ(r->state(), LinkState::kPeerClosed) << r->error().message();
  EXPECT_EQ(s->resumes(), 0u);
}

TEST(ResumableTransport, AReceiverNeverSpeaksFirstOnANewConnection) {
  // The sender's handshake reads frames up to ACCEPT; a frame the receiver sent at once would
  // arrive with ACCEPT and be lost, and both ends would wait for each other's ACK for good.
  // Not even the acknowledgement of a frame it received on the connection that broke, due
  // 10 ms after that frame.
  Rig rig("resume-first");
  FirstConnection first = first_connection(rig);
  ASSERT_TRUE(first.receiver);
  auto slot = first.slot;
  auto* r = &first.receiver;
  End data_sender(*first.sender_end, FrameType::kOpaque);
  data_sender.to_send = 1;
  ASSERT_EQ(data_sender.send(1), 1u);
  End data_receiver(**r, FrameType::kReturn);
  for (int i = 0; i < 100 && data_receiver.rx_seq == kFirstDataSeq; ++i) {
    first.sender_end->progress(Clock::now());
    data_receiver.receive(FrameType::kOpaque);
  }
  ASSERT_EQ(data_receiver.rx_seq, kFirstDataSeq + 1) << data_receiver.error;
  rig.cut_receiver_end();
  (*r)->progress(Clock::now());
  // A new connection: the test plays its sender end by hand.
  auto raw = connect_transport(rig.name, 1000);
  ASSERT_TRUE(raw.has_value());
  auto peer_end = rig.listener->accept(1000);
  ASSERT_TRUE(peer_end.has_value());
  ASSERT_TRUE(slot->offer(std::move(*peer_end)));
  FrameBuf* got[8];
  // Past the acknowledgement's delay (the loop watches what goes out, it waits for nothing).
  for (const TimePoint until = Clock::now() + 50ms; Clock::now() < until;) {
    (*r)->progress(Clock::now());
    ASSERT_EQ((*raw)->rx_burst(got), 0u) << "the receiver spoke first";
  }
  // The sender's ACK: the receiver answers with its own.
  FrameBuf* ack = (*raw)->pool().alloc();
  uint8_t next[8] = {0, 0, 0, 0, 0, 0, 0, 1};
  std::memcpy(ack->payload(), next, sizeof next);
  encode_frame_header(FrameType::kAck, 0, next, sizeof next, ack->data);
  ack->len = kFrameHeaderSize + sizeof next;
  ASSERT_EQ((*raw)->tx_burst({&ack, 1}), 1u);
  size_t n = 0;
  for (int i = 0; i < 100 && n == 0; ++i) {
    FrameBuf* in[8];
    (*r)->progress(Clock::now());
    const size_t k = (*r)->rx_burst(in);
    for (size_t j = 0; j < k; ++j) in[j]->pool->free(in[j]);
    (*r)->progress(Clock::now());
    n = (*raw)->rx_burst(got);
  }
  ASSERT_EQ(n, 1u);
  auto h = parse_frame_header(got[0]->data);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->type, FrameType::kAck);
  EXPECT_EQ(load_be64(got[0]->payload()), kFirstDataSeq + 1) << "the answer names the next frame";
  got[0]->pool->free(got[0]);
  EXPECT_EQ((*r)->resumes(), 1u);
}

TEST(ResumableTransport, ALinkThatGoesAwayTellsItsPeer) {
  // A sender that gives up (its QEMU failed, a cancel) sends GONE: the receiver fails at once
  // rather than waiting --resume-within for a new connection.
  Rig rig("resume-gone");
  FirstConnection first = first_connection(rig);
  ASSERT_TRUE(first.receiver);
  auto* r = &first.receiver;
  {
    auto s = make_resumable(std::move(first.sender_end), sender_options(rig));
    ASSERT_TRUE(s.has_value());
    End sender{**s, FrameType::kOpaque};
    sender.to_send = 100;
    sender.send(10);
    (*s)->progress(Clock::now());
  }  // the sender goes away mid-stream
  FrameBuf* in[32];
  size_t frames = 0;
  for (int i = 0; i < 100 && (*r)->state() != LinkState::kFailed; ++i) {
    (*r)->progress(Clock::now());
    const size_t n = (*r)->rx_burst(in);
    for (size_t j = 0; j < n; ++j) in[j]->pool->free(in[j]);
    frames += n;
  }
  EXPECT_GT(frames, 0u);
  ASSERT_EQ((*r)->state(), LinkState::kFailed);
  EXPECT_NE((*r)->error().message().find("gave up"), std::string::npos) << (*r)->error().message();
}

// Drives a lone resumable sender whose connection was cut until it fails (or time is up).
Status run_until_failed(Transport& link, std::chrono::seconds limit) {
  const TimePoint give_up = Clock::now() + limit;
  while (link.state() != LinkState::kFailed && Clock::now() < give_up) {
    link.progress(Clock::now());
    std::this_thread::yield();
  }
  return link.state() == LinkState::kFailed ? link.error() : Status::ok();
}

TEST(ResumableTransport, AReceiverWithNothingToResumeEndsTheAttempts) {
  Rig rig("resume-refused");
  auto first = rig.connect_end();
  ASSERT_TRUE(first.has_value());
  ResumeOptions o = sender_options(rig);
  o.reopen = [](TimePoint) -> Result<std::unique_ptr<Transport>> {
    return Status(ErrorCode::kRefused, "rejected: nothing to resume");
  };
  auto s = make_resumable(std::move(*first), std::move(o));
  ASSERT_TRUE(s.has_value());
  rig.cut_sender_end();
  const TimePoint t0 = Clock::now();
  Status st = run_until_failed(**s, 10s);
  EXPECT_FALSE(st.is_ok());
  EXPECT_LT(Clock::now() - t0, 2s);
  EXPECT_NE(st.message().find("cut by the test"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("refused: rejected: nothing to resume"), std::string::npos)
      << st.message();
}

TEST(ResumableTransport, GivesUpAfterResumeWithin) {
  Rig rig("resume-timeout");
  auto first = rig.connect_end();
  ASSERT_TRUE(first.has_value());
  ResumeOptions o = sender_options(rig, 1s);
  std::atomic<int> attempts{0};
  o.reopen = [&attempts](TimePoint) -> Result<std::unique_ptr<Transport>> {
    ++attempts;
    return Status(ErrorCode::kIo, "no route to host");
  };
  auto s = make_resumable(std::move(*first), std::move(o));
  ASSERT_TRUE(s.has_value());
  rig.cut_sender_end();
  const TimePoint t0 = Clock::now();
  Status st = run_until_failed(**s, 10s);
  const auto took = Clock::now() - t0;
  EXPECT_FALSE(st.is_ok());
  EXPECT_GE(took, 1s);
  EXPECT_LT(took, 3s);
  EXPECT_GE(attempts.load(), 2);
  EXPECT_NE(st.message().find("not resumed within 1 s"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("no route to host"), std::string::npos) << st.message();
}

TEST(ResumableTransport, ResumeWithinZeroFailsAtOnce) {
  Rig rig("resume-off");
  auto first = rig.connect_end();
  ASSERT_TRUE(first.has_value());
  auto s = make_resumable(std::move(*first), sender_options(rig, 0s));
  ASSERT_TRUE(s.has_value());
  rig.cut_sender_end();
  (*s)->progress(Clock::now());
  EXPECT_EQ((*s)->state(), LinkState::kFailed);
  EXPECT_NE((*s)->error().message().find("cut by the test"), std::string::npos);
}

TEST(ResumableTransport, NeedsExactlyOneWayToResume) {
  Rig rig("resume-args");
  auto first = rig.connect_end();
  ASSERT_TRUE(first.has_value());
  ResumeOptions both = sender_options(rig);
  both.slot = std::make_shared<ResumeSlot>();
  EXPECT_FALSE(make_resumable(std::move(*first), std::move(both)).has_value());
  auto second = rig.connect_end();
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(make_resumable(std::move(*second), ResumeOptions{}).has_value());
}

TEST(ResumeSlot, RefusesOffersOnceClosed) {
  Rig rig("resume-slot");
  ResumeSlot slot;
  auto c = rig.connect_end();
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(slot.offer(std::move(*c)));
  EXPECT_TRUE(slot.take() != nullptr);
  EXPECT_TRUE(slot.take() == nullptr);
  slot.close();
  auto d = rig.connect_end();
  ASSERT_TRUE(d.has_value());
  EXPECT_FALSE(slot.offer(std::move(*d)));
}

}  // namespace
}  // namespace ferry::dataplane
