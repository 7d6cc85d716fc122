// common/byte_queue.cc — see byte_queue.h.
#include "common/byte_queue.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace ferry {

uint8_t* ByteQueue::reserve(size_t n) {
  if (cap_ - end_ >= n) return buf_.get() + end_;
  // Slide the queued bytes to the front; grow only when that is not enough.
  const size_t live = size();
  if (live + n <= cap_ && pos_ > 0) {
    std::memmove(buf_.get(), buf_.get() + pos_, live);
  } else {
    size_t cap = cap_ ? cap_ : 64 * 1024;
    // Twice the need, so sliding (above) moves at most about as much as was appended.
    while (cap < 2 * (live + n)) cap *= 2;
    auto bigger = std::make_unique_for_overwrite<uint8_t[]>(cap);
    if (live) std::memcpy(bigger.get(), buf_.get() + pos_, live);
    buf_ = std::move(bigger);
    cap_ = cap;
  }
  pos_ = 0;
  end_ = live;
  return buf_.get() + end_;
}

void ByteQueue::append(const void* p, size_t n) {
  if (n == 0) return;
  std::memcpy(reserve(n), p, n);
  commit(n);
}

void ByteQueue::consume(size_t n) {
  pos_ += n < size() ? n : size();
  if (pos_ == end_) pos_ = end_ = 0;
}

Result<size_t> ByteQueue::flush_to(int fd) {
  size_t total = 0;
  while (!empty()) {
    ssize_t w = ::send(fd, buf_.get() + pos_, size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    // Pipes (exec: migration, --stdio) are not sockets; SIGPIPE is ignored process-wide.
    if (w < 0 && errno == ENOTSOCK) w = ::write(fd, buf_.get() + pos_, size());
    if (w > 0) {
      pos_ += static_cast<size_t>(w);
      total += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return Status(ErrorCode::kIo, std::string("write: ") + std::strerror(errno));
  }
  if (pos_ == end_) pos_ = end_ = 0;
  return total;
}

}  // namespace ferry
