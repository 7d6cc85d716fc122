// pipeline/send_session.h — the source side of one migration through ferry, as a reusable piece:
// `ferry send` runs it alone, `ferry migrate` runs it beside its policy loop.
//
// Socket mode: listen() creates the unix socket QEMU migrates into; start() accepts QEMU's
// connections on a thread (the main stream, then each multifd channel), opening one link to
// ferry recv per connection, in order, until the main channel ended. stdio mode: the stream on
// fds 0/1 (one channel). wait() returns when every channel ended.
// It prints nothing: errors come back as one sentence from wait(), progress is for the caller
// to show (wait()'s tick, channels().counters()).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "dataplane/resume/resumable_transport.h"
#include "dataplane/security/link_security.h"
#include "encoders/page_codec.h"
#include "pipeline/channel_set.h"
#include "pipeline/internal/session_base.h"

namespace ferry::pipeline {

struct SendOptions {
  std::string peer;  // TRANSPORT:ADDRESS of ferry recv
  // The VM's name for `ferry recv --serve --qemu-dir` (HELLO's VM_NAME; checked by the caller
  // with dataplane::check_vm_name); empty = none sent.
  std::string vm_name;
  int connect_timeout_ms = 10000;
  encoders::CodecLevel codec = encoders::CodecLevel::kAuto;
  // The page cache's memory budget on each end; it sizes itself within it (page_cache.h).
  size_t cache_mib = 1024;
  encoders::CachePolicy cache_policy = encoders::kDefaultCachePolicy;
  unsigned encode_threads = 1;  // encode shards of the main stream, one thread each
  dataplane::PollMode poll_mode = dataplane::PollMode::kAdaptive;  // each channel's engine
  // Post-copy, once the destination asks for pages: the backlog each channel keeps toward the
  // link, topped up as the link drains (PumpOptions::postcopy_pending); 0 = off
  // (--postcopy-backlog).
  size_t postcopy_pending = PumpOptions{}.postcopy_pending;
  // Post-copy, with a codec: how much of QEMU's stream the main channel may take ahead of
  // the link, so that QEMU answers page requests at once (PumpOptions::postcopy_hold); 0 =
  // off (--postcopy-hold).
  size_t postcopy_hold = PumpOptions{}.postcopy_hold;
  // Post-copy, unless postcopy_pending is 0: the main link paced at first at this fraction
  // of its rate before the switch (PumpOptions::postcopy_pace); 0 = not paced
  // (--postcopy-pace).
  double postcopy_pace = PumpOptions{}.postcopy_pace;
  dataplane::TransportSettings transport;  // backend settings (--fabric-provider)
  // Credentials every link authenticates with (then every frame is sealed); null = none
  // (a peer on this host, or --insecure).
  std::shared_ptr<const dataplane::LinkSecurity> security;
};

class SendSession : public internal::SessionBase {
 public:
  explicit SendSession(SendOptions options);
  ~SendSession();  // stops everything still running

  // Socket mode. listen() makes the socket (QEMU may connect from then on); start() begins
  // accepting on a thread.
  Status listen(const std::string& unix_path);
  // Optional, before start(): opens the main channel's link now rather than when QEMU
  // connects, so that a failure shows before QEMU is told to migrate. Post-copy recovery
  // needs it: QEMU 7.2 cannot leave its recovery state if the path fails under it.
  Status connect_main();
  void start();
  // stdio mode: on the session's thread, opens the link and runs the one channel on fds 0
  // (stream) and 1 (RP); a failure is wait()'s.
  void start_stdio();

  // wait(), done(), abort(), channels(): internal/session_base.h.

 private:
  Result<std::unique_ptr<dataplane::Transport>> open_link(uint16_t index);
  Result<std::unique_ptr<dataplane::Transport>> reopen_broken_handshake(
      uint16_t index, Status why, dataplane::ResumeOptions& resume);
  std::unique_ptr<PageStreamEncoder> make_codec() const;
  void accept_loop();

  SendOptions opt_;
  uint64_t session_id_;
  int listen_fd_ = -1;
  std::string unix_path_;
  std::unique_ptr<dataplane::Transport> main_link_;  // connect_main()'s, until QEMU connects
};

}  // namespace ferry::pipeline
