// apps/stop_signals.cc — see stop_signals.h.
#include "apps/stop_signals.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>

namespace ferry::apps {
namespace {

sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

StopSignals::StopSignals() {
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  fd_ = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

StopSignals::~StopSignals() {
  if (fd_ >= 0) ::close(fd_);
}

const char* StopSignals::take() {
  signalfd_siginfo info;
  if (fd_ < 0 || ::read(fd_, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) {
    return nullptr;
  }
  switch (info.ssi_signo) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    default:
      return "SIGHUP";
  }
}

std::function<void()> stop_on_signal(const char* command, StopSignals& signals,
                                     const pipeline::ChannelSet& set, std::function<void()> stop,
                                     std::function<void()> then, std::string& cancelled) {
  return [command, &signals, &set, stop = std::move(stop), then = std::move(then), &cancelled,
          refused_at = TimePoint{}]() mutable {
    if (const char* name = signals.take(); name && cancelled.empty()) {
      const TimePoint now = Clock::now();
      const bool postcopy = set.postcopy_started();
      if (postcopy && (refused_at == TimePoint{} || now - refused_at > kForceWithin)) {
        refused_at = now;
        std::fprintf(stderr,
                     "\n%s: %s: not stopping: the migration is in post-copy, so the VM runs on "
                     "the destination and still needs pages from the source; stopping now would "
                     "lose it. Send it again within %lld s to force.\n",
                     command, name, static_cast<long long>(kForceWithin.count()));
      } else {
        cancelled = std::string("cancelled by ") + name +
                    (postcopy ? " in post-copy (forced: unless QEMU's post-copy recovery resumes "
                                "it, the VM is lost)"
                              : " (the source keeps the VM)");
        stop();
      }
    }
    if (then) then();
  };
}

}  // namespace ferry::apps
