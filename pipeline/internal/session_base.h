// pipeline/internal/session_base.h — what SendSession and RecvSession share: the channel set,
// the thread that accepts channels, its stop signal and outcome, and the latch that says the
// session ended.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "pipeline/channel_set.h"

namespace ferry::pipeline::internal {

// The accept loops' longest single wait.
inline constexpr int kAcceptPollMs = 1000;

// "This session has ended", set once by the thread that ends it, awaited (with a timeout, so a
// caller can show progress meanwhile) by another.
class DoneLatch {
 public:
  void set() {
    {
      std::lock_guard lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
  }
  bool is_set() const {
    std::lock_guard lk(mu_);
    return done_;
  }
  // True once set; false when timeout passed first.
  bool wait_for(std::chrono::milliseconds timeout) const {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [this] { return done_; });
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool done_ = false;
};

class SessionBase {
 public:
  SessionBase(const SessionBase&) = delete;
  SessionBase& operator=(const SessionBase&) = delete;

  // Blocks until every channel ended (or the session failed and was stopped). Returns "" on
  // success, else the first error as one sentence. tick, when given, runs on the calling
  // thread about once a second meanwhile (a progress line).
  std::string wait(const std::function<void()>& tick = nullptr);
  // Non-blocking: the session has ended (wait() would return at once).
  bool done() const { return done_.is_set(); }
  // Stops the session now (a policy decision, a signal): QEMU sees its migration fail.
  void abort();

  ChannelSet& channels() { return set_; }

 protected:
  SessionBase(PumpRole role, dataplane::PollMode mode);
  // Closes the stop signal; a derived destructor stops and joins the acceptor first (it runs
  // the derived class's members).
  ~SessionBase();
  // abort() and join the acceptor.
  void stop();

  ChannelSet set_;
  std::thread acceptor_;
  int stop_fd_ = -1;   // eventfd: ends the accept loop early
  std::string error_;  // written by the accept thread before it ends
  DoneLatch done_;
};

}  // namespace ferry::pipeline::internal
