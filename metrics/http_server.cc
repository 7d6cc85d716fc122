// metrics/http_server.cc — see http_server.h.
#include "metrics/http_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <list>
#include <vector>

#include "common/clock.h"
#include "dataplane/net.h"

namespace ferry::metrics {
namespace {

std::string reply(int code, const char* reason, const std::string& content_type,
                  const std::string& body, bool head_only, const char* extra = "") {
  std::string r = "HTTP/1.1 " + std::to_string(code) + " " + reason +
                  "\r\nContent-Type: " + content_type +
                  "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra +
                  "Connection: close\r\n\r\n";
  if (!head_only) r += body;
  return r;
}

constexpr auto kDrainFor = std::chrono::seconds(1);  // at most, after the response

struct Client {
  int fd = -1;
  TimePoint deadline;
  std::string in = {};
  std::string out = {};
  size_t sent = 0;
  bool responding = false;
  // Response sent and our side shut: what the client still sends is read and dropped until
  // it closes, so that closing does not reset the connection (a reset can destroy the
  // response before the client read it, e.g. after a 431 with the request still coming).
  bool draining = false;
};

}  // namespace

std::string http_response(std::string_view head, const std::function<std::string()>& body,
                          int* status) {
  auto done = [&](int code, std::string r) {
    if (status) *status = code;
    return r;
  };
  const char* kText = "text/plain; charset=utf-8";
  // Request line: METHOD SP TARGET SP HTTP/1.x
  const size_t eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos || sp1 == 0 ||
      sp2 == sp1 + 1 || line.substr(sp2 + 1).rfind("HTTP/1.", 0) != 0 ||
      line.substr(sp2 + 1).size() != 8 || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return done(400, reply(400, "Bad Request", kText, "bad request\n", false));
  }
  const std::string_view method = line.substr(0, sp1);
  std::string_view path = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const bool head_only = method == "HEAD";
  if (method != "GET" && !head_only) {
    return done(405, reply(405, "Method Not Allowed", kText, "only GET and HEAD\n", false,
                           "Allow: GET, HEAD\r\n"));
  }
  if (size_t q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
  if (path != "/metrics") {
    return done(404, reply(404, "Not Found", kText, "not found: try /metrics\n", head_only));
  }
  return done(200, reply(200, "OK", "text/plain; version=0.0.4; charset=utf-8", body(), head_only));
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(const std::string& spec,
                                                      std::function<std::string()> body,
                                                      HttpServerOptions options) {
  auto ep = dataplane::parse_endpoint(spec);
  if (!ep || ep->kind != dataplane::Endpoint::Kind::kTcp) {
    return error(ErrorCode::kInvalidArgument, "expected tcp:HOST:PORT, got '" + spec + "'");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const int gai =
      ::getaddrinfo(ep->host.empty() ? nullptr : ep->host.c_str(), ep->port.c_str(), &hints, &res);
  if (gai != 0) {
    return error(ErrorCode::kInvalidArgument,
                 "cannot resolve " + spec + ": " + ::gai_strerror(gai));
  }
  Status last = error(ErrorCode::kIo, "no address for " + spec);
  int fd = -1;
  for (addrinfo* ai = res; ai && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 16) != 0) {
      const int e = errno;
      last = error(ErrorCode::kIo,
                   "cannot listen on " + spec + ": " + std::strerror(e) +
                       (e == EADDRINUSE ? " (another process holds the port: choose another "
                                          "with --metrics tcp:HOST:PORT)"
                                        : ""));
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) return last;
  sockaddr_storage a{};
  socklen_t alen = sizeof a;
  uint16_t port = 0;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &alen) == 0) {
    port = ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&a)->sin6_port
                                         : reinterpret_cast<sockaddr_in*>(&a)->sin_port);
  }
  return std::unique_ptr<HttpServer>(new HttpServer(fd, port, std::move(body), std::move(options)));
}

HttpServer::HttpServer(int listen_fd, uint16_t port, std::function<std::string()> body,
                       HttpServerOptions options)
    : listen_fd_(listen_fd),
      stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      port_(port),
      body_(std::move(body)),
      opt_(std::move(options)) {
  // The thread starts with every signal blocked (and keeps them so): a process signal such as
  // SIGTERM must go to the threads that handle it (apps/stop_signals.h), never end the process
  // through this one, whenever the server was started.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  thread_ = std::thread([this] { run(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

HttpServer::~HttpServer() {
  uint64_t one = 1;
  ssize_t r = ::write(stop_fd_, &one, sizeof one);
  (void)r;
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
  ::close(stop_fd_);
}

void HttpServer::run() {
  std::list<Client> clients;
  std::vector<pollfd> fds;
  std::vector<Client*> order;
  TimePoint next_tick = Clock::now() + std::chrono::milliseconds(opt_.tick_ms);
  for (;;) {
    fds.clear();
    order.clear();
    fds.push_back({stop_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    TimePoint wake = opt_.on_tick ? next_tick : Clock::now() + std::chrono::seconds(1);
    for (Client& c : clients) {
      fds.push_back({c.fd, static_cast<short>(c.responding && !c.draining ? POLLOUT : POLLIN), 0});
      order.push_back(&c);
      if (c.deadline < wake) wake = c.deadline;
    }
    const int n = ::poll(fds.data(), fds.size(), ms_left(wake));
    if (n < 0 && errno != EINTR) return;
    if (fds[0].revents) return;
    const TimePoint now = Clock::now();
    if (opt_.on_tick && now >= next_tick) {
      opt_.on_tick();
      next_tick = now + std::chrono::milliseconds(opt_.tick_ms);
    }
    if (fds[1].revents & POLLIN) {
      for (;;) {
        const int cfd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (cfd < 0) break;
        if (clients.size() >= opt_.max_clients) {
          ::close(cfd);  // a flood of idle connections must not crowd out the real scraper
          continue;
        }
        clients.push_back(
            {.fd = cfd, .deadline = now + std::chrono::milliseconds(opt_.client_timeout_ms)});
      }
    }
    for (size_t i = 0; i < order.size(); ++i) {
      Client& c = *order[i];
      const short ev = fds[i + 2].revents;
      if (c.draining) {
        if (ev) {
          char buf[4096];
          ssize_t r;
          while ((r = ::recv(c.fd, buf, sizeof buf, 0)) > 0) {
          }
          if (r == 0 || (errno != EAGAIN && errno != EINTR)) c.deadline = now;
        }
        continue;
      }
      if (!c.responding && (ev & (POLLIN | POLLHUP | POLLERR))) {
        char buf[2048];
        for (;;) {
          const ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
          if (r > 0) {
            c.in.append(buf, static_cast<size_t>(r));
            if (c.in.size() > opt_.max_request_bytes) break;
            continue;
          }
          if (r == 0 || (errno != EAGAIN && errno != EINTR)) c.deadline = now;  // gone
          break;
        }
        const size_t end = c.in.find("\r\n\r\n");
        if (end != std::string::npos && end + 4 <= opt_.max_request_bytes) {
          c.out = http_response(std::string_view(c.in).substr(0, end + 2), body_);
          c.responding = true;
        } else if (c.in.size() > opt_.max_request_bytes) {
          const char* kBody = "request head too large\n";
          c.out = std::string(
                      "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: "
                      "text/plain; charset=utf-8\r\nContent-Length: ") +
                  std::to_string(std::strlen(kBody)) + "\r\nConnection: close\r\n\r\n" + kBody;
          c.responding = true;
        }
        if (c.responding) c.deadline = now + std::chrono::milliseconds(opt_.client_timeout_ms);
      }
      if (c.responding) {
        while (c.sent < c.out.size()) {
          const ssize_t w = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent,
                                   MSG_NOSIGNAL | MSG_DONTWAIT);
          if (w > 0) {
            c.sent += static_cast<size_t>(w);
          } else {
            if (w < 0 && errno != EAGAIN && errno != EINTR) c.deadline = now;  // gone
            break;
          }
        }
        if (c.sent == c.out.size()) {
          answered_.fetch_add(1, std::memory_order_relaxed);
          ::shutdown(c.fd, SHUT_WR);
          c.draining = true;
          c.deadline = std::min(c.deadline, now + kDrainFor);
        }
      }
    }
    for (auto it = clients.begin(); it != clients.end();) {
      if (it->deadline <= now) {
        if (!it->draining) {
          // Timed out (or gone) before its response went out: reset, so the kernel does not
          // keep a stalled reader's unsent megabytes around after the close.
          const linger reset{.l_onoff = 1, .l_linger = 0};
          ::setsockopt(it->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
        }
        ::close(it->fd);
        it = clients.erase(it);
      } else {
        ++it;
      }
    }
  }
}

}  // namespace ferry::metrics
