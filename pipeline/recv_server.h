// pipeline/recv_server.h — `ferry recv --serve`: the destination side of migration after
// migration, several at once, on one listener, until stopped.
//
// One listener and one GreeterPool (internal/greeter_pool.h) for every sender; a greeted
// link (authenticated, when credentials were given) either joins the running session with
// its session id or starts a new RecvSession (recv_session.h, fed mode), whose destination
// QEMU socket is DIR/NAME.sock, NAME being the VM name its HELLO carried (protocol.h,
// VM_NAME) — or, with one fixed socket, that socket, one session at a time. Refusals (no or
// unknown VM, no socket, the VM already migrating, too many sessions) go back to the sender
// as one sentence. A session's failure ends that session only. An ended session is joined
// and destroyed (its threads, fds and page caches go with it) after on_end reported it.
// It prints nothing: apps/ logs through the callbacks.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/channel_set.h"
#include "pipeline/internal/greeter_pool.h"
#include "pipeline/internal/session_base.h"
#include "pipeline/recv_session.h"

namespace ferry::pipeline {

// One session as the server knows it.
struct ServedSession {
  uint64_t id = 0;
  std::string vm;    // HELLO's VM name; "" when none (one fixed socket)
  std::string peer;  // the TLS identity that started it; "" without credentials
  std::string qemu;  // unix:PATH of its destination QEMU
  // Why the server stopped it (a signal); "" when it ended on its own.
  std::string stopped;
};

struct ServeOptions {
  // Each session's options (its on_done is the server's). on_refused also reports the
  // server's own refusals.
  RecvOptions recv;
  // Exactly one of: qemu_dir, each session's QEMU at qemu_dir/NAME.sock (a VM name is
  // required); qemu_spec, one socket (unix:PATH) fed one session at a time.
  std::string qemu_dir;
  std::string qemu_spec;
  size_t max_sessions = 16;  // sessions at once; more are refused
  // A session started (its first link was greeted and handed over) / ended (error: "" when
  // it completed; set: its counters, for a log line and stats). Both on the server's thread;
  // either may be empty.
  std::function<void(const ServedSession&, ChannelSet& set)> on_start;
  std::function<void(const ServedSession&, ChannelSet& set, const std::string& error)> on_end;
};

class RecvServer {
 public:
  explicit RecvServer(ServeOptions options);
  ~RecvServer();  // aborts and joins everything still running
  RecvServer(const RecvServer&) = delete;
  RecvServer& operator=(const RecvServer&) = delete;

  // Opens the listener (TRANSPORT:ADDRESS); one sentence when it cannot.
  Status listen(const std::string& listen_spec);
  std::string where() const { return where_; }
  // Begins serving on a thread.
  void start();

  // Stops accepting links and sessions (any thread; again to force). Sessions in pre-copy are
  // aborted with `reason` (their QEMUs see the migration fail, the source keeps the VM);
  // those in post-copy go on to their end unless force (then they are aborted too: unless
  // QEMU's post-copy recovery resumes them, their VMs are lost). Returns the sessions left
  // running (in post-copy), and in *aborted how many it aborted.
  std::vector<ServedSession> stop(const std::string& reason, bool force, size_t* aborted);
  // True once stopped and every session ended (waits at most timeout).
  bool wait_for(std::chrono::milliseconds timeout) const { return done_.wait_for(timeout); }
  // "" unless the server itself failed (its listener's poll).
  std::string error() const;
  size_t active() const;

 private:
  struct Entry {
    ServedSession info;
    std::unique_ptr<RecvSession> session;
  };
  void serve_loop();
  void dispatch(internal::Greeted gr);
  // Starts a session for a greeted link, or returns why not.
  std::string open_session(internal::Greeted& gr);
  void reap(bool all);
  void refused(const std::string& why);

  ServeOptions opt_;
  std::unique_ptr<dataplane::Listener> listener_;
  std::string where_;
  std::unique_ptr<internal::GreeterPool> greeters_;
  std::thread thread_;
  int stop_fd_ = -1;   // eventfd: stop() was called
  int ended_fd_ = -1;  // eventfd: a session ended
  mutable std::mutex mu_;
  std::map<uint64_t, Entry> sessions_;  // guarded by mu_ (the map; each session is thread-safe)
  bool stopping_ = false;               // guarded by mu_
  std::string error_;                   // guarded by mu_
  std::mutex refused_mu_;
  internal::DoneLatch done_;
};

}  // namespace ferry::pipeline
