// metrics/http_server.h — a tiny HTTP/1.x server for GET /metrics, on a thread of its own so
// that no scrape, however slow or malformed, touches the dataplane's threads. It knows nothing
// of what it serves: the body comes from a callback (exporter.h renders ferry's metrics).
//
// One poll() loop over non-blocking sockets: a request head (up to max_request_bytes, ended by
// an empty line) in, one response out, then the connection closes (Connection: close). A client
// has client_timeout_ms for its request and again for taking the response (then it is reset); at
// most max_clients at once (more are closed at accept).
//   GET|HEAD /metrics[?...] HTTP/1.x  -> 200, Content-Type: text/plain; version=0.0.4
//   GET|HEAD anything else            -> 404
//   another method                    -> 405
//   not a request line                -> 400
//   head larger than the bound        -> 431
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"

namespace ferry::metrics {

struct HttpServerOptions {
  size_t max_request_bytes = 8192;  // the request head; a larger one gets 431
  int client_timeout_ms = 5000;     // from accept to the last byte of the response
  size_t max_clients = 16;          // connections served at once
  // Called about every tick_ms on the server's thread (rates sampled at a steady pace,
  // whoever scrapes); may be empty.
  std::function<void()> on_tick;
  int tick_ms = 1000;
};

class HttpServer {
 public:
  // Listens on spec ("tcp:HOST:PORT"; PORT 0 = any free port) and starts the server thread.
  // body: the /metrics text, called on the server thread per request. Fails in one sentence
  // (e.g. the port is taken).
  static Result<std::unique_ptr<HttpServer>> start(const std::string& spec,
                                                   std::function<std::string()> body,
                                                   HttpServerOptions options = {});
  ~HttpServer();  // stops the thread, closes every connection
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The port bound (the one chosen when spec asked for 0).
  uint16_t port() const { return port_; }
  // Responses sent in full so far (for tests).
  uint64_t answered() const { return answered_.load(std::memory_order_relaxed); }

 private:
  HttpServer(int listen_fd, uint16_t port, std::function<std::string()> body,
             HttpServerOptions options);
  void run();

  int listen_fd_;
  int stop_fd_;
  uint16_t port_;
  std::function<std::string()> body_;
  HttpServerOptions opt_;
  std::atomic<uint64_t> answered_{0};
  std::thread thread_;
};

// The response to one request head (exposed for tests): status line, headers and body.
// body is called only for a /metrics request.
std::string http_response(std::string_view head, const std::function<std::string()>& body,
                          int* status = nullptr);

}  // namespace ferry::metrics
