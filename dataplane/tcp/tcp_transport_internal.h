// dataplane/tcp/tcp_transport_internal.h — the TcpTransport class shared by the control file
// (tcp_transport.cc) and the data path (tcp_datapath.cc).
#pragma once

#include <unistd.h>

#include "dataplane/transport.h"

namespace ferry::dataplane::tcp {

class TcpTransport final : public Transport {
 public:
  // Takes ownership of a connected socket.
  explicit TcpTransport(int fd) : fd_(fd) {}
  ~TcpTransport() override {
    if (fd_ >= 0) ::close(fd_);
  }
  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  const char* kind() const noexcept override { return "tcp"; }
  size_t tx_burst(std::span<const uint8_t> bytes) noexcept override;
  size_t rx_burst(std::span<uint8_t> out) noexcept override;
  void close_tx() noexcept override;
  bool peer_closed() const noexcept override { return peer_closed_; }
  bool failed() const noexcept override { return !error_.is_ok(); }
  const Status& error() const noexcept override { return error_; }
  int poll_fd() const noexcept override { return fd_; }
  void set_buffer_hint(size_t bytes) noexcept override;
  short poll_events(bool want_rx, bool want_tx) const noexcept override {
    return static_cast<short>((want_rx ? POLLIN : 0) | (want_tx ? POLLOUT : 0));
  }

 private:
  void fail(const char* what, int err) noexcept;

  int fd_;
  bool peer_closed_ = false;
  bool tx_closed_ = false;
  Status error_;
};

}  // namespace ferry::dataplane::tcp
