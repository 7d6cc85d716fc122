// common/fork_join.cc — see fork_join.h.
#include "common/fork_join.h"

namespace ferry {

ForkJoin::ForkJoin(unsigned parts) : parts_(parts == 0 ? 1 : parts) {
  threads_.reserve(parts_ - 1);
  for (unsigned p = 1; p < parts_; ++p) threads_.emplace_back([this, p] { worker(p); });
}

ForkJoin::~ForkJoin() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ForkJoin::run(const std::function<void(unsigned)>& fn) {
  if (parts_ == 1) {
    fn(0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    pending_ = parts_ - 1;
    ++generation_;
  }
  start_cv_.notify_all();
  fn(0);
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return pending_ == 0; });
  fn_ = nullptr;
}

void ForkJoin::worker(unsigned part) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(unsigned)>* fn;
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return quit_ || generation_ != seen; });
      if (quit_) return;
      seen = generation_;
      fn = fn_;
    }
    (*fn)(part);
    std::lock_guard<std::mutex> lock(mu_);
    if (--pending_ == 0) done_cv_.notify_one();
  }
}

}  // namespace ferry
