// qemu-channel/qemu_connection.h — the QEMU end of one migration channel as ferry's pump
// sees it: a unix socket (one fd, both directions) or a pair of pipes (exec:, --stdio), made
// non-blocking. Reads hand QEMU's bytes to the caller's buffer; writes go out as far as QEMU
// takes them now and queue the rest in order, so the pump never blocks on QEMU.
//
// Owned and used by one thread (the channel's engine). The fds are not owned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/byte_queue.h"
#include "common/status.h"

namespace ferry::qemu {

class QemuConnection {
 public:
  QemuConnection(int read_fd, int write_fd) : read_fd_(read_fd), write_fd_(write_fd) {}

  // Makes the fds non-blocking; call once before any I/O.
  Status open();

  // Reads what QEMU wrote into out. Returns the count (0 = nothing now); *eof is set once
  // QEMU closed its sending side (a reset counts as a close). Errors are other failures.
  Result<size_t> read(std::span<uint8_t> out, bool* eof);

  // Bytes toward QEMU, in order: written now as far as QEMU takes them, the rest queued
  // behind anything already queued. An error means QEMU closed its end (kClosed).
  Status write(std::span<const uint8_t> bytes);
  // Bytes produced in place toward QEMU (decoders append here); flush() sends them.
  ByteQueue& queue() { return queue_; }
  size_t queued() const { return queue_.size(); }
  // Writes as much of the queue as QEMU takes; the count, or kClosed when QEMU closed.
  Result<size_t> flush();
  // After the whole stream: QEMU sees EOF on its input (sockets only; a pipe closes with
  // its owner).
  void shut_write();

  int read_fd() const { return read_fd_; }
  int write_fd() const { return write_fd_; }
  // Bytes written to QEMU so far.
  uint64_t bytes_written() const { return written_; }

 private:
  int read_fd_;
  int write_fd_;
  bool one_socket_ = false;
  ByteQueue queue_;
  uint64_t written_ = 0;
};

}  // namespace ferry::qemu
