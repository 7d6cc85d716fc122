// pipeline/recv_session.cc — see recv_session.h.
#include "pipeline/recv_session.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "common/log.h"
#include "dataplane/handshake.h"
#include "dataplane/protocol.h"
#include "dataplane/resume/resumable_transport.h"
#include "pipeline/page_stream.h"

namespace ferry::pipeline {

using internal::Greeted;
using internal::refuse_link;

RecvSession::RecvSession(RecvOptions options)
    : SessionBase(PumpRole::kReceiver, options.poll_mode),
      opt_(std::move(options)),
      fed_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

RecvSession::~RecvSession() {
  stop();
  greeters_.reset();
  ::close(fed_fd_);
}

Status RecvSession::listen(const std::string& listen_spec, const std::string& qemu_spec) {
  auto qemu = dataplane::parse_endpoint(qemu_spec);
  if (!qemu) return qemu.status();
  auto listener = dataplane::listen_transport(listen_spec, opt_.transport);
  if (!listener) return listener.status();
  qemu_spec_ = qemu_spec;
  qemu_ = *qemu;
  listener_ = std::move(*listener);
  listener_where_ = listener_->where();
  greeters_ = std::make_unique<internal::GreeterPool>(opt_.security.get(), opt_.max_handshakes,
                                                      opt_.handshake_timeout_ms);
  return Status::ok();
}

void RecvSession::start() {
  acceptor_ = std::thread([this] { accept_loop(); });
}

Status RecvSession::start_fed(const std::string& qemu_spec, const std::string& where) {
  auto qemu = dataplane::parse_endpoint(qemu_spec);
  if (!qemu) return qemu.status();
  qemu_spec_ = qemu_spec;
  qemu_ = *qemu;
  listener_where_ = where;
  fed_deadline_ = Clock::now() + std::chrono::milliseconds(opt_.handshake_timeout_ms);
  start();
  return Status::ok();
}

void RecvSession::feed(std::unique_ptr<dataplane::Transport> link, dataplane::Greeting greeting) {
  std::lock_guard lk(fed_mu_);
  fed_.push_back({std::move(link), std::move(greeting), {}});
  uint64_t one = 1;
  ssize_t r = ::write(fed_fd_, &one, sizeof one);
  (void)r;
}

void RecvSession::refused(const std::string& why) {
  if (!opt_.on_refused) return;
  std::lock_guard lk(refused_mu_);
  opt_.on_refused(listener_where_, why);
}

// Accepts links until the main channel ended. Channel k reaches QEMU only after 0..k-1: links
// that arrive early wait, already accepted, for their turn.
void RecvSession::accept_loop() {
  bool have_session = false;
  uint64_t session = 0;
  std::string session_peer;             // the identity that authenticated the session's first link
  uint16_t next_channel = 0;            // the next channel to connect to QEMU
  std::map<uint16_t, Greeted> waiting;  // greeted, before their turn
  // Running channels whose links can be resumed: where a new connection goes.
  std::map<uint16_t, std::shared_ptr<dataplane::ResumeSlot>> slots;
  std::string error;

  auto not_this_peer = [](const std::string& peer) {
    return "handshake: the peer '" + peer + "' is not the one this migration belongs to";
  };
  // A new connection for a running channel whose link broke: handed to the channel, or the
  // reason to refuse it.
  auto resume = [&](Greeted& gr) -> std::string {
    const dataplane::Handshake& hs = gr.greeting.hello;
    if (!have_session || hs.session_id != session) return internal::kNothingToResume;
    if (gr.greeting.peer() != session_peer) return not_this_peer(gr.greeting.peer());
    auto slot = slots.find(hs.channel);
    if (slot == slots.end()) {
      return "nothing to resume: channel " + std::to_string(hs.channel) + " is not running";
    }
    auto link = dataplane::receiver_accept(std::move(gr.link), gr.greeting);
    if (!link) {
      refused("channel " + std::to_string(hs.channel) +
              ": a new connection failed its handshake: " + link.status().message());
      return "";
    }
    // A channel that has just ended drops it: the sender's next attempt is refused.
    slot->second->offer(std::move(*link));
    return "";
  };

  while (error.empty() && !set_.main_done() && !set_.failed()) {
    // Fed (under a RecvServer): no listener (poll skips a negative fd), links come greeted.
    pollfd fds[4] = {{listener_ ? listener_->wait_fd() : -1, POLLIN, 0},
                     {set_.wake_fd(), POLLIN, 0},
                     {stop_fd_, POLLIN, 0},
                     {greeters_ ? greeters_->ready_fd() : fed_fd_, POLLIN, 0}};
    // Bounded like every wait in ferry; the loop re-checks its conditions each time.
    int r = ::poll(fds, 4, internal::kAcceptPollMs);
    if (r < 0 && errno != EINTR) error = std::string("poll: ") + std::strerror(errno);
    if (fds[2].revents & POLLIN) break;
    if (fds[1].revents & POLLIN) set_.reap();
    // Fed: a session opened by a later channel's link whose main channel never comes would
    // hold its VM name forever (ferry send opens channel 0 first; that sender gave up).
    if (!greeters_ && set_.size() == 0 && Clock::now() > fed_deadline_) {
      error = "no main channel (channel 0) within " +
              std::to_string((opt_.handshake_timeout_ms + 999) / 1000) +
              " s of the session's first link";
      for (auto& [ch, w] : waiting) refuse_link(*w.link, error);
      break;
    }
    if ((fds[0].revents & POLLIN) && listener_) {
      while (auto t = listener_->accept(0)) {
        if (!greeters_->greet(std::move(*t))) {
          refused("too many links in their handshake (" + std::to_string(greeters_->max()) +
                  "); closed a new one");
        }
      }
    }
    if (!(fds[3].revents & POLLIN)) continue;
    std::vector<Greeted> batch;
    if (greeters_) {
      batch = greeters_->take();
    } else {
      uint64_t drained;
      ssize_t rd = ::read(fed_fd_, &drained, sizeof drained);
      (void)rd;
      std::lock_guard lk(fed_mu_);
      batch.swap(fed_);
    }
    for (Greeted& gr : batch) {
      if (!gr.link) {
        refused(gr.refused);
        continue;
      }
      const dataplane::Handshake& hs = gr.greeting.hello;
      std::string why;
      if (hs.features & dataplane::kFeatureResuming) {
        if (std::string why = resume(gr); !why.empty()) {
          refuse_link(*gr.link, why);
          refused(why);
        }
        continue;
      }
      if (have_session && hs.session_id != session) {
        why =
            "handshake: another migration is running (session id at byte offset 12 differs; "
            "one at a time)";
      } else if (have_session && gr.greeting.peer() != session_peer) {
        why = not_this_peer(gr.greeting.peer());
      } else if (hs.channel < next_channel || waiting.count(hs.channel)) {
        why = "handshake: channel " + std::to_string(hs.channel) +
              " at byte offset 6 is already connected";
      }
      if (!why.empty()) {
        // Refuse this link only; the session (or the real sender still to come) goes on.
        refuse_link(*gr.link, why);
        refused(why);
        continue;
      }
      have_session = true;
      session = hs.session_id;
      session_peer = gr.greeting.peer();
      waiting[hs.channel] = std::move(gr);
    }
    // Connect QEMU in channel order: channel k only after 0..k-1. The verdict goes out once
    // QEMU is connected, so a sender never streams into a receiver that has nowhere to go.
    for (auto it = waiting.find(next_channel); error.empty() && it != waiting.end();
         it = waiting.find(next_channel)) {
      Greeted& w = it->second;
      auto q = dataplane::connect_to(qemu_);
      if (!q) {
        refuse_link(*w.link, "ferry recv cannot reach the destination QEMU");
        error = "cannot connect to the destination QEMU at " + qemu_spec_ + ": " +
                q.status().message() + " (is it running with -incoming " + qemu_spec_ + "?)";
        break;
      }
      auto link = dataplane::receiver_accept(std::move(w.link), w.greeting);
      if (!link) {
        ::close(*q);
        error = "channel " + std::to_string(next_channel) + ": " + link.status().message();
        break;
      }
      if (w.greeting.hello.features & dataplane::kFeatureAcked) {
        dataplane::ResumeOptions resume;
        resume.within = opt_.transport.resume_within;
        resume.slot = std::make_shared<dataplane::ResumeSlot>();
        resume.peer_name = "ferry send";
        slots[next_channel] = resume.slot;
        link = dataplane::make_resumable(std::move(*link), std::move(resume));
        if (!link) {
          ::close(*q);
          error = "channel " + std::to_string(next_channel) + ": " + link.status().message();
          break;
        }
      }
      std::unique_ptr<PageStreamDecoder> decoder;
      if (w.greeting.hello.features & dataplane::kFeaturePages) {
        decoder = std::make_unique<PageStreamDecoder>(opt_.max_cache_bytes);
      }
      set_.start(next_channel, {*q, *q}, /*own_fds=*/true, std::move(*link), std::move(decoder));
      FERRY_LOG_INFO("channel %u: accepted, connected to the destination QEMU", next_channel);
      ++next_channel;
      waiting.erase(it);
    }
  }
  // No more links: a sender trying one now is refused by the kernel; strangers still in their
  // handshake are dropped.
  listener_.reset();
  if (greeters_) greeters_->cancel();
  if (!error.empty() || set_.failed()) set_.abort_all();
  set_.join_all();
  error_ = error;
  done_.set();
  if (opt_.on_done) opt_.on_done();
}

}  // namespace ferry::pipeline
