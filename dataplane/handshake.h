// dataplane/handshake.h — the one place where a ferry link is opened (protocol.h): the sender
// sends HELLO, authenticates with TLS when it has credentials (security/link_security.h), and
// waits for ACCEPT; the receiver reads HELLO, authenticates the sender, decides, and answers.
// Both run before the data path, blocking with deadlines, on any transport. An authenticated
// link comes out wrapped in a ProtectedTransport: every frame after ACCEPT is sealed.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "dataplane/protocol.h"
#include "dataplane/security/link_security.h"
#include "dataplane/transport.h"

namespace ferry::dataplane {

// One deadline for every step of a handshake, on both sides: long enough for a receiver that
// first connects to the destination QEMU, short enough that a silent peer is dropped.
inline constexpr int kHandshakeTimeoutMs = 10000;

// Handshake frames one at a time, each checked (length, CRC, seq 0); a received buffer may
// hold several. A set cancel flag ends a wait within 100 ms.
class HandshakeReader {
 public:
  explicit HandshakeReader(Transport& link, const std::atomic<bool>* cancel = nullptr)
      : link_(link), cancel_(cancel) {}
  ~HandshakeReader();
  HandshakeReader(const HandshakeReader&) = delete;
  HandshakeReader& operator=(const HandshakeReader&) = delete;
  // The next frame; its payload stays valid until the next call.
  Result<FrameChecker::Frame> next(TimePoint deadline);

 private:
  Transport& link_;
  const std::atomic<bool>* cancel_;
  FrameBuf* buf_ = nullptr;
  size_t pos_ = 0;
};

// The reason a rejecting ACCEPT frame carries ("no reason given" when empty).
std::string rejection_reason(const FrameChecker::Frame& accept);

struct SenderHello {
  Handshake hello;
  const LinkSecurity* security = nullptr;  // null: no TLS (loopback or --insecure)
  std::string peer_host;                   // for the receiver's certificate name
  int timeout_ms = kHandshakeTimeoutMs;
};

// Sender: HELLO (with the TLS feature bit when security is given), TLS, then ACCEPT. Returns
// the link, protected when TLS ran. A rejection is an error carrying the receiver's reason.
Result<std::unique_ptr<Transport>> sender_handshake(std::unique_ptr<Transport> link,
                                                    SenderHello hello);

// What the receiver learned from a sender before deciding.
struct Greeting {
  Handshake hello;
  std::optional<SessionKeys> keys;  // TLS ran: the frame keys and the peer's identity
  std::string peer() const { return keys ? keys->peer : std::string(); }
};

// Receiver: reads and checks HELLO (a stranger's first bytes fail the header check at once)
// and, with security, runs TLS and checks --tls-authz; a sender without credentials is
// refused by a receiver with them and the other way round. Errors are the reason to give.
// cancel: set by a receiver that stops, ends the wait within 100 ms.
Result<Greeting> receiver_greet(Transport& link, const LinkSecurity* security, TimePoint deadline,
                                const std::atomic<bool>* cancel = nullptr);
// Receiver: accepts a greeted link; returns it protected when TLS ran.
Result<std::unique_ptr<Transport>> receiver_accept(std::unique_ptr<Transport> link,
                                                   const Greeting& greeting,
                                                   int timeout_ms = kHandshakeTimeoutMs);
// Receiver: refuses, and waits (bounded) until the answer left, so the sender learns why.
Status receiver_refuse(Transport& link, const std::string& reason, int timeout_ms);

}  // namespace ferry::dataplane
