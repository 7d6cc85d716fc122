// dataplane/net.cc — see net.h.
#include "dataplane/net.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>

namespace ferry::dataplane {
namespace {

Status io_error(const std::string& what) {
  return error(ErrorCode::kIo, what + ": " + std::strerror(errno));
}

Result<sockaddr_un> unix_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path)) {
    return error(ErrorCode::kInvalidArgument, "unix socket path empty or too long: " + path);
  }
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

int remaining_ms(std::chrono::steady_clock::time_point deadline, int timeout_ms) {
  if (timeout_ms < 0) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - std::chrono::steady_clock::now())
                  .count();
  return left < 0 ? 0 : static_cast<int>(left);
}

Status wait_fd(int fd, short events, std::chrono::steady_clock::time_point deadline,
               int timeout_ms) {
  for (;;) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, remaining_ms(deadline, timeout_ms));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return io_error("poll");
    if (r == 0) return error(ErrorCode::kTimeout, "timed out");
    return Status::ok();
  }
}

// connect() that gives up after timeout_ms; returns 0 or -1 with errno set. The socket is
// left blocking, as it came.
int connect_with_deadline(int fd, const sockaddr* addr, socklen_t len, int timeout_ms) {
  if (timeout_ms < 0) return ::connect(fd, addr, len);
  int fl = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  int rc = ::connect(fd, addr, len);
  if (rc != 0 && errno == EINPROGRESS) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    if (!wait_fd(fd, POLLOUT, deadline, timeout_ms)) {
      errno = ETIMEDOUT;
      return -1;
    }
    int err = 0;
    socklen_t el = sizeof(err);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    errno = err;
    rc = err == 0 ? 0 : -1;
  }
  int saved = errno;
  ::fcntl(fd, F_SETFL, fl);
  errno = saved;
  return rc;
}

}  // namespace

Result<Endpoint> parse_endpoint(const std::string& s) {
  Endpoint ep;
  ep.text = s;
  if (s.rfind("unix:", 0) == 0) {
    ep.kind = Endpoint::Kind::kUnix;
    ep.path = s.substr(5);
    if (ep.path.empty()) return error(ErrorCode::kInvalidArgument, "empty unix path in " + s);
    return ep;
  }
  if (s.rfind("tcp:", 0) == 0) {
    ep.kind = Endpoint::Kind::kTcp;
    std::string rest = s.substr(4);
    auto colon = rest.rfind(':');
    if (colon == std::string::npos || colon + 1 >= rest.size()) {
      return error(ErrorCode::kInvalidArgument, "expected tcp:HOST:PORT, got " + s);
    }
    ep.host = rest.substr(0, colon);
    ep.port = rest.substr(colon + 1);
    if (ep.host.size() >= 2 && ep.host.front() == '[' && ep.host.back() == ']') {
      ep.host = ep.host.substr(1, ep.host.size() - 2);
    }
    return ep;
  }
  return error(ErrorCode::kInvalidArgument, "expected unix:PATH or tcp:HOST:PORT, got " + s);
}

Result<int> listen_on(const Endpoint& ep) {
  if (ep.kind == Endpoint::Kind::kUnix) {
    auto a = unix_addr(ep.path);
    if (!a) return a.status();
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return io_error("socket");
    ::unlink(ep.path.c_str());
    if (::bind(fd, reinterpret_cast<sockaddr*>(&*a), sizeof(*a)) != 0 || ::listen(fd, 4) != 0) {
      Status st = io_error("cannot listen on " + ep.text);
      ::close(fd);
      return st;
    }
    return fd;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  int gai =
      ::getaddrinfo(ep.host.empty() ? nullptr : ep.host.c_str(), ep.port.c_str(), &hints, &res);
  if (gai != 0) {
    return error(ErrorCode::kInvalidArgument,
                 "cannot resolve " + ep.text + ": " + ::gai_strerror(gai));
  }
  Status last = error(ErrorCode::kIo, "no address for " + ep.text);
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 4) == 0) {
      ::freeaddrinfo(res);
      return fd;
    }
    last = io_error("cannot listen on " + ep.text);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return last;
}

Result<int> accept_one(int listen_fd, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  FERRY_RETURN_IF_ERROR(wait_fd(listen_fd, POLLIN, deadline, timeout_ms));
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) return fd;
    if (errno != EINTR) return io_error("accept");
  }
}

Result<int> connect_to(const Endpoint& ep, int timeout_ms) {
  if (ep.kind == Endpoint::Kind::kUnix) {
    auto a = unix_addr(ep.path);
    if (!a) return a.status();
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return error(ErrorCode::kIo, std::strerror(errno));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&*a), sizeof(*a)) != 0) {
      Status st = error(ErrorCode::kIo, std::strerror(errno));
      ::close(fd);
      return st;
    }
    return fd;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int gai = ::getaddrinfo(ep.host.c_str(), ep.port.c_str(), &hints, &res);
  if (gai != 0) return error(ErrorCode::kInvalidArgument, ::gai_strerror(gai));
  Status last = error(ErrorCode::kIo, "no address");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  constexpr auto kRetry = std::chrono::milliseconds(250);
  for (;;) {
    bool no_route = false;
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) {
        last = error(ErrorCode::kIo, std::strerror(errno));
        continue;
      }
      using std::chrono::duration_cast;
      using std::chrono::milliseconds;
      const int64_t left_ms =
          duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      const int left = timeout_ms < 0 ? -1 : static_cast<int>(std::max<int64_t>(1, left_ms));
      if (connect_with_deadline(fd, ai->ai_addr, ai->ai_addrlen, left) == 0) {
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ::freeaddrinfo(res);
        return fd;
      }
      no_route = no_route || errno == EHOSTUNREACH || errno == ENETUNREACH;
      // Refused: the host answered and nothing listens there (the peer process is gone).
      last =
          error(errno == ECONNREFUSED ? ErrorCode::kRefused : ErrorCode::kIo, std::strerror(errno));
      ::close(fd);
    }
    // No route to the peer (its ARP went unanswered, the link is down) is no answer, as an
    // unanswered SYN is: a link flap or a switch reconverging may end in a moment, so try
    // again until the connect timeout, as an unanswered SYN waits. A refusal is an answer.
    if (!no_route || timeout_ms < 0 || std::chrono::steady_clock::now() + kRetry >= deadline) {
      break;
    }
    std::this_thread::sleep_for(kRetry);
  }
  ::freeaddrinfo(res);
  return last;
}

Status set_nonblocking(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return io_error("fcntl");
  return Status::ok();
}

Status write_all(int fd, const void* data, size_t n, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      p += w;
      n -= static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      FERRY_RETURN_IF_ERROR(wait_fd(fd, POLLOUT, deadline, timeout_ms));
      continue;
    }
    return io_error("write");
  }
  return Status::ok();
}

}  // namespace ferry::dataplane
