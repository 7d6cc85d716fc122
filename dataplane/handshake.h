// dataplane/handshake.h — the one place where a ferry link is opened (protocol.h): the sender
// sends HELLO and waits for ACCEPT; the receiver reads HELLO, decides, and answers. Both run
// before the data path, blocking with one deadline, on any transport.
#pragma once

#include <string>

#include "common/status.h"
#include "dataplane/protocol.h"
#include "dataplane/transport.h"

namespace ferry::dataplane {

// One deadline for every step of a handshake, on both sides: long enough for a receiver that
// first connects to the destination QEMU, short enough that a silent peer is dropped.
inline constexpr int kHandshakeTimeoutMs = 10000;

// Sender: HELLO, then ACCEPT. A rejection is an error carrying the receiver's reason.
Status sender_handshake(Transport& link, const Handshake& hello,
                        int timeout_ms = kHandshakeTimeoutMs);

// Receiver: reads and checks HELLO (a stranger's first bytes fail the header check at once).
Result<Handshake> receiver_read_hello(Transport& link, int timeout_ms = kHandshakeTimeoutMs);
// Receiver: the verdict. On rejection, waits (bounded) until the answer left, so the sender
// learns why.
Status receiver_answer(Transport& link, bool accept, const std::string& reason = "",
                       int timeout_ms = kHandshakeTimeoutMs);

}  // namespace ferry::dataplane
