// dataplane/reliable/reliable_transport.cc — control path of the reliable transport: options,
// the handshake, failure, stats. The per-packet path is in reliable_datapath.cc.
#include <poll.h>

#include <algorithm>
#include <cstdio>
#include <random>

#include "dataplane/reliable/internal/reliable_link.h"

namespace ferry::dataplane::reliable {
namespace {

constexpr int64_t kMs = 1'000'000;
// SYN retransmission: 200 ms, doubling, at most 1 s apart.
constexpr int64_t kSynRetryNs = 200 * kMs;
constexpr int64_t kSynRetryMaxNs = 1000 * kMs;
constexpr size_t kMinDatagram = 128;

size_t pow2_at_least(size_t n) {
  size_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

Status check_options(const ReliableOptions& o) {
  auto bad = [](const std::string& what) {
    return error(ErrorCode::kInvalidArgument, "reliable transport: " + what);
  };
  if (o.pool_frames < 1 || o.rx_frames < 2) {
    return bad("need pool_frames >= 1 and rx_frames >= 2 (got " + std::to_string(o.pool_frames) +
               " and " + std::to_string(o.rx_frames) + ")");
  }
  if (o.frame_capacity <= kFrameHeaderSize) return bad("frame_capacity must exceed the header");
  if (o.pkt_window < 64 || o.pkt_window > (1u << 20) || (o.pkt_window & (o.pkt_window - 1))) {
    return bad("pkt_window must be a power of two between 64 and 1048576");
  }
  if (o.min_rto.count() <= 0 || o.max_rto < o.min_rto) return bad("need 0 < min_rto <= max_rto");
  if (o.heartbeat_interval.count() <= 0 || o.liveness_timeout <= o.heartbeat_interval) {
    return bad("the liveness timeout must be longer than the heartbeat interval");
  }
  if (o.initial_rtt.count() <= 0 || o.max_ack_delay.count() < 0 || o.pacing_slack.count() < 0 ||
      o.connect_timeout.count() <= 0) {
    return bad("durations must be positive");
  }
  return Status::ok();
}

}  // namespace

std::string format_seconds(std::chrono::nanoseconds d) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f s", static_cast<double>(d.count()) * 1e-9);
  return b;
}

Result<SynInfo> parse_syn(std::span<const uint8_t> d) {
  if (d.size() < wire::kSynSize) {
    return error(ErrorCode::kProtocol, "not a ferry reliable SYN: " + std::to_string(d.size()) +
                                           " bytes, a SYN has " + std::to_string(wire::kSynSize));
  }
  if (d[0] != wire::kSyn) {
    return error(ErrorCode::kProtocol,
                 "not a ferry reliable SYN: datagram kind " + std::to_string(d[0]));
  }
  const uint16_t version = wire::get16(d.data() + 2);
  if (version != wire::kVersion) {
    return error(ErrorCode::kProtocol, "ferry reliable SYN of version " + std::to_string(version) +
                                           ", this build speaks " + std::to_string(wire::kVersion));
  }
  SynInfo info;
  info.conn_id = wire::get32(d.data() + 4);
  info.max_datagram = wire::get_syn(d.data()).max_datagram;
  if (info.conn_id == 0) return error(ErrorCode::kProtocol, "ferry reliable SYN with id 0");
  return info;
}

Result<std::unique_ptr<ReliableTransport>> ReliableTransport::create(
    std::unique_ptr<DatagramPort> port, const ReliableOptions& options, Role role,
    std::span<const uint8_t> first_datagram) {
  auto link = std::make_unique<ReliableLink>();
  FERRY_RETURN_IF_ERROR(link->init(std::move(port), options, role, first_datagram));
  return std::unique_ptr<ReliableTransport>(std::move(link));
}

Status ReliableLink::init(std::unique_ptr<DatagramPort> port, const ReliableOptions& options,
                          Role role, std::span<const uint8_t> first) {
  if (!port)
    return ferry::error(ErrorCode::kInvalidArgument, "reliable transport: no datagram port");
  FERRY_RETURN_IF_ERROR(check_options(options));
  opt_ = options;
  if (opt_.tx_frames == 0) opt_.tx_frames = opt_.pool_frames;
  max_rate_ = opt_.max_rate;
  role_ = role;
  port_ = std::move(port);
  own_dgram_ = port_->max_datagram();
  if (own_dgram_ < kMinDatagram || own_dgram_ > 65535) {
    return ferry::error(ErrorCode::kInvalidArgument, std::string("reliable transport: the ") +
                                                         port_->kind() + " port's datagrams of " +
                                                         std::to_string(own_dgram_) +
                                                         " bytes are outside 128..65535");
  }
  auto pool = FramePool::create({opt_.pool_frames, opt_.frame_capacity});
  if (!pool) return pool.status();
  pool_ = std::move(pool.value());
  auto rx_pool = FramePool::create({opt_.rx_frames, opt_.frame_capacity});
  if (!rx_pool) return rx_pool.status();
  rx_pool_ = std::move(rx_pool.value());
  max_frame_ = static_cast<uint32_t>(
      std::min<size_t>(pool_->frame_capacity(), kFrameHeaderSize + kMaxPayload));

  pkts_.resize(opt_.pkt_window);
  pkt_mask_ = opt_.pkt_window - 1;
  acked_bits_.assign(opt_.pkt_window / 64, ~uint64_t{0});
  rcv_bits_.assign(opt_.pkt_window / 64, 0);
  retx_.resize(2 * opt_.pkt_window);
  retx_mask_ = retx_.size() - 1;
  txf_.resize(pow2_at_least(opt_.tx_frames));
  txf_mask_ = txf_.size() - 1;
  rxs_.resize(pow2_at_least(opt_.rx_frames));
  rx_mask_ = rxs_.size() - 1;
  rx_slots_ = opt_.rx_frames;
  rx_buf_.resize(kBurst * own_dgram_);
  granted_ = advertised_ = compute_grant();

  std::mt19937_64 rng(
      opt_.seed ? opt_.seed : (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}());
  if (role_ == Role::kClient) {
    do conn_ = static_cast<uint32_t>(rng());
    while (conn_ == 0);
    phase_ = Phase::kConnecting;
    return Status::ok();
  }
  auto syn = parse_syn(first);
  if (!syn) return syn.status();
  conn_ = syn->conn_id;
  if (!apply_peer_params(wire::get_syn(first.data()))) return error_;
  phase_ = Phase::kAccepting;
  synack_due_ = true;
  return Status::ok();
}

TransportCaps ReliableLink::caps() const noexcept {
  TransportCaps c;
  c.max_frame = max_frame_;
  c.max_burst = kBurst;
  c.reliable = true;
  c.ordered = true;
  c.registered = false;
  c.paced = true;
  c.tx_done = "acked by the peer";
  return c;
}

// Bounds the pacer (BBR-like, packet by packet: no bursts beyond pacing_slack) under the
// rate the owner measured, or back to ReliableOptions::max_rate with 0.
void ReliableLink::set_pacing_rate(double bytes_per_s) noexcept {
  max_rate_ = opt_.max_rate;
  if (bytes_per_s > 0) {
    const auto rate = static_cast<uint64_t>(bytes_per_s);
    max_rate_ = max_rate_ ? std::min(max_rate_, rate) : rate;
  }
  if (phase_ == Phase::kEstablished) cc_.set_max_rate(max_rate_);
}

wire::SynParams ReliableLink::own_params() const noexcept {
  return {static_cast<uint32_t>(own_dgram_), static_cast<uint32_t>(opt_.pkt_window),
          static_cast<uint32_t>(granted_), max_frame_};
}

// The peer's SYN or SYN-ACK parameters; false (and the link failed) when unusable.
bool ReliableLink::apply_peer_params(const wire::SynParams& p) noexcept {
  if (p.max_datagram < kMinDatagram) {
    fail(ErrorCode::kProtocol, "the peer's datagrams of " + std::to_string(p.max_datagram) +
                                   " bytes are too small for the reliable transport");
    return false;
  }
  if (p.pkt_window < 64 || p.max_frame <= kFrameHeaderSize) {
    fail(ErrorCode::kProtocol, "the peer's handshake has an unusable window or frame size");
    return false;
  }
  if (p.max_frame < max_frame_) {
    fail(ErrorCode::kInvalidArgument,
         "the peer accepts frames up to " + std::to_string(p.max_frame) +
             " bytes but this end may send " + std::to_string(max_frame_) +
             ": give both ends the same frame capacity");
    return false;
  }
  peer_ = p;
  peer_frame_limit_ = p.frame_credit;
  peer_window_ = std::min<uint64_t>(p.pkt_window, opt_.pkt_window);
  return true;
}

void ReliableLink::establish(int64_t now, int64_t rtt_ns) noexcept {
  phase_ = Phase::kEstablished;
  dgram_ = std::min<size_t>(own_dgram_, peer_.max_datagram);
  chunk_ = static_cast<uint32_t>(dgram_ - wire::kDataHeaderSize);
  max_ranges_ = std::min(wire::kMaxAckRanges, (dgram_ - wire::kAckHeaderSize) / wire::kRangeSize);
  if (rtt_ns > 0) update_rtt(rtt_ns);
  cc_.init(static_cast<uint32_t>(dgram_), opt_.initial_cwnd_packets,
           rtt_ns > 0 ? rtt_ns : opt_.initial_rtt.count(), max_rate_);
  next_send_ns_ = now;
  delivered_ns_ = first_sent_ns_ = now;
}

bool ReliableLink::send_control(const uint8_t* d, size_t n, int64_t now) noexcept {
  const DatagramOut out{{d, n}, {}};
  if (port_->send_burst({&out, 1}) != 1) {
    port_blocked_ = true;
    return false;
  }
  last_tx_ns_ = now;
  return true;
}

// SYN and SYN-ACK (the connection id already matched).
void ReliableLink::handshake_rx(const uint8_t* d, size_t n, int64_t now) noexcept {
  if (n < wire::kSynSize || wire::get16(d + 2) != wire::kVersion) {
    ++stats_.stray;
    return;
  }
  if (d[0] == wire::kSyn && role_ == Role::kServer) {
    // The client did not hear our SYN-ACK: answer again (once established, a late copy).
    if (phase_ == Phase::kAccepting) synack_due_ = true;
    return;
  }
  if (d[0] != wire::kSynAck || role_ != Role::kClient) {
    ++stats_.stray;
    return;
  }
  if (phase_ == Phase::kConnecting) {
    if (!apply_peer_params(wire::get_syn(d))) return;
    // Only an unrepeated SYN gives an unambiguous RTT.
    establish(now, syn_count_ == 1 ? now - syn_first_ns_ : -1);
  }
  ack_now_ = true;  // the server is established by our first packet after its SYN-ACK
}

size_t ReliableLink::handshake_timers(int64_t now) noexcept {
  if (role_ == Role::kServer) {
    if (now - last_rx_ns_ > opt_.liveness_timeout.count()) {
      fail(ErrorCode::kTimeout, "the peer opened a link but went silent for " +
                                    format_seconds(opt_.liveness_timeout) +
                                    " during the handshake");
      return 1;
    }
    if (!synack_due_) return 0;
    uint8_t b[wire::kSynSize];
    wire::put_syn(b, wire::kSynAck, conn_, own_params());
    if (!send_control(b, sizeof b, now)) return 0;
    synack_due_ = false;
    synack_ns_ = now;
    ++synack_count_;
    return 1;
  }
  if (now - hs_start_ns_ > opt_.connect_timeout.count()) {
    fail(ErrorCode::kTimeout, "the peer did not answer the reliable transport's handshake within " +
                                  format_seconds(opt_.connect_timeout) +
                                  " (is the other end listening?)");
    return 1;
  }
  if (now < syn_next_ns_) return 0;
  uint8_t b[wire::kSynSize];
  wire::put_syn(b, wire::kSyn, conn_, own_params());
  if (!send_control(b, sizeof b, now)) return 0;
  if (syn_count_++ == 0) syn_first_ns_ = now;
  const int64_t wait = std::min(kSynRetryMaxNs, kSynRetryNs << std::min<uint32_t>(syn_count_, 8));
  syn_next_ns_ = now + wait;
  return 1;
}

void ReliableLink::fail(ErrorCode code, std::string message) noexcept {
  if (failed_) return;
  failed_ = true;
  error_ = Status(code, std::move(message));
  if (code == ErrorCode::kProtocol && phase_ == Phase::kEstablished) {
    uint8_t b[wire::kCommonSize];
    wire::put_common(b, wire::kReset, 0, wire::kResetProtocol, conn_);
    send_control(b, sizeof b, now_);
  }
}

void ReliableLink::close_tx() noexcept { close_requested_ = true; }

LinkState ReliableLink::state() const noexcept {
  if (failed_) return LinkState::kFailed;
  if (fin_seen_ && rx_next_ >= fin_frame_) return LinkState::kPeerClosed;
  return LinkState::kOpen;
}

// The FIN counts as its header's bytes until acked, so a caller that waits for this to reach
// zero before closing does not cut the peer off from the end.
size_t ReliableLink::tx_in_flight_bytes() const noexcept {
  return tx_bytes_ + (close_requested_ && !fin_acked_ && !failed_ ? wire::kDataHeaderSize : 0);
}

uint32_t ReliableLink::wait_events(bool, bool) const noexcept {
  // Always readable: acks and heartbeats must be heard even when the owner wants nothing.
  return port_->wait_events(true, port_blocked_);
}

const ReliableStats& ReliableLink::stats() const noexcept {
  stats_.srtt_us = static_cast<uint64_t>(srtt_ns_ / 1000);
  stats_.min_rtt_us = static_cast<uint64_t>(min_rtt_ns_ / 1000);
  stats_.rto_us = static_cast<uint64_t>(rto_ns() / 1000);
  stats_.delivery_rate = cc_.bandwidth();
  stats_.pacing_rate = cc_.pacing_rate();
  stats_.cwnd_bytes = cc_.cwnd();
  stats_.inflight_bytes = inflight_;
  return stats_;
}

Status wait_established(ReliableTransport& link, int timeout_ms) {
  const TimePoint deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const TimePoint now = Clock::now();
    link.progress(now);
    if (link.established()) return Status::ok();
    if (link.state() == LinkState::kFailed) return link.error();
    if (now >= deadline) {
      return error(ErrorCode::kTimeout, "the reliable transport's handshake did not complete in " +
                                            std::to_string(timeout_ms) + " ms");
    }
    const TimePoint until = std::min(deadline, link.next_deadline());
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
    pollfd p{link.wait_fd(), POLLIN, 0};
    ::poll(&p, p.fd >= 0 ? 1 : 0, static_cast<int>(std::clamp<int64_t>(ms, 0, 100)));
  }
}

json::Value ReliableTransport::link_stats() const {
  const ReliableStats& s = stats();
  return json::Value::object({{"packets_sent", s.packets_sent},
                              {"retransmits", s.retransmits},
                              {"losses_detected", s.losses_detected},
                              {"rto_timeouts", s.rto_timeouts},
                              {"packets_received", s.packets_received},
                              {"duplicates", s.duplicates},
                              {"no_buffer_drops", s.no_buffer_drops},
                              {"srtt_us", s.srtt_us},
                              {"min_rtt_us", s.min_rtt_us},
                              {"delivery_rate", s.delivery_rate},
                              {"pacing_rate", s.pacing_rate}});
}

}  // namespace ferry::dataplane::reliable
