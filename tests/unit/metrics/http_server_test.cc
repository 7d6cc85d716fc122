// Unit tests of metrics/http_server.h over real sockets on 127.0.0.1: /metrics, 404, 405,
// bad and oversized requests, a slow client beside a scrape, concurrent scrapes, a port taken.
#include "metrics/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace ferry::metrics {
namespace {

int connect_local(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return fd;
}

// Everything the server sends until it closes (or timeout_ms passes: then "TIMEOUT" is added).
std::string read_all(int fd, int timeout_ms = 5000) {
  std::string out;
  char buf[65536];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return out + "TIMEOUT";
    const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r <= 0) return out;
    out.append(buf, static_cast<size_t>(r));
  }
}

std::string request(uint16_t port, const std::string& req) {
  const int fd = connect_local(port);
  EXPECT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  std::string r = read_all(fd);
  ::close(fd);
  return r;
}

std::string status_line(const std::string& r) { return r.substr(0, r.find("\r\n")); }
std::string body_of(const std::string& r) {
  const size_t p = r.find("\r\n\r\n");
  return p == std::string::npos ? "" : r.substr(p + 4);
}

std::unique_ptr<HttpServer> serve(std::function<std::string()> body, HttpServerOptions opt = {}) {
  auto s = HttpServer::start("tcp:127.0.0.1:0", std::move(body), std::move(opt));
  EXPECT_TRUE(s.has_value()) << s.status().message();
  EXPECT_NE((*s)->port(), 0);
  return std::move(*s);
}

TEST(HttpServer, ServesMetrics) {
  auto s = serve([] { return std::string("ferry_up 1\n"); });
  const std::string r = request(s->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK");
  EXPECT_NE(r.find("\r\nContent-Type: text/plain; version=0.0.4"), std::string::npos) << r;
  EXPECT_NE(r.find("\r\nContent-Length: 11\r\n"), std::string::npos) << r;
  EXPECT_EQ(body_of(r), "ferry_up 1\n");
  // A query string (Prometheus may add one), HTTP/1.0, HEAD (no body).
  EXPECT_EQ(body_of(request(s->port(), "GET /metrics?x=1 HTTP/1.0\r\n\r\n")), "ferry_up 1\n");
  const std::string h = request(s->port(), "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(status_line(h), "HTTP/1.1 200 OK");
  EXPECT_EQ(body_of(h), "");
}

TEST(HttpServer, NotFoundMethodAndBadRequests) {
  int calls = 0;
  auto s = serve([&] { return ++calls, std::string("x\n"); });
  EXPECT_EQ(status_line(request(s->port(), "GET / HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(status_line(request(s->port(), "GET /metricsx HTTP/1.1\r\n\r\n")),
            "HTTP/1.1 404 Not Found");
  EXPECT_EQ(status_line(request(s->port(), "POST /metrics HTTP/1.1\r\n\r\n")),
            "HTTP/1.1 405 Method Not Allowed");
  for (const char* bad :
       {"hello\r\n\r\n", "GET /metrics\r\n\r\n", "GET  /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/2.0\r\n\r\n", "GET /metrics HTTP/1.1 x\r\n\r\n", "\r\n\r\n"}) {
    EXPECT_EQ(status_line(request(s->port(), bad)), "HTTP/1.1 400 Bad Request") << bad;
  }
  EXPECT_EQ(calls, 0);  // nothing rendered for any of them
}

TEST(HttpServer, OversizedRequest) {
  HttpServerOptions opt;
  opt.max_request_bytes = 1024;
  auto s = serve([] { return std::string("x\n"); }, opt);
  // A head that never ends: answered as soon as it passes the bound, not at the timeout.
  const std::string big = "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(4096, 'a');
  const auto t0 = std::chrono::steady_clock::now();
  const std::string r = request(s->port(), big);
  EXPECT_EQ(status_line(r), "HTTP/1.1 431 Request Header Fields Too Large") << r;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  // Just within the bound is fine.
  const std::string fits =
      "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(1024 - 33 - 4, 'a') + "\r\n\r\n";
  ASSERT_LE(fits.size(), 1024u);
  EXPECT_EQ(status_line(request(s->port(), fits)), "HTTP/1.1 200 OK");
}

TEST(HttpServer, SlowClientsDoNotBlockScrapesAndTimeOut) {
  HttpServerOptions opt;
  opt.client_timeout_ms = 300;
  auto s = serve([] { return std::string("x\n"); }, opt);
  // One that says nothing, one that stops mid-request.
  const int idle = connect_local(s->port());
  const int half = connect_local(s->port());
  ASSERT_EQ(::send(half, "GET /met", 8, MSG_NOSIGNAL), 8);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(status_line(request(s->port(), "GET /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 200 OK");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(250));
  // Both are closed by the server at their deadline, without an answer.
  EXPECT_EQ(read_all(idle, 3000), "");
  EXPECT_EQ(read_all(half, 3000), "");
  ::close(idle);
  ::close(half);
}

TEST(HttpServer, AReaderThatStallsDoesNotBlockOthers) {
  HttpServerOptions opt;
  opt.client_timeout_ms = 300;
  const std::string big(8u << 20, 'm');  // far more than the socket buffers hold
  auto s = serve([&] { return big; }, opt);
  const int stalled = connect_local(s->port());
  int small = 1 << 12;
  ::setsockopt(stalled, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  const std::string req = "GET /metrics HTTP/1.1\r\n\r\n";
  ASSERT_EQ(::send(stalled, req.data(), req.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(req.size()));
  // It reads nothing; another scrape is served in full meanwhile.
  const std::string r = request(s->port(), req);
  EXPECT_EQ(body_of(r).size(), big.size());
  // At its deadline the stalled one is cut off: what it then reads ends short of the body.
  const std::string got = read_all(stalled, 5000);
  EXPECT_LT(got.size(), big.size());
  EXPECT_EQ(got.find("TIMEOUT"), std::string::npos) << got.size();
  ::close(stalled);
}

TEST(HttpServer, TooManyClientsAreTurnedAway) {
  HttpServerOptions opt;
  opt.max_clients = 2;
  opt.client_timeout_ms = 2000;
  auto s = serve([] { return std::string("x\n"); }, opt);
  const int a = connect_local(s->port()), b = connect_local(s->port());
  // The server accepts in arrival order, so c is the third whenever it is accepted.
  const int c = connect_local(s->port());
  ASSERT_EQ(::send(a, "GET /metrics HTTP/1.1\r\n", 23, MSG_NOSIGNAL), 23);
  EXPECT_EQ(read_all(c, 1500), "");  // closed at once, not at a timeout
  ASSERT_EQ(::send(a, "\r\n", 2, MSG_NOSIGNAL), 2);
  EXPECT_EQ(status_line(read_all(a)), "HTTP/1.1 200 OK");
  ::close(a);
  ::close(b);
  ::close(c);
}

TEST(HttpServer, ConcurrentScrapes) {
  // A body larger than the socket buffers: responses go out in pieces, interleaved.
  const std::string big(2u << 20, 'm');
  std::atomic<int> renders{0};
  auto s = serve([&] {
    renders.fetch_add(1);
    return big;
  });
  constexpr int kThreads = 8, kEach = 5;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        const std::string r = request(s->port(), "GET /metrics HTTP/1.1\r\n\r\n");
        if (status_line(r) == "HTTP/1.1 200 OK" && body_of(r) == big) ok.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kEach);
  EXPECT_EQ(renders.load(), kThreads * kEach);
  EXPECT_EQ(s->answered(), static_cast<uint64_t>(kThreads * kEach));
}

TEST(HttpServer, PortTakenIsAClearError) {
  auto s = serve([] { return std::string(); });
  auto again =
      HttpServer::start("tcp:127.0.0.1:" + std::to_string(s->port()), [] { return std::string(); });
  ASSERT_FALSE(again.has_value());
  EXPECT_NE(again.status().message().find("Address already in use"), std::string::npos)
      << again.status().message();
  EXPECT_NE(again.status().message().find("tcp:127.0.0.1:"), std::string::npos);
  EXPECT_FALSE(HttpServer::start("unix:/tmp/x", [] { return std::string(); }).has_value());
  EXPECT_FALSE(HttpServer::start("tcp:127.0.0.1", [] { return std::string(); }).has_value());
}

TEST(HttpServer, ItsThreadTakesNoSignal) {
  // SIGUSR1 left to its default action would end the process through any thread that does
  // not block it; the test thread blocks it, so only the server's thread could take it.
  sigset_t usr1, old;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  auto s = serve([] { return std::string("x\n"); });
  pthread_sigmask(SIG_BLOCK, &usr1, &old);
  ::kill(::getpid(), SIGUSR1);
  // Still here, and still serving; the signal waits, pending, for this thread.
  EXPECT_EQ(status_line(request(s->port(), "GET /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 200 OK");
  sigset_t pending;
  sigpending(&pending);
  EXPECT_TRUE(sigismember(&pending, SIGUSR1));
  int sig = 0;
  sigwait(&usr1, &sig);  // take it
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

TEST(HttpServer, TicksOnItsOwn) {
  std::atomic<int> ticks{0};
  HttpServerOptions opt;
  opt.tick_ms = 20;
  opt.on_tick = [&] { ticks.fetch_add(1); };
  auto s = serve([] { return std::string(); }, opt);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (ticks.load() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // NOLINT: polling a counter
  }
  EXPECT_GE(ticks.load(), 3);
}

}  // namespace
}  // namespace ferry::metrics
