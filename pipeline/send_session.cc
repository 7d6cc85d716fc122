// pipeline/send_session.cc — see send_session.h.
#include "pipeline/send_session.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>

#include "common/log.h"
#include "dataplane/handshake.h"
#include "dataplane/net.h"
#include "dataplane/protocol.h"
#include "dataplane/resume/resumable_transport.h"
#include "pipeline/page_stream.h"

namespace ferry::pipeline {

SendSession::SendSession(SendOptions options)
    : SessionBase(PumpRole::kSender, options.poll_mode),
      opt_(std::move(options)),
      session_id_(std::random_device{}() | (static_cast<uint64_t>(std::random_device{}()) << 32)) {
  set_.set_postcopy_pending(opt_.postcopy_pending);
  set_.set_postcopy_hold(opt_.postcopy_hold);
  set_.set_postcopy_pace(opt_.postcopy_pace);
}

SendSession::~SendSession() {
  stop();
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    ::unlink(unix_path_.c_str());
  }
}

namespace {

// The page cache's budget: --cache-mib, but at most a quarter of the memory this host has
// available now (the cache fills up to its budget when the guest's RAM is at least that
// large, and the receiver's host holds the same).
size_t cache_budget_bytes(size_t cache_mib) {
  const size_t asked = cache_mib << 20;
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return asked;
  unsigned long long kib = 0;
  char line[128];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1) break;
  }
  std::fclose(f);
  const size_t quarter = static_cast<size_t>(kib << 10) / 4 >> 20 << 20;  // whole MiB
  if (kib == 0 || asked <= quarter) return asked;
  FERRY_LOG_WARN(
      "page cache: --cache-mib %zu is more than a quarter of this host's available "
      "memory; using %zu MiB",
      cache_mib, quarter >> 20);
  return quarter;
}

}  // namespace

std::unique_ptr<PageStreamEncoder> SendSession::make_codec() const {
  if (opt_.codec == encoders::CodecLevel::kNone) return nullptr;
  PageCodecOptions opt;
  opt.level = opt_.codec;
  opt.cache_bytes = cache_budget_bytes(opt_.cache_mib);
  opt.cache_policy = opt_.cache_policy;
  opt.encode_threads = opt_.encode_threads;
  return std::make_unique<PageStreamEncoder>(opt);
}

namespace {

// Opens channel `index` to ferry recv: connect, handshake, wait for the accept byte; resuming =
// a new connection for a running channel whose link failed (resume/resumable_transport.h).
// How a failed attempt failed: connected = ferry recv took the connection (the handshake
// failed); broke = in a way a new connection may get past (not a refusal, nor a failed
// authentication or a peer that does not speak ferry).
struct AttemptFailure {
  bool connected = false;
  bool broke = false;
};

Result<std::unique_ptr<dataplane::Transport>> open_channel_link(const SendOptions& opt,
                                                                uint64_t session_id, uint16_t index,
                                                                bool resuming, int timeout_ms,
                                                                AttemptFailure* failure = nullptr) {
  AttemptFailure ignored;
  if (!failure) failure = &ignored;
  *failure = {};
  auto link = dataplane::connect_transport(opt.peer, timeout_ms, opt.transport);
  if (!link) {
    return Status(link.status().code(),
                  "cannot reach ferry recv at " + opt.peer + ": " + link.status().message());
  }
  dataplane::SenderHello hello;
  hello.hello.channel = index;
  hello.hello.session_id = session_id;
  hello.hello.vm_name = opt.vm_name;
  if (opt.codec != encoders::CodecLevel::kNone) hello.hello.features |= dataplane::kFeaturePages;
  if (opt.transport.resume_within.count() > 0) hello.hello.features |= dataplane::kFeatureAcked;
  if (resuming) hello.hello.features |= dataplane::kFeatureResuming;
  hello.security = opt.security.get();
  hello.peer_host = dataplane::spec_host(opt.peer);
  hello.timeout_ms = std::min(hello.timeout_ms, timeout_ms);
  auto opened = dataplane::sender_handshake(std::move(*link), std::move(hello));
  if (!opened) {
    const ErrorCode code = opened.status().code();
    failure->connected = true;
    failure->broke =
        code != ErrorCode::kRefused && code != ErrorCode::kAuth && code != ErrorCode::kProtocol;
    return Status(code, "ferry recv at " + opt.peer + " did not accept channel " +
                            std::to_string(index) + ": " + opened.status().message() +
                            " (see its log)");
  }
  return opened;
}

}  // namespace

// A new channel's link; resumable (a failed connection replaced by a new one) unless
// --resume-within 0.
Result<std::unique_ptr<dataplane::Transport>> SendSession::open_link(uint16_t index) {
  AttemptFailure first;
  auto link = open_channel_link(opt_, session_id_, index, false, opt_.connect_timeout_ms, &first);
  if (opt_.transport.resume_within.count() == 0) return link;
  dataplane::ResumeOptions resume;
  resume.within = opt_.transport.resume_within;
  resume.peer_name = "ferry recv";
  // A copy of the options: the attempts run on the link's thread and may outlive this session.
  resume.reopen = [opt = opt_, id = session_id_, index](TimePoint deadline) {
    return open_channel_link(opt, id, index, true, std::max(1, ms_left(deadline)));
  };
  if (!link && first.broke) link = reopen_broken_handshake(index, link.status(), resume);
  if (!link) return link;
  return dataplane::make_resumable(std::move(*link), std::move(resume));
}

// The first connection of channel `index` broke in its handshake (`why`): ferry recv may have
// accepted the channel, connected the destination QEMU to it and lost its ACCEPT with the
// connection, or never seen the HELLO. A resuming connection is taken in the first case
// (resume.first_resumes) and refused in the second, which a fresh one then opens. Within
// --resume-within, as any broken link.
Result<std::unique_ptr<dataplane::Transport>> SendSession::reopen_broken_handshake(
    uint16_t index, Status why, dataplane::ResumeOptions& resume) {
  FERRY_LOG_INFO("channel %u: its first connection broke in the handshake (%s); trying again",
                 index, why.message().c_str());
  const TimePoint deadline = Clock::now() + opt_.transport.resume_within;
  for (int attempt = 0; Clock::now() < deadline; ++attempt) {
    if (attempt > 0) {
      // Backs off, unless the session is being stopped (a signal, an abort).
      const int backoff_ms = std::min({1000, 50 << std::min(attempt, 5), ms_left(deadline)});
      pollfd stop{stop_fd_, POLLIN, 0};
      if (::poll(&stop, 1, backoff_ms) > 0) return Status(ErrorCode::kClosed, "stopped");
    }
    auto r = open_channel_link(opt_, session_id_, index, true, std::max(1, ms_left(deadline)));
    if (r) {
      resume.first_resumes = true;
      return r;
    }
    if (r.status().code() == ErrorCode::kRefused) {
      // Nothing to resume: ferry recv does not run this channel, or not yet. It may still be
      // connecting QEMU for the broken one and refuse a fresh HELLO as a duplicate: a refusal
      // is retried too; only nothing listening, or a failed authentication, ends it here.
      AttemptFailure failed;
      auto fresh = open_channel_link(opt_, session_id_, index, false,
                                     std::max(1, ms_left(deadline)), &failed);
      const ErrorCode code = fresh ? ErrorCode::kOk : fresh.status().code();
      if (fresh || !failed.connected || code == ErrorCode::kAuth || code == ErrorCode::kProtocol) {
        return fresh;
      }
      why = fresh.status();
    } else if (r.status().code() == ErrorCode::kAuth || r.status().code() == ErrorCode::kProtocol) {
      return r;
    } else {
      why = r.status();
    }
  }
  return Status(why.code(), why.message() + "; not resumed within " +
                                std::to_string(opt_.transport.resume_within.count()) +
                                " s (--resume-within)");
}

Status SendSession::listen(const std::string& unix_path) {
  auto ep = dataplane::parse_endpoint("unix:" + unix_path);
  if (!ep) return ep.status();
  auto fd = dataplane::listen_on(*ep);
  if (!fd) return fd.status();
  listen_fd_ = *fd;
  unix_path_ = unix_path;
  return Status::ok();
}

Status SendSession::connect_main() {
  auto link = open_link(0);
  if (!link) return link.status();
  main_link_ = std::move(*link);
  return Status::ok();
}

void SendSession::start() {
  acceptor_ = std::thread([this] { accept_loop(); });
}

// Accepts QEMU's connections until the main channel ended; each gets the next index.
void SendSession::accept_loop() {
  std::string error;
  uint16_t next_index = 0;
  while (error.empty() && !set_.main_done() && !set_.failed()) {
    pollfd fds[3] = {{listen_fd_, POLLIN, 0}, {set_.wake_fd(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    // Bounded like every wait in ferry; the loop re-checks its conditions each time.
    int r = ::poll(fds, 3, internal::kAcceptPollMs);
    if (r < 0 && errno != EINTR) error = std::string("poll: ") + std::strerror(errno);
    if (fds[2].revents & POLLIN) break;
    if (fds[1].revents & POLLIN) set_.reap();
    if (fds[0].revents & POLLIN) {
      auto q = dataplane::accept_one(listen_fd_, 0);
      if (!q) continue;
      auto link = next_index == 0 && main_link_
                      ? Result<std::unique_ptr<dataplane::Transport>>(std::move(main_link_))
                      : open_link(next_index);
      if (!link) {
        ::close(*q);  // QEMU sees its migration fail at once
        error = link.status().message();
        break;
      }
      set_.start(next_index++, {*q, *q}, /*own_fds=*/true, std::move(*link), make_codec());
    }
  }
  // No more connections: QEMU trying one now gets "connection refused".
  ::close(listen_fd_);
  ::unlink(unix_path_.c_str());
  listen_fd_ = -1;
  if (!error.empty() || set_.failed()) set_.abort_all();
  set_.join_all();
  error_ = error;
  done_.set();
}

void SendSession::start_stdio() {
  // The link opens on the session's thread, so that a signal is heard during the handshake
  // (and its retries) too.
  acceptor_ = std::thread([this] {
    auto link = open_link(0);
    if (!link) {
      error_ = link.status().message();
    } else {
      set_.start(0, {0, 1}, /*own_fds=*/false, std::move(*link), make_codec());
      set_.join_all();
    }
    done_.set();
  });
}

}  // namespace ferry::pipeline
