// pipeline/recv_server.cc — see recv_server.h.
#include "pipeline/recv_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "dataplane/protocol.h"

namespace ferry::pipeline {

using internal::Greeted;

namespace {

void signal_fd(int fd) {
  uint64_t one = 1;
  ssize_t r = ::write(fd, &one, sizeof one);
  (void)r;
}

void drain_fd(int fd) {
  uint64_t n;
  ssize_t r = ::read(fd, &n, sizeof n);
  (void)r;
}

}  // namespace

RecvServer::RecvServer(ServeOptions options)
    : opt_(std::move(options)),
      stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      ended_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

RecvServer::~RecvServer() {
  size_t aborted = 0;
  (void)stop("ferry recv is stopping", /*force=*/true, &aborted);
  if (thread_.joinable()) thread_.join();
  reap(true);
  greeters_.reset();
  ::close(stop_fd_);
  ::close(ended_fd_);
}

Status RecvServer::listen(const std::string& listen_spec) {
  if (opt_.qemu_dir.empty() == opt_.qemu_spec.empty()) {
    return ::ferry::error(ErrorCode::kInvalidArgument,
                          "give one of a QEMU socket directory or socket");
  }
  auto listener = dataplane::listen_transport(listen_spec, opt_.recv.transport);
  if (!listener) return listener.status();
  listener_ = std::move(*listener);
  where_ = listener_->where();
  greeters_ = std::make_unique<internal::GreeterPool>(
      opt_.recv.security.get(), opt_.recv.max_handshakes, opt_.recv.handshake_timeout_ms);
  return Status::ok();
}

void RecvServer::start() {
  thread_ = std::thread([this] { serve_loop(); });
}

std::string RecvServer::error() const {
  std::lock_guard lk(mu_);
  return error_;
}

size_t RecvServer::active() const {
  std::lock_guard lk(mu_);
  return sessions_.size();
}

std::vector<ServedSession> RecvServer::stop(const std::string& reason, bool force,
                                            size_t* aborted) {
  std::vector<ServedSession> left;
  *aborted = 0;
  std::lock_guard lk(mu_);
  stopping_ = true;
  signal_fd(stop_fd_);
  for (auto& [id, e] : sessions_) {
    if (e.session->done() || !e.info.stopped.empty()) continue;
    // In post-copy the VM runs here and still needs pages from the source: only a forced
    // stop abandons it.
    if (e.session->channels().postcopy_started() && !force) {
      left.push_back(e.info);
      continue;
    }
    e.info.stopped = reason;
    e.session->abort();
    ++*aborted;
  }
  return left;
}

void RecvServer::refused(const std::string& why) {
  if (!opt_.recv.on_refused) return;
  std::lock_guard lk(refused_mu_);
  opt_.recv.on_refused(where_, why);
}

void RecvServer::serve_loop() {
  for (;;) {
    {
      std::lock_guard lk(mu_);
      if (stopping_ && sessions_.empty()) break;
    }
    pollfd fds[4] = {{listener_ ? listener_->wait_fd() : -1, POLLIN, 0},
                     {greeters_->ready_fd(), POLLIN, 0},
                     {stop_fd_, POLLIN, 0},
                     {ended_fd_, POLLIN, 0}};
    // Bounded like every wait in ferry; the loop re-checks its conditions each time.
    int r = ::poll(fds, 4, internal::kAcceptPollMs);
    if (r < 0 && errno != EINTR) {
      std::lock_guard lk(mu_);
      error_ = std::string("poll: ") + std::strerror(errno);
      break;
    }
    if (fds[2].revents & POLLIN) {
      drain_fd(stop_fd_);
      // No new links: a sender trying one now is refused by the kernel; strangers and
      // senders still in their handshake are dropped.
      listener_.reset();
      greeters_->cancel();
    }
    if ((fds[0].revents & POLLIN) && listener_) {
      while (auto t = listener_->accept(0)) {
        if (!greeters_->greet(std::move(*t))) {
          refused("too many links in their handshake (" + std::to_string(greeters_->max()) +
                  "); closed a new one");
        }
      }
    }
    if (fds[1].revents & POLLIN) {
      for (Greeted& gr : greeters_->take()) dispatch(std::move(gr));
    }
    if (fds[3].revents & POLLIN) {
      drain_fd(ended_fd_);
      reap(false);
    }
  }
  // The server failed: stop what still runs (a clean stop has nothing left here).
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
    for (auto& [id, e] : sessions_) {
      if (e.info.stopped.empty()) e.info.stopped = "ferry recv stopped: " + error_;
      e.session->abort();
    }
  }
  listener_.reset();
  greeters_->cancel();
  reap(true);
  done_.set();
}

void RecvServer::dispatch(Greeted gr) {
  if (!gr.link) {
    refused(gr.refused);
    return;
  }
  const dataplane::Handshake& hs = gr.greeting.hello;
  std::string why;
  {
    std::lock_guard lk(mu_);
    auto it = sessions_.find(hs.session_id);
    if (it != sessions_.end()) {
      Entry& e = it->second;
      if (e.session->done() || !e.info.stopped.empty()) {
        why = "handshake: the migration this link belongs to has ended";
      } else if (hs.vm_name != e.info.vm) {
        why = "handshake: VM name differs from the one this migration's first link gave";
      } else {
        // The session checks the peer and the channel, as a single ferry recv does.
        e.session->feed(std::move(gr.link), std::move(gr.greeting));
        return;
      }
    }
  }
  if (why.empty() && (hs.features & dataplane::kFeatureResuming)) why = internal::kNothingToResume;
  if (why.empty()) why = open_session(gr);
  if (!why.empty()) {
    internal::refuse_link(*gr.link, why);
    refused(why);
  }
}

std::string RecvServer::open_session(Greeted& gr) {
  const dataplane::Handshake& hs = gr.greeting.hello;
  ServedSession info;
  info.id = hs.session_id;
  info.vm = hs.vm_name;
  info.peer = gr.greeting.peer();
  std::string path;
  if (!opt_.qemu_dir.empty()) {
    if (hs.vm_name.empty()) {
      return "this ferry recv --serve feeds a QEMU per VM name: give ferry send (or ferry "
             "migrate) --vm NAME";
    }
    // decode_handshake checked it; checked again because it becomes a path.
    if (auto st = dataplane::check_vm_name(hs.vm_name); !st) return "handshake: " + st.message();
    path = opt_.qemu_dir + "/" + hs.vm_name + ".sock";
    struct stat sb;
    const bool found = ::stat(path.c_str(), &sb) == 0;
    if (!found || !S_ISSOCK(sb.st_mode)) {
      return "no destination QEMU for VM '" + hs.vm_name + "': " + path +
             (found ? " is not a socket" : " does not exist") +
             " (start it with -incoming unix:" + path + ")";
    }
    info.qemu = "unix:" + path;
  } else {
    info.qemu = opt_.qemu_spec;
  }
  std::lock_guard lk(mu_);
  if (stopping_) return "ferry recv is stopping";
  if (opt_.qemu_dir.empty() && !sessions_.empty()) {
    return "another migration is running (this ferry recv --serve feeds one QEMU socket, " +
           opt_.qemu_spec + ": one migration at a time)";
  }
  for (const auto& [id, e] : sessions_) {
    if (!info.vm.empty() && e.info.vm == info.vm) {
      return "a migration of VM '" + info.vm + "' is already running here";
    }
  }
  if (sessions_.size() >= opt_.max_sessions) {
    return "ferry recv is serving " + std::to_string(sessions_.size()) +
           " migrations, its limit (--max-sessions)";
  }
  RecvOptions ro = opt_.recv;
  ro.on_done = [fd = ended_fd_] { signal_fd(fd); };
  auto session = std::make_unique<RecvSession>(std::move(ro));
  if (auto st = session->start_fed(info.qemu, where_); !st) return st.message();
  session->feed(std::move(gr.link), std::move(gr.greeting));
  Entry& e = sessions_[info.id];
  e.info = info;
  e.session = std::move(session);
  if (opt_.on_start) opt_.on_start(info, e.session->channels());
  return "";
}

void RecvServer::reap(bool all) {
  std::vector<Entry> ended;
  {
    std::lock_guard lk(mu_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (all || it->second.session->done()) {
        ended.push_back(std::move(it->second));
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (Entry& e : ended) {
    std::string err = e.session->wait();
    if (!e.info.stopped.empty()) err = e.info.stopped;
    if (opt_.on_end) opt_.on_end(e.info, e.session->channels(), err);
    e.session.reset();  // joins and frees its channels, fds and page caches
  }
}

}  // namespace ferry::pipeline
