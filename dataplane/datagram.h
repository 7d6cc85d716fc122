// dataplane/datagram.h — the DatagramPort contract: an unreliable, unordered, connected
// datagram pipe to one peer (kernel UDP today, a DPDK queue pair next, an in-process ring in
// tests). reliable/ turns any DatagramPort into a reliable, ordered Transport of whole frames;
// fault/ wraps one to drop, duplicate, reorder or delay datagrams.
//
// Owned and driven by one thread. Data methods never block, are noexcept and return the
// count handled; one virtual call per burst.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/clock.h"
#include "common/status.h"

namespace ferry::dataplane {

// One datagram to send, gathered from two pieces (a protocol header and a slice of a frame)
// so that building it copies nothing.
struct DatagramOut {
  std::span<const uint8_t> head;
  std::span<const uint8_t> body;
  size_t size() const { return head.size() + body.size(); }
};

// A buffer to receive one datagram into; recv_burst sets len.
struct DatagramIn {
  uint8_t* buf = nullptr;
  size_t cap = 0;
  size_t len = 0;
};

// A received datagram where the port keeps it (recv_views).
struct DatagramView {
  const uint8_t* data = nullptr;
  size_t len = 0;
};

class DatagramPort {
 public:
  virtual ~DatagramPort() = default;

  virtual const char* kind() const noexcept = 0;
  // Largest datagram (head + body) that crosses the path without IP fragmentation.
  virtual size_t max_datagram() const noexcept = 0;

  // Sends the first n datagrams (copied out: the pieces may be reused at return); 0 = the
  // port is full now (wait for kWaitWritable). A datagram may still be lost on the way.
  virtual size_t send_burst(std::span<const DatagramOut> out) noexcept = 0;
  // Receives up to in.size() datagrams into the given buffers (each at least max_datagram()
  // bytes); returns the count and sets each len. A datagram larger than its buffer is dropped.
  virtual size_t recv_burst(std::span<DatagramIn> in) noexcept = 0;
  // Receiving without the copy, for ports whose datagrams already sit in memory of their own
  // (DPDK's mbufs): when lends_rx(), recv_views returns up to out.size() datagrams in place,
  // valid until release_views(), which the caller makes before any other receive.
  virtual bool lends_rx() const noexcept { return false; }
  virtual size_t recv_views(std::span<DatagramView> /*out*/) noexcept { return 0; }
  virtual void release_views() noexcept {}

  // Fault injection and delayed delivery need timers; plain ports have none.
  virtual size_t progress(TimePoint /*now*/) noexcept { return 0; }
  virtual TimePoint next_deadline() const noexcept { return kNever; }

  // The fd an adaptive engine sleeps on (kWait* bits from transport.h), -1 = none.
  virtual int wait_fd() const noexcept = 0;
  virtual uint32_t wait_events(bool want_rx, bool want_tx) const noexcept = 0;

  // A hard error (the socket failed); the port takes and returns nothing after it.
  virtual bool failed() const noexcept = 0;
  virtual const Status& error() const noexcept = 0;
};

}  // namespace ferry::dataplane
