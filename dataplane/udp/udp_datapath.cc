// dataplane/udp/udp_datapath.cc — SocketPort's burst calls: one sendmmsg()/recvmmsg() per
// burst of up to 32 datagrams, never blocking, nothing allocated.
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "dataplane/transport.h"
#include "dataplane/udp/udp_port_internal.h"

namespace ferry::dataplane::udp {

void SocketPort::fail(const char* what, int err) noexcept {
  if (!error_.is_ok()) return;
  // Building the message allocates, but this happens once, when the port dies.
  if (err == ECONNREFUSED) {
    // A connected UDP socket reports the peer's ICMP "port unreachable" on a later call.
    error_ = Status(ErrorCode::kClosed, name_ +
                                            ": the peer refused datagrams (ICMP port unreachable):"
                                            " nothing listens there any more; is the other"
                                            " ferry running?");
    return;
  }
  error_ = Status(ErrorCode::kIo, name_ + ": " + what + ": " + std::strerror(err));
}

size_t SocketPort::send_burst(std::span<const DatagramOut> out) noexcept {
  if (out.empty() || failed()) return 0;
  const size_t n = std::min(out.size(), kBurst);
  mmsghdr msgs[kBurst];
  iovec iov[2 * kBurst];
  // Two iovecs per datagram gather the protocol header and the frame slice without a copy.
  for (size_t i = 0; i < n; ++i) {
    iov[2 * i] = {const_cast<uint8_t*>(out[i].head.data()), out[i].head.size()};
    iov[2 * i + 1] = {const_cast<uint8_t*>(out[i].body.data()), out[i].body.size()};
    msgs[i].msg_hdr = {};
    msgs[i].msg_hdr.msg_iov = &iov[2 * i];
    msgs[i].msg_hdr.msg_iovlen = 2;
  }
  for (;;) {
    int r = ::sendmmsg(fd_, msgs, static_cast<unsigned>(n), MSG_DONTWAIT);
    if (r >= 0) {
      // A short count means the socket buffer filled (or an error that the next call reports).
      counters_.tx_datagrams += static_cast<uint64_t>(r);
      for (int i = 0; i < r; ++i) counters_.tx_bytes += out[static_cast<size_t>(i)].size();
      return static_cast<size_t>(r);
    }
    switch (errno) {
      case EINTR:
        continue;
      case EAGAIN:
      case ENOBUFS:  // the device queue is full: as transient as a full socket buffer
        ++counters_.tx_full;
        return 0;
      case EMSGSIZE:
        // The path MTU shrank below this datagram (DF is set, so it would never pass): drop it
        // as lost, and let max_datagram() tell the sender the new size for its resend.
        ++counters_.tx_too_big;
        refresh_mtu();
        return 1;
      default:
        fail("sendmmsg", errno);
        return 0;
    }
  }
}

size_t SocketPort::recv_burst(std::span<DatagramIn> in) noexcept {
  if (in.empty() || failed()) return 0;
  const size_t n = std::min(in.size(), kBurst);
  mmsghdr msgs[kBurst];
  iovec iov[kBurst];
  for (size_t i = 0; i < n; ++i) {
    iov[i] = {in[i].buf, in[i].cap};
    msgs[i].msg_hdr = {};
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  int r;
  for (;;) {
    r = ::recvmmsg(fd_, msgs, static_cast<unsigned>(n), MSG_DONTWAIT, nullptr);
    if (r >= 0) break;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) fail("recvmmsg", errno);
    return 0;
  }
  // The kernel cut datagrams larger than their buffer (MSG_TRUNC); drop those and close the
  // gap by copying the later ones down, so that the first `got` entries are whole datagrams.
  // Never happens when every buffer holds max_datagram().
  size_t got = 0;
  for (size_t i = 0; i < static_cast<size_t>(r); ++i) {
    const size_t len = msgs[i].msg_len;
    if ((msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0 || (got != i && len > in[got].cap)) {
      ++counters_.rx_truncated;
      continue;
    }
    if (got != i) std::memcpy(in[got].buf, in[i].buf, len);
    in[got].len = len;
    counters_.rx_bytes += len;
    ++got;
  }
  counters_.rx_datagrams += got;
  return got;
}

uint32_t SocketPort::wait_events(bool want_rx, bool want_tx) const noexcept {
  return (want_rx ? kWaitReadable : 0u) | (want_tx ? kWaitWritable : 0u);
}

}  // namespace ferry::dataplane::udp
