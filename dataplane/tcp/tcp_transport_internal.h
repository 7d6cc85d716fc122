// dataplane/tcp/tcp_transport_internal.h — the TcpTransport class shared by the control file
// (tcp_transport.cc) and the data path (tcp_datapath.cc).
//
// tx: frames queue in order and leave by writev, up to kIov buffers per call; a buffer is
//     reaped once the kernel took all its bytes (TCP is reliable and ordered below us).
// rx: the kernel copies straight into pool buffers. A buffer is handed up as soon as it holds
//     whole frames; the bytes of a frame still arriving move to the next buffer. A large
//     frame's remainder is read on its own, so big frames end at a buffer's end and are
//     never moved.
#pragma once

#include <unistd.h>

#include <memory>
#include <vector>

#include "dataplane/transport.h"

namespace ferry::dataplane::tcp {

inline constexpr size_t kPoolFrames = 64;

// The lowest round trip the kernel measured on the connection fd, in seconds; 0 = none yet
// (tcp_info.cc).
double min_rtt_s(int fd) noexcept;

class TcpTransport final : public Transport {
 public:
  // Takes ownership of a connected, non-blocking socket whose link timeout is set.
  TcpTransport(int fd, std::unique_ptr<FramePool> pool, std::chrono::seconds link_timeout);
  ~TcpTransport() override {
    if (fd_ >= 0) ::close(fd_);
  }
  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  const char* kind() const noexcept override { return "tcp"; }
  TransportCaps caps() const noexcept override;
  FramePool& pool() noexcept override { return *pool_; }

  size_t tx_burst(std::span<FrameBuf* const> frames) noexcept override;
  size_t reap_tx(std::span<FrameBuf*> out) noexcept override;
  size_t rx_burst(std::span<FrameBuf*> out) noexcept override;
  void close_tx() noexcept override;

  LinkState state() const noexcept override {
    return !error_.is_ok() ? LinkState::kFailed
                           : (peer_closed_ ? LinkState::kPeerClosed : LinkState::kOpen);
  }
  const Status& error() const noexcept override { return error_; }
  size_t tx_in_flight_bytes() const noexcept override { return tx_bytes_; }
  int wait_fd() const noexcept override { return fd_; }
  uint32_t wait_events(bool want_rx, bool want_tx) const noexcept override {
    return (want_rx ? kWaitReadable : 0) | ((want_tx || tx_count_) ? kWaitWritable : 0);
  }
  void set_buffer_hint(size_t bytes) noexcept override;
  void set_unsent_limit(size_t bytes) noexcept override;
  double min_rtt_s() const noexcept override { return tcp::min_rtt_s(fd_); }
  void set_pacing_rate(double bytes_per_s) noexcept override;

 private:
  static constexpr size_t kIov = 32;
  // Paced: ~1 ms of the rate may wait unsent in the kernel (a TSO burst's most), at least a
  // page and its frame header.
  static constexpr double kPacedBurstS = 0.001;
  static constexpr size_t kMinPacedBurst = 4200;
  void fail(const char* what, int err) noexcept;
  void fail_protocol(const Status& st) noexcept;
  void flush() noexcept;
  // Reads into rx_cur_; returns false when nothing more can be read now.
  bool read_some() noexcept;
  // Paced: what flush() may hand the kernel now, SIZE_MAX when not paced.
  size_t paced_room() const noexcept;

  int fd_;
  std::unique_ptr<FramePool> pool_;
  std::chrono::seconds link_timeout_;  // for the message when it ends the connection
  bool peer_closed_ = false;
  bool tx_closed_ = false;
  bool shut_sent_ = false;
  Status error_;

  // tx ring of frames: [tx_head_, tx_head_ + tx_count_) queued; the first tx_sent_ of them
  // fully written, waiting for reap; tx_off_ bytes of the next one written.
  std::vector<FrameBuf*> tx_ring_;
  size_t tx_head_ = 0, tx_count_ = 0, tx_sent_ = 0, tx_off_ = 0;
  size_t tx_bytes_ = 0;  // queued and not yet written
  // Paced (set_pacing_rate): at most this many bytes wait in the kernel unsent, 0 = no limit.
  size_t paced_burst_ = 0;
  size_t unsent_limit_ = 0;  // set_unsent_limit's, applied while not paced

  // rx: the buffer being filled; rx_whole_ = bytes of whole frames at its start;
  FrameBuf* rx_cur_ = nullptr;
  size_t rx_whole_ = 0;
  uint64_t rx_offset_ = 0;  // link bytes before rx_cur_, for error messages
};

}  // namespace ferry::dataplane::tcp
