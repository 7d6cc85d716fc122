// dataplane/resume/resumable_transport.h — a Transport that outlives its connections: when the
// link under it fails, the channel above (and QEMU beyond it) sees nothing but a pause; a new
// connection of the same session and channel takes over and each side replays what the other
// has not acknowledged.
//
// Both ends of a link with feature ACKED (protocol.h) acknowledge the data frames they
// received with ACK frames (every 32 frames or 512 KiB, 10 ms after the first unacknowledged
// one, and at once for END) and keep every frame they sent until the peer acknowledged it.
// A sent frame's buffer goes back to the owner (reap_tx) only then, so the owner's pool bounds
// what is kept. When the connection breaks (an I/O error, a reset, the peer's silence past
// --link-timeout; not a peer that closed, which ended, nor bytes that failed authentication
// or framing, which something on the path changed):
//   sender:   opens a new connection (ResumeOptions::reopen: HELLO with ACKED|RESUMING of the
//             same session and channel, TLS, ACCEPT) on a thread of its own, backing off, until
//             it succeeds, the receiver refuses (it has nothing to resume: it restarted), or
//             ResumeOptions::within has passed since the failure;
//   receiver: waits as long for its session to hand it the new connection (ResumeSlot).
// On the new connection the sender first sends ACK(next frame it needs), the receiver answers
// with its own (it never speaks first after ACCEPT: the sender's handshake would lose a frame
// that came with ACCEPT); each sends data only after the other's ACK, replaying from there,
// skipping frames the peer already has, and drops any frame it receives twice. Frames keep their
// sequence numbers (channel_pump.h's checks see one gapless link) and are sealed again with the new
// connection's keys.
//
// Costs: one copy of each sent frame into the current connection's buffers (the kept one is the
// owner's); a failed connection's buffers stay allocated until this transport goes, because
// the owner may still hold frames it received from it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>

#include "common/clock.h"
#include "common/status.h"
#include "dataplane/transport.h"

namespace ferry::dataplane {

// Where a receiver's session hands a new connection to the resumable link of a running
// channel. Shared by the two: the link may end first.
class ResumeSlot {
 public:
  ResumeSlot();
  ~ResumeSlot();
  ResumeSlot(const ResumeSlot&) = delete;
  ResumeSlot& operator=(const ResumeSlot&) = delete;

  // Any thread. False when the link has ended (there is nothing to resume): the caller drops
  // the connection. A connection offered and not yet taken is replaced.
  bool offer(std::unique_ptr<Transport> link);

  // The resumable link's side: readable when a connection waits; take it (or null).
  int wake_fd() const { return fd_; }
  std::unique_ptr<Transport> take();
  // No more offers (the link ended).
  void close();

 private:
  std::mutex mu_;
  std::unique_ptr<Transport> link_;
  bool closed_ = false;
  int fd_ = -1;  // eventfd
};

// Opens a new connection for a resumable sender link, its handshake done, before deadline.
// Runs on the link's own thread. An error with ErrorCode::kRefused (the receiver has nothing
// to resume) ends the attempts; any other is retried.
using Reopen = std::function<Result<std::unique_ptr<Transport>>(TimePoint deadline)>;

struct ResumeOptions {
  // How long after a failure a new connection may take over (0 = never: fail at once).
  std::chrono::seconds within{kResumeWithin};  // transport.h
  Reopen reopen;                               // sender: how to open a new connection
  std::shared_ptr<ResumeSlot> slot;            // receiver: where new connections arrive
  const char* peer_name = "the peer";          // for messages ("ferry recv")
  // Sender: first is already a new connection of a channel the receiver runs (the channel's
  // first connection broke after the receiver accepted it, before its ACCEPT arrived): it
  // starts as a resumed one, with the sender's ACK.
  bool first_resumes = false;
};

// Wraps first (its handshake done, with feature ACKED on both sides). Exactly one of
// options.reopen and options.slot is set.
Result<std::unique_ptr<Transport>> make_resumable(std::unique_ptr<Transport> first,
                                                  ResumeOptions options);

}  // namespace ferry::dataplane
