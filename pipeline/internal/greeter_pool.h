// pipeline/internal/greeter_pool.h — the receiver's handshakes with new links, shared by
// RecvSession (one migration) and RecvServer (many): each new link is greeted on a thread of
// its own (HELLO, and TLS with credentials), at most `max` at once and each within
// timeout_ms in total, so that idle or slow strangers neither block a real sender nor pile
// up. A link whose greeting failed has been told why (unless the pool was cancelled).
#pragma once

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/handshake.h"
#include "dataplane/transport.h"

namespace ferry::pipeline::internal {

// A link whose greeting ended: accepted ones carry the greeting, refused ones the reason
// (already told to the sender).
struct Greeted {
  std::unique_ptr<dataplane::Transport> link;
  dataplane::Greeting greeting;
  std::string refused;
};

// Why a new connection for a session this receiver does not run is refused.
inline constexpr char kNothingToResume[] =
    "nothing to resume: no migration with this session id runs here (ferry recv restarted?)";

// Tells a refused link why; a sender that does not listen is not waited for long.
void refuse_link(dataplane::Transport& link, const std::string& why);

// Used by one thread (the accept loop); the greeting threads are its own.
class GreeterPool {
 public:
  // security: the credentials (null = none), outliving the pool.
  GreeterPool(const dataplane::LinkSecurity* security, size_t max, int timeout_ms);
  ~GreeterPool();  // cancels the greetings still running and joins them
  GreeterPool(const GreeterPool&) = delete;
  GreeterPool& operator=(const GreeterPool&) = delete;

  // Readable (poll) when a greeting ended: call take() then.
  int ready_fd() const { return ready_fd_; }
  // Starts greeting link. False when `max` are already running: the link was closed
  // unanswered (answering would let a flood hold buffers and time).
  bool greet(std::unique_ptr<dataplane::Transport> link);
  // The greetings that ended since the last call (their threads joined).
  std::vector<Greeted> take();
  // Ends every running greeting (within 100 ms) and joins it; their links are dropped.
  void cancel();
  size_t max() const { return max_; }

 private:
  struct Greeter {
    std::thread thread;
    bool done = false;  // guarded by mu_
  };
  void run(std::unique_ptr<dataplane::Transport> link, Greeter* self);
  void reap(bool all);

  const dataplane::LinkSecurity* security_;
  size_t max_;
  int timeout_ms_;
  std::mutex mu_;
  std::list<Greeter> greeters_;
  std::vector<Greeted> ended_;
  int ready_fd_ = -1;  // eventfd
  std::atomic<bool> cancel_{false};
};

}  // namespace ferry::pipeline::internal
