// dataplane/loopback/loopback_transport.cc — see loopback_transport.h.
//
// Each direction is a single-producer/single-consumer byte ring (one thread owns each end).
// Each end has an eventfd that the other end signals when it adds bytes to this end's rx
// ring, frees space in this end's tx ring, or closes; the owner polls it like a socket.
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

namespace ferry::dataplane::loopback {
namespace {

class ByteRing {
 public:
  explicit ByteRing(size_t capacity) : buf_(new uint8_t[capacity]), cap_(capacity) {}

  size_t push(const uint8_t* p, size_t n) {
    const uint64_t head = head_.load(std::memory_order_relaxed);
    const uint64_t tail = tail_.load(std::memory_order_acquire);
    n = std::min(n, cap_ - static_cast<size_t>(head - tail));
    copy_in(head, p, n);
    head_.store(head + n, std::memory_order_release);
    return n;
  }
  size_t pop(uint8_t* p, size_t n) {
    const uint64_t tail = tail_.load(std::memory_order_relaxed);
    const uint64_t head = head_.load(std::memory_order_acquire);
    n = std::min(n, static_cast<size_t>(head - tail));
    copy_out(tail, p, n);
    tail_.store(tail + n, std::memory_order_release);
    return n;
  }
  bool empty() const {
    return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire);
  }
  bool full() const {
    return head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_acquire) == cap_;
  }

 private:
  void copy_in(uint64_t at, const uint8_t* p, size_t n) {
    size_t off = at % cap_, first = std::min(n, cap_ - off);
    std::memcpy(buf_.get() + off, p, first);
    std::memcpy(buf_.get(), p + first, n - first);
  }
  void copy_out(uint64_t at, uint8_t* p, size_t n) {
    size_t off = at % cap_, first = std::min(n, cap_ - off);
    std::memcpy(p, buf_.get() + off, first);
    std::memcpy(p + first, buf_.get(), n - first);
  }

  std::unique_ptr<uint8_t[]> buf_;
  size_t cap_;
  alignas(64) std::atomic<uint64_t> head_{0};
  alignas(64) std::atomic<uint64_t> tail_{0};
};

struct Direction {
  ByteRing ring{kRingBytes};
  std::atomic<bool> closed{false};  // the writer called close_tx()
};

struct Pair {
  Direction dir[2];  // dir[i]: bytes written by end i
  int efd[2] = {-1, -1};
  std::atomic<int> ends_alive{2};
  Pair() {
    for (int& e : efd) e = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  }
  ~Pair() {
    for (int e : efd)
      if (e >= 0) ::close(e);
  }
  void wake(int end) {
    uint64_t one = 1;
    ssize_t r = ::write(efd[end], &one, sizeof one);
    (void)r;  // a full counter still wakes the poller
  }
};

class LoopbackTransport final : public Transport {
 public:
  LoopbackTransport(std::shared_ptr<Pair> pair, int end) : pair_(std::move(pair)), end_(end) {}
  ~LoopbackTransport() override {
    close_tx();
    // A vanished end is a failure for its peer unless it closed cleanly first.
    pair_->ends_alive.fetch_sub(1);
    pair_->wake(1 - end_);
  }

  const char* kind() const noexcept override { return "loopback"; }

  size_t tx_burst(std::span<const uint8_t> bytes) noexcept override {
    if (tx_closed_ || failed()) return 0;
    if (pair_->ends_alive.load() < 2) {
      error_ = Status(ErrorCode::kClosed, "loopback peer went away");
      return 0;
    }
    size_t n = pair_->dir[end_].ring.push(bytes.data(), bytes.size());
    if (n) pair_->wake(1 - end_);
    return n;
  }
  size_t rx_burst(std::span<uint8_t> out) noexcept override {
    Direction& in = pair_->dir[1 - end_];
    // Read `closed` before draining: bytes pushed before close_tx() are then all visible.
    bool closed = in.closed.load(std::memory_order_acquire);
    size_t n = in.ring.pop(out.data(), out.size());
    if (n) {
      pair_->wake(1 - end_);
    } else if (closed) {
      peer_closed_ = true;
    } else if (pair_->ends_alive.load() < 2 && in.ring.empty()) {
      error_ = Status(ErrorCode::kClosed, "loopback peer went away");
    }
    return n;
  }
  void close_tx() noexcept override {
    if (tx_closed_) return;
    tx_closed_ = true;
    pair_->dir[end_].closed.store(true, std::memory_order_release);
    pair_->wake(1 - end_);
  }
  bool peer_closed() const noexcept override { return peer_closed_; }
  bool failed() const noexcept override { return !error_.is_ok(); }
  const Status& error() const noexcept override { return error_; }
  int poll_fd() const noexcept override { return pair_->efd[end_]; }
  // The eventfd signals both "bytes arrived" and "space freed". It is edge-like (a wake may
  // have been consumed while the owner was not interested), so when what the owner wants is
  // already possible, signal it again: the owner's poll then returns at once, as it would on
  // a level-triggered socket.
  short poll_events(bool want_rx, bool want_tx) const noexcept override {
    if (!want_rx && !want_tx) return 0;
    const Direction& in = pair_->dir[1 - end_];
    const Direction& out = pair_->dir[end_];
    if ((want_rx && (!in.ring.empty() || in.closed.load() || pair_->ends_alive.load() < 2)) ||
        (want_tx && !out.ring.full())) {
      pair_->wake(end_);
    }
    return POLLIN;
  }
  void rearm() noexcept override {
    uint64_t v;
    ssize_t r = ::read(pair_->efd[end_], &v, sizeof v);
    (void)r;  // EAGAIN: nothing pending
  }

 private:
  std::shared_ptr<Pair> pair_;
  int end_;
  bool tx_closed_ = false;
  bool peer_closed_ = false;
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
  int poll_fd() const noexcept override { return efd_; }
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
  it->second->offer(pair);
  return std::unique_ptr<Transport>(new LoopbackTransport(std::move(pair), 0));
}

}  // namespace ferry::dataplane::loopback
