// pipeline/greeter_pool.cc — see internal/greeter_pool.h.
#include "pipeline/internal/greeter_pool.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include "common/clock.h"

namespace ferry::pipeline::internal {

void refuse_link(dataplane::Transport& link, const std::string& why) {
  (void)dataplane::receiver_refuse(link, why, 1000);
}

GreeterPool::GreeterPool(const dataplane::LinkSecurity* security, size_t max, int timeout_ms)
    : security_(security),
      max_(max),
      timeout_ms_(timeout_ms),
      ready_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

GreeterPool::~GreeterPool() {
  cancel();
  ::close(ready_fd_);
}

bool GreeterPool::greet(std::unique_ptr<dataplane::Transport> link) {
  std::lock_guard lk(mu_);
  if (greeters_.size() >= max_ || cancel_.load()) {
    link.reset();
    return false;
  }
  Greeter& g = greeters_.emplace_back();
  g.thread = std::thread([this, l = std::move(link), gp = &g]() mutable { run(std::move(l), gp); });
  return true;
}

// On its own thread: HELLO and TLS within the total deadline; a failure is told to the
// sender here, so that a slow stranger delays nobody else.
void GreeterPool::run(std::unique_ptr<dataplane::Transport> link, Greeter* self) {
  const TimePoint deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
  auto g = dataplane::receiver_greet(*link, security_, deadline, &cancel_);
  Greeted out;
  if (g) {
    out.greeting = std::move(*g);
    out.link = std::move(link);
  } else {
    out.refused = g.status().message();
    if (!cancel_.load()) refuse_link(*link, out.refused);
    link.reset();
  }
  std::lock_guard lk(mu_);
  ended_.push_back(std::move(out));
  self->done = true;
  uint64_t one = 1;
  ssize_t r = ::write(ready_fd_, &one, sizeof one);
  (void)r;
}

void GreeterPool::reap(bool all) {
  std::list<Greeter> ended;
  {
    std::lock_guard lk(mu_);
    for (auto it = greeters_.begin(); it != greeters_.end();) {
      auto next = std::next(it);
      if (all || it->done) ended.splice(ended.end(), greeters_, it);
      it = next;
    }
  }
  for (auto& g : ended) g.thread.join();
}

std::vector<Greeted> GreeterPool::take() {
  uint64_t drained;
  ssize_t rd = ::read(ready_fd_, &drained, sizeof drained);
  (void)rd;
  reap(false);
  std::vector<Greeted> batch;
  std::lock_guard lk(mu_);
  batch.swap(ended_);
  return batch;
}

void GreeterPool::cancel() {
  cancel_.store(true);
  reap(true);
  std::lock_guard lk(mu_);
  ended_.clear();
}

}  // namespace ferry::pipeline::internal
