// qemu-channel/qmp_client.cc — see qmp_client.h.
#include "qemu-channel/qmp_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "common/clock.h"
#include "common/log.h"

namespace ferry::qemu {

namespace {

constexpr int kConnectRetryMs = 20;

// Milliseconds left until `deadline_ns`, rounded up so that a poll never returns early and
// spins; 0 once the deadline has passed.
int ms_left(uint64_t deadline_ns) {
  uint64_t now = now_ns();
  if (now >= deadline_ns) return 0;
  uint64_t ms = (deadline_ns - now + 999'999) / 1'000'000;
  return ms > 0x7fffffff ? 0x7fffffff : int(ms);
}

uint64_t deadline_after(int timeout_ms) {
  return now_ns() + uint64_t(timeout_ms < 0 ? 0 : timeout_ms) * 1'000'000ull;
}

std::string errno_text(int err) { return std::strerror(err); }

bool set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

// Waits until a non-blocking connect() finishes. Returns 0 or the connect errno.
int finish_connect(int fd, uint64_t deadline_ns) {
  for (;;) {
    pollfd p{fd, POLLOUT, 0};
    int n = ::poll(&p, 1, ms_left(deadline_ns));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return ETIMEDOUT;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
    return err;
  }
}

// One connection attempt. Returns the fd, or -errno.
int try_connect_unix(const std::string& path, uint64_t deadline_ns) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.data(), path.size());
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  int err = rc == 0 ? 0 : errno;
  if (err == EINPROGRESS || err == EAGAIN) err = finish_connect(fd, deadline_ns);
  if (err != 0) {
    ::close(fd);
    return -err;
  }
  return fd;
}

int try_connect_tcp(const std::string& host, const std::string& port, uint64_t deadline_ns,
                    std::string& resolve_error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int gai = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (gai != 0) {
    resolve_error = gai_strerror(gai);
    return -EINVAL;
  }
  int last_err = ECONNREFUSED;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd =
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      last_err = errno;
      continue;
    }
    int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    if (err == EINPROGRESS) err = finish_connect(fd, deadline_ns);
    if (err == 0) {
      freeaddrinfo(res);
      return fd;
    }
    ::close(fd);
    last_err = err;
  }
  freeaddrinfo(res);
  return -last_err;
}

bool match_nothing(const json::Value&) { return true; }

}  // namespace

QmpClient::QmpClient(int fd, std::string address) : fd_(fd), address_(std::move(address)) {}

QmpClient::~QmpClient() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<QmpClient>> QmpClient::connect(std::string_view address, int timeout_ms) {
  const uint64_t deadline = deadline_after(timeout_ms);
  std::string addr(address);
  bool is_tcp = false;
  std::string path, host, port;
  if (address.rfind("tcp:", 0) == 0) {
    is_tcp = true;
    std::string_view hp = address.substr(4);
    size_t colon = hp.rfind(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == hp.size()) {
      return error(ErrorCode::kInvalidArgument, "QMP address '" + addr + "' is not tcp:HOST:PORT");
    }
    host = std::string(hp.substr(0, colon));
    port = std::string(hp.substr(colon + 1));
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
  } else {
    path = std::string(address.rfind("unix:", 0) == 0 ? address.substr(5) : address);
    if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      return error(ErrorCode::kInvalidArgument,
                   "QMP address '" + addr +
                       "' is not a usable unix socket path (empty or longer than 107 bytes)");
    }
  }

  int fd = -1;
  int last_err = 0;
  for (;;) {
    std::string resolve_error;
    fd = is_tcp ? try_connect_tcp(host, port, deadline, resolve_error)
                : try_connect_unix(path, deadline);
    if (fd >= 0) break;
    last_err = -fd;
    if (!resolve_error.empty()) {
      return error(ErrorCode::kInvalidArgument,
                   "cannot resolve QMP address '" + addr + "': " + resolve_error);
    }
    // Not there yet (QEMU still starting) or busy: retry until the deadline.
    bool retryable = last_err == ENOENT || last_err == ECONNREFUSED || last_err == EAGAIN;
    if (!retryable) {
      return error(ErrorCode::kIo,
                   "cannot connect to QMP at '" + addr + "': " + errno_text(last_err));
    }
    int left = ms_left(deadline);
    if (left == 0) {
      return error(ErrorCode::kTimeout,
                   "cannot connect to QMP at '" + addr + "' within " + std::to_string(timeout_ms) +
                       " ms: " + errno_text(last_err) + " (is QEMU running with -qmp " + addr +
                       ",server=on,wait=off?)");
    }
    ::poll(nullptr, 0, left < kConnectRetryMs ? left : kConnectRetryMs);
  }

  return handshake(fd, addr, deadline, timeout_ms);
}

Result<std::unique_ptr<QmpClient>> QmpClient::connect_fd(int fd, std::string_view name,
                                                         int timeout_ms) {
  return handshake(fd, std::string(name), deadline_after(timeout_ms), timeout_ms);
}

Result<std::unique_ptr<QmpClient>> QmpClient::handshake(int fd, std::string addr, uint64_t deadline,
                                                        int timeout_ms) {
  std::unique_ptr<QmpClient> client(new QmpClient(fd, addr));
  if (!set_nonblocking(fd)) {
    return error(ErrorCode::kIo,
                 "cannot set QMP socket '" + addr + "' non-blocking: " + errno_text(errno));
  }

  auto greeting = client->read_message(deadline);
  if (!greeting) {
    if (greeting.status().code() == ErrorCode::kTimeout) {
      return error(ErrorCode::kTimeout, "QMP server at '" + addr + "' sent no greeting within " +
                                            std::to_string(timeout_ms) + " ms");
    }
    return greeting.status();
  }
  const json::Value* qmp = greeting->find("QMP");
  if (!qmp || !qmp->is_object()) {
    return error(ErrorCode::kProtocol, "'" + addr +
                                           "' is not a QMP server: its first message has no "
                                           "\"QMP\" greeting: " +
                                           greeting->dump().substr(0, 200));
  }
  client->greeting_ = *qmp;
  // Out-of-band execution when offered (execute_oob()); replies are matched by id anyway.
  const json::Value& offered = (*qmp)["capabilities"];
  bool oob = false;
  for (size_t i = 0; offered.is_array() && i < offered.size(); ++i) {
    oob = oob || offered[i].as_string() == "oob";
  }
  json::Value enable;
  if (oob) {
    json::Value list = json::Value::array();
    list.push_back(json::Value("oob"));
    enable = json::Value::object({{"enable", list}});
  }
  auto caps = client->execute("qmp_capabilities", enable, ms_left(deadline));
  if (!caps) return caps.status();
  client->oob_ = oob;
  FERRY_LOG_DEBUG("qmp: connected to %s (QEMU %s)", addr.c_str(), client->qemu_version().c_str());
  return client;
}

Status QmpClient::latch(Status st) {
  if (fatal_.is_ok()) fatal_ = st;
  return st;
}

Status QmpClient::read_some(uint64_t deadline_ns) {
  if (!fatal_.is_ok()) return fatal_;
  for (;;) {
    pollfd p{fd_, POLLIN, 0};
    int n = ::poll(&p, 1, ms_left(deadline_ns));
    if (n < 0) {
      if (errno == EINTR) continue;
      return latch(error(ErrorCode::kIo, "poll on QMP '" + address_ + "': " + errno_text(errno)));
    }
    if (n == 0) return error(ErrorCode::kTimeout, "QMP read timed out");
    char buf[65536];
    ssize_t got = ::read(fd_, buf, sizeof buf);
    if (got > 0) {
      inbuf_.append(buf, size_t(got));
      return Status::ok();
    }
    if (got == 0) {
      return latch(error(ErrorCode::kClosed,
                         "QEMU closed the QMP connection '" + address_ + "' (did it exit?)"));
    }
    if (errno == EINTR || errno == EAGAIN) continue;
    if (errno == ECONNRESET) {
      return latch(error(ErrorCode::kClosed,
                         "QEMU closed the QMP connection '" + address_ + "' (did it exit?)"));
    }
    return latch(error(ErrorCode::kIo, "read from QMP '" + address_ + "': " + errno_text(errno)));
  }
}

Status QmpClient::write_all(std::string_view bytes, uint64_t deadline_ns) {
  if (!fatal_.is_ok()) return fatal_;
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd_, POLLOUT, 0};
      int r = ::poll(&p, 1, ms_left(deadline_ns));
      if (r == 0) {
        // A half-written command leaves the stream unusable.
        return latch(
            error(ErrorCode::kTimeout, "QMP '" + address_ + "' did not accept a command in time"));
      }
      continue;
    }
    int err = errno;
    if (err == EPIPE || err == ECONNRESET) {
      return latch(error(ErrorCode::kClosed,
                         "QEMU closed the QMP connection '" + address_ + "' (did it exit?)"));
    }
    return latch(error(ErrorCode::kIo, "write to QMP '" + address_ + "': " + errno_text(err)));
  }
  return Status::ok();
}

void QmpClient::queue_event(const json::Value& msg) {
  QmpEvent ev;
  ev.name = msg["event"].as_string();
  ev.data = msg["data"];
  const json::Value& ts = msg["timestamp"];
  ev.timestamp_s = ts["seconds"].as_double() + ts["microseconds"].as_double() * 1e-6;
  ++events_total_;
  if (events_.size() >= kMaxQueuedEvents) {
    events_.pop_front();
    ++dropped_events_;
  }
  events_.push_back(std::move(ev));
}

Status QmpClient::next_buffered(std::optional<json::Value>& out) {
  out.reset();
  if (!fatal_.is_ok()) return fatal_;
  // Lines are taken from `head` on and erased once at the end: erasing each line from the
  // front would move the rest of the buffer once per line (quadratic in a read of many short
  // lines). scanned_ remembers how far a line still being received was searched, so a long
  // line arriving in many reads is scanned once, not once per read.
  size_t head = 0;
  auto take = [&](size_t n) {
    head += n;
    consumed_ += n;
    scanned_ = 0;
  };
  struct Compact {
    std::string& buf;
    size_t& head;
    ~Compact() { buf.erase(0, head); }
  } compact{inbuf_, head};
  for (;;) {
    const size_t from = head + scanned_;
    size_t nl = inbuf_.find('\n', from);
    if (nl == std::string::npos) {
      scanned_ = inbuf_.size() - head;
      if (inbuf_.size() - head > kMaxLineBytes) {
        return latch(error(ErrorCode::kProtocol, "QMP '" + address_ + "' sent a line longer than " +
                                                     std::to_string(kMaxLineBytes) +
                                                     " bytes at byte " +
                                                     std::to_string(consumed_)));
      }
      return Status::ok();
    }
    std::string_view line(inbuf_.data() + head, nl - head);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const uint64_t line_offset = consumed_;
    const bool blank = line.find_first_not_of(" \t") == std::string_view::npos;
    Result<json::Value> msg = blank ? Result<json::Value>(json::Value()) : json::parse(line);
    take(nl + 1 - head);
    if (blank) continue;
    if (!msg) {
      return latch(error(ErrorCode::kProtocol, "QMP '" + address_ + "' sent a line at byte " +
                                                   std::to_string(line_offset) +
                                                   " that is not JSON: " + msg.status().message()));
    }
    if (!msg->is_object()) {
      return latch(error(ErrorCode::kProtocol, "QMP '" + address_ + "' sent a message at byte " +
                                                   std::to_string(line_offset) +
                                                   " that is not a JSON object"));
    }
    if (msg->contains("event")) {
      queue_event(*msg);
      continue;
    }
    out = std::move(msg).value();
    return Status::ok();
  }
}

Result<json::Value> QmpClient::read_message(uint64_t deadline_ns) {
  for (;;) {
    std::optional<json::Value> msg;
    FERRY_RETURN_IF_ERROR(next_buffered(msg));
    if (msg) return std::move(*msg);
    FERRY_RETURN_IF_ERROR(read_some(deadline_ns));
  }
}

Result<json::Value> QmpClient::execute(std::string_view command, const json::Value& arguments,
                                       int timeout_ms) {
  return run(command, arguments, timeout_ms, false);
}

Result<json::Value> QmpClient::execute_oob(std::string_view command, const json::Value& arguments,
                                           int timeout_ms) {
  return run(command, arguments, timeout_ms, oob_);
}

Result<json::Value> QmpClient::run(std::string_view command, const json::Value& arguments,
                                   int timeout_ms, bool out_of_band) {
  if (!fatal_.is_ok()) return fatal_;
  const uint64_t deadline = deadline_after(timeout_ms);
  const int64_t id = int64_t(next_id_++);
  json::Value msg = json::Value::object({{out_of_band ? "exec-oob" : "execute", command}});
  if (!arguments.is_null()) msg.set("arguments", arguments);
  msg.set("id", id);
  std::string text = msg.dump();
  text.push_back('\n');
  FERRY_RETURN_IF_ERROR(write_all(text, deadline));

  for (;;) {
    auto reply = read_message(deadline);
    if (!reply) {
      if (reply.status().code() == ErrorCode::kTimeout) {
        return error(ErrorCode::kTimeout, "QMP command '" + std::string(command) + "' on '" +
                                              address_ + "' got no reply within " +
                                              std::to_string(timeout_ms) + " ms");
      }
      return reply.status();
    }
    const json::Value* rid = reply->find("id");
    if (rid && !(rid->is_int() && rid->as_int() == id)) {
      // The late reply of a command that timed out earlier: not ours.
      FERRY_LOG_DEBUG("qmp: dropping stale reply %s", reply->dump().c_str());
      continue;
    }
    if (const json::Value* ret = reply->find("return")) return *ret;
    if (const json::Value* err = reply->find("error")) {
      const std::string& cls = (*err)["class"].as_string();
      ErrorCode code =
          cls == "CommandNotFound" ? ErrorCode::kUnavailable : ErrorCode::kInvalidArgument;
      return error(code, "QEMU rejected '" + std::string(command) +
                             "': " + (*err)["desc"].as_string() + " (" + cls + ")");
    }
    if (!rid) {
      // Neither a reply nor an event (e.g. a second greeting): ignore it.
      FERRY_LOG_DEBUG("qmp: ignoring message %s", reply->dump().c_str());
      continue;
    }
    return latch(error(ErrorCode::kProtocol, "QMP reply to '" + std::string(command) +
                                                 "' has neither \"return\" nor \"error\""));
  }
}

Status QmpClient::poll(int timeout_ms) {
  if (!fatal_.is_ok()) return fatal_;
  const uint64_t deadline = deadline_after(timeout_ms);
  // Wait (up to the deadline) for the first bytes, then take everything already there. Lines
  // already buffered (read along with an earlier reply) count as arrived: no waiting then.
  const uint64_t events_before = events_total_;
  bool waited = false;
  for (;;) {
    // Split complete lines: events are queued; a stray reply (to a command that timed out)
    // is dropped.
    for (;;) {
      std::optional<json::Value> msg;
      FERRY_RETURN_IF_ERROR(next_buffered(msg));
      if (!msg) break;
      FERRY_LOG_DEBUG("qmp: dropping stale message %s", msg->dump().c_str());
    }
    if (events_total_ != events_before) waited = true;
    Status st = read_some(waited ? 0 : deadline);
    waited = true;
    if (st.code() == ErrorCode::kTimeout) return Status::ok();
    if (!st.is_ok()) return st;
  }
}

std::optional<QmpEvent> QmpClient::pop_event() {
  if (events_.empty()) return std::nullopt;
  QmpEvent ev = std::move(events_.front());
  events_.pop_front();
  return ev;
}

Result<QmpEvent> QmpClient::wait_event(std::string_view name, int timeout_ms,
                                       bool (*match)(const json::Value& data)) {
  if (!match) match = match_nothing;
  const uint64_t deadline = deadline_after(timeout_ms);
  size_t checked = 0;  // events_[0, checked) are known not to match
  for (;;) {
    for (; checked < events_.size(); ++checked) {
      if (events_[checked].name == name && match(events_[checked].data)) {
        QmpEvent ev = std::move(events_[checked]);
        events_.erase(events_.begin() + long(checked));
        return ev;
      }
    }
    if (!fatal_.is_ok()) return fatal_;
    if (ms_left(deadline) == 0) {
      return error(ErrorCode::kTimeout, "no QMP event " + std::string(name) + " from '" + address_ +
                                            "' within " + std::to_string(timeout_ms) + " ms");
    }
    // A dropped-oldest queue could shift indexes; restart the scan in that case.
    uint64_t dropped_before = dropped_events_;
    Status st = poll(ms_left(deadline));
    if (!st.is_ok()) return st;
    if (dropped_events_ != dropped_before) checked = 0;
  }
}

std::string QmpClient::qemu_version() const {
  const json::Value& q = greeting_.get({"version", "qemu"});
  return std::to_string(q["major"].as_int()) + "." + std::to_string(q["minor"].as_int()) + "." +
         std::to_string(q["micro"].as_int());
}

int QmpClient::qemu_version_major() const {
  return int(greeting_.get({"version", "qemu", "major"}).as_int());
}

int QmpClient::qemu_version_minor() const {
  return int(greeting_.get({"version", "qemu", "minor"}).as_int());
}

}  // namespace ferry::qemu
