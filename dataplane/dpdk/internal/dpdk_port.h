// dataplane/dpdk/internal/dpdk_port.h — a DatagramPort (datagram.h) on one flow of the
// process's DPDK device: what reliable/ runs over for the `dpdk` transport.
#pragma once

#include <memory>
#include <string>

#include "dataplane/datagram.h"
#include "dataplane/dpdk/internal/dpdk_device.h"

namespace ferry::dataplane::dpdk {

// Owned and driven by one thread (its link's). Closing it closes the flow.
class DpdkPort final : public DatagramPort {
 public:
  DpdkPort(Device& device, std::shared_ptr<Flow> flow);
  ~DpdkPort() override;
  DpdkPort(const DpdkPort&) = delete;
  DpdkPort& operator=(const DpdkPort&) = delete;

  const char* kind() const noexcept override { return "dpdk"; }
  size_t max_datagram() const noexcept override { return device_.max_datagram(); }
  size_t send_burst(std::span<const DatagramOut> out) noexcept override;
  size_t recv_burst(std::span<DatagramIn> in) noexcept override;
  bool lends_rx() const noexcept override { return true; }
  size_t recv_views(std::span<DatagramView> out) noexcept override;
  void release_views() noexcept override;
  size_t progress(TimePoint now) noexcept override;
  TimePoint next_deadline() const noexcept override;
  int wait_fd() const noexcept override { return flow_->wait_fd; }
  uint32_t wait_events(bool want_rx, bool want_tx) const noexcept override;
  bool failed() const noexcept override { return false; }
  const Status& error() const noexcept override { return ok_; }

  uint64_t rx_truncated() const { return rx_truncated_; }

 private:
  static constexpr size_t kBurst = 32;
  // Clears the wake-up, drains the port if no one else is, and takes up to `max` datagrams
  // of this flow into lent_.
  size_t take(size_t max) noexcept;

  rte_mbuf* lent_[kBurst] = {};  // taken from the flow's ring, not yet freed
  size_t lent_n_ = 0;
  Device& device_;
  std::shared_ptr<Flow> flow_;
  TimePoint now_{};
  bool tx_blocked_ = false;
  uint64_t rx_truncated_ = 0;
  Status ok_;
};

}  // namespace ferry::dataplane::dpdk
