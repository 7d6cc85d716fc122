// dataplane/loopback/loopback_datagram.h — an in-process DatagramPort pair (datagram.h) for
// tests of reliable/ and fault/: two ports joined by single-producer/single-consumer rings of
// fixed-size datagram slots, one ring per direction. Like a NIC, a full ring drops the
// datagram (and counts it) instead of blocking. The two ports may live on two threads (one
// each); there is no wait fd (wait_fd() is -1), so an engine sleeps only until deadlines.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "dataplane/datagram.h"

namespace ferry::dataplane::loopback {

struct LoopbackDatagramOptions {
  size_t max_datagram = 1472;  // what an Ethernet MTU of 1500 leaves for a UDP payload
  size_t slots = 1024;         // datagrams queued per direction before drops
  bool lend_rx = false;        // receive in place (recv_views), as DPDK's ports do
};

class LoopbackDatagramPort;

struct LoopbackDatagramPair {
  std::unique_ptr<LoopbackDatagramPort> a;
  std::unique_ptr<LoopbackDatagramPort> b;
};

Result<LoopbackDatagramPair> make_loopback_datagram_pair(
    const LoopbackDatagramOptions& options = {});

namespace internal {
struct Lane;
}

class LoopbackDatagramPort final : public DatagramPort {
 public:
  LoopbackDatagramPort(std::shared_ptr<internal::Lane> tx, std::shared_ptr<internal::Lane> rx,
                       size_t max_datagram, bool lend_rx = false);
  ~LoopbackDatagramPort() override;

  const char* kind() const noexcept override { return "loopback"; }
  size_t max_datagram() const noexcept override { return max_datagram_; }
  // Takes every datagram; one that finds the ring full (or exceeds max_datagram) is dropped
  // and counted.
  size_t send_burst(std::span<const DatagramOut> out) noexcept override;
  size_t recv_burst(std::span<DatagramIn> in) noexcept override;
  bool lends_rx() const noexcept override { return lend_rx_; }
  size_t recv_views(std::span<DatagramView> out) noexcept override;
  void release_views() noexcept override;
  int wait_fd() const noexcept override { return -1; }
  uint32_t wait_events(bool, bool) const noexcept override { return 0; }
  bool failed() const noexcept override { return false; }
  const Status& error() const noexcept override { return ok_; }

  // Datagrams this port dropped on send.
  uint64_t full_drops() const noexcept { return full_drops_; }
  // Datagrams received in place (recv_views).
  uint64_t views_lent() const noexcept { return views_lent_; }

 private:
  std::shared_ptr<internal::Lane> tx_;
  std::shared_ptr<internal::Lane> rx_;
  size_t max_datagram_;
  bool lend_rx_;
  std::vector<uint32_t> lent_;  // slots behind the views handed out, until release_views
  uint64_t full_drops_ = 0;
  uint64_t views_lent_ = 0;
  Status ok_;
};

}  // namespace ferry::dataplane::loopback
