// dataplane/loopback/loopback_transport.cc — see loopback_transport.h.
//
// Each direction is a pair of single-producer/single-consumer rings of frame pointers: the
// writer pushes its pool buffers, the reader copies each into its own pool and pushes the
// pointer back, which is the writer's "transmit done" (as a NIC's completion would be). No fd
// signals anything: the owner polls, and an idle adaptive engine sleeps briefly between polls.
#include "dataplane/loopback/loopback_transport.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>

#include "common/spsc_ring.h"

namespace ferry::dataplane::loopback {
namespace {

// An idle end is polled again after this long: the ring has no fd to sleep on.
constexpr auto kIdlePoll = std::chrono::microseconds(200);

struct Direction {
  SpscRing<FrameBuf*> frames{kRingFrames};  // writer -> reader
  SpscRing<FrameBuf*> done{kRingFrames};    // reader -> writer: copied, reusable
  std::atomic<bool> closed{false};          // the writer called close_tx()
};

// Both ends' pools live here, so a frame still in a ring outlives the end that sent it.
struct Pair {
  Direction dir[2];  // dir[i]: frames written by end i
  std::unique_ptr<FramePool> pool[2];
  std::atomic<int> ends_alive{2};
};

class LoopbackTransport final : public Transport {
 public:
  LoopbackTransport(std::shared_ptr<Pair> pair, int end) : pair_(std::move(pair)), end_(end) {}
  ~LoopbackTransport() override {
    close_tx();
    pair_->ends_alive.fetch_sub(1);
  }

  const char* kind() const noexcept override { return "loopback"; }
  TransportCaps caps() const noexcept override {
    TransportCaps c;
    c.max_frame = pool().frame_capacity();
    c.reliable = true;
    c.ordered = true;
    c.tx_done = "copied by the peer";
    return c;
  }
  FramePool& pool() noexcept override { return *pair_->pool[end_]; }
  const FramePool& pool() const noexcept { return *pair_->pool[end_]; }

  size_t tx_burst(std::span<FrameBuf* const> frames) noexcept override {
    if (tx_closed_ || !error_.is_ok()) return 0;
    if (pair_->ends_alive.load() < 2) {
      error_ = Status(ErrorCode::kClosed, "loopback peer went away");
      return 0;
    }
    size_t n = 0;
    while (n < frames.size() && pair_->dir[end_].frames.try_push(frames[n])) {
      in_flight_ += frames[n]->len;
      ++n;
    }
    return n;
  }
  size_t reap_tx(std::span<FrameBuf*> out) noexcept override {
    size_t n = 0;
    while (n < out.size() && pair_->dir[end_].done.try_pop(out[n])) in_flight_ -= out[n++]->len;
    return n;
  }
  size_t rx_burst(std::span<FrameBuf*> out) noexcept override {
    Direction& in = pair_->dir[1 - end_];
    // Read `closed` before draining: frames pushed before close_tx() are then all visible.
    const bool closed = in.closed.load(std::memory_order_acquire);
    size_t n = 0;
    FrameBuf* peer = nullptr;
    while (n < out.size() && pool().available() && in.frames.try_pop(peer)) {
      FrameBuf* mine = pool().alloc();
      std::memcpy(mine->data, peer->data, peer->len);
      mine->len = peer->len;
      // The done ring holds as many slots as the frame ring: it cannot be full here.
      (void)in.done.try_push(peer);
      out[n++] = mine;
    }
    if (n == 0 && in.frames.empty()) {
      if (closed) {
        peer_closed_ = true;
      } else if (pair_->ends_alive.load() < 2 && error_.is_ok()) {
        error_ = Status(ErrorCode::kClosed, "loopback peer went away");
      }
    }
    return n;
  }
  void close_tx() noexcept override {
    if (tx_closed_) return;
    tx_closed_ = true;
    pair_->dir[end_].closed.store(true, std::memory_order_release);
  }
  size_t progress(TimePoint now) noexcept override {
    last_now_ = now;
    return 0;
  }
  TimePoint next_deadline() const noexcept override { return last_now_ + kIdlePoll; }

  LinkState state() const noexcept override {
    return !error_.is_ok() ? LinkState::kFailed
                           : (peer_closed_ ? LinkState::kPeerClosed : LinkState::kOpen);
  }
  const Status& error() const noexcept override { return error_; }
  size_t tx_in_flight_bytes() const noexcept override { return in_flight_; }
  int wait_fd() const noexcept override { return -1; }
  uint32_t wait_events(bool, bool) const noexcept override { return 0; }

 private:
  std::shared_ptr<Pair> pair_;
  int end_;
  bool tx_closed_ = false;
  bool peer_closed_ = false;
  size_t in_flight_ = 0;
  TimePoint last_now_{};
  Status error_;
};

// Listeners by name, for connect(). Control path only.
class LoopbackListener;
std::mutex g_mu;
std::map<std::string, LoopbackListener*> g_listeners;

class LoopbackListener final : public Listener {
 public:
  explicit LoopbackListener(std::string name)
      : name_(std::move(name)), efd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~LoopbackListener() override {
    std::lock_guard lk(g_mu);
    g_listeners.erase(name_);
    ::close(efd_);
  }

  Result<std::unique_ptr<Transport>> accept(int timeout_ms) override {
    std::unique_lock lk(g_mu);
    auto ready = [&] { return !pending_.empty(); };
    if (timeout_ms < 0) {
      cv_.wait(lk, ready);
    } else if (!cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), ready)) {
      return error(ErrorCode::kTimeout, "no loopback peer on " + name_);
    }
    auto pair = pending_.front();
    pending_.pop_front();
    uint64_t v;
    ssize_t r = ::read(efd_, &v, sizeof v);
    (void)r;
    if (!pending_.empty()) {
      uint64_t one = 1;
      r = ::write(efd_, &one, sizeof one);
    }
    return std::unique_ptr<Transport>(new LoopbackTransport(std::move(pair), 1));
  }
  int wait_fd() const noexcept override { return efd_; }
  std::string where() const override { return "loopback:" + name_; }

  // Called with g_mu held.
  void offer(std::shared_ptr<Pair> pair) {
    pending_.push_back(std::move(pair));
    uint64_t one = 1;
    ssize_t r = ::write(efd_, &one, sizeof one);
    (void)r;
    cv_.notify_one();
  }

 private:
  std::string name_;
  int efd_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Pair>> pending_;
};

}  // namespace

Result<std::unique_ptr<Listener>> listen(const std::string& name) {
  std::lock_guard lk(g_mu);
  if (g_listeners.count(name)) {
    return error(ErrorCode::kInvalidArgument, "loopback:" + name + " is already listening");
  }
  auto* l = new LoopbackListener(name);
  g_listeners[name] = l;
  return std::unique_ptr<Listener>(l);
}

Result<std::unique_ptr<Transport>> connect(const std::string& name, int /*timeout_ms*/) {
  std::lock_guard lk(g_mu);
  auto it = g_listeners.find(name);
  if (it == g_listeners.end()) {
    return error(ErrorCode::kClosed, "nothing listens on loopback:" + name);
  }
  auto pair = std::make_shared<Pair>();
  for (auto& pool : pair->pool) {
    auto p = FramePool::create({.frames = kPoolFrames});
    if (!p) return p.status();
    pool = std::move(*p);
  }
  it->second->offer(pair);
  return std::unique_ptr<Transport>(new LoopbackTransport(std::move(pair), 0));
}

}  // namespace ferry::dataplane::loopback
