// dataplane/dpdk/dpdk_datapath.cc — the per-packet code of the dpdk transport: the receive
// demux (ARP, then UDP to a flow's ring or a listener), building datagrams into mbufs, and
// the DatagramPort over one flow.
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "dataplane/dpdk/internal/dpdk_device.h"
#include "dataplane/dpdk/internal/dpdk_port.h"
#include "dataplane/transport.h"

namespace ferry::dataplane::dpdk {
namespace {

constexpr uint16_t kBurst = 32;
constexpr int kMaxBursts = 8;  // per poll_rx: bounded, so one call never starves its caller

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void signal(int fd) {
  uint64_t one = 1;
  ssize_t r = ::write(fd, &one, sizeof one);
  (void)r;  // a full counter still reads as readable
}

// A mempool keeps a cache of free mbufs per lcore, and ferry's threads are not EAL lcores:
// without one every get and put went to the pool's ring, which hands out the mbuf freed
// longest ago, so every datagram was built in (or received into) memory the CPU's caches had
// long dropped. Registered, the thread has an lcore id and so a cache, until it exits.
void use_mbuf_cache() noexcept {
  struct Registration {
    bool registered = false;
    Registration() {
      if (rte_lcore_id() == LCORE_ID_ANY) registered = rte_thread_register() == 0;
    }
    ~Registration() {
      if (registered) rte_thread_unregister();
    }
  };
  thread_local Registration registration;
}

}  // namespace

size_t Device::poll_rx(const Flow* self) noexcept {
  std::unique_lock lk(rx_mu_, std::try_to_lock);
  if (!lk.owns_lock()) return 0;  // another thread is draining the port right now
  use_mbuf_cache();
  if (rx_intr_fd_ >= 0 && rx_intr_clears_) {
    // Clear the interrupt before draining: a datagram that lands after the drain sets it
    // again. (memif's is an eventfd; other PMDs' fds read the same way or not at all.)
    uint64_t v;
    ssize_t r = ::read(rx_intr_fd_, &v, sizeof v);
    (void)r;
  }
  rte_mbuf* m[kBurst];
  Flow* woken[kBurst * kMaxBursts];
  size_t n_woken = 0;
  size_t total = 0;
  for (int b = 0; b < kMaxBursts; ++b) {
    const uint16_t n = rte_eth_rx_burst(port_id_, 0, m, kBurst);
    for (uint16_t i = 0; i < n; ++i) {
      Flow* f = dispatch(m[i], self);
      if (f) woken[n_woken++] = f;
    }
    total += n;
    if (n < kBurst) break;
  }
  // Still under rx_mu_: a flow cannot be closed (and its fd reused) in between.
  for (size_t i = 0; i < n_woken; ++i) signal(woken[i]->event_fd);
  const int64_t now = now_ns();
  last_poll_ns_.store(now, std::memory_order_relaxed);
  if (total) {
    last_rx_ns_.store(now, std::memory_order_relaxed);
    counters_.rx_frames.fetch_add(total, std::memory_order_relaxed);
  }
  return total;
}

// One received frame; returns a flow to wake (its ring went from quiet to holding data).
Flow* Device::dispatch(rte_mbuf* m, const Flow* self) noexcept {
  auto count = [](std::atomic<uint64_t>& c) { c.fetch_add(1, std::memory_order_relaxed); };
  if (!rte_pktmbuf_is_contiguous(m) && rte_pktmbuf_linearize(m) != 0) {
    count(counters_.rx_malformed);
    rte_pktmbuf_free(m);
    return nullptr;
  }
  const uint8_t* data = rte_pktmbuf_mtod(m, const uint8_t*);
  const bool ip_ok =
      rx_ip_cksum_ && (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD;
  const ParsedFrame p = parse_frame(data, rte_pktmbuf_data_len(m), !ip_ok);
  if (p.src_mac == local_mac_) {  // our own frames, as taps may show them
    count(counters_.rx_not_ours);
    rte_pktmbuf_free(m);
    return nullptr;
  }
  switch (p.kind) {
    case ParsedFrame::Kind::kArp:
      if (p.arp_sender_ip != 0) arp_[p.arp_sender_ip] = p.arp_sender_mac;
      if (p.arp_op == ArpOp::kRequest && p.arp_target_ip == local_ip_) {
        if (send_arp(ArpOp::kReply, p.arp_sender_mac, p.arp_sender_mac, p.arp_sender_ip)) {
          count(counters_.arp_answered);
        }
      }
      rte_pktmbuf_free(m);
      return nullptr;
    case ParsedFrame::Kind::kMalformed:
      count(counters_.rx_malformed);
      rte_pktmbuf_free(m);
      return nullptr;
    case ParsedFrame::Kind::kOther:
      count(counters_.rx_not_ours);
      rte_pktmbuf_free(m);
      return nullptr;
    case ParsedFrame::Kind::kUdp:
      break;
  }
  if (p.udp.dst_ip != local_ip_ || p.udp.dst_mac != local_mac_) {
    count(counters_.rx_not_ours);
    rte_pktmbuf_free(m);
    return nullptr;
  }
  const FlowKey key{p.udp.src_ip, p.udp.src_port, p.udp.dst_port};
  if (auto it = flows_.find(key.packed()); it != flows_.end()) {
    Flow* f = it->second;
    // The mbuf becomes the datagram alone: no headers, no Ethernet padding.
    rte_pktmbuf_adj(m, static_cast<uint16_t>(p.payload - data));
    rte_pktmbuf_trim(m, static_cast<uint16_t>(rte_pktmbuf_pkt_len(m) - p.len));
    if (rte_ring_sp_enqueue(f->ring, m) != 0) {
      count(counters_.rx_ring_full);
      f->ring_full_drops.fetch_add(1, std::memory_order_relaxed);
      rte_pktmbuf_free(m);
      return nullptr;
    }
    count(counters_.rx_datagrams);
    if (f == self || f->signaled.exchange(true, std::memory_order_acq_rel)) return nullptr;
    return f;
  }
  auto l = listens_.find(key.local_port);
  if (l != listens_.end() && l->second.is_first({p.payload, p.len})) {
    if (l->second.pending.size() < 64) {
      l->second.pending.push_back({key, p.src_mac, {p.payload, p.payload + p.len}});
      count(counters_.rx_datagrams);
      signal(l->second.event_fd);
    }
    rte_pktmbuf_free(m);
    return nullptr;
  }
  count(counters_.rx_unknown);  // a stranger, or a link that closed: dropped
  rte_pktmbuf_free(m);
  return nullptr;
}

bool Device::send_arp(ArpOp op, const Mac& eth_dst, const Mac& target_mac,
                      uint32_t target_ip) noexcept {
  rte_mbuf* m = rte_pktmbuf_alloc(pool_);
  if (!m) return false;
  auto* p = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, kArpFrame + 18));
  if (!p) {
    rte_pktmbuf_free(m);
    return false;
  }
  std::memset(p, 0, kArpFrame + 18);  // padded to Ethernet's 60-byte minimum
  write_arp(p, op, eth_dst, local_mac_, local_ip_, target_mac, target_ip);
  std::lock_guard lk(tx_mu_);
  if (rte_eth_tx_burst(port_id_, 0, &m, 1) == 1) {
    if (tx_kick_fd_ >= 0) tx_unflushed_.store(true, std::memory_order_relaxed);
    return true;
  }
  rte_pktmbuf_free(m);
  return false;
}

bool Device::flush_tx() noexcept {
  if (tx_kick_fd_ < 0 || !tx_unflushed_.load(std::memory_order_relaxed)) return false;
  std::lock_guard lk(tx_mu_);
  // What the PMD's own kick does: the kernel sends the ring's waiting frames until the ring
  // is empty (returns 0 when it held none) or the socket buffer is full again (the bytes it
  // sent, or EAGAIN when it could send none; ENOBUFS when the qdisc dropped one).
  const ssize_t r = ::sendto(tx_kick_fd_, nullptr, 0, MSG_DONTWAIT, nullptr, 0);
  if (r > 0) {
    counters_.tx_flushes.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  if (r < 0 && (errno == EAGAIN || errno == ENOBUFS || errno == EINTR)) return true;
  tx_unflushed_.store(false, std::memory_order_relaxed);  // nothing waits (or the port is down)
  return false;
}

size_t Device::send(Flow& flow, std::span<const DatagramOut> out) noexcept {
  use_mbuf_cache();
  const uint16_t want = static_cast<uint16_t>(std::min<size_t>(out.size(), kBurst));
  rte_mbuf* m[kBurst];
  if (want == 0 || rte_pktmbuf_alloc_bulk(pool_, m, want) != 0) {
    counters_.tx_full.fetch_add(want, std::memory_order_relaxed);
    return 0;
  }
  UdpAddressing a;
  a.src_mac = local_mac_;
  a.dst_mac = flow.peer_mac;
  a.src_ip = local_ip_;
  a.dst_ip = flow.key.peer_ip;
  a.src_port = flow.key.local_port;
  a.dst_port = flow.key.peer_port;
  uint16_t built = 0;
  for (; built < want; ++built) {
    const DatagramOut& d = out[built];
    const size_t len = kUdpHeaders + d.size();
    auto* p =
        d.size() <= max_datagram_
            ? reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m[built], static_cast<uint16_t>(len)))
            : nullptr;
    if (!p) {
      counters_.tx_too_big.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    write_udp_headers(p, a, d.size(), flow.ip_id++, !tx_ip_cksum_);
    std::memcpy(p + kUdpHeaders, d.head.data(), d.head.size());
    if (!d.body.empty()) std::memcpy(p + kUdpHeaders + d.head.size(), d.body.data(), d.body.size());
    if (tx_ip_cksum_) {
      m[built]->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
      m[built]->l2_len = kEthHeader;
      m[built]->l3_len = kIpv4Header;
    }
  }
  uint16_t sent = 0;
  if (built > 0) {
    std::lock_guard lk(tx_mu_);
    sent = rte_eth_tx_burst(port_id_, 0, m, built);
    if (sent && tx_kick_fd_ >= 0) tx_unflushed_.store(true, std::memory_order_relaxed);
  }
  if (sent < want) rte_pktmbuf_free_bulk(m + sent, want - sent);
  counters_.tx_datagrams.fetch_add(sent, std::memory_order_relaxed);
  if (sent < built) counters_.tx_full.fetch_add(built - sent, std::memory_order_relaxed);
  return sent;
}

// ---- DpdkPort ------------------------------------------------------------------------------

DpdkPort::DpdkPort(Device& device, std::shared_ptr<Flow> flow)
    : device_(device), flow_(std::move(flow)) {}

DpdkPort::~DpdkPort() {
  release_views();
  device_.close_flow(*flow_);
}

size_t DpdkPort::send_burst(std::span<const DatagramOut> out) noexcept {
  const size_t n = device_.send(*flow_, out);
  tx_blocked_ = n < out.size();
  return n;
}

// The demux made every mbuf one contiguous segment trimmed to the datagram (dispatch), so
// both ways of receiving read it at rte_pktmbuf_mtod.
size_t DpdkPort::take(size_t max) noexcept {
  release_views();
  // Clear the wake-up before looking at the ring, so a datagram queued after the look
  // signals again: the eventfd first, then the flag. In the other order a signal written
  // between the two would be read away with the flag left set, and no later datagram would
  // signal until the link's next deadline.
  if (flow_->signaled.load(std::memory_order_acquire)) {
    uint64_t v;
    ssize_t r = ::read(flow_->event_fd, &v, sizeof v);
    (void)r;
    flow_->signaled.store(false, std::memory_order_release);
  }
  device_.poll_rx(flow_.get());
  use_mbuf_cache();  // the mbufs go back to this thread's cache
  lent_n_ = rte_ring_sc_dequeue_burst(flow_->ring, reinterpret_cast<void**>(lent_),
                                      static_cast<unsigned>(std::min(max, kBurst)), nullptr);
  return lent_n_;
}

size_t DpdkPort::recv_burst(std::span<DatagramIn> in) noexcept {
  const size_t n = take(in.size());
  size_t k = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t len = rte_pktmbuf_pkt_len(lent_[i]);
    DatagramIn& d = in[k];
    if (len > d.cap) {
      ++rx_truncated_;
      continue;
    }
    std::memcpy(d.buf, rte_pktmbuf_mtod(lent_[i], const uint8_t*), len);
    d.len = len;
    ++k;
  }
  release_views();
  return k;
}

size_t DpdkPort::recv_views(std::span<DatagramView> out) noexcept {
  const size_t n = take(out.size());
  for (size_t i = 0; i < n; ++i) {
    out[i] = {rte_pktmbuf_mtod(lent_[i], const uint8_t*), rte_pktmbuf_pkt_len(lent_[i])};
  }
  return n;
}

void DpdkPort::release_views() noexcept {
  if (lent_n_) rte_pktmbuf_free_bulk(lent_, static_cast<unsigned>(lent_n_));
  lent_n_ = 0;
}

size_t DpdkPort::progress(TimePoint now) noexcept {
  now_ = now;
  return 0;
}

TimePoint DpdkPort::next_deadline() const noexcept {
  // Datagrams already waiting (the last burst left some): no sleep. A full tx queue drains
  // in microseconds and has no fd: look again shortly.
  if (rte_ring_count(flow_->ring) > 0) return now_;
  if (tx_blocked_) return now_ + std::chrono::microseconds(50);
  return kNever;
}

uint32_t DpdkPort::wait_events(bool want_rx, bool /*want_tx*/) const noexcept {
  (void)want_rx;
  return kWaitReadable;  // the eventfd; tx room is found by the deadline above
}

}  // namespace ferry::dataplane::dpdk
