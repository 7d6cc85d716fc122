// dataplane/reliable/internal/reliable_link.h — the state of one reliable link (private to
// reliable/). Control (create, handshake, failure, stats) is in reliable_transport.cc, the
// per-packet path (tx, acks, loss, pacing, reassembly) in reliable_datapath.cc.
//
// Everything is sized at create: the packet ring (pkt_window entries, indexed by packet
// number), the tx frame ring, the rx frame slots and the rx scratch buffers; nothing
// allocates afterwards. Times are int64 ns of the clock that progress() is given.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/reliable/internal/rate_control.h"
#include "dataplane/reliable/internal/wire.h"
#include "dataplane/reliable/reliable_transport.h"

namespace ferry::dataplane::reliable {

inline constexpr size_t kBurst = 32;
inline constexpr int64_t kNeverNs = std::numeric_limits<int64_t>::max();
inline constexpr uint32_t kNil = std::numeric_limits<uint32_t>::max();

inline int64_t to_ns(TimePoint t) {
  return t == kNever
             ? kNeverNs
             : std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
inline TimePoint from_ns(int64_t ns) {
  return ns == kNeverNs
             ? kNever
             : TimePoint(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}

// "10.0 s", for messages.
std::string format_seconds(std::chrono::nanoseconds d);

class ReliableLink final : public ReliableTransport {
 public:
  ReliableLink() = default;
  // Control (reliable_transport.cc).
  Status init(std::unique_ptr<DatagramPort> port, const ReliableOptions& options, Role role,
              std::span<const uint8_t> first_datagram);

  const char* kind() const noexcept override { return port_->kind(); }
  TransportCaps caps() const noexcept override;
  FramePool& pool() noexcept override { return *pool_; }
  void close_tx() noexcept override;
  LinkState state() const noexcept override;
  const Status& error() const noexcept override { return error_; }
  size_t tx_in_flight_bytes() const noexcept override;
  size_t tx_unsent_bytes() const noexcept override { return tx_unsent_; }
  int wait_fd() const noexcept override { return port_->wait_fd(); }
  uint32_t wait_events(bool want_rx, bool want_tx) const noexcept override;
  void set_buffer_hint(size_t bytes) noexcept override { buffer_hint_ = bytes; }
  double min_rtt_s() const noexcept override {
    return static_cast<double>(cc_.min_rtt_ns()) * 1e-9;
  }
  void set_pacing_rate(double bytes_per_s) noexcept override;
  bool established() const noexcept override { return phase_ == Phase::kEstablished; }
  const ReliableStats& stats() const noexcept override;
  DatagramPort& port() noexcept override { return *port_; }

  // Data path (reliable_datapath.cc).
  size_t tx_burst(std::span<FrameBuf* const> frames) noexcept override;
  size_t reap_tx(std::span<FrameBuf*> out) noexcept override;
  size_t rx_burst(std::span<FrameBuf*> out) noexcept override;
  size_t progress(TimePoint now) noexcept override;
  TimePoint next_deadline() const noexcept override;

 private:
  enum class Phase : uint8_t { kConnecting, kAccepting, kEstablished };
  enum class PktState : uint8_t { kAcked, kInFlight, kLost };

  // One sent data packet, at pkts_[pkt & pkt_mask_] while pkt is in [snd_una_, snd_nxt_).
  struct SentPacket {
    uint64_t frame = 0;  // frame number (FIN: the frame count)
    uint32_t offset = 0;
    uint32_t len = 0;  // body bytes
    int64_t sent_ns = 0;
    // Delivery-rate estimation: the link's state when this packet was (re)sent.
    uint64_t delivered = 0;
    int64_t delivered_ns = 0;
    int64_t first_sent_ns = 0;
    uint32_t prev = kNil;  // in-flight packets, oldest transmission first
    uint32_t next = kNil;
    uint16_t size = 0;  // datagram bytes
    PktState state = PktState::kAcked;
    uint16_t tx = 0;  // transmissions after the first (its latest copy's number)
    bool retransmitted = false;
    bool app_limited = false;
    bool fin = false;
  };
  // A frame taken by tx_burst, at txf_[frame & txf_mask_] until reaped.
  struct TxFrame {
    FrameBuf* buf = nullptr;
    uint32_t len = 0;
    uint32_t next_offset = 0;  // bytes already cut into packets
    uint32_t unacked = 0;      // its packets not yet acked
  };
  // A frame being received, at rxs_[frame & rx_mask_] for frames in [rx_next_, rx_assigned_).
  struct RxSlot {
    FrameBuf* buf = nullptr;
    uint32_t len = 0;  // 0 until its first packet
    uint32_t got = 0;
  };
  // One datagram planned by send_data, committed once the port took it.
  struct TxItem {
    uint64_t pkt;
    uint64_t frame;
    uint32_t offset;
    uint32_t len;
    bool retransmit;
    bool fin;
  };
  // Where planning stands within one burst (nothing is changed until the port took it).
  struct Cursor {
    uint64_t retx = 0;  // position in retx_
    uint64_t frame = 0;
    uint32_t offset = 0;
    uint64_t new_pkts = 0;
    uint64_t inflight = 0;
    bool fin = false;
  };
  enum class Plan : uint8_t { kItem, kBlocked, kIdle };
  // What one ack delivered.
  struct AckCtx {
    uint64_t acked = 0;  // bytes
    uint64_t largest = 0;
    bool have_largest = false;
    int64_t largest_sent_ns = 0;
    bool largest_retransmitted = false;
    bool have_prior = false;
    bool from_lost = false;  // delivered a packet declared lost or resent: a no_raise sample
    uint64_t echo_pkt = 0;   // the receiver's newest arrival: packet and transmission
    uint16_t echo_tx = 0;
    RateSample rs;
    int64_t prior_ns = 0;
    int64_t send_elapsed = 0;
    int64_t ack_elapsed = 0;
  };

  // Control (reliable_transport.cc).
  void fail(ErrorCode code, std::string message) noexcept;
  void handshake_rx(const uint8_t* d, size_t n, int64_t now) noexcept;
  size_t handshake_timers(int64_t now) noexcept;
  void establish(int64_t now, int64_t rtt_ns) noexcept;
  bool apply_peer_params(const wire::SynParams& p) noexcept;
  wire::SynParams own_params() const noexcept;
  bool send_control(const uint8_t* d, size_t n, int64_t now) noexcept;

  // Data path (reliable_datapath.cc).
  size_t receive(int64_t now) noexcept;
  void on_datagram(const uint8_t* d, size_t n, int64_t now) noexcept;
  void on_data(const uint8_t* d, size_t n, int64_t now) noexcept;
  void on_ack(const uint8_t* d, size_t n, int64_t now) noexcept;
  void ack_range(uint64_t lo, uint64_t hi, AckCtx& ctx, int64_t now) noexcept;
  void on_packet_acked(uint64_t pkt, AckCtx& ctx, int64_t now) noexcept;
  void update_rtt(int64_t rtt_ns) noexcept;
  void detect_losses(int64_t now) noexcept;
  size_t send_probe(int64_t now) noexcept;
  void mark_lost(uint64_t pkt) noexcept;
  size_t timers(int64_t now) noexcept;
  size_t send_data(int64_t now) noexcept;
  Plan plan_next(TxItem& item, Cursor& c) noexcept;
  void commit(const TxItem& item, int64_t now, double ns_per_byte) noexcept;
  size_t maybe_ack(int64_t now) noexcept;
  bool send_ack(int64_t now) noexcept;
  uint64_t compute_grant() noexcept;
  bool assign_rx_buffers(uint64_t frame) noexcept;
  void mark_received(uint64_t pkt) noexcept;
  bool can_send() const noexcept;
  int64_t rto_ns() const noexcept;
  int64_t reorder_window_ns() const noexcept;
  void list_append(uint32_t idx) noexcept;
  void list_remove(uint32_t idx) noexcept;
  uint64_t pkt_of(uint32_t idx) const noexcept {
    return snd_una_ + ((idx - static_cast<uint32_t>(snd_una_)) & pkt_mask_);
  }

  // Configuration.
  ReliableOptions opt_;
  Role role_ = Role::kClient;
  std::unique_ptr<DatagramPort> port_;
  std::unique_ptr<FramePool> pool_;     // the owner's tx frames
  std::unique_ptr<FramePool> rx_pool_;  // received frames
  uint32_t conn_ = 0;
  size_t own_dgram_ = 0;   // the port's max datagram
  size_t dgram_ = 0;       // min of both ends'
  uint32_t chunk_ = 0;     // frame bytes per data packet
  size_t max_ranges_ = 0;  // sack ranges per ack
  uint32_t max_frame_ = 0;
  uint64_t pkt_mask_ = 0;
  uint64_t txf_mask_ = 0;
  uint64_t rx_mask_ = 0;
  uint64_t rx_slots_ = 0;  // frames the receiver may grant beyond rx_next_ (rx_frames)

  // Life cycle.
  Phase phase_ = Phase::kConnecting;
  bool started_ = false;
  bool failed_ = false;
  Status error_;
  int64_t now_ = 0;  // the last progress() time, for the data calls
  int64_t last_rx_ns_ = 0;
  int64_t last_tx_ns_ = 0;
  int64_t last_data_tx_ns_ = INT64_MIN / 2;  // the last data packet sent
  bool port_blocked_ = false;
  // Handshake.
  int64_t hs_start_ns_ = 0;
  int64_t syn_next_ns_ = 0;
  int64_t syn_first_ns_ = 0;
  uint32_t syn_count_ = 0;
  bool synack_due_ = false;
  int64_t synack_ns_ = 0;
  uint32_t synack_count_ = 0;
  wire::SynParams peer_{};

  // Sender.
  std::vector<TxFrame> txf_;
  uint64_t txf_head_ = 0;  // oldest frame not reaped
  uint64_t txf_send_ = 0;  // frame being cut into packets
  uint64_t txf_tail_ = 0;  // next frame number
  size_t tx_bytes_ = 0;
  size_t tx_unsent_ = 0;    // bytes of taken frames not yet cut into packets
  size_t buffer_hint_ = 0;  // set_buffer_hint: tx_burst stops at this much unsent (0 = off)
  uint64_t max_rate_ = 0;   // the pacer's bound: ReliableOptions::max_rate, set_pacing_rate
  bool close_requested_ = false;
  bool fin_sent_ = false;
  bool fin_acked_ = false;
  uint64_t peer_frame_limit_ = 0;
  uint64_t peer_window_ = 0;  // packets
  std::vector<SentPacket> pkts_;
  std::vector<uint64_t> acked_bits_;  // 1 = acked (or never sent), for pkts in the ring
  uint64_t snd_una_ = 0;
  uint64_t snd_nxt_ = 0;
  uint32_t list_head_ = kNil;
  uint32_t list_tail_ = kNil;
  std::vector<uint64_t> retx_;  // lost packets to send again, a ring of 2 x pkt_window
  uint64_t retx_mask_ = 0;
  uint64_t retx_head_ = 0;
  uint64_t retx_tail_ = 0;
  uint64_t inflight_ = 0;  // bytes of packets in flight (not acked, not lost)
  // Delivery-rate estimation.
  uint64_t delivered_ = 0;
  int64_t delivered_ns_ = 0;
  int64_t first_sent_ns_ = 0;
  uint64_t app_limited_until_ = 0;
  // RTT, RTO, RACK.
  bool have_rtt_ = false;
  int64_t srtt_ns_ = 0;
  int64_t rttvar_ns_ = 0;
  int64_t min_rtt_ns_ = 0;
  uint32_t rto_backoff_ = 0;
  bool probe_due_ = false;    // the retransmit timer fired: resend the earliest unacked packet
  int64_t rto_start_ns_ = 0;  // the retransmit timer runs from here (last ack of new data)
  int64_t rack_xmit_ns_ = 0;  // RACK: the newest transmission delivered
  uint64_t rack_pkt_ = 0;
  int64_t rack_rtt_ns_ = 0;
  int64_t rack_deadline_ = kNeverNs;
  uint64_t known_to_ = 0;  // the receiver reported every packet below (acked or a gap)
  RateControl cc_;
  int64_t next_send_ns_ = 0;
  bool pacing_limited_ = false;  // the last send_data stopped at the pacer with more to send

  // Receiver.
  std::vector<RxSlot> rxs_;
  uint64_t rx_next_ = 0;            // next frame rx_burst hands out
  uint64_t rx_assigned_ = 0;        // frames below have a buffer (assigned in order: no deadlock)
  uint64_t granted_ = 0;            // frame limit granted to the peer (never decreases)
  uint64_t advertised_ = 0;         // granted_ as of the last ack sent
  std::vector<uint64_t> rcv_bits_;  // packets received in [rcv_cum_, rcv_cum_ + window)
  uint64_t rcv_cum_ = 0;
  uint64_t rcv_high_ = 0;   // highest packet received + 1
  uint64_t sack_from_ = 0;  // where the next ack's ranges start (long lists go in turns)
  bool fin_seen_ = false;
  uint64_t fin_frame_ = 0;
  uint32_t rx_unacked_ = 0;  // packets since the last ack
  bool data_since_ack_ = false;
  bool ack_now_ = false;
  int64_t ack_due_ = kNeverNs;
  int64_t newest_rx_ns_ = 0;
  uint64_t newest_pkt_ = 0;  // the packet that arrived last (acks echo it), and its copy
  uint16_t newest_tx_ = 0;

  // Scratch, sized at create.
  std::vector<uint8_t> rx_buf_;
  DatagramIn rx_in_[kBurst];
  DatagramView rx_views_[kBurst];  // what receive() reads: lent by the port, or in rx_buf_
  uint8_t tx_hdr_[kBurst][wire::kDataHeaderSize];
  DatagramOut tx_out_[kBurst];
  TxItem tx_items_[kBurst];
  uint64_t tx_retx_pos_[kBurst];
  uint8_t ack_buf_[wire::kMaxAckSize];

  mutable ReliableStats stats_;
};

}  // namespace ferry::dataplane::reliable
