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
#include "pipeline/internal/session_base.h"

namespace ferry::pipeline {

struct RecvOptions {
  // The largest page cache a sender may ask for (the receiver allocates one of that size).
  size_t max_cache_bytes = size_t{4096} << 20;
  dataplane::PollMode poll_mode = dataplane::PollMode::kAdaptive;  // each channel's engine
  dataplane::TransportSettings transport;  // backend settings (--fabric-provider)
  // A link was refused (where: the listener's address; why: one sentence). Called on the
  // session's thread; may be empty.
  std::function<void(const std::string& where, const std::string& why)> on_refused;
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

  // wait(), done(), abort(), channels(): internal/session_base.h.

 private:
  void accept_loop();

  RecvOptions opt_;
  std::string qemu_spec_;
  dataplane::Endpoint qemu_;
  std::unique_ptr<dataplane::Listener> listener_;
};

}  // namespace ferry::pipeline
