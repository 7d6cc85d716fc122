// pipeline/recv_session.h — the destination side of one migration through ferry, the mirror of
// SendSession: `ferry recv` runs it.
//
// listen() opens the link listener; start() accepts links on a thread. Each new link is greeted
// on a thread of its own (internal/greeter_pool.h), at most max_handshakes at once and each
// within handshake_timeout_ms in total, so that idle or slow strangers neither block the real
// sender nor pile up. Or, under a RecvServer (recv_server.h), start_fed(): no listener, the
// server hands over the links it greeted for this session (feed()).
// The first accepted link binds the session: its id and, with TLS, the peer's identity; links
// of another session or peer are refused without disturbing it.
// Nothing reaches QEMU before a link is accepted. The session connects to the destination
// QEMU's incoming socket once per channel in the sender's channel order (QEMU takes the first
// connection as the main stream), until the main channel ended. wait() returns when every
// channel ended. It prints nothing: refused links are reported through
// RecvOptions::on_refused, errors by wait().
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "dataplane/handshake.h"
#include "dataplane/net.h"
#include "dataplane/transport.h"
#include "pipeline/channel_set.h"
#include "pipeline/internal/greeter_pool.h"
#include "pipeline/internal/session_base.h"

namespace ferry::pipeline {

struct RecvOptions {
  // The largest page cache a sender may ask for (the receiver allocates one of that size).
  size_t max_cache_bytes = size_t{4096} << 20;
  dataplane::PollMode poll_mode = dataplane::PollMode::kAdaptive;  // each channel's engine
  dataplane::TransportSettings transport;  // backend settings (--fabric-provider)
  // Credentials senders must authenticate against (then every frame is sealed); null = none
  // (loopback, or --insecure).
  std::shared_ptr<const dataplane::LinkSecurity> security;
  size_t max_handshakes = 32;        // links greeted at once; more are closed at once
  int handshake_timeout_ms = 10000;  // from accept to a verdict, in total
  // A link was refused (where: the listener's address; why: one sentence). Called on the
  // session's threads (one at a time); may be empty.
  std::function<void(const std::string& where, const std::string& why)> on_refused;
  // The session ended (done() is true): the last thing its accept thread does; may be empty.
  std::function<void()> on_done;
};

class RecvSession : public internal::SessionBase {
 public:
  explicit RecvSession(RecvOptions options);
  ~RecvSession();  // stops everything still running

  // Listens for ferry send on listen_spec (TRANSPORT:ADDRESS); qemu_spec (unix:PATH) is the
  // destination QEMU's incoming socket, connected to once per channel. Fails with one
  // sentence when the listener cannot be opened.
  Status listen(const std::string& listen_spec, const std::string& qemu_spec);
  // Begins accepting on a thread.
  void start();

  // Under a RecvServer, instead of listen() and start(): no listener of its own; where names
  // the server's listener in refusals. Begins waiting for links on a thread.
  Status start_fed(const std::string& qemu_spec, const std::string& where);
  // Hands over a greeted link of this session (any thread). One that arrives after the
  // session ended is closed with it.
  void feed(std::unique_ptr<dataplane::Transport> link, dataplane::Greeting greeting);

  // wait(), done(), abort(), channels(): internal/session_base.h.

 private:
  void accept_loop();
  void refused(const std::string& why);

  RecvOptions opt_;
  std::unique_ptr<internal::GreeterPool> greeters_;  // own listener only
  std::mutex fed_mu_;
  std::vector<internal::Greeted> fed_;  // start_fed(): links handed over, not yet taken
  int fed_fd_ = -1;                     // eventfd: fed_ grew
  TimePoint fed_deadline_{};            // start_fed(): channel 0 must have started by then
  std::mutex refused_mu_;
  std::string qemu_spec_;
  dataplane::Endpoint qemu_;
  std::unique_ptr<dataplane::Listener> listener_;
  std::string listener_where_;
};

}  // namespace ferry::pipeline
