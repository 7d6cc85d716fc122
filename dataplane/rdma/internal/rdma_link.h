// dataplane/rdma/internal/rdma_link.h — the RdmaTransport class shared by the control file
// (rdma_transport.cc: provider choice, connection management, registration) and the data path
// (rdma_datapath.cc: sends, receives, credits, completions, heartbeats).
//
// Messages: every message is one FrameBuf's bytes (one or more whole ferry frames) sent with
// fi_senddata, or a zero-length control message; each carries 32 bits of remote CQ data:
//   imm := fin:1 (bit 31: no more messages with frames follow) | credits:16 (bits 0..15:
//          receives re-posted since the last message, i.e. new credits for the peer)
// The peer's receive depth arrives in the connection's private data (ConnectParams); the
// sender starts with that many credits, spends one per message, and gets them back in imm.
// Data messages leave kControlReserve credits unused, so a control message (credit return,
// heartbeat, fin) always has one: neither side can end with no credits while owing some.
#pragma once

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>

#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/transport.h"

namespace ferry::dataplane::rdma {

inline constexpr size_t kRxDepth = 32;   // receives posted per link (the peer's credits)
inline constexpr size_t kTxFrames = 64;  // frames of the send pool
inline constexpr size_t kCtlSlots = 8;   // control messages in flight at most
inline constexpr size_t kControlReserve = 2;
inline constexpr uint32_t kCreditReturnAt = kRxDepth / 4;  // owed credits worth a message
inline constexpr uint32_t kImmFin = 1u << 31;
inline constexpr uint32_t kImmCredits = 0xffff;
inline constexpr auto kHeartbeat = std::chrono::milliseconds(250);

// Private data of fi_connect / fi_accept: what each side posted, checked by the other.
struct ConnectParams {
  uint8_t magic[4];  // "FRDM"
  uint8_t version;   // 1
  uint8_t pad[3];
  uint32_t rx_depth;   // receives posted before the connection completed (big-endian)
  uint32_t max_frame;  // bytes each posted receive holds (big-endian)
};
static_assert(sizeof(ConnectParams) == 16);

// The fabric object, shared by a listener and the links it accepted (their endpoints come
// from its passive endpoint's connection requests).
struct Fabric {
  fid_fabric* fabric = nullptr;
  std::string provider;
  ~Fabric();
};

// Counters for link_stats() and the unit tests' invariants.
struct RdmaStats {
  uint64_t messages_sent = 0, messages_received = 0;
  uint64_t control_sent = 0, control_received = 0;
  uint64_t credit_stalls = 0;    // tx_burst calls that stopped for lack of credits
  uint64_t peak_unreturned = 0;  // most sends ever outstanding against the peer's receives
  uint64_t peer_rx_depth = 0;    // receives the peer posted (its announced depth)
};

class RdmaTransport final : public Transport {
 public:
  ~RdmaTransport() override;
  RdmaTransport(const RdmaTransport&) = delete;
  RdmaTransport& operator=(const RdmaTransport&) = delete;

  // Opens domain, completion queue, event queue and endpoint for info (owned: freed here),
  // registers both pools and posts the receives. The endpoint is not connected yet.
  static Result<std::unique_ptr<RdmaTransport>> create(std::shared_ptr<Fabric> fabric,
                                                       fi_info* info,
                                                       std::chrono::seconds link_timeout);
  // Client: connects to info->dest_addr and waits for the accept.
  Status connect_to_peer(const std::string& where, int timeout_ms);
  // Server: accepts the connection request info came from; the client posted peer_rx_depth.
  Status accept_peer(uint32_t peer_rx_depth, int timeout_ms);

  const char* kind() const noexcept override { return "rdma"; }
  TransportCaps caps() const noexcept override;
  FramePool& pool() noexcept override { return *tx_pool_; }

  size_t tx_burst(std::span<FrameBuf* const> frames) noexcept override;
  size_t reap_tx(std::span<FrameBuf*> out) noexcept override;
  size_t rx_burst(std::span<FrameBuf*> out) noexcept override;
  size_t progress(TimePoint now) noexcept override;
  TimePoint next_deadline() const noexcept override;
  void close_tx() noexcept override;

  LinkState state() const noexcept override {
    if (!error_.is_ok()) return LinkState::kFailed;
    return (fin_received_ && rx_count_ == 0) ? LinkState::kPeerClosed : LinkState::kOpen;
  }
  const Status& error() const noexcept override { return error_; }
  // An unfinished fin counts as a byte, so that a receiver lingers until its end left.
  size_t tx_in_flight_bytes() const noexcept override {
    return tx_bytes_ + ((tx_closed_ && !fin_done_) ? 1 : 0);
  }
  // tx_burst posts what it takes at once (no credit: it takes nothing): none waits in ferry.
  size_t tx_unsent_bytes() const noexcept override { return 0; }
  int wait_fd() const noexcept override { return cq_fd_; }
  uint32_t wait_events(bool want_rx, bool want_tx) const noexcept override;
  json::Value link_stats() const override;

  const RdmaStats& stats() const noexcept { return stats_; }
  const std::string& provider() const noexcept { return fabric_->provider; }

 private:
  RdmaTransport(std::shared_ptr<Fabric> fabric, fi_info* info, std::chrono::seconds link_timeout);
  Status open(int* step_err, const char** step);
  Status wait_connected(const std::string& where, int timeout_ms);

  // Data path helpers (rdma_datapath.cc).
  size_t poll_cq() noexcept;
  void on_completion(const fi_cq_data_entry& e) noexcept;
  void on_cq_error() noexcept;
  void poll_eq() noexcept;
  void repost() noexcept;
  bool send_control(uint32_t flags, bool fin) noexcept;
  void return_credits() noexcept;
  uint32_t take_owed() noexcept;
  void fail(ErrorCode code, const std::string& what) noexcept;
  bool peer_may_be_silent() const noexcept;

  std::shared_ptr<Fabric> fabric_;
  fi_info* info_;
  std::chrono::seconds link_timeout_;  // no message for this long fails the link
  fid_domain* domain_ = nullptr;
  fid_eq* eq_ = nullptr;
  fid_cq* cq_ = nullptr;
  fid_ep* ep_ = nullptr;
  fid_mr* tx_mr_ = nullptr;
  fid_mr* rx_mr_ = nullptr;
  void* tx_desc_ = nullptr;
  void* rx_desc_ = nullptr;
  int cq_fd_ = -1;
  std::unique_ptr<FramePool> tx_pool_, rx_pool_;
  Status error_;

  // One context per frame (the provider's per-operation scratch; its address says which
  // operation completed), and per control slot.
  std::vector<fi_context2> tx_ctx_, rx_ctx_;
  std::array<fi_context2, kCtlSlots> ctl_ctx_{};
  std::array<bool, kCtlSlots> ctl_busy_{};
  std::array<bool, kCtlSlots> ctl_fin_{};

  // Credits: what we may still send; what we re-posted and have not yet told the peer.
  uint32_t credits_ = 0;
  uint32_t owed_ = 0;
  uint64_t returned_total_ = 0;                   // credits we gave back (beyond the initial depth)
  uint64_t received_total_ = 0;                   // messages we received
  uint64_t sent_total_ = 0, credited_total_ = 0;  // for peak_unreturned
  size_t posted_ = 0;
  bool posting_initial_ = true;

  // tx: frames posted, oldest first; done_ marks completed sends (they may complete out of
  // order with control messages in between, never among themselves on one endpoint).
  std::vector<FrameBuf*> tx_ring_;
  std::vector<uint8_t> tx_done_;
  size_t tx_head_ = 0, tx_count_ = 0, tx_bytes_ = 0;
  size_t tx_unfinished_ = 0;  // posted sends whose completion has not come (tx_count_ also
                              // holds completed ones the owner has not reaped)
  bool tx_closed_ = false, fin_sent_ = false, fin_done_ = false;

  // rx: received messages not yet handed up, in order.
  std::vector<FrameBuf*> rx_ring_;
  size_t rx_head_ = 0, rx_count_ = 0;
  bool fin_received_ = false;
  bool disconnected_ = false;

  // Timers (progress()).
  TimePoint next_tick_{};
  TimePoint last_heard_{};
  bool heard_ = false, sent_ = false;
  mutable bool must_poll_ = false;  // fi_trywait said completions are waiting

  RdmaStats stats_;
};

}  // namespace ferry::dataplane::rdma
