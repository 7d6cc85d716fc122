// dataplane/dpdk/internal/dpdk_device.h — the one DPDK port a ferry process uses, shared by
// every dpdk link and listener in it: EAL set up once, one rx and one tx queue, one mbuf pool,
// ARP (answers for the local address, resolves peers), and the receive demux that hands each
// UDP flow's datagrams to that flow's ring.
//
// Threads: each link is driven by its own channel thread (pipeline/channel_set), so the
// device's queues are shared. Transmit takes tx_mu_ per burst. On af_packet, datagrams the
// PMD took may still wait in the socket's tx ring (the kernel takes them only when kicked):
// the watcher kicks it while that may be so (flush_tx). Receive is drained by whichever
// thread gets rx_mu_ first (try_lock, never waits on the data path): the link polling anyway,
// or, while every link sleeps, the device's watcher thread, which polls the port every few
// hundred microseconds (the af_packet and memif PMDs of DPDK 22.11 give no rx fd here) and
// wakes the owner of each flow that got datagrams through the flow's eventfd. A flow's ring
// has one consumer (its owner) and one producer at a time (the holder of rx_mu_).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "dataplane/datagram.h"
#include "dataplane/dpdk/dpdk_wire.h"

struct rte_mempool;
struct rte_ring;
struct rte_mbuf;

namespace ferry::dataplane::dpdk {

// A UDP flow as this end sees it.
struct FlowKey {
  uint32_t peer_ip = 0;
  uint16_t peer_port = 0;
  uint16_t local_port = 0;
  uint64_t packed() const {
    return uint64_t{peer_ip} << 32 | uint64_t{peer_port} << 16 | local_port;
  }
};

// One link's share of the device: its addressing and the ring the demux fills.
struct Flow {
  FlowKey key;
  Mac peer_mac{};
  rte_ring* ring = nullptr;  // mbufs trimmed to the UDP payload
  int event_fd = -1;         // readable when the demux queued datagrams for this flow
  int wait_fd = -1;          // event_fd, or an epoll set of it and the port's rx interrupt fd
  std::atomic<bool> signaled{false};
  std::atomic<uint64_t> ring_full_drops{0};
  uint16_t ip_id = 0;  // owner thread only
};

// A client's first datagram seen on a listening port (copied: not the hot path).
struct PendingSyn {
  FlowKey key;
  Mac peer_mac{};
  std::vector<uint8_t> datagram;
};

// Device-wide counters (relaxed atomics; any thread reads them).
struct DeviceCounters {
  std::atomic<uint64_t> rx_frames{0};
  std::atomic<uint64_t> rx_datagrams{0};  // handed to a flow or a listener
  std::atomic<uint64_t> rx_unknown{0};    // UDP to our address from no known flow (dropped)
  std::atomic<uint64_t> rx_not_ours{0};   // other addresses, protocols, our own echoes
  std::atomic<uint64_t> rx_malformed{0};  // bad lengths or checksum, IP fragments
  std::atomic<uint64_t> rx_ring_full{0};  // a flow's ring was full (its owner is slow)
  std::atomic<uint64_t> arp_answered{0};
  std::atomic<uint64_t> tx_datagrams{0};
  std::atomic<uint64_t> tx_full{0};  // datagrams the tx queue did not take
  std::atomic<uint64_t> tx_too_big{0};
  std::atomic<uint64_t> tx_flushes{0};     // af_packet: kicks that sent datagrams left waiting
  std::atomic<uint64_t> watcher_polls{0};  // receive drains done by the watcher thread
};

class Device {
 public:
  // The process's device, made on first use from settings() (dpdk_settings.h): EAL, port,
  // queues, pool, watcher thread. Later calls return the same one (or the same error).
  static Result<Device*> get();

  uint32_t local_ip() const { return local_ip_; }
  const Mac& local_mac() const { return local_mac_; }
  // Largest UDP payload that fits the port's MTU and one mbuf.
  size_t max_datagram() const { return max_datagram_; }
  const std::string& name() const { return name_; }
  // Packets a peer may send beyond what this end acknowledged (reliable/'s packet window): half
  // a flow's ring, so that the demux never finds it full (the rest is room for acks). A full
  // ring drops datagrams, while a port left undrained back-pressures the sender instead
  // (memif) or drops them in the kernel (af_packet).
  size_t flow_window() const { return ring_size_ / 2; }
  // The rx interrupt fd, or -1 when the PMD has none (af_packet).
  int rx_intr_fd() const { return rx_intr_fd_; }

  // A flow to peer from a fresh local port (client) or from local_port (a listener's peer).
  Result<std::shared_ptr<Flow>> open_flow(uint32_t peer_ip, uint16_t peer_port, Mac peer_mac,
                                          uint16_t local_port = 0);
  // Stops the demux feeding it and frees what waits in its ring.
  void close_flow(Flow& flow);

  // Listening: first datagrams of unknown flows to this UDP port that `is_first` accepts
  // queue up for take_pending(); anything else from unknown flows is dropped and counted.
  Status listen(uint16_t port, bool (*is_first)(std::span<const uint8_t>), int event_fd);
  void unlisten(uint16_t port);
  bool take_pending(uint16_t port, PendingSyn& out);

  // Resolves peer_ip by ARP (cached), waiting up to timeout_ms.
  Result<Mac> resolve(uint32_t peer_ip, int timeout_ms);

  // Drains the rx queue if no other thread is doing so; returns frames handled. self: the
  // calling flow (not woken through its eventfd).
  size_t poll_rx(const Flow* self) noexcept;
  // Builds and sends datagrams of one flow; returns how many the tx queue took.
  size_t send(Flow& flow, std::span<const DatagramOut> out) noexcept;
  // af_packet: hands the kernel what still waits in the socket's tx ring; true while some may
  // still wait (the kernel's socket buffer is full). Other PMDs: nothing to do, false.
  bool flush_tx() noexcept;

  const DeviceCounters& counters() const { return counters_; }
  json::Value stats_json() const;

 private:
  Device() = default;
  Status init();
  void watch();
  Flow* dispatch(rte_mbuf* m, const Flow* self) noexcept;
  bool send_arp(ArpOp op, const Mac& eth_dst, const Mac& target_mac, uint32_t target_ip) noexcept;

  std::string name_;
  uint16_t port_id_ = 0;
  uint32_t local_ip_ = 0;
  Mac local_mac_{};
  unsigned mtu_ = 0;
  size_t max_datagram_ = 0;
  size_t ring_size_ = 0;
  bool tx_ip_cksum_ = false;
  bool rx_ip_cksum_ = false;
  int rx_intr_fd_ = -1;  // readable when the rx queue has datagrams (PMDs with rx interrupts)
  bool rx_intr_clears_ = true;  // read rx_intr_fd_ before draining (not af_xdp's socket)
  int tx_kick_fd_ = -1;  // af_packet: the PMD's socket, kicked by flush_tx (not ours to close)
  // Datagrams may wait in the tx ring: set by transmits, cleared by a kick that found none
  // (both under tx_mu_); the watcher reads it without the lock.
  std::atomic<bool> tx_unflushed_{false};
  rte_mempool* pool_ = nullptr;

  std::mutex tx_mu_;
  std::mutex rx_mu_;  // the rx queue, flows_, listens_, arp_
  std::unordered_map<uint64_t, Flow*> flows_;
  struct Listen {
    bool (*is_first)(std::span<const uint8_t>);
    int event_fd;
    std::deque<PendingSyn> pending;
  };
  std::unordered_map<uint16_t, Listen> listens_;
  std::unordered_map<uint32_t, Mac> arp_;
  uint16_t next_local_port_ = 0;
  uint32_t ring_serial_ = 0;

  std::atomic<int64_t> last_poll_ns_{0};
  std::atomic<int64_t> last_rx_ns_{0};
  std::thread watcher_;
  DeviceCounters counters_;
};

}  // namespace ferry::dataplane::dpdk
