// pipeline/internal/done_latch.h — "this session has ended", set once by the thread that ends
// it, awaited (with a timeout, so a caller can show progress meanwhile) by another.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace ferry::pipeline::internal {

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

}  // namespace ferry::pipeline::internal
