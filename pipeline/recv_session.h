// pipeline/recv_session.h — the destination side of one migration through ferry, the mirror of
// SendSession: `ferry recv` runs it.
//
// listen() opens the link listener; start() accepts links from one `ferry send` session on a
// thread, validates each handshake before anything reaches QEMU (a bad link is refused and the
// real sender may still come), and connects to the destination QEMU's incoming socket once per
// channel in the sender's channel order (QEMU takes the first connection as the main stream),
// until the main channel ended. wait() returns when every channel ended. It prints nothing:
// refused links are reported through RecvOptions::on_refused, errors by wait().
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "dataplane/net.h"
#include "dataplane/transport.h"
#include "pipeline/channel_set.h"
#include "pipeline/internal/done_latch.h"

namespace ferry::pipeline {

struct RecvOptions {
  // The largest page cache a sender may ask for (the receiver allocates one of that size).
  size_t max_cache_bytes = size_t{4096} << 20;
  dataplane::PollMode poll_mode = dataplane::PollMode::kAdaptive;  // each channel's engine
  // A link was refused (where: the listener's address; why: one sentence). Called on the
  // session's thread; may be empty.
  std::function<void(const std::string& where, const std::string& why)> on_refused;
};

class RecvSession {
 public:
  explicit RecvSession(RecvOptions options);
  ~RecvSession();  // stops everything still running
  RecvSession(const RecvSession&) = delete;
  RecvSession& operator=(const RecvSession&) = delete;

  // Listens for ferry send on listen_spec (TRANSPORT:ADDRESS); qemu_spec (unix:PATH) is the
  // destination QEMU's incoming socket, connected to once per channel. Fails with one
  // sentence when the listener cannot be opened.
  Status listen(const std::string& listen_spec, const std::string& qemu_spec);
  // Begins accepting on a thread.
  void start();

  // Blocks until every channel ended (or the session failed and was stopped). Returns "" on
  // success, else the first error as one sentence. tick, when given, runs on the calling
  // thread about once a second meanwhile (a progress line).
  std::string wait(const std::function<void()>& tick = nullptr);
  bool done() const { return done_.is_set(); }
  // Stops the session now: the destination QEMU sees its incoming migration fail.
  void abort();

  ChannelSet& channels() { return set_; }

 private:
  void accept_loop();

  RecvOptions opt_;
  std::string qemu_spec_;
  dataplane::Endpoint qemu_;
  std::unique_ptr<dataplane::Listener> listener_;
  ChannelSet set_{PumpRole::kReceiver};
  std::thread acceptor_;
  int stop_fd_ = -1;   // eventfd: ends the accept loop early
  std::string error_;  // written by the accept thread before it ends
  internal::DoneLatch done_;
};

}  // namespace ferry::pipeline
