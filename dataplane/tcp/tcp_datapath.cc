// dataplane/tcp/tcp_datapath.cc — TcpTransport's burst calls: one send()/recv() per burst,
// never blocking.
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "dataplane/tcp/tcp_transport_internal.h"

namespace ferry::dataplane::tcp {

void TcpTransport::fail(const char* what, int err) noexcept {
  if (!error_.is_ok()) return;
  ErrorCode code = (err == ECONNRESET || err == EPIPE) ? ErrorCode::kClosed : ErrorCode::kIo;
  // Building the message allocates, but this happens once, when the connection dies.
  error_ = Status(code, std::string(what) + ": " + std::strerror(err));
}

size_t TcpTransport::tx_burst(std::span<const uint8_t> bytes) noexcept {
  if (bytes.empty() || tx_closed_ || failed()) return 0;
  for (;;) {
    ssize_t w = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) return static_cast<size_t>(w);
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) fail("tcp send", errno);
    return 0;
  }
}

size_t TcpTransport::rx_burst(std::span<uint8_t> out) noexcept {
  if (out.empty() || peer_closed_ || failed()) return 0;
  for (;;) {
    ssize_t r = ::recv(fd_, out.data(), out.size(), MSG_DONTWAIT);
    if (r > 0) return static_cast<size_t>(r);
    if (r == 0) {
      peer_closed_ = true;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) fail("tcp recv", errno);
    return 0;
  }
}

void TcpTransport::close_tx() noexcept {
  if (tx_closed_) return;
  tx_closed_ = true;
  ::shutdown(fd_, SHUT_WR);
}

}  // namespace ferry::dataplane::tcp
