// qemu-channel/qemu_connection.cc — see qemu_connection.h.
#include "qemu-channel/qemu_connection.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace ferry::qemu {
namespace {

Status set_nonblocking(int fd) {
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    return Status(ErrorCode::kIo, std::string("fcntl(O_NONBLOCK): ") + std::strerror(errno));
  }
  return Status::ok();
}

bool is_socket(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

Status QemuConnection::open() {
  one_socket_ = read_fd_ == write_fd_ && is_socket(read_fd_);
  FERRY_RETURN_IF_ERROR(set_nonblocking(read_fd_));
  if (write_fd_ >= 0 && write_fd_ != read_fd_) FERRY_RETURN_IF_ERROR(set_nonblocking(write_fd_));
  return Status::ok();
}

Result<size_t> QemuConnection::read(std::span<uint8_t> out, bool* eof) {
  *eof = false;
  for (;;) {
    ssize_t r = ::read(read_fd_, out.data(), out.size());
    if (r > 0) return static_cast<size_t>(r);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return size_t{0};
    if (r < 0 && errno != ECONNRESET) {
      return Status(ErrorCode::kIo, std::string("reading QEMU: ") + std::strerror(errno));
    }
    *eof = true;
    return size_t{0};
  }
}

Status QemuConnection::write(std::span<const uint8_t> bytes) {
  const uint8_t* p = bytes.data();
  size_t n = bytes.size();
  // Straight from the caller's buffer when nothing waits ahead (the common case).
  if (queue_.empty() && n) {
    ssize_t w = ::send(write_fd_, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    // Pipes (exec: migration, --stdio) are not sockets; SIGPIPE is ignored process-wide.
    if (w < 0 && errno == ENOTSOCK) w = ::write(write_fd_, p, n);
    if (w > 0) {
      written_ += static_cast<size_t>(w);
      p += w;
      n -= static_cast<size_t>(w);
    } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return Status(ErrorCode::kClosed, std::string("QEMU closed: ") + std::strerror(errno));
    }
  }
  queue_.append(p, n);
  return Status::ok();
}

Result<size_t> QemuConnection::flush() {
  auto w = queue_.flush_to(write_fd_);
  if (!w) return Status(ErrorCode::kClosed, w.status().message());
  written_ += *w;
  return *w;
}

void QemuConnection::shut_write() {
  if (one_socket_) ::shutdown(write_fd_, SHUT_WR);
}

}  // namespace ferry::qemu
