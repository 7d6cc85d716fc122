// dataplane/reliable/reliable_datapath.cc — the per-packet path of the reliable transport:
// cutting frames into paced data packets, acks with selective ranges, loss detection and
// retransmission, reassembly straight into pool buffers, flow control. No allocation, no
// logging, no clock: time is the `now` of progress().
//
// progress(now), in order:
//   1. the port's own timers (a fault port releases delayed datagrams);
//   2. receive up to kMaxRxBursts x 32 datagrams: handshake, data (placed into the frame's
//      buffer), acks (free acked packets, sample RTT and delivery rate, detect losses);
//   3. before the handshake completes: SYN / SYN-ACK timers, nothing else;
//   4. an ack if one is due (every second packet, at once on a gap or a window update,
//      else after max_ack_delay);
//   5. timers: liveness, the RACK reorder timer, the retransmit timeout, heartbeats;
//   6. data: a timeout's probe, then retransmissions, then new packets, within the pacing
//      rate, cwnd, the packet window and the peer's frame grant.
#include <algorithm>
#include <bit>
#include <cstring>

#include "dataplane/reliable/internal/reliable_link.h"

namespace ferry::dataplane::reliable {
namespace {

constexpr size_t kMaxRxBursts = 4;
constexpr size_t kMaxTxBursts = 4;
constexpr int64_t kMs = 1'000'000;
// Reordering shorter than this is not taken for loss.
constexpr int64_t kMinReorderNs = kMs;
// How many pacing_slacks a sender that was waiting for the pacer may catch up at once.
constexpr int64_t kCatchUp = 4;
// The RTO's clock-granularity term (RFC 6298's G).
constexpr int64_t kRtoGranularityNs = kMs;
// The shortest interval a rate sample from a flight sent in one burst may claim.
constexpr int64_t kBurstSampleFloorNs = 2 * kMs;
// Sending resumed after at least this long without data packets starts from idle.
constexpr int64_t kIdleRestartNs = 2 * kMs;

bool test_bit(const std::vector<uint64_t>& bits, uint64_t i) {
  return (bits[i >> 6] >> (i & 63)) & 1;
}

// The first position in [from, limit) whose bit equals `want` (limit if none); positions
// map to bits modulo the ring (a multiple of 64 bits).
uint64_t scan(const std::vector<uint64_t>& bits, uint64_t mask, uint64_t from, uint64_t limit,
              bool want) {
  while (from < limit) {
    const uint64_t idx = from & mask;
    const unsigned bit = idx & 63;
    uint64_t w = bits[idx >> 6];
    if (!want) w = ~w;
    w >>= bit;
    if (w) return std::min(from + static_cast<uint64_t>(std::countr_zero(w)), limit);
    from += 64 - bit;
  }
  return limit;
}

}  // namespace

// ---- owner calls -------------------------------------------------------------------------

size_t ReliableLink::tx_burst(std::span<FrameBuf* const> frames) noexcept {
  if (failed_ || close_requested_) return 0;
  size_t k = 0;
  for (FrameBuf* f : frames) {
    // Unsent bytes wait here, not on the link: beyond the owner's hint they stay with it.
    if (txf_tail_ - txf_head_ > txf_mask_ || (buffer_hint_ && tx_unsent_ >= buffer_hint_)) break;
    // A buffer holds one or more whole ferry frames (frame_pool.h); the first header is
    // checked here, the rest by the receiving pump.
    if (f->len < kFrameHeaderSize || f->len > max_frame_ ||
        wire::get32(f->data + 4) > f->len - kFrameHeaderSize) {
      fail(ErrorCode::kInvalidArgument,
           "reliable transport: a tx buffer of " + std::to_string(f->len) +
               " bytes does not start with a whole ferry frame (at most " +
               std::to_string(max_frame_) + " bytes a buffer)");
      break;
    }
    txf_[txf_tail_ & txf_mask_] = {f, f->len, 0, 0};
    ++txf_tail_;
    tx_bytes_ += f->len;
    tx_unsent_ += f->len;
    ++k;
  }
  // Sent by the next progress(now), not here: the owner may have slept since the last one,
  // and packets stamped with that stale time would fire the RTO at once and date every RTT
  // and rate sample of the flight too early (next_deadline() is now due).
  return k;
}

size_t ReliableLink::reap_tx(std::span<FrameBuf*> out) noexcept {
  size_t k = 0;
  while (k < out.size() && txf_head_ < txf_send_) {
    TxFrame& f = txf_[txf_head_ & txf_mask_];
    if (f.unacked) break;
    out[k++] = f.buf;
    tx_bytes_ -= f.len;
    f = {};
    ++txf_head_;
    ++stats_.frames_sent;
  }
  return k;
}

size_t ReliableLink::rx_burst(std::span<FrameBuf*> out) noexcept {
  if (failed_) return 0;
  size_t k = 0;
  while (k < out.size() && rx_next_ < rx_assigned_) {
    RxSlot& s = rxs_[rx_next_ & rx_mask_];
    if (s.len == 0 || s.got < s.len) break;
    out[k++] = s.buf;
    s = {};
    ++rx_next_;
    ++stats_.frames_received;
  }
  return k;
}

size_t ReliableLink::progress(TimePoint tp) noexcept {
  const int64_t now = to_ns(tp);
  if (!started_) {
    started_ = true;
    hs_start_ns_ = last_rx_ns_ = last_tx_ns_ = now;
  }
  now_ = now;
  size_t work = port_->progress(tp);
  if (failed_) return work;
  if (port_->failed()) {
    fail(ErrorCode::kIo,
         std::string("the ") + port_->kind() + " port failed: " + port_->error().message());
    return work + 1;
  }
  port_blocked_ = false;
  work += receive(now);
  if (failed_) return work + 1;
  if (phase_ != Phase::kEstablished) {
    work += handshake_timers(now);
    if (phase_ != Phase::kEstablished || failed_) return work;
  }
  work += maybe_ack(now);
  work += timers(now);
  if (failed_) return work + 1;
  work += send_data(now);
  return work;
}

TimePoint ReliableLink::next_deadline() const noexcept {
  int64_t d = to_ns(port_->next_deadline());
  if (!started_) return TimePoint{};
  if (failed_) return from_ns(d);
  const int64_t live = last_rx_ns_ + opt_.liveness_timeout.count() + 1;
  if (phase_ != Phase::kEstablished) {
    if (role_ == Role::kClient) {
      d = std::min({d, syn_next_ns_, hs_start_ns_ + opt_.connect_timeout.count() + 1});
    } else {
      d = std::min(d, synack_due_ && !port_blocked_ ? now_ : live);
    }
    return from_ns(d);
  }
  d = std::min({d, live, last_tx_ns_ + opt_.heartbeat_interval.count(), rack_deadline_});
  if (!port_blocked_) {
    if (ack_now_ || rx_unacked_ >= 2) d = std::min(d, now_);
    if (rx_unacked_) d = std::min(d, ack_due_);
    if (can_send()) d = std::min(d, next_send_ns_);
  }
  if (list_head_ != kNil) d = std::min(d, rto_start_ns_ + rto_ns());
  return from_ns(d);
}

// ---- receive -----------------------------------------------------------------------------

size_t ReliableLink::receive(int64_t now) noexcept {
  // A port that lends its datagrams is read where it holds them (each body is then copied
  // once, into its frame); others copy into rx_buf_ first.
  const bool lent = port_->lends_rx();
  size_t total = 0;
  for (size_t b = 0; b < kMaxRxBursts && !failed_; ++b) {
    size_t n;
    if (lent) {
      n = port_->recv_views(rx_views_);
    } else {
      for (size_t i = 0; i < kBurst; ++i)
        rx_in_[i] = {rx_buf_.data() + i * own_dgram_, own_dgram_, 0};
      n = port_->recv_burst({rx_in_, kBurst});
      for (size_t i = 0; i < n; ++i) rx_views_[i] = {rx_in_[i].buf, rx_in_[i].len};
    }
    for (size_t i = 0; i < n && !failed_; ++i) {
      on_datagram(rx_views_[i].data, rx_views_[i].len, now);
    }
    if (lent) port_->release_views();
    total += n;
    if (n < kBurst) break;
  }
  return total;
}

void ReliableLink::on_datagram(const uint8_t* d, size_t n, int64_t now) noexcept {
  if (n < wire::kCommonSize || wire::get32(d + 4) != conn_) {
    ++stats_.stray;
    return;
  }
  const uint8_t kind = d[0];
  if (kind == wire::kSyn || kind == wire::kSynAck) {
    last_rx_ns_ = now;
    handshake_rx(d, n, now);
    return;
  }
  if (kind == wire::kReset) {
    fail(ErrorCode::kClosed, "the peer reset the link after a protocol error on its side");
    return;
  }
  if ((kind != wire::kData && kind != wire::kAck) || phase_ == Phase::kConnecting) {
    ++stats_.stray;
    return;
  }
  // The server's first packet after its SYN-ACK completes the handshake.
  if (phase_ == Phase::kAccepting) establish(now, synack_count_ == 1 ? now - synack_ns_ : -1);
  last_rx_ns_ = now;
  // The peer is heard again after backed-off timeouts: retry at the base timeout.
  if (rto_backoff_ >= 2) rto_backoff_ = 0;
  if (kind == wire::kData) {
    on_data(d, n, now);
  } else {
    on_ack(d, n, now);
  }
}

void ReliableLink::on_data(const uint8_t* d, size_t n, int64_t now) noexcept {
  if (n < wire::kDataHeaderSize) {
    ++stats_.stray;
    return;
  }
  const bool fin = d[1] & wire::kFlagFin;
  const uint64_t pkt = wire::unwrap(wire::get32(d + 8), rcv_cum_);
  const uint64_t frame = wire::unwrap(wire::get32(d + 12), rx_next_);
  const uint32_t offset = wire::get32(d + 16);
  const uint32_t frame_len = wire::get32(d + 20);
  const uint8_t* body = d + wire::kDataHeaderSize;
  const uint32_t len = static_cast<uint32_t>(n - wire::kDataHeaderSize);
  newest_pkt_ = pkt;
  newest_tx_ = wire::get16(d + 2);

  if (pkt < rcv_cum_ || (pkt < rcv_high_ && test_bit(rcv_bits_, pkt & pkt_mask_))) {
    ++stats_.duplicates;
    ack_now_ = true;  // our ack may have been lost
    return;
  }
  if (pkt >= rcv_cum_ + opt_.pkt_window) {
    ++stats_.stray;
    return;
  }
  if (fin) {
    if (len != 0 || frame < rx_next_ || frame < rx_assigned_ ||
        (fin_seen_ && frame != fin_frame_)) {
      ++stats_.stray;
      return;
    }
    fin_seen_ = true;
    fin_frame_ = frame;
  } else {
    if (len == 0 || frame_len < kFrameHeaderSize || frame_len > max_frame_ || offset > frame_len ||
        len > frame_len - offset) {
      ++stats_.stray;
      return;
    }
    if (frame >= rx_next_) {
      if (frame >= granted_ || (frame >= rx_assigned_ && !assign_rx_buffers(frame))) {
        ++stats_.no_buffer_drops;  // not acked: the sender sends it again
        return;
      }
      RxSlot& s = rxs_[frame & rx_mask_];
      if (s.len == 0) s.len = frame_len;
      if (s.len != frame_len) {
        ++stats_.stray;
        return;
      }
      std::memcpy(s.buf->data + offset, body, len);
      s.got += len;
      if (s.got >= s.len) {
        s.buf->len = s.len;
        if (wire::get32(s.buf->data + 4) > s.len - kFrameHeaderSize) {
          fail(ErrorCode::kProtocol, "frame buffer " + std::to_string(frame) +
                                         " from the peer: its first frame is longer than the " +
                                         std::to_string(s.len) + " bytes that arrived");
          return;
        }
      }
    }
    // else: a frame already handed out; the copy is a resent packet whose ack was lost.
  }
  // Ack at once when packets arrive out of order (a gap or one filling a gap).
  if (pkt != rcv_cum_ || rcv_high_ > pkt + 1) ack_now_ = true;
  mark_received(pkt);
  ++stats_.packets_received;
  if (rx_unacked_++ == 0) ack_due_ = now + opt_.max_ack_delay.count();
  newest_rx_ns_ = now;
  data_since_ack_ = true;
  if (fin) ack_now_ = true;
}

void ReliableLink::mark_received(uint64_t pkt) noexcept {
  const uint64_t idx = pkt & pkt_mask_;
  rcv_bits_[idx >> 6] |= uint64_t{1} << (idx & 63);
  rcv_high_ = std::max(rcv_high_, pkt + 1);
  while (rcv_cum_ < rcv_high_ && test_bit(rcv_bits_, rcv_cum_ & pkt_mask_)) {
    const uint64_t i = rcv_cum_ & pkt_mask_;
    rcv_bits_[i >> 6] &= ~(uint64_t{1} << (i & 63));
    ++rcv_cum_;
  }
}

// Buffers go to frames in frame order, so the next frame to hand out always has one before
// any later frame does (no deadlock when the pool runs short).
bool ReliableLink::assign_rx_buffers(uint64_t frame) noexcept {
  while (rx_assigned_ <= frame) {
    FrameBuf* b = rx_pool_->alloc();
    if (!b) return false;
    rxs_[rx_assigned_ & rx_mask_] = {b, 0, 0};
    ++rx_assigned_;
  }
  return true;
}

uint64_t ReliableLink::compute_grant() noexcept {
  // Buffers held for frames not handed out yet, plus the free ones; frames handed out come
  // back when the owner frees them.
  const uint64_t held = rx_assigned_ - rx_next_;
  granted_ = std::max(granted_, rx_next_ + std::min(rx_slots_, held + rx_pool_->available()));
  return granted_;
}

void ReliableLink::on_ack(const uint8_t* d, size_t n, int64_t now) noexcept {
  const size_t ranges = wire::get16(d + 2);
  if (n != wire::kAckHeaderSize + ranges * wire::kRangeSize) {
    ++stats_.stray;
    return;
  }
  const bool complete = d[1] & wire::kFlagComplete;
  const uint64_t cum = wire::unwrap(wire::get32(d + 8), snd_una_);
  const uint64_t from = wire::unwrap(wire::get32(d + 12), snd_una_);
  const uint64_t complete_to = wire::unwrap(wire::get32(d + 16), snd_una_);
  const uint64_t limit = wire::unwrap(wire::get32(d + 20), peer_frame_limit_);
  const int64_t ack_delay = int64_t{wire::get32(d + 24)} * 1000;
  AckCtx ctx;
  ctx.echo_pkt = wire::unwrap(wire::get32(d + 28), snd_una_);
  ctx.echo_tx = wire::get16(d + 32);
  if (cum > snd_nxt_) {
    ++stats_.stray;  // acks what was never sent
    return;
  }
  ++stats_.acks_received;
  peer_frame_limit_ = std::max(peer_frame_limit_, limit);
  // The reports add up: a list that starts where what we know ends extends it; one that
  // reached the receiver's newest packet covers everything sent.
  if (from <= std::max(known_to_, cum) && complete_to <= snd_nxt_) {
    known_to_ = std::max(known_to_, complete ? snd_nxt_ : complete_to);
  }

  if (cum > snd_una_) ack_range(snd_una_, cum, ctx, now);
  for (size_t i = 0; i < ranges; ++i) {
    const uint8_t* r = d + wire::kAckHeaderSize + i * wire::kRangeSize;
    const uint64_t lo = std::max(wire::unwrap(wire::get32(r), snd_una_), snd_una_);
    const uint64_t hi = std::min(wire::unwrap(wire::get32(r + 4), snd_una_), snd_nxt_);
    if (lo < hi) ack_range(lo, hi, ctx, now);
  }
  while (snd_una_ < snd_nxt_ && test_bit(acked_bits_, snd_una_ & pkt_mask_)) ++snd_una_;
  known_to_ = std::max(known_to_, snd_una_);
  if (!ctx.acked) return;

  rto_backoff_ = 0;
  rto_start_ns_ = now;  // RFC 6298 5.3: an ack of new data restarts the timer
  int64_t rtt = -1;
  // Karn: a resent packet's ack may be for either copy, unless the echo says which.
  if (ctx.have_largest && !ctx.largest_retransmitted) {
    rtt = now - ctx.largest_sent_ns;
    if (rtt - ack_delay >= (have_rtt_ ? min_rtt_ns_ : 0)) rtt -= ack_delay;
    update_rtt(rtt);
  }
  RateSample rs = ctx.rs;
  rs.acked = ctx.acked;
  rs.rtt_ns = rtt;
  if (ctx.have_prior) {
    rs.delivered = delivered_ - rs.prior_delivered;
    rs.interval_ns = std::max(ctx.send_elapsed, ctx.ack_elapsed);
    // A flight sent in one burst (from idle: its send interval is below an RTT) measures
    // how much the path absorbs at once (a tbf bucket, socket and device queues), not its
    // rate: 46 KiB acked 80 us later is not a 600 MB/s link. Such a sample spans at least
    // the window's RTT floor.
    const int64_t measured = rs.interval_ns;
    if (have_rtt_ && ctx.send_elapsed < min_rtt_ns_) {
      rs.interval_ns = std::max(rs.interval_ns, kBurstSampleFloorNs);
    }
    // Acks compressed by a receiver that drains a backlog at once: an interval shorter than
    // the smoothed RTT (up to the floor) is not a rate either. Held to it, not discarded:
    // the sample can only come out lower.
    if (have_rtt_)
      rs.interval_ns = std::max(rs.interval_ns, std::min(srtt_ns_, kBurstSampleFloorNs));
    // A floored sample is a lower bound, not a measurement: it may raise the estimate but
    // never stand for it (as an app-limited one). Else a sender whose late timers send in
    // bursts (a loaded host, a short RTT) sees every flight floored to flight/2 ms, paces at
    // that, sends smaller flights, and the estimate falls to two packets per 2 ms for good.
    if (rs.interval_ns > measured) rs.app_limited = true;
    // Shorter than an RTT: ack compression, not a rate (the estimation draft's rule).
    if (have_rtt_ && rs.interval_ns < min_rtt_ns_) rs.interval_ns = 0;
    rs.no_raise = ctx.from_lost;
  }
  if (app_limited_until_ && delivered_ > app_limited_until_) app_limited_until_ = 0;
  detect_losses(now);
  cc_.on_ack(rs, delivered_, inflight_, now);
}

void ReliableLink::ack_range(uint64_t lo, uint64_t hi, AckCtx& ctx, int64_t now) noexcept {
  for (uint64_t p = lo; p < hi;) {
    const uint64_t idx = p & pkt_mask_;
    const unsigned bit = idx & 63;
    const uint64_t span = std::min<uint64_t>(64 - bit, hi - p);
    const uint64_t m = (span == 64 ? ~uint64_t{0} : (uint64_t{1} << span) - 1) << bit;
    for (uint64_t fresh = ~acked_bits_[idx >> 6] & m; fresh; fresh &= fresh - 1) {
      on_packet_acked(p + static_cast<uint64_t>(std::countr_zero(fresh)) - bit, ctx, now);
    }
    p += span;
  }
}

void ReliableLink::on_packet_acked(uint64_t pkt, AckCtx& ctx, int64_t now) noexcept {
  const uint32_t idx = static_cast<uint32_t>(pkt & pkt_mask_);
  SentPacket& p = pkts_[idx];
  acked_bits_[idx >> 6] |= uint64_t{1} << (idx & 63);
  if (p.state == PktState::kInFlight) {
    list_remove(idx);
    inflight_ -= p.size;
  }
  // Declared lost (or resent) yet delivered: its bytes come from outside the flight that the
  // sample's interval measures (after a timeout, a whole window of them in one round trip).
  if (p.state == PktState::kLost || p.retransmitted) ctx.from_lost = true;
  p.state = PktState::kAcked;  // a lost one still queued for resending is skipped there
  delivered_ += p.size;
  delivered_ns_ = now;
  ctx.acked += p.size;
  // The rate sample runs from the newest packet this ack delivered.
  if (!ctx.have_prior || p.delivered > ctx.rs.prior_delivered) {
    ctx.have_prior = true;
    ctx.rs.prior_delivered = p.delivered;
    ctx.rs.app_limited = p.app_limited;
    ctx.send_elapsed = p.sent_ns - p.first_sent_ns;
    ctx.ack_elapsed = now - p.delivered_ns;
    first_sent_ns_ = p.sent_ns;
  }
  // A resent packet dates a delivery only when the echo shows its latest copy arrived.
  const bool ambiguous = p.retransmitted && !(pkt == ctx.echo_pkt && p.tx == ctx.echo_tx);
  if (!ambiguous &&
      (p.sent_ns > rack_xmit_ns_ || (p.sent_ns == rack_xmit_ns_ && pkt > rack_pkt_))) {
    rack_xmit_ns_ = p.sent_ns;
    rack_pkt_ = pkt;
    rack_rtt_ns_ = now - p.sent_ns;
  }
  if (!ctx.have_largest || pkt > ctx.largest) {
    ctx.have_largest = true;
    ctx.largest = pkt;
    ctx.largest_sent_ns = p.sent_ns;
    ctx.largest_retransmitted = ambiguous;
  }
  if (p.fin) {
    fin_acked_ = true;
  } else {
    --txf_[p.frame & txf_mask_].unacked;
  }
}

void ReliableLink::update_rtt(int64_t rtt) noexcept {
  rtt = std::max<int64_t>(rtt, 1);
  if (!have_rtt_) {
    have_rtt_ = true;
    srtt_ns_ = rtt;
    rttvar_ns_ = rtt / 2;
    min_rtt_ns_ = rtt;
    return;
  }
  rttvar_ns_ = (3 * rttvar_ns_ + std::abs(srtt_ns_ - rtt)) / 4;
  srtt_ns_ = (7 * srtt_ns_ + rtt) / 8;
  min_rtt_ns_ = std::min(min_rtt_ns_, rtt);
}

int64_t ReliableLink::rto_ns() const noexcept {
  const int64_t base = have_rtt_ ? srtt_ns_ + std::max(kRtoGranularityNs, 4 * rttvar_ns_) +
                                       opt_.max_ack_delay.count()
                                 : 3 * opt_.initial_rtt.count();
  const int64_t lo = opt_.min_rto.count();
  const int64_t hi = opt_.max_rto.count();
  const int64_t rto = std::clamp(base, lo, hi);
  return std::min(hi, rto << std::min<uint32_t>(rto_backoff_, 20));
}

int64_t ReliableLink::reorder_window_ns() const noexcept {
  return std::max(kMinReorderNs, (have_rtt_ ? min_rtt_ns_ : 0) / 4);
}

// RACK (RFC 8985): a packet is lost when one sent after it was delivered and a reordering
// window has passed since. Walks in-flight packets oldest transmission first.
void ReliableLink::detect_losses(int64_t now) noexcept {
  const int64_t reo = reorder_window_ns();
  rack_deadline_ = kNeverNs;
  for (uint32_t idx = list_head_; idx != kNil;) {
    const SentPacket& p = pkts_[idx];
    const uint32_t next = p.next;
    const uint64_t pkt = pkt_of(idx);
    const bool sent_before =
        p.sent_ns < rack_xmit_ns_ || (p.sent_ns == rack_xmit_ns_ && pkt < rack_pkt_);
    // Above known_to_ a missing ack may be a range not reported yet.
    if (!sent_before || pkt >= known_to_) break;
    const int64_t lost_at = p.sent_ns + rack_rtt_ns_ + reo;
    if (now < lost_at) {
      rack_deadline_ = lost_at;
      break;
    }
    mark_lost(pkt);
    idx = next;
  }
}

void ReliableLink::mark_lost(uint64_t pkt) noexcept {
  const uint32_t idx = static_cast<uint32_t>(pkt & pkt_mask_);
  SentPacket& p = pkts_[idx];
  list_remove(idx);
  inflight_ -= p.size;
  p.state = PktState::kLost;
  if (retx_tail_ - retx_head_ > retx_mask_) {  // cannot happen: one live entry per packet
    fail(ErrorCode::kInternal, "reliable transport: the retransmit queue overflowed");
    return;
  }
  retx_[retx_tail_++ & retx_mask_] = pkt;
  ++stats_.losses_detected;
}

void ReliableLink::list_append(uint32_t idx) noexcept {
  SentPacket& p = pkts_[idx];
  p.prev = list_tail_;
  p.next = kNil;
  if (list_tail_ != kNil) {
    pkts_[list_tail_].next = idx;
  } else {
    list_head_ = idx;
  }
  list_tail_ = idx;
}

void ReliableLink::list_remove(uint32_t idx) noexcept {
  SentPacket& p = pkts_[idx];
  if (p.prev != kNil) {
    pkts_[p.prev].next = p.next;
  } else {
    list_head_ = p.next;
  }
  if (p.next != kNil) {
    pkts_[p.next].prev = p.prev;
  } else {
    list_tail_ = p.prev;
  }
  p.prev = p.next = kNil;
}

// ---- timers and acks ---------------------------------------------------------------------

size_t ReliableLink::timers(int64_t now) noexcept {
  if (now - last_rx_ns_ > opt_.liveness_timeout.count()) {
    fail(ErrorCode::kTimeout, "no datagram from the peer for " +
                                  format_seconds(opt_.liveness_timeout) + " (liveness timeout)");
    return 1;
  }
  size_t work = 0;
  if (now >= rack_deadline_) {
    detect_losses(now);
    ++work;
  }
  if (list_head_ != kNil && now >= rto_start_ns_ + rto_ns()) {
    // RFC 6298 5.4-5.6: resend the earliest unacked packet and back off. Nothing else is
    // presumed lost: the probe's ack lets RACK find what was, and a timeout that was only a
    // stalled peer costs one packet, not a window resent into a small queue.
    probe_due_ = true;
    ++stats_.rto_timeouts;
    if (rto_ns() < opt_.max_rto.count()) ++rto_backoff_;
    rto_start_ns_ = now;
    ++work;
  }
  if (now - last_tx_ns_ >= opt_.heartbeat_interval.count() && send_ack(now)) ++work;
  return work;
}

// The timeout's probe: the earliest unacked packet again, past cwnd and the pacer.
size_t ReliableLink::send_probe(int64_t now) noexcept {
  probe_due_ = false;
  if (snd_una_ == snd_nxt_) return 0;
  const uint64_t pkt = snd_una_;
  const uint32_t idx = static_cast<uint32_t>(pkt & pkt_mask_);
  const SentPacket& p = pkts_[idx];
  wire::put_data(tx_hdr_[0], p.fin ? wire::kFlagFin : 0, static_cast<uint16_t>(p.tx + 1), conn_,
                 pkt, p.frame, p.offset, p.fin ? 0 : txf_[p.frame & txf_mask_].len);
  const uint8_t* body = p.fin ? nullptr : txf_[p.frame & txf_mask_].buf->data + p.offset;
  tx_out_[0] = {{tx_hdr_[0], wire::kDataHeaderSize}, {body, p.len}};
  if (port_->send_burst({tx_out_, 1}) != 1) {
    port_blocked_ = true;
    probe_due_ = true;
    return 0;
  }
  // In flight or queued as lost, it becomes in flight again (a queued entry goes stale).
  if (p.state == PktState::kInFlight) {
    list_remove(idx);
    inflight_ -= p.size;
  }
  const double ns_per_byte = 1e9 / static_cast<double>(std::max<uint64_t>(cc_.pacing_rate(), 1));
  commit({pkt, p.frame, p.offset, p.len, true, p.fin}, now, ns_per_byte);
  return 1;
}

size_t ReliableLink::maybe_ack(int64_t now) noexcept {
  const uint64_t grant = compute_grant();
  // A window update goes at once when it is large, or when no data is arriving (the sender
  // may be waiting for exactly this).
  const uint64_t step = std::max<uint64_t>(1, rx_slots_ / 8);
  const bool update = grant >= advertised_ + step || (grant > advertised_ && !data_since_ack_);
  if (ack_now_ || rx_unacked_ >= 2 || update || (rx_unacked_ && now >= ack_due_)) {
    return send_ack(now) ? 1 : 0;
  }
  return 0;
}

bool ReliableLink::send_ack(int64_t now) noexcept {
  uint8_t* r = ack_buf_ + wire::kAckHeaderSize;
  size_t n = 0;
  const uint64_t from = std::max(sack_from_, rcv_cum_);
  uint64_t at = from;
  while (at < rcv_high_ && n < max_ranges_) {
    const uint64_t lo = scan(rcv_bits_, pkt_mask_, at, rcv_high_, true);
    if (lo >= rcv_high_) {
      at = rcv_high_;
      break;
    }
    const uint64_t hi = scan(rcv_bits_, pkt_mask_, lo, rcv_high_, false);
    wire::put32(r, static_cast<uint32_t>(lo));
    wire::put32(r + 4, static_cast<uint32_t>(hi));
    r += wire::kRangeSize;
    ++n;
    at = hi;
  }
  const uint64_t complete_to = std::max(at, from);
  const int64_t delay = rx_unacked_ ? now - newest_rx_ns_ : 0;
  const uint8_t flags = at >= rcv_high_ ? wire::kFlagComplete : 0;
  wire::put_common(ack_buf_, wire::kAck, flags, static_cast<uint16_t>(n), conn_);
  wire::put32(ack_buf_ + 8, static_cast<uint32_t>(rcv_cum_));
  wire::put32(ack_buf_ + 12, static_cast<uint32_t>(from));
  wire::put32(ack_buf_ + 16, static_cast<uint32_t>(complete_to));
  wire::put32(ack_buf_ + 20, static_cast<uint32_t>(granted_));
  wire::put32(ack_buf_ + 24, static_cast<uint32_t>(std::min<int64_t>(delay / 1000, UINT32_MAX)));
  wire::put32(ack_buf_ + 28, static_cast<uint32_t>(newest_pkt_));
  wire::put16(ack_buf_ + 32, newest_tx_);
  wire::put16(ack_buf_ + 34, 0);
  if (!send_control(ack_buf_, wire::kAckHeaderSize + n * wire::kRangeSize, now)) return false;
  // A list cut short goes on in the next ack; a complete one starts over at cum.
  sack_from_ = complete_to < rcv_high_ ? complete_to : 0;
  advertised_ = granted_;
  rx_unacked_ = 0;
  ack_now_ = false;
  data_since_ack_ = false;
  ack_due_ = kNeverNs;
  ++stats_.acks_sent;
  return true;
}

// ---- send --------------------------------------------------------------------------------

bool ReliableLink::can_send() const noexcept {
  if (inflight_ > 0 && inflight_ + dgram_ > cc_.cwnd()) return false;
  if (retx_head_ != retx_tail_) return true;
  if (snd_nxt_ - snd_una_ >= peer_window_) return false;
  if (txf_send_ < txf_tail_) return txf_send_ < peer_frame_limit_;
  return close_requested_ && !fin_sent_;
}

ReliableLink::Plan ReliableLink::plan_next(TxItem& item, Cursor& c) noexcept {
  const uint64_t cwnd = cc_.cwnd();
  auto fits = [&](size_t size) { return c.inflight == 0 || c.inflight + size <= cwnd; };
  while (c.retx < retx_tail_) {
    const uint64_t pkt = retx_[c.retx & retx_mask_];
    const SentPacket& p = pkts_[pkt & pkt_mask_];
    if (pkt < snd_una_ || p.state != PktState::kLost) {  // acked since it was queued
      ++c.retx;
      continue;
    }
    if (!fits(p.size)) return Plan::kBlocked;
    ++c.retx;
    item = {pkt, p.frame, p.offset, p.len, true, p.fin};
    return Plan::kItem;
  }
  if (snd_nxt_ + c.new_pkts - snd_una_ >= peer_window_) return Plan::kBlocked;
  if (c.frame < txf_tail_) {
    if (c.frame >= peer_frame_limit_) return Plan::kIdle;  // the receiver's grant
    const TxFrame& f = txf_[c.frame & txf_mask_];
    const uint32_t len = std::min(chunk_, f.len - c.offset);
    if (!fits(wire::kDataHeaderSize + len)) return Plan::kBlocked;
    item = {snd_nxt_ + c.new_pkts, c.frame, c.offset, len, false, false};
    ++c.new_pkts;
    c.offset += len;
    if (c.offset == f.len) {
      ++c.frame;
      c.offset = 0;
    }
    return Plan::kItem;
  }
  if (close_requested_ && !fin_sent_ && !c.fin) {
    if (!fits(wire::kDataHeaderSize)) return Plan::kBlocked;
    item = {snd_nxt_ + c.new_pkts, txf_tail_, 0, 0, false, true};
    ++c.new_pkts;
    c.fin = true;
    return Plan::kItem;
  }
  return Plan::kIdle;
}

size_t ReliableLink::send_data(int64_t now) noexcept {
  if (failed_) return 0;
  size_t sent = probe_due_ ? send_probe(now) : 0;
  // A late engine may catch up, by at most pacing_slack (kCatchUp x when it was waiting for
  // the pacer, not idle). Later than that, the sender and not the path held the rate back:
  // the samples of this stretch are app-limited, or the estimate would spiral down.
  const int64_t slack = opt_.pacing_slack.count() * (pacing_limited_ ? kCatchUp : 1);
  if (next_send_ns_ < now - slack) {
    if (pacing_limited_) app_limited_until_ = std::max<uint64_t>(delivered_ + inflight_, 1);
    next_send_ns_ = now - slack;
  }
  pacing_limited_ = false;
  const double ns_per_byte = 1e9 / static_cast<double>(std::max<uint64_t>(cc_.pacing_rate(), 1));
  for (size_t burst = 0; burst < kMaxTxBursts; ++burst) {
    Cursor c;
    c.retx = retx_head_;
    c.frame = txf_send_;
    c.offset = txf_send_ < txf_tail_ ? txf_[txf_send_ & txf_mask_].next_offset : 0;
    c.inflight = inflight_;
    double t = static_cast<double>(next_send_ns_);
    size_t k = 0;
    Plan plan = Plan::kItem;
    while (k < kBurst && t <= static_cast<double>(now)) {
      TxItem& it = tx_items_[k];
      plan = plan_next(it, c);
      if (plan != Plan::kItem) break;
      if (it.retransmit) tx_retx_pos_[k] = c.retx - 1;
      const uint16_t tx =
          it.retransmit ? static_cast<uint16_t>(pkts_[it.pkt & pkt_mask_].tx + 1) : 0;
      wire::put_data(tx_hdr_[k], it.fin ? wire::kFlagFin : 0, tx, conn_, it.pkt, it.frame,
                     it.offset, it.fin ? 0 : txf_[it.frame & txf_mask_].len);
      const uint8_t* body = it.fin ? nullptr : txf_[it.frame & txf_mask_].buf->data + it.offset;
      tx_out_[k] = {{tx_hdr_[k], wire::kDataHeaderSize}, {body, it.len}};
      const size_t size = wire::kDataHeaderSize + it.len;
      c.inflight += size;
      t += static_cast<double>(size) * ns_per_byte;
      ++k;
    }
    // Nothing to send while the window had room: the application, not the path, limits
    // the rate, and the rate samples of this stretch must say so.
    if (plan == Plan::kIdle && c.inflight < cc_.cwnd()) {
      app_limited_until_ = std::max<uint64_t>(delivered_ + c.inflight, 1);
    }
    if (k < kBurst && plan == Plan::kItem) pacing_limited_ = true;  // stopped by the pacer
    if (k == 0) {
      retx_head_ = c.retx;  // drop stale entries, or can_send() would keep waking the engine
      break;
    }
    const size_t n = port_->send_burst({tx_out_, k});
    // Entries the port did not take stay queued: retx_head_ only passes committed ones.
    uint64_t retx_done = retx_head_;
    for (size_t i = 0; i < n; ++i) {
      commit(tx_items_[i], now, ns_per_byte);
      if (tx_items_[i].retransmit) retx_done = tx_retx_pos_[i] + 1;
    }
    if (n == k) retx_done = c.retx;
    retx_head_ = retx_done;
    sent += n;
    if (n < k) {
      port_blocked_ = true;
      break;
    }
    if (k < kBurst) break;
  }
  return sent;
}

void ReliableLink::commit(const TxItem& it, int64_t now, double ns_per_byte) noexcept {
  const uint32_t idx = static_cast<uint32_t>(it.pkt & pkt_mask_);
  SentPacket& p = pkts_[idx];
  const auto size = static_cast<uint16_t>(wire::kDataHeaderSize + it.len);
  if (!it.retransmit) {
    p = SentPacket{};
    p.frame = it.frame;
    p.offset = it.offset;
    p.len = it.len;
    p.size = size;
    p.fin = it.fin;
    acked_bits_[idx >> 6] &= ~(uint64_t{1} << (idx & 63));
    snd_nxt_ = it.pkt + 1;
    if (it.fin) {
      fin_sent_ = true;
    } else {
      TxFrame& f = txf_[it.frame & txf_mask_];
      ++f.unacked;
      f.next_offset = it.offset + it.len;
      tx_unsent_ -= it.len;
      if (f.next_offset == f.len) txf_send_ = it.frame + 1;
    }
  } else {
    p.retransmitted = true;
    ++p.tx;
    ++stats_.retransmits;
  }
  if (inflight_ == 0) {
    // From idle, the rate samples start afresh (idle time is no part of a delivery rate).
    // Not after a mere gap between paced packets: behind a token bucket whose RTT (20 us)
    // is below that gap, the pipe empties between any two packets, and every sample would
    // be a burst's, read over the floor above whatever the pacer sent.
    if (now - last_data_tx_ns_ >= kIdleRestartNs) delivered_ns_ = first_sent_ns_ = now;
    if (list_head_ == kNil) rto_start_ns_ = now;  // the timer starts with the first packet
  }
  p.sent_ns = now;
  p.delivered = delivered_;
  p.delivered_ns = delivered_ns_;
  p.first_sent_ns = first_sent_ns_;
  p.app_limited = app_limited_until_ != 0;
  p.state = PktState::kInFlight;
  list_append(idx);
  inflight_ += size;
  next_send_ns_ += static_cast<int64_t>(static_cast<double>(size) * ns_per_byte);
  last_tx_ns_ = last_data_tx_ns_ = now;
  ++stats_.packets_sent;
  stats_.bytes_sent += size;
}

}  // namespace ferry::dataplane::reliable
