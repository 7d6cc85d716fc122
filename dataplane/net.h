// dataplane/net.h — small socket helpers for ferry send/recv: endpoints "unix:PATH" and
// "tcp:HOST:PORT", listen/accept/connect.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace ferry::dataplane {

struct Endpoint {
  enum class Kind { kUnix, kTcp } kind = Kind::kUnix;
  std::string path;  // unix
  std::string host;  // tcp
  std::string port;  // tcp
  std::string text;  // as given
};

Result<Endpoint> parse_endpoint(const std::string& s);
// A listening socket (unix: the path is unlinked first).
Result<int> listen_on(const Endpoint& ep);
// accept() with a deadline in milliseconds (-1 = forever).
Result<int> accept_one(int listen_fd, int timeout_ms);
// A connected blocking socket; the error message is strerror(errno) only. A TCP connect gives
// up after timeout_ms (-1 = the kernel's own timeout); no route to the peer (EHOSTUNREACH,
// ENETUNREACH) is tried again within it, a refusal is not.
Result<int> connect_to(const Endpoint& ep, int timeout_ms = -1);
Status set_nonblocking(int fd);
// Writes all n bytes with a deadline (poll-based), for tests and small control messages.
Status write_all(int fd, const void* data, size_t n, int timeout_ms);

}  // namespace ferry::dataplane
