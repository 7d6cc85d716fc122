// pipeline/recv_session.cc — see recv_session.h.
#include "pipeline/recv_session.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "dataplane/handshake.h"
#include "dataplane/protocol.h"
#include "pipeline/page_stream.h"

namespace ferry::pipeline {
namespace {

// A refused link learns why; a sender that does not listen is not waited for long.
void reject(dataplane::Transport& t, const std::string& why) {
  (void)dataplane::receiver_answer(t, false, why, 1000);
}

}  // namespace

RecvSession::RecvSession(RecvOptions options)
    : SessionBase(PumpRole::kReceiver, options.poll_mode), opt_(std::move(options)) {}

RecvSession::~RecvSession() { stop(); }

Status RecvSession::listen(const std::string& listen_spec, const std::string& qemu_spec) {
  auto qemu = dataplane::parse_endpoint(qemu_spec);
  if (!qemu) return qemu.status();
  auto listener = dataplane::listen_transport(listen_spec, opt_.transport);
  if (!listener) return listener.status();
  qemu_spec_ = qemu_spec;
  qemu_ = *qemu;
  listener_ = std::move(*listener);
  return Status::ok();
}

void RecvSession::start() {
  acceptor_ = std::thread([this] { accept_loop(); });
}

// Accepts links until the main channel ended. Channel k reaches QEMU only after 0..k-1: links
// that arrive early wait, already accepted, for their turn.
void RecvSession::accept_loop() {
  bool have_session = false;
  uint64_t session = 0;
  uint16_t next_channel = 0;  // the next channel to connect to QEMU
  struct Waiting {
    std::unique_ptr<dataplane::Transport> link;
    uint32_t features = 0;
  };
  std::map<uint16_t, Waiting> waiting;  // arrived before their turn
  std::string error;

  while (error.empty() && !set_.main_done() && !set_.failed()) {
    pollfd fds[3] = {
        {listener_->wait_fd(), POLLIN, 0}, {set_.wake_fd(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    // Bounded like every wait in ferry; the loop re-checks its conditions each time.
    int r = ::poll(fds, 3, internal::kAcceptPollMs);
    if (r < 0 && errno != EINTR) error = std::string("poll: ") + std::strerror(errno);
    if (fds[2].revents & POLLIN) break;
    if (fds[1].revents & POLLIN) set_.reap();
    if (!(fds[0].revents & POLLIN)) continue;

    auto t = listener_->accept(0);
    if (!t) continue;
    auto hs = dataplane::receiver_read_hello(**t);
    std::string why;
    if (!hs) {
      why = hs.status().message();
    } else if (have_session && hs->session_id != session) {
      why =
          "handshake: session id at byte offset 12 belongs to another migration (one at a "
          "time)";
    } else if (hs->channel < next_channel || waiting.count(hs->channel)) {
      why = "handshake: channel " + std::to_string(hs->channel) +
            " at byte offset 6 is already connected";
    }
    if (!why.empty()) {
      // Refuse this link only; the real sender may still come.
      reject(**t, why);
      if (opt_.on_refused) opt_.on_refused(listener_->where(), why);
      continue;
    }
    have_session = true;
    session = hs->session_id;
    waiting[hs->channel] = {std::move(*t), hs->features};
    // Connect QEMU in channel order: channel k only after 0..k-1.
    for (auto it = waiting.find(next_channel); it != waiting.end();
         it = waiting.find(next_channel)) {
      auto q = dataplane::connect_to(qemu_);
      if (!q) {
        reject(*it->second.link, "ferry recv cannot reach the destination QEMU");
        error = "cannot connect to the destination QEMU at " + qemu_spec_ + ": " +
                q.status().message() + " (is it running with -incoming " + qemu_spec_ + "?)";
        break;
      }
      if (auto st = dataplane::receiver_answer(*it->second.link, true); !st) {
        ::close(*q);
        error = "channel " + std::to_string(next_channel) + ": handshake: " + st.message();
        break;
      }
      std::unique_ptr<PageStreamDecoder> decoder;
      if (it->second.features & dataplane::kFeaturePages) {
        decoder = std::make_unique<PageStreamDecoder>(opt_.max_cache_bytes);
      }
      set_.start(next_channel++, {*q, *q}, /*own_fds=*/true, std::move(it->second.link),
                 std::move(decoder));
      waiting.erase(it);
    }
  }
  // No more links: a sender trying one now is refused by the kernel.
  listener_.reset();
  if (!error.empty() || set_.failed()) set_.abort_all();
  set_.join_all();
  error_ = error;
  done_.set();
}

}  // namespace ferry::pipeline
