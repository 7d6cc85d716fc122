// qemu-channel/qmp_client.h — a synchronous QMP (QEMU Machine Protocol) client.
//
// Role: `ferry migrate` drives both QEMUs through QMP: capabilities and parameters, `migrate`,
// `query-migrate` every ~100 ms for the policy engine, `migrate-start-postcopy`,
// `migrate_cancel`, and MIGRATION / STOP / RESUME events. This is that client.
//
// Protocol (docs/interop/qmp-spec in QEMU): the server greets with {"QMP": {...}}; the client
// must send {"execute": "qmp_capabilities"} before anything else; then every command
// {"execute": C, "arguments": A, "id": N} gets exactly one {"return": R, "id": N} or
// {"error": {"class": K, "desc": D}, "id": N}; asynchronous {"event": E, "data": X,
// "timestamp": {...}} messages may arrive at any time, also between a command and its reply.
// Messages are JSON objects, one per line.
//
// Properties:
//  * Every call has a deadline; nothing blocks longer than the timeout it was given.
//  * Replies are matched by id: a reply that arrives after its command timed out is dropped
//    when it shows up, never handed to a later command.
//  * Events are queued in arrival order (bounded, oldest dropped beyond kMaxQueuedEvents)
//    whatever call happened to read them; pop_event()/wait_event() take them out.
//  * Hostile or broken peers: a line that is not a JSON object, or a line longer than
//    kMaxLineBytes, is one kProtocol error naming the byte offset in the connection; EOF is
//    kClosed. After such an error the client is unusable (every call returns the same error).
//
// Threading: one thread at a time per client (no internal locking). Ownership: the client owns
// its socket and closes it in the destructor.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/json.h"
#include "common/status.h"

namespace ferry::qemu {

struct QmpEvent {
  std::string name;          // "MIGRATION", "STOP", "RESUME", "MIGRATION_PASS", ...
  json::Value data;          // the "data" member (null when absent)
  double timestamp_s = 0.0;  // QEMU's wall-clock timestamp (seconds.microseconds)
};

class QmpClient {
 public:
  static constexpr int kDefaultTimeoutMs = 5000;
  // The replies ferry asks for are a few KiB (query-qmp-schema, the largest QEMU has, ~200
  // KiB). The bound is also on memory: a parsed line costs up to ~30x its bytes (a Value per
  // "[]," of input), so a hostile line of 4 MiB costs ~120 MiB, not gigabytes.
  static constexpr size_t kMaxLineBytes = 4u << 20;
  static constexpr size_t kMaxQueuedEvents = 4096;

  // Connects to `address` and completes the handshake (greeting + qmp_capabilities).
  // address: "unix:/path/to/qmp.sock", a bare "/path" (unix), or "tcp:HOST:PORT".
  // A socket that does not exist yet or refuses the connection is retried (every 20 ms) until
  // the deadline, because a QEMU that was just started creates its socket a little later.
  // Returns kTimeout, kIo (bad address, connect error) or kProtocol (not a QMP server).
  static Result<std::unique_ptr<QmpClient>> connect(std::string_view address,
                                                    int timeout_ms = kDefaultTimeoutMs);

  // Completes the handshake on `fd`, an already connected stream socket (a socketpair, an fd
  // passed by a parent), which the client then owns (closed even on failure). `name` stands
  // for the address in messages. Errors as connect().
  static Result<std::unique_ptr<QmpClient>> connect_fd(int fd, std::string_view name,
                                                       int timeout_ms = kDefaultTimeoutMs);

  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Runs one command and returns its "return" member. `arguments` is sent as "arguments"
  // unless it is null. Errors: the QMP error as kInvalidArgument (kUnavailable for
  // CommandNotFound), "QEMU rejected 'migrate': <desc> (<class>)"; kTimeout when no reply
  // arrives in time (the connection stays usable); kClosed / kProtocol / kIo otherwise.
  Result<json::Value> execute(std::string_view command, const json::Value& arguments = {},
                              int timeout_ms = kDefaultTimeoutMs);
  // As execute(), but out of band ("exec-oob") when QEMU offered it (the greeting's "oob"
  // capability, enabled at the handshake): QEMU runs it on the monitor's own thread at once,
  // even while its main loop is blocked. Post-copy recovery needs that: a destination whose
  // guest waits for pages that no longer come may block its main loop, and migrate-recover
  // is what unblocks it. Only commands QEMU marks allow-oob; without OOB, an execute().
  Result<json::Value> execute_oob(std::string_view command, const json::Value& arguments = {},
                                  int timeout_ms = kDefaultTimeoutMs);
  bool oob() const { return oob_; }

  // Reads whatever arrives within `timeout_ms` (0 = only what is already there) and queues
  // events. Returns ok when nothing went wrong, even if nothing arrived.
  Status poll(int timeout_ms = 0);

  // Takes the oldest queued event, if any (does not read the socket; call poll() first).
  std::optional<QmpEvent> pop_event();
  size_t queued_events() const { return events_.size(); }
  uint64_t dropped_events() const { return dropped_events_; }

  // Waits for the first event named `name` (queued or new); other events stay queued in
  // order. `match`, if given, must also accept the event's data (e.g. a MIGRATION status).
  // kTimeout if none arrives in time.
  Result<QmpEvent> wait_event(std::string_view name, int timeout_ms,
                              bool (*match)(const json::Value& data) = nullptr);

  // The greeting's "QMP" member: {"version": {"qemu": {"major":..}, "package":..},
  // "capabilities": [...]}.
  const json::Value& greeting() const { return greeting_; }
  // "7.2.22" built from the greeting.
  std::string qemu_version() const;
  // {major, minor, micro} from the greeting, for feature checks (e.g. >= 8.0).
  int qemu_version_major() const;
  int qemu_version_minor() const;

  const std::string& address() const { return address_; }
  int fd() const { return fd_; }

 private:
  QmpClient(int fd, std::string address);
  static Result<std::unique_ptr<QmpClient>> handshake(int fd, std::string address,
                                                      uint64_t deadline_ns, int timeout_ms);

  // Reads until one complete non-event message (greeting or reply) is available, or the
  // deadline passes, and returns it. Events met on the way are queued.
  Result<json::Value> read_message(uint64_t deadline_ns);
  // Splits the complete lines already buffered: queues events, and stops at the first other
  // message (put in `out`) or when no complete line is left (`out` empty).
  Status next_buffered(std::optional<json::Value>& out);
  Status read_some(uint64_t deadline_ns);  // one poll()+read(); kTimeout at the deadline
  Status write_all(std::string_view bytes, uint64_t deadline_ns);
  void queue_event(const json::Value& msg);
  Result<json::Value> run(std::string_view command, const json::Value& arguments, int timeout_ms,
                          bool out_of_band);
  Status latch(Status st);  // remembers a fatal error and returns it

  int fd_ = -1;
  std::string address_;
  std::string inbuf_;      // bytes read but not yet split into lines
  size_t scanned_ = 0;     // bytes of inbuf_ already searched for the end of the line
  uint64_t consumed_ = 0;  // connection bytes before inbuf_[0] (for error offsets)
  uint64_t next_id_ = 1;
  json::Value greeting_;
  bool oob_ = false;  // out-of-band execution enabled
  std::deque<QmpEvent> events_;
  uint64_t dropped_events_ = 0;
  uint64_t events_total_ = 0;  // events ever queued
  Status fatal_;               // first fatal error (closed / protocol / io); ok while usable
};

}  // namespace ferry::qemu
