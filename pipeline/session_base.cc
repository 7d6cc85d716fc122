// pipeline/session_base.cc — see internal/session_base.h.
#include "pipeline/internal/session_base.h"

#include <sys/eventfd.h>
#include <unistd.h>

namespace ferry::pipeline::internal {

SessionBase::SessionBase(PumpRole role, dataplane::PollMode mode)
    : set_(role), stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  set_.set_poll_mode(mode);
}

SessionBase::~SessionBase() { ::close(stop_fd_); }

void SessionBase::stop() {
  abort();
  if (acceptor_.joinable()) acceptor_.join();
}

std::string SessionBase::wait(const std::function<void()>& tick) {
  if (tick && acceptor_.joinable()) {
    while (!done_.wait_for(std::chrono::seconds(1))) tick();
  }
  if (acceptor_.joinable()) acceptor_.join();
  set_.join_all();
  if (error_.empty() && set_.failed()) return set_.first_error();
  return error_;
}

void SessionBase::abort() {
  uint64_t one = 1;
  ssize_t r = ::write(stop_fd_, &one, sizeof one);
  (void)r;
  set_.abort_all();
}

}  // namespace ferry::pipeline::internal
