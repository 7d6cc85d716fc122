// dataplane/tcp/tcp_datapath.cc — TcpTransport's burst calls: writev/recv, never blocking.
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "common/endian.h"
#include "dataplane/tcp/tcp_transport_internal.h"

namespace ferry::dataplane::tcp {
namespace {

// A partial frame whose remainder is at least this large is read on its own (it then ends the
// buffer and never moves); smaller ones are read along with what follows them.
constexpr size_t kReadAlone = 64u << 10;

}  // namespace

void TcpTransport::fail(const char* what, int err) noexcept {
  if (!error_.is_ok()) return;
  // Building the message allocates, but this happens once, when the connection dies.
  // TCP_USER_TIMEOUT (tcp_transport.cc) ended the connection; the kernel reports the last
  // soft error it saw instead of ETIMEDOUT when there was one (the peer's address stopped
  // answering ARP: no route to host).
  if (err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH) {
    error_ = Status(ErrorCode::kTimeout,
                    std::string(what) + ": no answer from the peer for " +
                        std::to_string(link_timeout_.count()) + " s (link timeout" +
                        (err == ETIMEDOUT ? "" : std::string(": ") + std::strerror(err)) + ")");
    return;
  }
  ErrorCode code = (err == ECONNRESET || err == EPIPE) ? ErrorCode::kClosed : ErrorCode::kIo;
  error_ = Status(code, std::string(what) + ": " + std::strerror(err));
}

void TcpTransport::fail_protocol(const Status& st) noexcept {
  if (error_.is_ok()) error_ = st;
}

size_t TcpTransport::tx_burst(std::span<FrameBuf* const> frames) noexcept {
  if (tx_closed_ || !error_.is_ok()) return 0;
  const size_t n = std::min(frames.size(), tx_ring_.size() - tx_count_);
  for (size_t i = 0; i < n; ++i) {
    tx_ring_[(tx_head_ + tx_count_ + i) % tx_ring_.size()] = frames[i];
    tx_bytes_ += frames[i]->len;
  }
  tx_count_ += n;
  flush();
  return n;
}

// Paced (set_pacing_rate): the burst less what the kernel has not sent yet (SIOCOUTQNSD).
size_t TcpTransport::paced_room() const noexcept {
  if (paced_burst_ == 0) return SIZE_MAX;
  int unsent = 0;
  if (::ioctl(fd_, SIOCOUTQNSD, &unsent) != 0) return paced_burst_;
  const auto u = static_cast<size_t>(std::max(unsent, 0));
  return u < paced_burst_ ? paced_burst_ - u : 0;
}

void TcpTransport::flush() noexcept {
  size_t room = tx_sent_ < tx_count_ ? paced_room() : 0;
  while (tx_sent_ < tx_count_ && room > 0 && error_.is_ok()) {
    iovec iov[kIov];
    size_t k = 0;
    size_t bytes = 0;
    for (size_t i = tx_sent_; i < tx_count_ && k < kIov && bytes < room; ++i, ++k) {
      FrameBuf* f = tx_ring_[(tx_head_ + i) % tx_ring_.size()];
      const size_t skip = i == tx_sent_ ? tx_off_ : 0;
      iov[k] = {f->data + skip, std::min(f->len - skip, room - bytes)};
      bytes += iov[k].iov_len;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = k;
    ssize_t w = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) fail("tcp send", errno);
      return;
    }
    size_t left = static_cast<size_t>(w);
    tx_bytes_ -= left;
    if (room != SIZE_MAX) room -= std::min(room, left);
    while (left) {
      FrameBuf* f = tx_ring_[(tx_head_ + tx_sent_) % tx_ring_.size()];
      const size_t rest = f->len - tx_off_;
      if (left < rest) {
        tx_off_ += left;
        break;
      }
      left -= rest;
      tx_off_ = 0;
      ++tx_sent_;
    }
    if (static_cast<size_t>(w) == 0) return;
  }
  if (tx_closed_ && !shut_sent_ && tx_sent_ == tx_count_) {
    ::shutdown(fd_, SHUT_WR);
    shut_sent_ = true;
  }
}

size_t TcpTransport::reap_tx(std::span<FrameBuf*> out) noexcept {
  flush();
  const size_t n = std::min(out.size(), tx_sent_);
  for (size_t i = 0; i < n; ++i) out[i] = tx_ring_[(tx_head_ + i) % tx_ring_.size()];
  tx_head_ = (tx_head_ + n) % tx_ring_.size();
  tx_count_ -= n;
  tx_sent_ -= n;
  return n;
}

void TcpTransport::close_tx() noexcept {
  if (tx_closed_) return;
  tx_closed_ = true;
  flush();
}

bool TcpTransport::read_some() noexcept {
  FrameBuf* f = rx_cur_;
  const size_t room = f->cap - f->len;
  size_t want = room;
  const size_t partial = f->len - rx_whole_;
  if (partial >= kFrameHeaderSize) {
    auto h = parse_frame_header(f->data + rx_whole_);
    const size_t rest = kFrameHeaderSize + h->len - partial;  // header checked by scan()
    if (rest >= kReadAlone) want = std::min(room, rest);
  }
  if (want == 0) return false;
  for (;;) {
    ssize_t r = ::recv(fd_, f->data + f->len, want, MSG_DONTWAIT);
    if (r > 0) {
      f->len += static_cast<uint32_t>(r);
      return static_cast<size_t>(r) == want;
    }
    if (r == 0) {
      peer_closed_ = true;
      return false;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) fail("tcp recv", errno);
    return false;
  }
}

size_t TcpTransport::rx_burst(std::span<FrameBuf*> out) noexcept {
  size_t n = 0;
  for (int reads = 0; n < out.size() && reads < 4 && error_.is_ok(); ++reads) {
    if (!rx_cur_ && !(rx_cur_ = pool_->alloc())) break;
    const bool more = !peer_closed_ && read_some();
    // Advance over the whole frames now in the buffer.
    FrameBuf* f = rx_cur_;
    if (f->len - rx_whole_ >= 4 && f->len - rx_whole_ < kFrameHeaderSize &&
        !frame_type_known(load_be32(f->data + rx_whole_))) {
      // A stranger is refused on its first four bytes, without waiting for a whole header.
      fail_protocol(Status(ErrorCode::kProtocol,
                           "frame: bad type " + std::to_string(load_be32(f->data + rx_whole_)) +
                               " at byte offset " + std::to_string(rx_offset_ + rx_whole_) +
                               " (not a ferry peer?)"));
      return n;
    }
    while (f->len - rx_whole_ >= kFrameHeaderSize) {
      auto h = parse_frame_header(f->data + rx_whole_);
      if (!h) {
        fail_protocol(Status(ErrorCode::kProtocol, h.status().message() + " at byte offset " +
                                                       std::to_string(rx_offset_ + rx_whole_) +
                                                       " (not a ferry peer?)"));
        return n;
      }
      if (f->len - rx_whole_ < kFrameHeaderSize + h->len) break;
      rx_whole_ += kFrameHeaderSize + h->len;
    }
    if (rx_whole_ > 0) {
      // Hand the whole frames up; the start of the next frame moves to a fresh buffer.
      const size_t tail = f->len - rx_whole_;
      FrameBuf* next = nullptr;
      if (tail && !(next = pool_->alloc())) break;
      if (tail) {
        std::memcpy(next->data, f->data + rx_whole_, tail);
        next->len = static_cast<uint32_t>(tail);
      }
      f->len = static_cast<uint32_t>(rx_whole_);
      rx_offset_ += rx_whole_;
      out[n++] = f;
      rx_cur_ = next;
      rx_whole_ = 0;
    }
    if (!more) break;
  }
  if (peer_closed_ && rx_cur_ && rx_cur_->len > rx_whole_ && error_.is_ok()) {
    fail_protocol(Status(ErrorCode::kProtocol,
                         "tcp: the peer closed the link in the middle of "
                         "a frame (" +
                             std::to_string(rx_cur_->len - rx_whole_) + " bytes of it arrived)"));
  }
  return n;
}

}  // namespace ferry::dataplane::tcp
