// common/byte_queue.h — a growable FIFO of bytes for the QEMU-side queues and the frame
// decoder's input: linear storage, filled in place (reserve/commit) and drained from the
// front, so the hot path copies nothing it does not have to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"

namespace ferry {

// Pending bytes for a non-blocking fd: a linear buffer that grows to the largest backlog
// and then stays (no allocation in steady state). Owned by one thread.
class ByteQueue {
 public:
  size_t size() const { return end_ - pos_; }
  bool empty() const { return size() == 0; }
  void append(const void* p, size_t n);
  // Room for n more bytes at the end (valid until the next non-const call); fill a prefix of
  // it, then commit() that many. Lets a producer read() straight into the queue.
  uint8_t* reserve(size_t n);
  void commit(size_t n) { end_ += n; }
  // Bytes that fit after the end without moving anything (at least n after reserve(n)).
  size_t room() const { return cap_ - end_; }
  // The queued bytes, oldest first; valid until the next non-const call.
  std::span<const uint8_t> pending() const { return {buf_.get() + pos_, size()}; }
  // Drops the first n queued bytes (they were sent).
  void consume(size_t n);
  // Writes as much as the fd takes. Returns bytes written, or an error (kIo) on failure.
  Result<size_t> flush_to(int fd);

 private:
  std::unique_ptr<uint8_t[]> buf_;
  size_t cap_ = 0, pos_ = 0, end_ = 0;
};

}  // namespace ferry
