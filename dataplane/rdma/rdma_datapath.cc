// dataplane/rdma/rdma_datapath.cc — RdmaTransport's burst calls, completion polling, credits
// and timers; never blocking. Message and credit grammar: internal/rdma_link.h.
#include <rdma/fi_errno.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "dataplane/rdma/internal/rdma_link.h"

namespace ferry::dataplane::rdma {
namespace {

constexpr size_t kCqBurst = 16;

template <typename T>
bool in(const std::vector<T>& v, const void* p) {
  return !v.empty() && p >= static_cast<const void*>(v.data()) &&
         p < static_cast<const void*>(v.data() + v.size());
}

}  // namespace

void RdmaTransport::fail(ErrorCode code, const std::string& what) noexcept {
  // Allocates, but once: when the link dies.
  if (error_.is_ok()) error_ = Status(code, what);
}

uint32_t RdmaTransport::take_owed() noexcept {
  const uint32_t n = std::min<uint32_t>(owed_, kImmCredits);
  owed_ -= n;
  returned_total_ += n;
  return n;
}

// Our estimate of the peer's credits is an upper bound of what it holds; below 2 it may have
// none for a heartbeat, so its silence is our doing (we hold its messages), not its death.
bool RdmaTransport::peer_may_be_silent() const noexcept {
  return kRxDepth + returned_total_ < received_total_ + kControlReserve;
}

void RdmaTransport::repost() noexcept {
  while (posted_ < kRxDepth && error_.is_ok() && !disconnected_) {
    FrameBuf* f = rx_pool_->alloc();
    if (!f) return;
    ssize_t rc = fi_recv(ep_, f->data, f->cap, rx_desc_, 0, &rx_ctx_[f->index]);
    if (rc == -FI_EAGAIN) {
      rx_pool_->free(f);
      return;
    }
    if (rc) {
      rx_pool_->free(f);
      fail(ErrorCode::kIo, "rdma: posting a receive failed with provider " + provider() + ": " +
                               fi_strerror(static_cast<int>(-rc)));
      return;
    }
    ++posted_;
    if (!posting_initial_) ++owed_;  // the initial depth is announced at connect
  }
}

// A zero-length message carrying flags and every credit owed; false when it cannot go now.
bool RdmaTransport::send_control(uint32_t flags, bool fin) noexcept {
  if (credits_ == 0 || disconnected_ || !error_.is_ok()) return false;
  const uint32_t imm = flags | std::min<uint32_t>(owed_, kImmCredits);
  size_t slot = 0;
  while (slot < kCtlSlots && ctl_busy_[slot]) ++slot;
  if (slot == kCtlSlots) return false;
  // Zero bytes from the registered send region: the message is its completion data only.
  ssize_t rc = fi_senddata(ep_, tx_pool_->memory().data(), 0, tx_desc_, imm, 0, &ctl_ctx_[slot]);
  if (rc == -FI_EAGAIN) return false;
  if (rc) {
    fail(ErrorCode::kIo, "rdma: sending a control message failed with provider " + provider() +
                             ": " + fi_strerror(static_cast<int>(-rc)));
    return false;
  }
  take_owed();
  ctl_busy_[slot] = true;
  ctl_fin_[slot] = fin;
  --credits_;
  ++sent_total_;
  stats_.peak_unreturned = std::max(stats_.peak_unreturned, sent_total_ - credited_total_);
  ++stats_.control_sent;
  sent_ = true;
  return true;
}

// A credit return of its own, once enough is owed (and always, if any, on its own last
// credit: the reserve guarantees that one exists when it matters).
void RdmaTransport::return_credits() noexcept {
  if (owed_ >= kCreditReturnAt && credits_ > 0) send_control(0, false);
}

void RdmaTransport::on_completion(const fi_cq_data_entry& e) noexcept {
  if (in(rx_ctx_, e.op_context)) {
    const auto index =
        static_cast<uint32_t>(static_cast<fi_context2*>(e.op_context) - rx_ctx_.data());
    FrameBuf* f = &rx_pool_->at(index);
    --posted_;
    ++received_total_;
    heard_ = true;
    const uint32_t imm = (e.flags & FI_REMOTE_CQ_DATA) ? static_cast<uint32_t>(e.data) : 0;
    credits_ += imm & kImmCredits;
    credited_total_ += imm & kImmCredits;
    if (e.len == 0) {
      ++stats_.control_received;
      rx_pool_->free(f);  // re-posted (and owed) at once
    } else {
      ++stats_.messages_received;
      // Whole frames only, tiling the message exactly (their CRC and sequence: FrameChecker).
      size_t off = 0;
      while (off + kFrameHeaderSize <= e.len) {
        auto h = parse_frame_header(f->data + off);
        if (!h) {
          rx_pool_->free(f);
          fail(ErrorCode::kProtocol, "rdma: " + h.status().message() + " at byte " +
                                         std::to_string(off) + " of a message (not a ferry peer?)");
          return;
        }
        off += kFrameHeaderSize + h->len;
      }
      if (off != e.len) {
        rx_pool_->free(f);
        fail(ErrorCode::kProtocol, "rdma: a message of " + std::to_string(e.len) +
                                       " bytes does not end with a whole frame");
        return;
      }
      f->len = static_cast<uint32_t>(e.len);
      rx_ring_[(rx_head_ + rx_count_++) % rx_ring_.size()] = f;
    }
    if (imm & kImmFin) fin_received_ = true;
    return;
  }
  if (in(tx_ctx_, e.op_context)) {
    tx_done_[static_cast<fi_context2*>(e.op_context) - tx_ctx_.data()] = 1;
    --tx_unfinished_;
    return;
  }
  for (size_t slot = 0; slot < kCtlSlots; ++slot) {
    if (e.op_context != &ctl_ctx_[slot]) continue;
    ctl_busy_[slot] = false;
    if (ctl_fin_[slot]) fin_done_ = true;
    return;
  }
}

void RdmaTransport::on_cq_error() noexcept {
  fi_cq_err_entry err{};
  if (fi_cq_readerr(cq_, &err, 0) < 0) return;
  bool nothing_lost = false;  // a receive or a control message: no frame goes with it
  if (in(rx_ctx_, err.op_context)) {
    // A flushed receive: its buffer comes back, the link is going away.
    --posted_;
    rx_pool_->free(&rx_pool_->at(
        static_cast<uint32_t>(static_cast<fi_context2*>(err.op_context) - rx_ctx_.data())));
    nothing_lost = true;
  }
  for (size_t slot = 0; slot < kCtlSlots; ++slot) {
    if (err.op_context != &ctl_ctx_[slot]) continue;
    // A credit return or heartbeat the peer no longer reads: it may close once it ended,
    // while we still return credits for its last messages.
    ctl_busy_[slot] = false;
    nothing_lost = !ctl_fin_[slot];
  }
  // After the peer's end and with no frame of ours unfinished, teardown is not a failure.
  if (nothing_lost && fin_received_ && tx_unfinished_ == 0) {
    disconnected_ = true;
    return;
  }
  if (err.err == FI_ECANCELED || err.err == FI_ECONNRESET || err.err == FI_ENOTCONN) {
    // Flushed operations: the connection went down under them.
    fail(ErrorCode::kClosed,
         "rdma: the connection to the peer was lost before it ended its stream (it exited or "
         "failed, or the network went down; provider " +
             provider() + ": " + fi_strerror(err.err) + ")");
    return;
  }
  char buf[128] = "";
  const char* detail =
      err.prov_errno ? fi_cq_strerror(cq_, err.prov_errno, err.err_data, buf, sizeof buf) : "";
  fail(ErrorCode::kIo, "rdma: the link to the peer failed (provider " + provider() +
                           "): " + fi_strerror(err.err) +
                           (detail && *detail ? std::string(" (") + detail + ")" : ""));
}

size_t RdmaTransport::poll_cq() noexcept {
  must_poll_ = false;
  size_t total = 0;
  fi_cq_data_entry e[kCqBurst];
  for (;;) {
    ssize_t n = fi_cq_read(cq_, e, kCqBurst);
    if (n > 0) {
      for (ssize_t i = 0; i < n; ++i) on_completion(e[i]);
      total += static_cast<size_t>(n);
      if (static_cast<size_t>(n) < kCqBurst) break;
      continue;
    }
    if (n == -FI_EAGAIN) break;
    if (n == -FI_EAVAIL) {
      on_cq_error();
      ++total;
      continue;
    }
    fail(ErrorCode::kIo, "rdma: reading completions failed with provider " + provider() + ": " +
                             fi_strerror(static_cast<int>(-n)));
    break;
  }
  return total;
}

// Connection events: only a shutdown is expected once connected.
void RdmaTransport::poll_eq() noexcept {
  alignas(fi_eq_cm_entry) uint8_t buf[sizeof(fi_eq_cm_entry) + 64];
  uint32_t event = 0;
  ssize_t rd = fi_eq_read(eq_, &event, buf, sizeof buf, 0);
  if (rd == -FI_EAVAIL) {
    fi_eq_err_entry err{};
    fi_eq_readerr(eq_, &err, 0);
    fail(ErrorCode::kClosed, "rdma: the connection to the peer failed (provider " + provider() +
                                 "): " + fi_strerror(err.err));
    return;
  }
  if (rd < 0 || event != FI_SHUTDOWN) return;
  poll_cq();  // what arrived before the shutdown still counts
  disconnected_ = true;
  if (!fin_received_ || tx_unfinished_ > 0) {
    fail(ErrorCode::kClosed,
         "rdma: the peer closed the connection before ending its stream (it exited or failed)");
  }
}

size_t RdmaTransport::tx_burst(std::span<FrameBuf* const> frames) noexcept {
  if (tx_closed_ || !error_.is_ok()) return 0;
  if (disconnected_) {
    fail(ErrorCode::kClosed, "rdma: the peer closed the connection; nothing more can be sent");
    return 0;
  }
  poll_cq();
  size_t n = 0;
  for (; n < frames.size() && error_.is_ok(); ++n) {
    FrameBuf* f = frames[n];
    if (credits_ <= kControlReserve) {
      ++stats_.credit_stalls;
      break;
    }
    if (f->pool != tx_pool_.get() || f->len == 0 || f->len > f->cap) {
      fail(ErrorCode::kInternal, "rdma: tx_burst got a buffer outside the registered pool");
      break;
    }
    const uint32_t saved = owed_;
    const uint64_t saved_total = returned_total_;
    ssize_t rc = fi_senddata(ep_, f->data, f->len, tx_desc_, take_owed(), 0, &tx_ctx_[f->index]);
    if (rc) {
      owed_ = saved;
      returned_total_ = saved_total;
      if (rc != -FI_EAGAIN) {
        fail(ErrorCode::kIo, "rdma: sending failed with provider " + provider() + ": " +
                                 fi_strerror(static_cast<int>(-rc)));
      }
      break;
    }
    --credits_;
    ++sent_total_;
    stats_.peak_unreturned = std::max(stats_.peak_unreturned, sent_total_ - credited_total_);
    ++stats_.messages_sent;
    tx_done_[f->index] = 0;
    tx_ring_[(tx_head_ + tx_count_++) % tx_ring_.size()] = f;
    ++tx_unfinished_;
    tx_bytes_ += f->len;
    sent_ = true;
  }
  return n;
}

size_t RdmaTransport::reap_tx(std::span<FrameBuf*> out) noexcept {
  poll_cq();
  size_t n = 0;
  while (n < out.size() && tx_count_ && tx_done_[tx_ring_[tx_head_]->index]) {
    FrameBuf* f = tx_ring_[tx_head_];
    tx_bytes_ -= f->len;
    out[n++] = f;
    tx_head_ = (tx_head_ + 1) % tx_ring_.size();
    --tx_count_;
  }
  return n;
}

size_t RdmaTransport::rx_burst(std::span<FrameBuf*> out) noexcept {
  poll_cq();
  size_t n = 0;
  while (n < out.size() && rx_count_) {
    out[n++] = rx_ring_[rx_head_];
    rx_head_ = (rx_head_ + 1) % rx_ring_.size();
    --rx_count_;
  }
  repost();  // what the consumer freed since the last call
  return_credits();
  return n;
}

void RdmaTransport::close_tx() noexcept {
  if (tx_closed_) return;
  tx_closed_ = true;
  if (!error_.is_ok() || disconnected_) fin_done_ = true;
  fin_sent_ = fin_done_ || send_control(kImmFin, true);
}

size_t RdmaTransport::progress(TimePoint now) noexcept {
  if (!error_.is_ok()) return 0;
  size_t work = poll_cq();
  repost();
  return_credits();
  if (tx_closed_ && !fin_sent_) {
    fin_sent_ = send_control(kImmFin, true);
    work += fin_sent_;
  }
  if (now < next_tick_) return work;
  next_tick_ = now + kHeartbeat;
  poll_eq();
  if (heard_ || peer_may_be_silent() || fin_received_) {
    last_heard_ = now;
  } else if (now - last_heard_ > link_timeout_ && error_.is_ok()) {
    fail(ErrorCode::kTimeout, "rdma: no message from the peer for " +
                                  std::to_string(link_timeout_.count()) +
                                  " s (link timeout: it hung, or the network is down)");
    return work + 1;
  }
  heard_ = false;
  // A heartbeat when nothing left this tick, keeping one credit for a credit return.
  if (!sent_ && !tx_closed_ && (credits_ >= kControlReserve || owed_ > 0)) {
    work += send_control(0, false);
  }
  sent_ = false;
  return work;
}

TimePoint RdmaTransport::next_deadline() const noexcept {
  return must_poll_ ? Clock::now() : next_tick_;
}

uint32_t RdmaTransport::wait_events(bool /*want_rx*/, bool /*want_tx*/) const noexcept {
  if (cq_fd_ < 0) return 0;
  // The fd only signals once armed (verbs) or reset (fd-based util queues): fi_trywait does
  // that, or says completions are already waiting (then next_deadline() is now).
  fid* fids[1] = {&cq_->fid};
  if (fi_trywait(fabric_->fabric, fids, 1) != FI_SUCCESS) must_poll_ = true;
  return kWaitReadable;
}

}  // namespace ferry::dataplane::rdma
