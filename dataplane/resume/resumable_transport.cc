// dataplane/resume/resumable_transport.cc — see resumable_transport.h.
#include "dataplane/resume/resumable_transport.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "common/endian.h"
#include "common/log.h"
#include "dataplane/protocol.h"

namespace ferry::dataplane {

ResumeSlot::ResumeSlot() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

ResumeSlot::~ResumeSlot() {
  if (fd_ >= 0) ::close(fd_);
}

bool ResumeSlot::offer(std::unique_ptr<Transport> link) {
  std::lock_guard lk(mu_);
  if (closed_) return false;
  link_ = std::move(link);
  uint64_t one = 1;
  ssize_t r = ::write(fd_, &one, sizeof one);
  (void)r;
  return true;
}

std::unique_ptr<Transport> ResumeSlot::take() {
  std::lock_guard lk(mu_);
  uint64_t n;
  ssize_t r = ::read(fd_, &n, sizeof n);
  (void)r;
  return std::move(link_);
}

void ResumeSlot::close() {
  std::lock_guard lk(mu_);
  closed_ = true;
  link_.reset();
}

namespace {

// When a receiver acknowledges (the sender keeps frames until then).
constexpr size_t kAckEveryFrames = 32;
constexpr size_t kAckEveryBytes = 512u << 10;
constexpr auto kAckDelay = std::chrono::milliseconds(10);
constexpr size_t kAckFrameSize = kFrameHeaderSize + 8;
// Buffers of the owner's pool: those in flight until acknowledged, plus the owner's queue.
constexpr size_t kMinPoolFrames = 256;
// A receiver looks for a new connection this often even while its link seems alive (the
// sender may notice a failure first).
constexpr auto kSlotPoll = std::chrono::milliseconds(100);
// How long a link that goes away waits for its GONE frame to leave.
constexpr int kGoodbyeMs = 200;
// A sender's attempts: each bounded, then a growing pause.
constexpr auto kAttemptMax = std::chrono::seconds(3);
constexpr std::chrono::milliseconds kBackoff[] = {
    std::chrono::milliseconds(100), std::chrono::milliseconds(250), std::chrono::milliseconds(500),
    std::chrono::milliseconds(1000)};

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The sequence numbers of the first and last data frame of a buffer (whole frames, as the
// owner wrote them), and whether the last is END; false when it holds none.
bool frame_range(const FrameBuf& b, uint64_t& first, uint64_t& last, bool& end) {
  bool any = false;
  for (size_t pos = 0; pos + kFrameHeaderSize <= b.len;) {
    auto h = parse_frame_header(b.data + pos);
    if (!h) break;
    if (!any) first = h->seq;
    last = h->seq;
    end = h->type == FrameType::kEnd;
    any = true;
    pos += kFrameHeaderSize + h->len;
  }
  return any;
}

// The offset of the first frame of b with seq >= from (b.len when none).
size_t offset_of(const FrameBuf& b, uint64_t from) {
  size_t pos = 0;
  while (pos + kFrameHeaderSize <= b.len) {
    auto h = parse_frame_header(b.data + pos);
    if (!h || h->seq >= from) break;
    pos += kFrameHeaderSize + h->len;
  }
  return std::min<size_t>(pos, b.len);
}

class ResumableTransport final : public Transport {
 public:
  ResumableTransport(std::unique_ptr<Transport> first, std::unique_ptr<FramePool> pool,
                     ResumeOptions options)
      : pool_(std::move(pool)),
        opt_(std::move(options)),
        kind_(first->kind()),
        caps_(first->caps()),
        inner_(std::move(first)),
        wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    caps_.reliable = true;
    caps_.ordered = true;
    caps_.registered = false;
    caps_.max_frame = pool_->frame_capacity();
    caps_.tx_done = "acknowledged by the peer (kept until then, to replay on a new connection)";
    if (opt_.first_resumes && opt_.reopen) {
      phase_ = Phase::kGreeting;
      ++resumes_;
      send_ack();
    }
  }

  ~ResumableTransport() override {
    say_goodbye();
    if (opt_.slot) opt_.slot->close();
    cancel_attempt();
    ::close(wake_fd_);
  }

  const char* kind() const noexcept override { return kind_; }
  TransportCaps caps() const noexcept override { return caps_; }
  FramePool& pool() noexcept override { return *pool_; }

  size_t tx_burst(std::span<FrameBuf* const> frames) noexcept override {
    if (phase_ == Phase::kFailed || closed_tx_) return 0;
    for (FrameBuf* f : frames) {
      Held h{f, 0, 0};
      bool end = false;
      if (!frame_range(*f, h.first, h.last, end)) h.first = h.last = last_tx_seq_;
      if (end) end_seq_ = h.last;
      last_tx_seq_ = h.last;
      held_.push_back(h);
      held_bytes_ += f->len;
      unsent_bytes_ += f->len;
    }
    send_held();
    return frames.size();
  }

  size_t reap_tx(std::span<FrameBuf*> out) noexcept override {
    size_t n = 0;
    while (n < out.size() && next_send_ > 0 && held_.front().last < peer_next_) {
      out[n++] = held_.front().buf;
      held_bytes_ -= held_.front().buf->len;
      held_.pop_front();
      --next_send_;
    }
    return n;
  }

  size_t rx_burst(std::span<FrameBuf*> out) noexcept override {
    if (!inner_ || phase_ == Phase::kFailed) return 0;
    const size_t got = inner_->rx_burst(out);
    size_t kept = 0;
    for (size_t i = 0; i < got; ++i) {
      FrameBuf* b = out[i];
      filter(*b);
      if (b->len == 0) {
        b->pool->free(b);
      } else {
        out[kept++] = b;
      }
    }
    if (peer_gone_ && phase_ != Phase::kFailed) {
      fail(Status(ErrorCode::kClosed, std::string(opt_.peer_name) +
                                          " gave up on the migration (it failed or was "
                                          "stopped; its log says why)"));
      return kept;
    }
    if (ack_pending_) {
      send_ack();
    } else if (got) {
      if (peer_end_ || unacked_frames_ >= kAckEveryFrames || unacked_bytes_ >= kAckEveryBytes) {
        send_ack();
      } else if (unacked_frames_ && ack_due_ == kNever) {
        ack_due_ = Clock::now() + kAckDelay;
      }
    }
    return kept;
  }

  size_t progress(TimePoint now) noexcept override {
    if (phase_ == Phase::kFailed) return 0;
    size_t work = 0;
    if (opt_.slot && phase_ != Phase::kDown && now >= next_slot_poll_) {
      next_slot_poll_ = now + kSlotPoll;
      // The sender noticed a failure first and came back on a new connection.
      if (auto link = opt_.slot->take()) {
        retire_inner();
        install(std::move(link), now);
        ++work;
      }
    }
    if (inner_) {
      work += inner_->progress(now);
      FrameBuf* done[32];
      for (size_t n; (n = inner_->reap_tx(done)) > 0; work += n) {
        for (size_t i = 0; i < n; ++i) inner_->pool().free(done[i]);
      }
      if (inner_->state() == LinkState::kFailed && exchange_complete()) {
        // Both ENDs arrived and were acknowledged: a connection that breaks now (the peer
        // exited before its transport said goodbye) loses nothing.
        completed_ = true;
        return work + 1;
      }
      if (inner_->state() == LinkState::kFailed) {
        lose_link(inner_->error(), now);
        ++work;
      } else if (phase_ == Phase::kGreeting && inner_->state() == LinkState::kPeerClosed) {
        fail(Status(ErrorCode::kClosed,
                    std::string(opt_.peer_name) + " closed the new connection before resuming"));
        return work + 1;
      }
    }
    if (phase_ == Phase::kDown) work += try_resume(now);
    if (phase_ == Phase::kFailed || !inner_) return work;
    if (ack_pending_ || (ack_due_ != kNever && now >= ack_due_)) send_ack();
    if (phase_ == Phase::kLive) {
      work += send_held();
      // The connection's own end goes last, once the peer's END arrived and was acknowledged:
      // nothing can follow it, not even that ACK, and without it the peer cannot tell a
      // completed exchange from a connection lost with our END.
      if (closed_tx_ && !inner_closed_ && next_send_ == held_.size() && peer_end_ &&
          unacked_frames_ == 0 && !ack_pending_) {
        inner_->close_tx();
        inner_closed_ = true;
      }
    }
    return work;
  }

  TimePoint next_deadline() const noexcept override {
    TimePoint t = ack_due_;
    if (inner_) t = std::min(t, inner_->next_deadline());
    if (phase_ == Phase::kDown) {
      t = std::min(t, give_up_at_);
      if (opt_.reopen && !attempt_.joinable()) t = std::min(t, next_attempt_);
    } else if (opt_.slot && phase_ != Phase::kFailed) {
      t = std::min(t, next_slot_poll_);
    }
    return t;
  }

  void close_tx() noexcept override { closed_tx_ = true; }

  LinkState state() const noexcept override {
    if (phase_ == Phase::kFailed) return LinkState::kFailed;
    if (completed_) return LinkState::kPeerClosed;
    // A peer that closed ended on purpose (after its END, or it failed and exited): nothing
    // to resume.
    if (inner_ && phase_ == Phase::kLive && inner_->state() == LinkState::kPeerClosed) {
      return LinkState::kPeerClosed;
    }
    return LinkState::kOpen;
  }
  const Status& error() const noexcept override { return error_; }

  size_t tx_in_flight_bytes() const noexcept override {
    const size_t below = inner_ ? inner_->tx_in_flight_bytes() : 0;
    // After close_tx the owner waits for its end to be acknowledged, and for the connection
    // to close its side (the peer learns that it ended from the transport too).
    if (closed_tx_) return held_bytes_ + below + (inner_closed_ ? 0 : 1);
    return unsent_bytes_ + below;
  }
  size_t tx_unsent_bytes() const noexcept override {
    return unsent_bytes_ + (inner_ ? inner_->tx_unsent_bytes() : 0);
  }

  int wait_fd() const noexcept override {
    if (phase_ == Phase::kDown) return opt_.slot ? opt_.slot->wake_fd() : wake_fd_;
    return inner_ ? inner_->wait_fd() : -1;
  }
  uint32_t wait_events(bool want_rx, bool want_tx) const noexcept override {
    if (phase_ == Phase::kDown) return kWaitReadable;
    if (!inner_ || phase_ == Phase::kFailed) return 0;
    const bool more = (phase_ == Phase::kLive && next_send_ < held_.size()) || ack_pending_;
    return inner_->wait_events(want_rx || phase_ == Phase::kGreeting, want_tx || more);
  }

  void set_buffer_hint(size_t bytes) noexcept override {
    buffer_hint_ = bytes;
    if (inner_) inner_->set_buffer_hint(bytes);
  }
  void set_unsent_limit(size_t bytes) noexcept override {
    unsent_limit_ = bytes;
    if (inner_) inner_->set_unsent_limit(bytes);
  }
  double min_rtt_s() const noexcept override { return inner_ ? inner_->min_rtt_s() : 0; }
  void set_pacing_rate(double bytes_per_s) noexcept override {
    pacing_rate_ = bytes_per_s;
    if (inner_) inner_->set_pacing_rate(bytes_per_s);
  }

  json::Value link_stats() const override {
    json::Value v = inner_ ? inner_->link_stats() : json::Value();
    if (!v.is_object()) v = json::Value::object();
    v.set("resumes", resumes_);
    v.set("replayed_bytes", replayed_bytes_);
    v.set("link_down_s", down_total_s_);
    return v;
  }
  uint64_t resumes() const noexcept override { return resumes_; }
  uint64_t retransmits() const noexcept override {
    return old_retransmits_ + (inner_ ? inner_->retransmits() : 0);
  }

 private:
  enum class Phase : uint8_t {
    kLive,      // frames flow
    kGreeting,  // a new connection: the peer's ACK has not come yet (no data until then)
    kDown,      // no connection: waiting for a new one
    kFailed,    // given up: error()
  };
  struct Held {
    FrameBuf* buf;
    uint64_t first, last;  // its frames' sequence numbers
  };

  // Drops the frames of b this side already has, takes the peer's ACKs out, and counts the
  // rest toward our next ACK.
  void filter(FrameBuf& b) {
    size_t in = 0, out = 0;
    while (in + kFrameHeaderSize <= b.len) {
      auto h = parse_frame_header(b.data + in);
      if (!h || in + kFrameHeaderSize + h->len > b.len) break;  // the owner's checks report it
      const size_t n = kFrameHeaderSize + h->len;
      bool keep = true;
      if (h->type == FrameType::kAck) {
        if (h->len == 8) on_peer_ack(load_be64(b.data + in + kFrameHeaderSize));
        keep = false;
      } else if (h->type == FrameType::kGone) {
        peer_gone_ = true;
        keep = false;
      } else if (h->seq < rx_next_) {
        keep = false;  // already here (replay starts at our ACK, so only a confused peer)
      } else {
        if (h->seq == rx_next_) ++rx_next_;
        if (h->type == FrameType::kEnd) peer_end_ = true;
        ++unacked_frames_;
        unacked_bytes_ += n;
      }
      if (keep && out != in) std::memmove(b.data + out, b.data + in, n);
      if (keep) out += n;
      in += n;
    }
    if (in < b.len && out != in) std::memmove(b.data + out, b.data + in, b.len - in);
    b.len = static_cast<uint32_t>(out + (b.len - in));
  }

  void on_peer_ack(uint64_t next) {
    if (next > peer_next_) peer_next_ = next;
    if (phase_ == Phase::kGreeting) {
      // Replay from what the peer has: everything kept goes again, minus what it acknowledged.
      phase_ = Phase::kLive;
      next_send_ = 0;
      unsent_bytes_ = held_bytes_;
      replaying_ = true;
      if (opt_.slot) ack_pending_ = true;  // the receiver's answer (install())
    }
  }

  // Copies kept frames not yet on the current connection into its buffers, in order.
  size_t send_held() noexcept {
    if (phase_ != Phase::kLive || !inner_) return 0;
    size_t sent = 0;
    while (next_send_ < held_.size()) {
      FrameBuf* burst[32];
      size_t m = 0, from = next_send_;
      for (size_t i = from; i < held_.size() && m < 32; ++i) {
        const Held& h = held_[i];
        const size_t skip = h.first < peer_next_ ? offset_of(*h.buf, peer_next_) : 0;
        const size_t len = h.buf->len - skip;
        if (len == 0) {  // the peer has all of it
          if (m == 0) {
            unsent_bytes_ -= h.buf->len;
            ++next_send_;
            ++from;
            continue;
          }
          break;
        }
        FrameBuf* b = inner_->pool().alloc();
        if (!b) break;
        if (b->cap < len) {  // cannot happen: both pools come from the same backend
          inner_->pool().free(b);
          fail(Status(ErrorCode::kInternal, "resume: a frame larger than the link's buffers"));
          return sent;
        }
        std::memcpy(b->data, h.buf->data + skip, len);
        b->len = static_cast<uint32_t>(len);
        burst[m++] = b;
        if (replaying_) replayed_bytes_ += len;
      }
      if (m == 0) break;
      const size_t took = inner_->tx_burst({burst, m});
      for (size_t i = took; i < m; ++i) inner_->pool().free(burst[i]);
      for (size_t i = 0; i < took; ++i) unsent_bytes_ -= held_[from + i].buf->len;
      next_send_ = from + took;
      sent += took;
      if (took < m) break;
    }
    if (next_send_ == held_.size()) replaying_ = false;
    return sent;
  }

  void send_ack() noexcept {
    if (!inner_ || phase_ == Phase::kDown || phase_ == Phase::kFailed) return;
    if (inner_closed_) return;
    if (phase_ == Phase::kGreeting && opt_.slot) {
      // A receiver never speaks first on a new connection (install()), not even to acknowledge
      // what came on the old one: its answer to the sender's ACK covers that.
      ack_pending_ = false;
      ack_due_ = kNever;
      return;
    }
    ack_pending_ = true;
    FrameBuf* b = inner_->pool().alloc();
    if (!b) return;
    uint8_t next[8];
    store_be64(next, rx_next_);
    std::memcpy(b->data + kFrameHeaderSize, next, sizeof next);
    encode_frame_header(FrameType::kAck, 0, next, sizeof next, b->data);
    b->len = kAckFrameSize;
    if (inner_->tx_burst({&b, 1}) == 0) {
      inner_->pool().free(b);
      return;
    }
    ack_pending_ = false;
    unacked_frames_ = 0;
    unacked_bytes_ = 0;
    ack_due_ = kNever;
  }

  // Going away before the exchange completed (a failure, an abort, a cancel): tells the peer,
  // which then fails at once instead of waiting --resume-within for a new connection. (A
  // killed process cannot; its peer waits.)
  void say_goodbye() noexcept {
    if (!inner_ || (phase_ != Phase::kLive && phase_ != Phase::kGreeting) || completed_ ||
        exchange_complete() || inner_->state() != LinkState::kOpen) {
      return;
    }
    FrameBuf* b = inner_->pool().alloc();
    if (!b) return;
    encode_frame_header(FrameType::kGone, 0, b->payload(), 0, b->data);
    b->len = kFrameHeaderSize;
    if (inner_->tx_burst({&b, 1}) == 0) {
      inner_->pool().free(b);
      return;
    }
    (void)drain_tx(*inner_, kGoodbyeMs);
    // Unread bytes would make the kernel reset the connection and drop what it still holds.
    FrameBuf* in[32];
    for (int i = 0; i < 64; ++i) {
      const size_t n = inner_->rx_burst(in);
      if (n == 0) break;
      for (size_t j = 0; j < n; ++j) in[j]->pool->free(in[j]);
    }
  }

  // Each side's END arrived and was acknowledged: nothing is left to replay either way.
  bool exchange_complete() const {
    return peer_end_ && end_seq_ != 0 && peer_next_ > end_seq_ && !ack_pending_;
  }

  void fail(Status why) {
    phase_ = Phase::kFailed;
    error_ = std::move(why);
    if (opt_.slot) opt_.slot->close();
  }

  void retire_inner() {
    if (!inner_) return;
    old_retransmits_ += inner_->retransmits();
    // The owner may still hold frames received from it: its buffers stay until we go.
    dead_.push_back(std::move(inner_));
  }

  void lose_link(const Status& why, TimePoint now) {
    retire_inner();
    // Only a connection that broke is replaced. Bytes that failed authentication or are not
    // ferry frames mean something on the path changes them: that is reported, not resumed.
    if (opt_.within.count() == 0 || why.code() == ErrorCode::kAuth ||
        why.code() == ErrorCode::kProtocol) {
      fail(why);
      return;
    }
    if (phase_ != Phase::kDown) {
      FERRY_LOG_INFO("link to %s broke (%s); resuming on a new connection within %lld s",
                     opt_.peer_name, why.message().c_str(),
                     static_cast<long long>(opt_.within.count()));
      phase_ = Phase::kDown;
      down_since_ = now;
      give_up_at_ = now + opt_.within;
      lost_because_ = why.message();
      attempts_ = 0;
      next_attempt_ = now;
      last_attempt_error_.clear();
    }
  }

  // Down: a new connection (the sender's attempt, or the receiver's slot), or the end of the
  // grace period.
  size_t try_resume(TimePoint now) {
    std::unique_ptr<Transport> link;
    if (opt_.slot) {
      link = opt_.slot->take();
    } else if (attempt_.joinable()) {
      std::unique_lock lk(attempt_mu_);
      if (attempt_done_) {
        lk.unlock();
        attempt_.join();
        uint64_t n;
        ssize_t r = ::read(wake_fd_, &n, sizeof n);
        (void)r;
        if (attempt_result_) {
          link = std::move(*attempt_result_);
        } else {
          last_attempt_error_ = attempt_result_.status().message();
          if (attempt_result_.status().code() == ErrorCode::kRefused) {
            fail(Status(ErrorCode::kClosed,
                        lost_because_ + "; a new connection was refused: " + last_attempt_error_));
            return 1;
          }
          next_attempt_ = now + kBackoff[std::min(attempts_, std::size(kBackoff) - 1)];
        }
      }
    } else if (now >= next_attempt_ && now < give_up_at_) {
      start_attempt(now);
      return 1;
    }
    if (link) {
      FERRY_LOG_INFO("link to %s resumed on a new connection after %.1f s", opt_.peer_name,
                     seconds(now - down_since_));
      down_total_s_ += seconds(now - down_since_);
      install(std::move(link), now);
      return 1;
    }
    if (now >= give_up_at_) {
      cancel_attempt();
      std::string why = lost_because_ + "; not resumed within " +
                        std::to_string(opt_.within.count()) + " s (--resume-within)";
      if (!last_attempt_error_.empty()) why += "; the last attempt: " + last_attempt_error_;
      fail(Status(ErrorCode::kClosed, why));
      return 1;
    }
    return 0;
  }

  void start_attempt(TimePoint now) {
    ++attempts_;
    attempt_done_ = false;
    const TimePoint deadline = std::min(give_up_at_, now + kAttemptMax);
    attempt_ = std::thread([this, deadline] {
      auto r = opt_.reopen(deadline);
      std::lock_guard lk(attempt_mu_);
      attempt_result_ = std::move(r);
      attempt_done_ = true;
      uint64_t one = 1;
      ssize_t w = ::write(wake_fd_, &one, sizeof one);
      (void)w;
    });
  }

  void cancel_attempt() {
    // An attempt is bounded (kAttemptMax); its connection, if any, is dropped.
    if (attempt_.joinable()) attempt_.join();
  }

  void install(std::unique_ptr<Transport> link, TimePoint now) {
    inner_ = std::move(link);
    if (buffer_hint_) inner_->set_buffer_hint(buffer_hint_);
    if (unsent_limit_) inner_->set_unsent_limit(unsent_limit_);
    if (pacing_rate_ > 0) inner_->set_pacing_rate(pacing_rate_);
    inner_closed_ = false;
    phase_ = Phase::kGreeting;
    ++resumes_;
    next_slot_poll_ = now + kSlotPoll;
    // The first frame on a new connection: where the peer must resume. The sender's goes at
    // once; the receiver answers it. A receiver never speaks first after ACCEPT: the sender's
    // handshake reads up to ACCEPT, and a frame that arrived with it would be lost.
    if (opt_.reopen) send_ack();
  }

  // Declared first, destroyed last: the owner's buffers (held_) live in it.
  std::unique_ptr<FramePool> pool_;
  ResumeOptions opt_;
  const char* kind_;
  TransportCaps caps_;
  std::vector<std::unique_ptr<Transport>> dead_;
  std::unique_ptr<Transport> inner_;
  Phase phase_ = Phase::kLive;
  Status error_;

  // toward the peer: every frame not yet acknowledged, in order; [next_send_, end) are not on
  // the current connection yet
  std::deque<Held> held_;
  size_t next_send_ = 0;
  size_t held_bytes_ = 0, unsent_bytes_ = 0;
  uint64_t last_tx_seq_ = kFirstDataSeq - 1;
  uint64_t end_seq_ = 0;                // our END's seq, once sent
  uint64_t peer_next_ = kFirstDataSeq;  // the peer has every frame below
  bool replaying_ = false;
  bool closed_tx_ = false, inner_closed_ = false;
  size_t buffer_hint_ = 0, unsent_limit_ = 0;
  double pacing_rate_ = 0;

  // from the peer
  uint64_t rx_next_ = kFirstDataSeq;  // we have every frame below
  bool peer_end_ = false;
  bool completed_ = false;  // exchange_complete() when the connection broke
  bool peer_gone_ = false;  // the peer sent GONE
  size_t unacked_frames_ = 0, unacked_bytes_ = 0;
  TimePoint ack_due_ = kNever;
  bool ack_pending_ = false;

  // down
  TimePoint down_since_{}, give_up_at_ = kNever, next_attempt_{}, next_slot_poll_{};
  std::string lost_because_, last_attempt_error_;
  size_t attempts_ = 0;
  std::thread attempt_;
  std::mutex attempt_mu_;
  bool attempt_done_ = false;
  Result<std::unique_ptr<Transport>> attempt_result_{Status(ErrorCode::kInternal, "")};
  int wake_fd_ = -1;  // eventfd: an attempt ended

  uint64_t resumes_ = 0, replayed_bytes_ = 0, old_retransmits_ = 0;
  double down_total_s_ = 0;
};

}  // namespace

Result<std::unique_ptr<Transport>> make_resumable(std::unique_ptr<Transport> first,
                                                  ResumeOptions options) {
  if (!first || (!options.reopen == !options.slot)) {
    return Status(ErrorCode::kInvalidArgument,
                  "resumable link: give a link and exactly one of a way to reopen it (sender) or "
                  "a slot for new connections (receiver)");
  }
  auto pool = FramePool::create({.frames = std::max(first->pool().size(), kMinPoolFrames),
                                 .frame_capacity = first->pool().frame_capacity()});
  if (!pool) return pool.status();
  return std::unique_ptr<Transport>(
      new ResumableTransport(std::move(first), std::move(*pool), std::move(options)));
}

}  // namespace ferry::dataplane
