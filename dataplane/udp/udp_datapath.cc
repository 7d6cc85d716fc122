// dataplane/udp/udp_datapath.cc — SocketPort's burst calls: one sendmmsg()/recvmmsg() per
// burst of up to 32 datagrams, never blocking, nothing allocated. With GSO a run of
// equal-sized datagrams is one message of the burst; with GRO glued arrivals are staged and
// split here.
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "dataplane/transport.h"
#include "dataplane/udp/udp_port_internal.h"

namespace ferry::dataplane::udp {
namespace {

// Older kernels' UDP_MAX_SEGMENTS, and a super-datagram that stays inside one 64 KiB IP
// packet whatever the headers.
constexpr size_t kMaxGsoSegments = 64;
constexpr size_t kMaxGsoBytes = 65000;

void set_iov(iovec* iov, const DatagramOut& d) {
  // Two iovecs per datagram gather the protocol header and the frame slice without a copy.
  iov[0] = {const_cast<uint8_t*>(d.head.data()), d.head.size()};
  iov[1] = {const_cast<uint8_t*>(d.body.data()), d.body.size()};
}

}  // namespace

void SocketPort::fail(const char* what, int err) noexcept {
  if (!error_.is_ok()) return;
  // Building the message allocates, but this happens once, when the port dies.
  if (err == ECONNREFUSED) {
    // A connected UDP socket reports the peer's ICMP "port unreachable" on a later call.
    error_ = Status(ErrorCode::kRefused,
                    s_.name +
                        ": the peer refused datagrams (ICMP port unreachable): nothing listens"
                        " there any more; is the other ferry running?");
    return;
  }
  error_ = Status(ErrorCode::kIo, s_.name + ": " + what + ": " + std::strerror(err));
}

size_t SocketPort::send_burst(std::span<const DatagramOut> out) noexcept {
  if (out.empty() || failed()) return 0;
  if (s_.gso) {
    const size_t n = send_gso(out);
    if (s_.gso) return n;  // else GSO was just found not to work here: send plainly
  }
  return send_plain(out);
}

size_t SocketPort::send_plain(std::span<const DatagramOut> out) noexcept {
  const size_t n = std::min(out.size(), kBurst);
  mmsghdr msgs[kBurst];
  iovec iov[2 * kBurst];
  for (size_t i = 0; i < n; ++i) {
    set_iov(&iov[2 * i], out[i]);
    msgs[i].msg_hdr = {};
    msgs[i].msg_hdr.msg_iov = &iov[2 * i];
    msgs[i].msg_hdr.msg_iovlen = 2;
  }
  for (;;) {
    int r = ::sendmmsg(s_.fd, msgs, static_cast<unsigned>(n), MSG_DONTWAIT);
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

size_t SocketPort::send_gso(std::span<const DatagramOut> out) noexcept {
  const size_t n = std::min(out.size(), kBurst);
  mmsghdr msgs[kBurst];
  iovec iov[2 * kBurst];
  alignas(cmsghdr) uint8_t control[kBurst][CMSG_SPACE(sizeof(uint16_t))];
  size_t ends[kBurst];  // datagrams [0, ends[m]) are in messages [0, m]
  size_t m = 0;
  for (size_t i = 0; i < n; ++m) {
    // One message: a run of equal sizes, ended early by one shorter datagram (a frame's last
    // piece); the kernel cuts it every `seg` bytes, so only the last may be short.
    const size_t start = i, seg = out[i].size();
    size_t bytes = 0;
    do {
      set_iov(&iov[2 * i], out[i]);
      bytes += out[i].size();
      ++i;
    } while (i < n && out[i - 1].size() == seg && out[i].size() <= seg && out[i].size() > 0 &&
             i - start < kMaxGsoSegments && bytes + out[i].size() <= kMaxGsoBytes);
    msghdr& h = msgs[m].msg_hdr;
    h = {};
    h.msg_iov = &iov[2 * start];
    h.msg_iovlen = 2 * (i - start);
    if (i - start > 1) {
      h.msg_control = control[m];
      h.msg_controllen = sizeof control[m];
      cmsghdr* c = CMSG_FIRSTHDR(&h);
      c->cmsg_level = IPPROTO_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      const auto seg16 = static_cast<uint16_t>(seg);
      std::memcpy(CMSG_DATA(c), &seg16, sizeof seg16);
    }
    ends[m] = i;
  }
  for (;;) {
    int r = ::sendmmsg(s_.fd, msgs, static_cast<unsigned>(m), MSG_DONTWAIT);
    if (r > 0) {
      const size_t sent = ends[r - 1];
      counters_.tx_datagrams += sent;
      for (size_t i = 0; i < sent; ++i) counters_.tx_bytes += out[i].size();
      for (int k = 0; k < r; ++k) counters_.tx_gso_batches += msgs[k].msg_hdr.msg_controllen > 0;
      return sent;
    }
    switch (r == 0 ? EAGAIN : errno) {
      case EINTR:
        continue;
      case EAGAIN:
      case ENOBUFS:
        ++counters_.tx_full;
        return 0;
      case ECONNREFUSED:
        fail("sendmmsg", ECONNREFUSED);
        return 0;
      case EMSGSIZE:  // as in send_plain: the first message can never pass
        counters_.tx_too_big += ends[0];
        refresh_mtu();
        return ends[0];
      default:
        // EIO: the device cannot checksum for GSO; EINVAL: a segment above the path MTU, or a
        // kernel that refuses this batch. Plain sends are always right, and EMSGSIZE there
        // handles a shrunk MTU; GSO stays off for this port (it is only an optimisation).
        s_.gso = false;
        refresh_mtu();
        return 0;
    }
  }
}

size_t SocketPort::recv_burst(std::span<DatagramIn> in) noexcept {
  if (in.empty() || failed()) return 0;
  return s_.gro ? recv_gro(in) : recv_plain(in);
}

size_t SocketPort::recv_plain(std::span<DatagramIn> in) noexcept {
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
    r = ::recvmmsg(s_.fd, msgs, static_cast<unsigned>(n), MSG_DONTWAIT, nullptr);
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

// Reads up to kGroSlots arrivals into the staging buffers; false if none was waiting.
bool SocketPort::refill_gro() noexcept {
  mmsghdr msgs[kGroSlots];
  iovec iov[kGroSlots];
  alignas(cmsghdr) uint8_t control[kGroSlots][CMSG_SPACE(sizeof(int))];
  for (size_t i = 0; i < kGroSlots; ++i) {
    iov[i] = {gro_buf_.get() + i * kGroSlotBytes, kGroSlotBytes};
    msgs[i].msg_hdr = {};
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_control = control[i];
    msgs[i].msg_hdr.msg_controllen = sizeof control[i];
  }
  int r;
  for (;;) {
    r = ::recvmmsg(s_.fd, msgs, kGroSlots, MSG_DONTWAIT, nullptr);
    if (r >= 0) break;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) fail("recvmmsg", errno);
    return false;
  }
  for (size_t i = 0; i < static_cast<size_t>(r); ++i) {
    msghdr& h = msgs[i].msg_hdr;
    uint32_t len = msgs[i].msg_len, seg = len;  // one datagram, unless glued (UDP_GRO cmsg)
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
      int v;
      if (c->cmsg_level != IPPROTO_UDP || c->cmsg_type != UDP_GRO) continue;
      std::memcpy(&v, CMSG_DATA(c), sizeof v);
      if (v > 0 && static_cast<uint32_t>(v) < len) seg = static_cast<uint32_t>(v);
    }
    counters_.rx_gro_batches += seg < len;
    // Glued arrivals stay within 64 KiB; should one not, keep its whole datagrams only.
    if ((h.msg_flags & MSG_TRUNC) != 0) {
      ++counters_.rx_truncated;
      len = seg < len ? len / seg * seg : 0;
    }
    gro_len_[i] = len;
    gro_seg_[i] = seg;
  }
  gro_count_ = static_cast<size_t>(r);
  gro_next_ = 0;
  gro_off_ = 0;
  return r > 0;
}

// Hands out staged datagrams first, then reads once more if there is room: at most one
// system call per burst, as in recv_plain. Costs one copy per datagram.
size_t SocketPort::recv_gro(std::span<DatagramIn> in) noexcept {
  size_t got = 0;
  bool refilled = false;
  while (got < in.size()) {
    if (gro_next_ == gro_count_) {
      if (refilled || !refill_gro()) break;
      refilled = true;
    }
    const uint8_t* slot = gro_buf_.get() + gro_next_ * kGroSlotBytes;
    const size_t len = std::min<size_t>(gro_seg_[gro_next_], gro_len_[gro_next_] - gro_off_);
    if (len <= in[got].cap) {
      std::memcpy(in[got].buf, slot + gro_off_, len);
      in[got].len = len;
      counters_.rx_bytes += len;
      ++got;
    } else {
      ++counters_.rx_truncated;
    }
    gro_off_ += len;
    if (gro_off_ >= gro_len_[gro_next_]) {
      ++gro_next_;
      gro_off_ = 0;
    }
  }
  counters_.rx_datagrams += got;
  return got;
}

uint32_t SocketPort::wait_events(bool want_rx, bool want_tx) const noexcept {
  return (want_rx ? kWaitReadable : 0u) | (want_tx ? kWaitWritable : 0u);
}

}  // namespace ferry::dataplane::udp
