// dataplane/channel_pump.cc — see channel_pump.h.
#include "dataplane/channel_pump.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/net.h"
#include "dataplane/protocol.h"

namespace ferry::dataplane {
namespace {

Status fail(ErrorCode code, std::string msg) { return Status(code, std::move(msg)); }

std::string errno_text() { return std::strerror(errno); }

bool is_socket(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

ChannelPump::ChannelPump(PumpRole role, QemuEnd qemu, Transport& link, PumpOptions options)
    : role_(role), qemu_(qemu), link_(link), options_(options) {}

Status ChannelPump::run() {
  const bool sender = role_ == PumpRole::kSender;
  // What this side puts on the link, and what it expects from the peer.
  const FrameType tx_type = sender ? FrameType::kOpaque : FrameType::kReturn;
  const FrameType rx_type = sender ? FrameType::kReturn : FrameType::kOpaque;
  const char* peer_name = sender ? "ferry recv" : "ferry send";
  const bool qemu_one_socket = qemu_.read_fd == qemu_.write_fd && is_socket(qemu_.read_fd);

  FERRY_RETURN_IF_ERROR(set_nonblocking(qemu_.read_fd));
  if (qemu_.write_fd >= 0 && qemu_.write_fd != qemu_.read_fd) {
    FERRY_RETURN_IF_ERROR(set_nonblocking(qemu_.write_fd));
  }

  ByteQueue to_link, to_qemu;
  FrameDecoder dec;
  uint64_t tx_seq = 0;
  bool qemu_eof = false;       // QEMU closed its sending side
  bool qemu_wr_dead = false;   // QEMU stopped reading (sender: it is done with the RP)
  bool qemu_wr_shut = false;   // receiver: we ended QEMU's input after the peer's END
  bool got_end = false;        // the peer sent END
  bool sent_end = false;       // END is queued
  const size_t chunk = options_.read_chunk;
  // Link rate measurement for the buffer hint (step 6).
  auto rate_t0 = std::chrono::steady_clock::now();
  uint64_t rate_tx0 = 0;
  size_t buffer_hint = 0;
  uint64_t frames_tx = 0;
  // The sender's read buffer when a codec turns the bytes into frames.
  std::unique_ptr<uint8_t[]> codec_in;
  if (sender && options_.codec) codec_in = std::make_unique_for_overwrite<uint8_t[]>(chunk);

  // A frame whose payload is already in place after its header slot (zero-copy from QEMU).
  auto seal_frame = [&](FrameType type, uint8_t* slot, size_t n) {
    encode_frame_header(type, tx_seq++, slot + kFrameHeaderSize, static_cast<uint32_t>(n), slot);
    to_link.commit(kFrameHeaderSize + n);
    counters_.frames_tx.store(++frames_tx, std::memory_order_relaxed);
  };
  // Writes payload bytes toward QEMU: straight from the frame when nothing is queued ahead
  // (the common case), queueing only what QEMU does not take now.
  auto deliver = [&](const uint8_t* p, size_t n) -> Status {
    if (options_.tap_to_qemu) options_.tap_to_qemu->on_bytes({p, n});
    if (to_qemu.empty()) {
      ssize_t w = ::send(qemu_.write_fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0 && errno == ENOTSOCK) w = ::write(qemu_.write_fd, p, n);
      if (w > 0) {
        counters_.bytes_to_qemu.fetch_add(static_cast<size_t>(w), std::memory_order_relaxed);
        p += w;
        n -= static_cast<size_t>(w);
      } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        if (sender) {
          // The source QEMU closed: return-path bytes it will never read are moot.
          qemu_wr_dead = true;
          return Status::ok();
        }
        return fail(ErrorCode::kClosed, "the destination QEMU closed the migration socket after " +
                                            std::to_string(counters_.bytes_to_qemu.load()) +
                                            " bytes, with " + std::to_string(n) +
                                            " bytes of the stream undelivered (see its log)");
      }
    }
    to_qemu.append(p, n);
    return Status::ok();
  };

  for (;;) {
    // Done? The receiver ends once its END is on the link (QEMU closed after the whole
    // stream); the sender once the receiver's END arrived and the link closed.
    if (sent_end && to_link.empty()) {
      // The receiver needs the sender's END too: in post-copy the destination QEMU closes
      // first (after its SHUT message), and the source closes only after reading that SHUT.
      if (!sender && got_end && to_qemu.empty()) {
        link_.close_tx();
        return Status::ok();
      }
      if (link_.peer_closed() && (to_qemu.empty() || qemu_wr_dead)) {
        if (!got_end) {
          return fail(ErrorCode::kClosed, std::string(peer_name) +
                                              " closed the link without END (it failed; see "
                                              "its log)");
        }
        return Status::ok();
      }
    }

    // 1. Wait. QEMU is polled for reading while its queue toward the link has room, for
    // writing while bytes wait for it; the link for reading while QEMU's queue has room.
    pollfd fds[4];
    nfds_t nfds = 0;
    const bool want_qemu_rd = !qemu_eof && to_link.size() < options_.max_pending;
    const bool want_qemu_wr = !to_qemu.empty() && !qemu_wr_dead;
    const bool want_link_rd =
        !link_.peer_closed() && (sender || to_qemu.size() < options_.max_pending);
    int qemu_rd_idx = -1;
    if (qemu_one_socket) {
      short ev = static_cast<short>((want_qemu_rd ? POLLIN : 0) | (want_qemu_wr ? POLLOUT : 0));
      if (ev) {
        fds[nfds] = {qemu_.read_fd, ev, 0};
        qemu_rd_idx = static_cast<int>(nfds++);
      }
    } else {
      if (want_qemu_rd) {
        fds[nfds] = {qemu_.read_fd, POLLIN, 0};
        qemu_rd_idx = static_cast<int>(nfds++);
      }
      if (want_qemu_wr) fds[nfds++] = {qemu_.write_fd, POLLOUT, 0};
    }
    const short link_ev = link_.poll_events(want_link_rd, !to_link.empty());
    if (link_ev) {
      fds[nfds++] = {link_.poll_fd(), link_ev, 0};
    }
    if (options_.abort_fd >= 0) fds[nfds++] = {options_.abort_fd, POLLIN, 0};
    if (nfds == 0) return fail(ErrorCode::kInternal, "channel pump has nothing to wait for");
    if (::poll(fds, nfds, -1) < 0) {
      if (errno == EINTR) continue;
      return fail(ErrorCode::kIo, "poll: " + errno_text());
    }
    if (options_.abort_fd >= 0 && (fds[nfds - 1].revents & POLLIN)) {
      return fail(ErrorCode::kClosed, "stopped: another channel of this migration failed");
    }
    link_.rearm();

    // 2. Link -> QEMU first: return-path messages (post-copy page requests) must not wait
    // behind bulk reads from QEMU.
    if (want_link_rd) {
      size_t n = link_.rx_burst(dec.input_area(chunk));
      dec.commit(n);
      if (link_.failed()) {
        return fail(ErrorCode::kClosed, "link to " + std::string(peer_name) + " failed: " +
                                            link_.error().message());
      }
      if (n) {
        counters_.link_rx_bytes.fetch_add(n, std::memory_order_relaxed);
        FrameDecoder::Frame f;
        for (;;) {
          auto got = dec.next(f);
          if (!got) return fail(ErrorCode::kProtocol, "link: " + got.status().message());
          if (!*got) break;
          counters_.frames_rx.fetch_add(1, std::memory_order_relaxed);
          const uint64_t frame_at = dec.offset() - kFrameHeaderSize - f.header.len;
          if (got_end) {
            return fail(ErrorCode::kProtocol,
                        "link: frame after END at byte offset " + std::to_string(frame_at));
          }
          if (f.header.type == FrameType::kEnd) {
            got_end = true;
            if (options_.tap_to_qemu) options_.tap_to_qemu->on_end();
          } else if (!sender && options_.codec &&
                     (f.header.type == FrameType::kOpaque || f.header.type == FrameType::kCodec ||
                      f.header.type == FrameType::kPages)) {
            // Decoded bytes queue behind anything QEMU has not taken yet.
            const size_t before = to_qemu.size();
            if (auto st = options_.codec->decode(f.header.type, {f.payload, f.header.len},
                                                 to_qemu);
                !st) {
              return fail(st.code(), "link: frame seq " + std::to_string(f.header.seq) +
                                         " at byte offset " + std::to_string(frame_at) + ": " +
                                         st.message());
            }
            if (options_.tap_to_qemu && to_qemu.size() > before) {
              options_.tap_to_qemu->on_bytes(to_qemu.pending().subspan(before));
            }
          } else if (f.header.type == rx_type) {
            if (!qemu_wr_dead) FERRY_RETURN_IF_ERROR(deliver(f.payload, f.header.len));
          } else {
            return fail(ErrorCode::kProtocol,
                        "link: unexpected frame type " +
                            std::to_string(static_cast<uint32_t>(f.header.type)) + " from " +
                            peer_name + " at byte offset " + std::to_string(frame_at));
          }
        }
      } else if (link_.peer_closed()) {
        if (dec.buffered() != 0) {
          return fail(ErrorCode::kProtocol,
                      "link: truncated frame at byte offset " + std::to_string(dec.offset()));
        }
        if (!got_end) {
          if (sender && sent_end) {
            return fail(ErrorCode::kClosed,
                        "ferry recv closed the link without END after the stream ended (the "
                        "destination QEMU or ferry recv failed; see its log)");
          }
          return fail(ErrorCode::kClosed,
                      std::string(peer_name) + " closed the link before the migration ended (" +
                          std::to_string(counters_.bytes_from_qemu.load()) + " bytes from QEMU, " +
                          std::to_string(counters_.bytes_to_qemu.load()) + " bytes to QEMU)");
        }
      }
    }

    // 3. QEMU -> link.
    if (qemu_rd_idx >= 0 && want_qemu_rd &&
        (fds[qemu_rd_idx].revents & (POLLIN | POLLHUP | POLLERR))) {
      // Without a codec QEMU's bytes land straight in an OPAQUE frame's payload slot.
      const bool encode = sender && options_.codec;
      uint8_t* slot = encode ? codec_in.get() : to_link.reserve(kFrameHeaderSize + chunk);
      uint8_t* data = encode ? slot : slot + kFrameHeaderSize;
      ssize_t r = ::read(qemu_.read_fd, data, chunk);
      if (r > 0) {
        const size_t n = static_cast<size_t>(r);
        counters_.bytes_from_qemu.fetch_add(n, std::memory_order_relaxed);
        if (options_.tap_from_qemu) options_.tap_from_qemu->on_bytes({data, n});
        if (encode) {
          FrameWriter w(to_link, tx_seq, frames_tx);
          if (auto st = options_.codec->encode({data, n}, w); !st) return st;
          counters_.frames_tx.store(frames_tx, std::memory_order_relaxed);
        } else {
          seal_frame(tx_type, slot, n);
        }
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR && errno != EWOULDBLOCK)) {
        if (r < 0 && errno != ECONNRESET) {
          return fail(ErrorCode::kIo, "reading QEMU: " + errno_text());
        }
        // The destination closing before the sender's END is normal in post-copy; it is a
        // failure only if stream bytes are left for it (step 4 reports that).
        qemu_eof = true;
        if (options_.tap_from_qemu) options_.tap_from_qemu->on_end();
        if (sender && options_.codec) {
          FrameWriter w(to_link, tx_seq, frames_tx);
          if (auto st = options_.codec->finish(w); !st) return st;
          counters_.frames_tx.store(frames_tx, std::memory_order_relaxed);
        }
        seal_frame(FrameType::kEnd, to_link.reserve(kFrameHeaderSize), 0);
        sent_end = true;
      }
    }

    // 4. Flush toward QEMU.
    if (!to_qemu.empty() && !qemu_wr_dead) {
      auto w = to_qemu.flush_to(qemu_.write_fd);
      if (w) {
        counters_.bytes_to_qemu.fetch_add(*w, std::memory_order_relaxed);
      } else if (sender) {
        // The source QEMU closed: return-path bytes it will never read are moot.
        qemu_wr_dead = true;
      } else {
        return fail(ErrorCode::kClosed,
                    "the destination QEMU closed the migration socket after " +
                        std::to_string(counters_.bytes_to_qemu.load()) + " bytes, with " +
                        std::to_string(to_qemu.size()) +
                        " bytes of the stream undelivered (see its log)");
      }
    }
    if (!sender && got_end && to_qemu.empty() && !qemu_wr_shut) {
      // Every byte is written: QEMU may now see EOF after the stream's end.
      if (qemu_one_socket) {
        ::shutdown(qemu_.write_fd, SHUT_WR);
      }
      qemu_wr_shut = true;
    }

    // 5. Flush toward the link: one burst of every queued frame.
    if (!to_link.empty()) {
      size_t n = link_.tx_burst(to_link.pending());
      if (link_.failed()) {
        return fail(ErrorCode::kClosed, "link to " + std::string(peer_name) + " failed: " +
                                            link_.error().message());
      }
      to_link.consume(n);
      counters_.link_tx_bytes.fetch_add(n, std::memory_order_relaxed);
    }
    counters_.link_backlog_bytes.store(to_link.size(), std::memory_order_relaxed);

    // 6. Size the kernel's buffering to ~25 ms of the measured link rate, every 250 ms.
    if (options_.link_buffer_s > 0 && sender) {
      const auto now = std::chrono::steady_clock::now();
      const double dt = std::chrono::duration<double>(now - rate_t0).count();
      if (dt >= 0.25) {
        const uint64_t tx = counters_.link_tx_bytes.load(std::memory_order_relaxed);
        const double rate = static_cast<double>(tx - rate_tx0) / dt;
        const size_t want = std::clamp(static_cast<size_t>(rate * options_.link_buffer_s),
                                       options_.link_buffer_min, options_.link_buffer_max);
        // Only while the link is busy (a full queue): an idle phase says nothing of its rate.
        if (!to_link.empty() && (want > buffer_hint + buffer_hint / 4 ||
                                 want < buffer_hint - buffer_hint / 4)) {
          link_.set_buffer_hint(want);
          buffer_hint = want;
        }
        rate_t0 = now;
        rate_tx0 = tx;
      }
    }
  }
}

}  // namespace ferry::dataplane
