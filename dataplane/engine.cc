// dataplane/engine.cc — see engine.h.
#include "dataplane/engine.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "dataplane/transport.h"

namespace ferry::dataplane {

Result<PollMode> parse_poll_mode(const std::string& text) {
  if (text == "adaptive") return PollMode::kAdaptive;
  if (text == "busy") return PollMode::kBusy;
  return error(ErrorCode::kInvalidArgument,
               "unknown polling mode '" + text +
                   "' (adaptive: spin while there is work, then sleep; busy: never sleep)");
}

const char* poll_mode_name(PollMode mode) { return mode == PollMode::kBusy ? "busy" : "adaptive"; }

void WaitSet::add(int fd, uint32_t events) {
  if (fd < 0 || events == 0) return;
  for (auto& e : entries_) {
    if (e.fd == fd) {
      e.events |= events;
      return;
    }
  }
  entries_.push_back({fd, events});
}

Engine::Engine(EngineOptions options) : options_(options) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

Engine::~Engine() {
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Engine::add(Poller& poller) { pollers_.push_back(&poller); }

void Engine::stop() noexcept {
  stop_.store(true, std::memory_order_relaxed);
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(wake_fd_, &one, sizeof one);
  }
}

void Engine::run() {
  unsigned idle_run = 0;
  while (!pollers_.empty() && !stopping()) {
    const TimePoint now = Clock::now();
    size_t work = 0;
    for (Poller* p : pollers_) work += p->poll(now);
    std::erase_if(pollers_, [](Poller* p) { return p->finished(); });
    counters_.iterations.fetch_add(1, std::memory_order_relaxed);
    if (work) {
      idle_run = 0;
      continue;
    }
    counters_.idle_iterations.fetch_add(1, std::memory_order_relaxed);
    if (options_.mode == PollMode::kBusy || ++idle_run < options_.spin_idle) continue;
    idle_run = 0;
    if (!pollers_.empty()) sleep_until_work(now);
  }
}

// Sleeps on every poller's fds until one is ready, the earliest deadline, stop(), or
// max_sleep, whichever comes first. Readiness is a hint: the next iteration polls everyone.
void Engine::sleep_until_work(TimePoint now) {
  waits_.clear();
  for (Poller* p : pollers_) p->add_waits(waits_);
  TimePoint until = std::min(waits_.earliest(), now + options_.max_sleep);
  if (until <= now) return;
  pollfd fds[64];
  nfds_t n = 0;
  fds[n++] = {wake_fd_, POLLIN, 0};
  for (const auto& e : waits_.entries()) {
    if (n == std::size(fds)) break;  // more fds than this: max_sleep bounds the wait anyway
    short ev = static_cast<short>(((e.events & kWaitReadable) ? POLLIN : 0) |
                                  ((e.events & kWaitWritable) ? POLLOUT : 0));
    fds[n++] = {e.fd, ev, 0};
  }
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(until - now).count();
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  counters_.sleeps.fetch_add(1, std::memory_order_relaxed);
  if (::ppoll(fds, n, &ts, nullptr) > 0 && (fds[0].revents & POLLIN)) {
    uint64_t v;
    [[maybe_unused]] ssize_t r = ::read(wake_fd_, &v, sizeof v);
  }
}

}  // namespace ferry::dataplane
