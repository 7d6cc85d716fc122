// common/fork_join.h — run one function on N threads at once and wait for all of them.
//
// For work split into a fixed number of independent parts per call (ferry send's encode
// shards): the caller's thread runs part 0, N-1 long-lived threads run parts 1..N-1, and run()
// returns when every part finished. Threads sleep between calls (no spinning: the host's
// cores are shared with the guest). Not reentrant; one caller thread at a time.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ferry {

class ForkJoin {
 public:
  explicit ForkJoin(unsigned parts);
  ~ForkJoin();
  ForkJoin(const ForkJoin&) = delete;
  ForkJoin& operator=(const ForkJoin&) = delete;

  unsigned parts() const { return parts_; }
  // Calls fn(0) .. fn(parts - 1) concurrently; returns when all returned.
  void run(const std::function<void(unsigned part)>& fn);

 private:
  void worker(unsigned part);

  unsigned parts_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(unsigned)>* fn_ = nullptr;
  uint64_t generation_ = 0;
  unsigned pending_ = 0;
  bool quit_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace ferry
