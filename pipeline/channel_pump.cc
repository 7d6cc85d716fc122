// pipeline/channel_pump.cc — see channel_pump.h.
#include "pipeline/channel_pump.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/log.h"
#include "dataplane/protocol.h"
#include "pipeline/page_requests.h"
#include "qemu-channel/qemu_connection.h"

namespace ferry::pipeline {
namespace {

using dataplane::Engine;
using dataplane::FrameBuf;
using dataplane::FrameChecker;
using dataplane::FramePool;
using dataplane::FrameType;
using dataplane::kFirstDataSeq;
using dataplane::kFrameHeaderSize;
using dataplane::kWaitReadable;
using dataplane::kWaitWritable;
using dataplane::LinkState;
using dataplane::Transport;
using dataplane::WaitSet;

Status fail(ErrorCode code, std::string msg) { return Status(code, std::move(msg)); }

// Buffers kept free before reading QEMU: one read plus what its encoding may add.
constexpr size_t kReadReserve = 3;
constexpr size_t kBurst = 32;
// Post-copy top-up reads are not smaller than this (PumpOptions::postcopy_pending).
constexpr size_t kMinTopUp = 16u << 10;
// Post-copy with a held stream: a request for a page not held lets QEMU write this much
// more into the hold every kMissCreditEvery, for kMissCreditFor. QEMU 7.2's migration
// thread looks at its requests only between two writes to the main channel (one is up to
// ~256 KiB: 64 pages in iovecs), and only once its return-path thread queued the request,
// which on a busy host can take milliseconds: one credit at once is often spent before.
constexpr size_t kMissCredit = 256u << 10;
constexpr auto kMissCreditEvery = std::chrono::milliseconds(5);
constexpr auto kMissCreditFor = std::chrono::milliseconds(30);
// Post-copy: the backlog ferry keeps toward the link, in seconds of its rate.
constexpr double kPostcopyBacklogS = 0.003;
// The smallest unsent limit in post-copy (PumpOptions::postcopy_unsent_s): a few segments.
constexpr size_t kMinUnsentLimit = 16u << 10;
// The smallest buffering below ferry in post-copy (PumpOptions::postcopy_buffer_s).
constexpr size_t kMinPostcopyBuffer = 16u << 10;
// How often the abort eventfd is looked at while the pump is busy (it also wakes a sleep).
constexpr auto kAbortCheck = std::chrono::milliseconds(5);
constexpr auto kLinkCount = std::chrono::milliseconds(250);  // link counters copied
// How long the receiver waits for the acknowledgement of its end before it exits anyway.
constexpr auto kCloseLinger = std::chrono::seconds(2);

}  // namespace

struct ChannelPump::Impl final : FrameSink {
  Impl(PumpRole role, QemuEnd qemu, Transport& link, PumpOptions options, PumpCounters& counters)
      : sender(role == PumpRole::kSender),
        qemu(qemu.read_fd, qemu.write_fd),
        link(link),
        opt(options),
        k(counters),
        pool(link.pool()),
        tx_ring(pool.size() + 1),
        read_limit(opt.max_pending) {}

  // --- setup and outcome ---
  Status start();
  void finish(Status st) {
    if (done) return;
    k.link_retransmits.store(link.retransmits(), std::memory_order_relaxed);
    k.link_resumes.store(link.resumes(), std::memory_order_relaxed);
    result = std::move(st);
    done = true;
  }
  size_t step(TimePoint now);

  // --- the steps ---
  size_t link_receive();
  bool decode_held(Status& st);
  Status on_frame(const FrameChecker::Frame& f);
  size_t qemu_read();
  size_t qemu_write();
  size_t link_transmit();
  void measure_link(TimePoint now);
  size_t buffer_want(double rate) const;
  // Post-copy, with the link paced: its buffer too is cut (PumpOptions::postcopy_buffer_s).
  bool paced_buffer() const { return paced && opt.postcopy_buffer_s > 0; }
  Status deliver(const uint8_t* p, size_t n);
  bool tx_idle() const {
    return tx_count == 0 && (!cur || cur->len == 0) && overflow.empty() &&
           link.tx_in_flight_bytes() == 0;
  }
  bool want_qemu_read() const {
    if (holding) {
      // What the link took since, as before the hold, or what a missed request allows more.
      const size_t held = opt.codec->held_bytes();
      return !qemu_eof && held < opt.postcopy_hold && (hold_credit > 0 || held < read_limit);
    }
    return !qemu_eof && pool.available() >= kReadReserve &&
           (postcopy ? backlog() : unsent()) < read_limit;
  }
  // Post-copy with a held stream: room toward the link for more of it.
  bool want_release() const {
    return holding && opt.codec->held_bytes() > 0 && pool.available() >= kReadReserve &&
           backlog() < read_limit;
  }
  size_t release_held();
  size_t write_routed();
  void check_postcopy(TimePoint now);
  bool postcopy_package_out(TimePoint now);
  bool want_link_read() const {
    return link.state() == LinkState::kOpen && (sender || qemu.queued() < opt.max_pending);
  }

  // --- frames toward the link ---
  void push_tx(FrameBuf* f) {
    tx_ring[(tx_head + tx_count) % tx_ring.size()] = f;
    ++tx_count;
    queued_bytes += f->len;
  }
  void seal_current() {
    if (!cur) return;
    if (cur->len) {
      push_tx(cur);
    } else {
      pool.free(cur);
    }
    cur = nullptr;
  }
  void seal_frame(FrameType type, FrameBuf* f, size_t payload_len) {
    dataplane::encode_frame_header(type, tx_seq++, f->payload(), static_cast<uint32_t>(payload_len),
                                   f->data);
    f->len = static_cast<uint32_t>(kFrameHeaderSize + payload_len);
    push_tx(f);
    k.frames_tx.store(++frames_tx, std::memory_order_relaxed);
  }
  void drain_overflow();

  // FrameSink: a codec's frames, packed into frame buffers in order.
  uint8_t* reserve(size_t n) override {
    if (overflow.empty()) {
      if (cur && cur->cap - cur->len >= n) return cur->data + cur->len;
      seal_current();
      if (n <= pool.frame_capacity() && (cur = pool.alloc())) return cur->data;
    }
    // The codec outran the pool: keep order by queueing everything after this in memory.
    spilling = true;
    return overflow.reserve(n);
  }
  void commit(size_t n) override {
    if (spilling) {
      overflow.commit(n);
      spilling = false;
    } else {
      cur->len += static_cast<uint32_t>(n);
    }
  }
  // What the pump itself holds for the link: queued frames, the one being filled, spill.
  size_t in_pump() const { return queued_bytes + (cur ? cur->len : 0) + overflow.size(); }
  size_t backlog() const override { return in_pump() + link.tx_in_flight_bytes(); }
  // Of backlog(), what has not left yet. Pre-copy reads QEMU against this: bytes sent and not
  // yet acknowledged are the path's (a window's worth on a long fast path), and counting them
  // capped a datagram link at max_pending per round trip. Post-copy keeps counting them, so
  // that little is committed ahead of the pages asked for.
  size_t unsent() const { return in_pump() + link.tx_unsent_bytes(); }

  const bool sender;
  qemu::QemuConnection qemu;
  Transport& link;
  PumpOptions opt;
  PumpCounters& k;
  FramePool& pool;
  const char* peer_name = "";
  FrameType tx_type{}, rx_type{};
  bool started = false;

  // toward the link: sealed buffers in order, the one being filled, and the spill-over
  std::vector<FrameBuf*> tx_ring;
  size_t tx_head = 0, tx_count = 0, queued_bytes = 0;
  FrameBuf* cur = nullptr;
  ByteQueue overflow;
  bool spilling = false;
  uint64_t tx_seq = kFirstDataSeq;
  uint64_t frames_tx = 0;
  std::unique_ptr<uint8_t[]> codec_in;  // the sender's read buffer when a codec encodes
  // Bytes queued toward the link before reading stops: max_pending, or in post-copy
  // postcopy_pending with reads that only top up (PumpOptions::page_requests).
  size_t read_limit = 0;
  size_t unsent_limit = 0;    // set on the link in post-copy, 0 = not set
  bool postcopy = false;      // a page request went by, or the post-copy package went out
  uint64_t package_end = 0;   // link bytes up to the end of the post-copy package, 0 = not yet
  bool package_sent = false;  // all of the package left the link's queue in ferry
  bool holding = false;       // post-copy: the codec holds QEMU's stream (postcopy_hold)
  size_t hold_credit = 0;     // bytes QEMU may write into the hold beyond the link's share
  uint64_t misses_seen = 0;   // StreamCodec::requests_missed() as of the last step
  TimePoint credit_until{}, next_credit{};
  double link_rate = 0;  // bytes/s over the last measure_link() period
  // The busy periods of the last ~2 s: the link's rate over them is what its bottleneck
  // carries (one period's is off by what the kernel's buffer took in or gave out).
  struct BusyPeriod {
    uint64_t bytes = 0;
    double s = 0;
  };
  BusyPeriod busy[8];
  size_t busy_next = 0;
  double switch_rate = 0;  // that rate when post-copy began
  bool paced = false;      // post-copy: the link is paced (PumpOptions::postcopy_pace)

  // from the link (what QEMU has not taken yet waits in qemu.queue()): the last burst, and
  // where its decoding stopped
  FrameChecker checker{kFirstDataSeq};
  FrameBuf* rx_held[kBurst] = {};
  size_t rx_held_n = 0, rx_held_i = 0, rx_held_pos = 0;

  bool qemu_eof = false;      // QEMU closed its sending side
  bool qemu_wr_dead = false;  // QEMU stopped reading (sender: it is done with the RP)
  bool qemu_wr_shut = false;  // receiver: we ended QEMU's input after the peer's END
  bool got_end = false;       // the peer sent END
  bool sent_end = false;      // END is queued
  bool closed_tx = false;     // receiver: close_tx() called, waiting for the link to drain

  TimePoint rate_t0{}, next_abort_check{}, linger_until{}, next_link_count{};
  uint64_t rate_tx0 = 0;
  size_t buffer_hint = 0;

  bool done = false;
  Status result;
};

Status ChannelPump::Impl::start() {
  tx_type = sender ? FrameType::kOpaque : FrameType::kReturn;
  rx_type = sender ? FrameType::kReturn : FrameType::kOpaque;
  peer_name = sender ? "ferry recv" : "ferry send";
  FERRY_RETURN_IF_ERROR(qemu.open());
  if (sender && opt.codec) codec_in = std::make_unique_for_overwrite<uint8_t[]>(opt.read_chunk);
  return Status::ok();
}

// Writes payload bytes toward QEMU (straight from the frame when nothing waits ahead).
Status ChannelPump::Impl::deliver(const uint8_t* p, size_t n) {
  if (opt.tap_to_qemu) opt.tap_to_qemu->on_bytes({p, n});
  Status st = qemu.write({p, n});
  k.bytes_to_qemu.store(qemu.bytes_written(), std::memory_order_relaxed);
  if (st) return st;
  if (sender) {
    // The source QEMU closed: return-path bytes it will never read are moot.
    qemu_wr_dead = true;
    return Status::ok();
  }
  return fail(ErrorCode::kClosed, "the destination QEMU closed the migration socket after " +
                                      std::to_string(qemu.bytes_written()) + " bytes, with " +
                                      std::to_string(n) +
                                      " bytes of the stream undelivered (see its log)");
}

Status ChannelPump::Impl::on_frame(const FrameChecker::Frame& f) {
  k.frames_rx.fetch_add(1, std::memory_order_relaxed);
  if (got_end) {
    return fail(ErrorCode::kProtocol,
                "link: frame after END at byte offset " + std::to_string(f.offset));
  }
  const FrameType type = f.header.type;
  if (type == FrameType::kEnd) {
    got_end = true;
    if (opt.tap_to_qemu) opt.tap_to_qemu->on_end();
    return Status::ok();
  }
  if (!sender && opt.codec &&
      (type == FrameType::kOpaque || type == FrameType::kCodec || type == FrameType::kPages ||
       type == FrameType::kCachesFrozen || type == FrameType::kPostcopyPage)) {
    // Decoded bytes queue behind anything QEMU has not taken yet.
    ByteQueue& to_qemu = qemu.queue();
    const size_t before = to_qemu.size();
    if (auto st = opt.codec->decode(type, {f.payload, f.header.len}, to_qemu); !st) {
      return fail(st.code(), "link: frame seq " + std::to_string(f.header.seq) +
                                 " at byte offset " + std::to_string(f.offset) + ": " +
                                 st.message());
    }
    if (opt.tap_to_qemu && to_qemu.size() > before) {
      opt.tap_to_qemu->on_bytes(to_qemu.pending().subspan(before));
    }
    return Status::ok();
  }
  if (type == rx_type) return qemu_wr_dead ? Status::ok() : deliver(f.payload, f.header.len);
  return fail(ErrorCode::kProtocol, "link: unexpected frame type " +
                                        std::to_string(static_cast<uint32_t>(type)) + " from " +
                                        peer_name + " at byte offset " + std::to_string(f.offset));
}

// The frames of the received buffers, in order, while QEMU's queue stays under max_pending:
// a receiver stops between frames (a buffer of "same" pages may rebuild into far more than
// it carries) and resumes at the same frame once QEMU took its bytes. false = stopped there.
bool ChannelPump::Impl::decode_held(Status& st) {
  while (st && rx_held_i < rx_held_n) {
    FrameBuf* b = rx_held[rx_held_i];
    FrameChecker::Frame f;
    while (st) {
      if (!sender && qemu.queued() >= opt.max_pending) return false;
      auto got = checker.next(b->data, b->len, &rx_held_pos, f);
      if (!got) {
        st = fail(ErrorCode::kProtocol, "link: " + got.status().message());
      } else if (!*got) {
        break;
      } else {
        st = on_frame(f);
      }
    }
    b->pool->free(b);  // its own pool: a transport may receive into a pool of its own
    ++rx_held_i;
    rx_held_pos = 0;
  }
  return true;
}

size_t ChannelPump::Impl::link_receive() {
  Status st;
  if (rx_held_i < rx_held_n) {
    const bool drained = decode_held(st);
    if (!st) {
      finish(std::move(st));
      return 1;
    }
    if (!drained) return 0;
  }
  if (!want_link_read()) return 0;
  const size_t n = link.rx_burst(rx_held);
  rx_held_n = n;
  rx_held_i = 0;
  rx_held_pos = 0;
  for (size_t i = 0; i < n; ++i) {
    k.link_rx_bytes.fetch_add(rx_held[i]->len, std::memory_order_relaxed);
  }
  decode_held(st);
  if (!st) {
    finish(std::move(st));
    return n;
  }
  if (n == 0 && link.state() == LinkState::kPeerClosed && !got_end) {
    if (sender && sent_end) {
      finish(fail(ErrorCode::kClosed,
                  "ferry recv closed the link without END after the stream ended (the "
                  "destination QEMU or ferry recv failed; see its log)"));
    } else {
      finish(fail(ErrorCode::kClosed,
                  std::string(peer_name) + " closed the link before the migration ended (" +
                      std::to_string(k.bytes_from_qemu.load()) + " bytes from QEMU, " +
                      std::to_string(k.bytes_to_qemu.load()) + " bytes to QEMU)"));
    }
  }
  return n;
}

// QEMU's post-copy package (StreamCodec::postcopy_package_framed) is in the kernel: the
// destination resumes when it has it, and what follows is post-copy's bulk, which its first
// page requests must not find queued at the bottleneck.
bool ChannelPump::Impl::postcopy_package_out(TimePoint now) {
  if (package_sent) return true;
  if (!opt.codec || !opt.codec->postcopy_package_framed()) return false;
  const uint64_t handed = k.link_tx_bytes.load(std::memory_order_relaxed);
  const uint64_t out = handed - link.tx_in_flight_bytes();
  if (package_end == 0) {
    package_end = handed + queued_bytes + (cur ? cur->len : 0) + overflow.size();
    k.package_ahead_bytes.store(package_end - out, std::memory_order_relaxed);
    k.package_framed_ns.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  }
  if (out < package_end) return false;
  package_sent = true;
  k.package_sent_ns.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  return true;
}

// From the post-copy package or the first page request on, reads top up a backlog of ~3 ms
// of the link's rate, at least postcopy_pending (PumpOptions): a fast link still gets enough
// to stay busy. The kernel's unsent queue is held to ~2 ms (postcopy_unsent_s).
void ChannelPump::Impl::check_postcopy(TimePoint now) {
  const bool package_out = postcopy_package_out(now);
  if (!postcopy) {
    if (!opt.page_requests || opt.postcopy_pending == 0) return;
    const bool requested =
        opt.postcopy_requested && opt.postcopy_requested->load(std::memory_order_relaxed);
    if (!requested && opt.page_requests->load(std::memory_order_relaxed) == 0 && !package_out) {
      return;
    }
    postcopy = true;
    holding = opt.postcopy_hold > 0 && opt.codec && opt.codec->hold();
    // At once: what the link may put in flight now is what a page asked for waits behind.
    uint64_t bytes = 0;
    double s = 0;
    for (const BusyPeriod& b : busy) bytes += b.bytes, s += b.s;
    switch_rate = s > 0 ? static_cast<double>(bytes) / s : link_rate;
    if (opt.postcopy_pace > 0 && switch_rate > 0 && link.caps().paced) {
      const double pace = switch_rate * opt.postcopy_pace;
      link.set_pacing_rate(pace);
      k.postcopy_pace_bytes_per_s.store(static_cast<uint64_t>(pace), std::memory_order_relaxed);
      paced = true;
      if (opt.link_buffer_s > 0 && paced_buffer()) {
        buffer_hint = buffer_want(switch_rate);
        link.set_buffer_hint(buffer_hint);
      }
      FERRY_LOG_INFO("post-copy: link %.2f MB/s before, paced at %.2f MB/s, buffer %zu bytes",
                     switch_rate / 1e6, pace / 1e6, buffer_hint);
    }
  }
  if (holding) {
    // A page asked for is not held: let QEMU finish the write it is blocked in, so that it
    // serves the request (or writes the page, if it was in that write).
    if (const uint64_t n = opt.codec->requests_missed(); n != misses_seen) {
      misses_seen = n;
      credit_until = now + kMissCreditFor;
      next_credit = now;
    }
    // Until nothing waits for the source any more: reading competes with the guests.
    if (now < credit_until && now >= next_credit &&
        (!opt.open_requests || opt.open_requests->open() > 0)) {
      hold_credit = kMissCredit;
      next_credit = now + kMissCreditEvery;
    }
  }
  read_limit = std::clamp(static_cast<size_t>(link_rate * kPostcopyBacklogS),
                          std::min(opt.postcopy_pending, opt.max_pending), opt.max_pending);
  if (opt.postcopy_unsent_s > 0) {
    const size_t want =
        std::max(static_cast<size_t>(link_rate * opt.postcopy_unsent_s), kMinUnsentLimit);
    if (want > unsent_limit + unsent_limit / 4 || want < unsent_limit - unsent_limit / 4) {
      link.set_unsent_limit(want);
      unsent_limit = want;
    }
  }
}

size_t ChannelPump::Impl::qemu_read() {
  if (!want_qemu_read()) return 0;
  const bool encode = sender && opt.codec;
  FrameBuf* f = nullptr;
  uint8_t* data;
  // Post-copy: only what the link took since (PumpOptions::postcopy_pending).
  size_t room = postcopy && !holding
                    ? std::min(std::max(read_limit - backlog(), kMinTopUp), opt.read_chunk)
                    : opt.read_chunk;
  if (holding && hold_credit > 0) room = std::min(room, hold_credit);
  if (encode) {
    data = codec_in.get();
  } else {
    // Without a codec QEMU's bytes land straight in an OPAQUE frame's payload.
    f = pool.alloc();
    data = f->payload();
    room = std::min(room, f->payload_room());
  }
  bool eof = false;
  auto r = qemu.read({data, room}, &eof);
  if (r && *r > 0) {
    const size_t n = *r;
    hold_credit -= std::min(hold_credit, n);
    k.bytes_from_qemu.fetch_add(n, std::memory_order_relaxed);
    if (opt.tap_from_qemu) opt.tap_from_qemu->on_bytes({data, n});
    if (encode) {
      FrameWriter w(*this, tx_seq, frames_tx);
      if (auto st = opt.codec->encode({data, n}, w); !st) {
        finish(std::move(st));
        return 1;
      }
      seal_current();
      k.frames_tx.store(frames_tx, std::memory_order_relaxed);
    } else {
      seal_frame(tx_type, f, n);
    }
    return 1;
  }
  if (f) pool.free(f);
  if (!r) {
    finish(r.status());
    return 1;
  }
  if (!eof) return 0;
  // The destination closing before the sender's END is normal in post-copy; it is a failure
  // only if stream bytes are left for it (qemu_write reports that).
  qemu_eof = true;
  if (opt.tap_from_qemu) opt.tap_from_qemu->on_end();
  if (encode) {
    FrameWriter w(*this, tx_seq, frames_tx);
    if (auto st = opt.codec->finish(w); !st) {
      finish(std::move(st));
      return 1;
    }
    k.frames_tx.store(frames_tx, std::memory_order_relaxed);
  }
  FrameWriter w(*this, tx_seq, frames_tx);
  w.begin_frame(0);
  w.end_frame(FrameType::kEnd, 0);
  seal_current();
  k.frames_tx.store(frames_tx, std::memory_order_relaxed);
  sent_end = true;
  return 1;
}

// Post-copy with a held stream: the pages asked for since the last step, then what the
// link took since, topped up as QEMU's reads were before the hold.
size_t ChannelPump::Impl::release_held() {
  if (!holding) return 0;
  const size_t budget =
      want_release() ? std::min(std::max(read_limit - backlog(), kMinTopUp), opt.read_chunk) : 0;
  const uint64_t before = frames_tx;
  FrameWriter w(*this, tx_seq, frames_tx);
  if (auto st = opt.codec->release(budget, w); !st) {
    finish(std::move(st));
    return 1;
  }
  seal_current();
  k.frames_tx.store(frames_tx, std::memory_order_relaxed);
  return frames_tx != before ? 1 : 0;
}

// Post-copy: pages another channel's hold routed to this one (the preempt channel's codec
// puts them between QEMU's records; StreamCodec::wake_fd).
size_t ChannelPump::Impl::write_routed() {
  if (!sender || !opt.codec || opt.codec->wake_fd() < 0 || sent_end) return 0;
  const uint64_t before = frames_tx;
  FrameWriter w(*this, tx_seq, frames_tx);
  if (auto st = opt.codec->write_routed(w); !st) {
    finish(std::move(st));
    return 1;
  }
  if (frames_tx == before) return 0;
  seal_current();
  k.frames_tx.store(frames_tx, std::memory_order_relaxed);
  return 1;
}

size_t ChannelPump::Impl::qemu_write() {
  size_t work = 0;
  if (qemu.queued() && !qemu_wr_dead) {
    auto w = qemu.flush();
    if (w) {
      k.bytes_to_qemu.store(qemu.bytes_written(), std::memory_order_relaxed);
      work += *w ? 1 : 0;
    } else if (sender) {
      // The source QEMU closed: return-path bytes it will never read are moot.
      qemu_wr_dead = true;
    } else {
      finish(fail(ErrorCode::kClosed, "the destination QEMU closed the migration socket after " +
                                          std::to_string(qemu.bytes_written()) + " bytes, with " +
                                          std::to_string(qemu.queued()) +
                                          " bytes of the stream undelivered (see its log)"));
      return 1;
    }
  }
  if (!sender && got_end && !qemu.queued() && !qemu_wr_shut) {
    // Every byte is written: QEMU may now see EOF after the stream's end.
    qemu.shut_write();
    qemu_wr_shut = true;
    ++work;
  }
  return work;
}

// Moves spilled frames into buffers as they come back, whole frames only.
void ChannelPump::Impl::drain_overflow() {
  while (!overflow.empty()) {
    FrameBuf* f = pool.alloc();
    if (!f) return;
    auto bytes = overflow.pending();
    size_t take = 0;
    while (take + kFrameHeaderSize <= bytes.size()) {
      auto h = dataplane::parse_frame_header(bytes.data() + take);
      const size_t len = kFrameHeaderSize + (h ? h->len : 0);
      if (take + len > f->cap) break;
      take += len;
    }
    std::memcpy(f->data, bytes.data(), take);
    f->len = static_cast<uint32_t>(take);
    overflow.consume(take);
    push_tx(f);
  }
}

size_t ChannelPump::Impl::link_transmit() {
  size_t work = 0;
  drain_overflow();
  while (tx_count) {
    FrameBuf* burst[kBurst];
    const size_t m = std::min(tx_count, kBurst);
    for (size_t i = 0; i < m; ++i) burst[i] = tx_ring[(tx_head + i) % tx_ring.size()];
    const size_t n = link.tx_burst({burst, m});
    for (size_t i = 0; i < n; ++i) {
      queued_bytes -= burst[i]->len;
      k.link_tx_bytes.fetch_add(burst[i]->len, std::memory_order_relaxed);
    }
    tx_head = (tx_head + n) % tx_ring.size();
    tx_count -= n;
    work += n;
    if (n < m) break;
  }
  FrameBuf* done_bufs[kBurst];
  for (size_t n; (n = link.reap_tx(done_bufs)) > 0; work += n) {
    for (size_t i = 0; i < n; ++i) pool.free(done_bufs[i]);
  }
  drain_overflow();
  k.link_backlog_bytes.store(backlog(), std::memory_order_relaxed);
  return work;
}

// Sizes the link's buffering to ~25 ms of the measured rate, every 250 ms, while it is busy
// (an idle phase says nothing of its rate).
void ChannelPump::Impl::measure_link(TimePoint now) {
  if (opt.link_buffer_s <= 0 || !sender) return;
  const double dt = std::chrono::duration<double>(now - rate_t0).count();
  if (dt < 0.25) return;
  const uint64_t tx = k.link_tx_bytes.load(std::memory_order_relaxed);
  const double rate = static_cast<double>(tx - rate_tx0) / dt;
  if (backlog() > 0) {
    link_rate = rate;
    busy[busy_next++ % std::size(busy)] = {tx - rate_tx0, dt};
  }
  const size_t want = buffer_want(rate);
  if (backlog() > 0 &&
      (want > buffer_hint + buffer_hint / 4 || want < buffer_hint - buffer_hint / 4)) {
    link.set_buffer_hint(want);
    buffer_hint = want;
  }
  rate_t0 = now;
  rate_tx0 = tx;
}

// The kernel's buffering below ferry for the link's rate: ~25 ms of it (link_buffer_s); in
// post-copy only a few ms more than its round trip needs (postcopy_buffer_s).
size_t ChannelPump::Impl::buffer_want(double rate) const {
  if (postcopy && paced_buffer()) {
    // Not below the rate before the switch: a buffer too short for the link would lower the
    // rate it is measured by, and so itself.
    const double s = opt.postcopy_buffer_s + link.min_rtt_s();
    return std::clamp(static_cast<size_t>(std::max(rate, switch_rate) * s), kMinPostcopyBuffer,
                      opt.link_buffer_max);
  }
  return std::clamp(static_cast<size_t>(rate * opt.link_buffer_s), opt.link_buffer_min,
                    opt.link_buffer_max);
}

size_t ChannelPump::Impl::step(TimePoint now) {
  if (!started) {
    started = true;
    rate_t0 = now;
    if (auto st = start(); !st) {
      finish(std::move(st));
      return 1;
    }
  }
  if (opt.abort_fd >= 0 && now >= next_abort_check) {
    next_abort_check = now + kAbortCheck;
    pollfd p{opt.abort_fd, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {
      finish(fail(ErrorCode::kClosed, "stopped: another channel of this migration failed"));
      return 1;
    }
  }

  // For live metrics: a virtual call a few times a second, not per burst.
  if (now >= next_link_count) {
    next_link_count = now + kLinkCount;
    k.link_retransmits.store(link.retransmits(), std::memory_order_relaxed);
    k.link_resumes.store(link.resumes(), std::memory_order_relaxed);
  }

  size_t work = link_receive();  // 1
  if (done) return work;
  // The return path just delivered may have carried the first page request (PumpOptions).
  if (sender) check_postcopy(now);
  work += qemu_read();  // 2, 3
  if (done) return work;
  work += release_held();  // 3, post-copy with a held stream
  if (done) return work;
  work += write_routed();  // 3, post-copy: pages routed from the main channel's hold
  if (done) return work;
  work += qemu_write();  // 4
  if (done) return work;
  work += link_transmit();  // 5
  // 6: at the time of the call, not of the step's start: the steps above may have taken a
  // while (encoding, QEMU's socket), and the link stamps packets it sends and datagrams it
  // receives with it (a receiver's acks carry how long they were held: an arrival dated too
  // early made RTT samples of 3 us on a 20 us path).
  work += link.progress(Clock::now());
  measure_link(now);
  if (link.state() == LinkState::kFailed) {
    // After the receiver's end every frame both ways was delivered: a peer that went away
    // before acknowledging the end itself changes nothing.
    finish(closed_tx ? Status::ok()
                     : fail(ErrorCode::kClosed, "link to " + std::string(peer_name) +
                                                    " failed: " + link.error().message()));
    return work + 1;
  }

  // Done? The receiver ends once its END is on the link (QEMU closed after the whole
  // stream) and the peer's END arrived; the sender once the receiver's END arrived and the
  // link closed.
  if (closed_tx) {
    // The receiver waits (boundedly) until its end is acknowledged, so that a datagram
    // transport's peer is not left retransmitting into silence.
    if (link.tx_in_flight_bytes() == 0 || now >= linger_until) finish(Status::ok());
    return work;
  }
  if (!sent_end) return work;
  // The receiver needs the sender's END too: in post-copy the destination QEMU closes first
  // (after its SHUT message), and the source closes only after reading that SHUT.
  if (!sender && got_end && !qemu.queued() && tx_idle()) {
    link.close_tx();
    closed_tx = true;
    linger_until = now + kCloseLinger;
    return work + 1;
  }
  // The receiver closes only after the sender's END, so once it closed, the sender's frames
  // all arrived even if their acknowledgements did not.
  if (link.state() == LinkState::kPeerClosed && (!qemu.queued() || qemu_wr_dead) &&
      (got_end || tx_idle())) {
    finish(got_end ? Status::ok()
                   : fail(ErrorCode::kClosed, std::string(peer_name) +
                                                  " closed the link without END (it failed; "
                                                  "see its log)"));
  }
  return work;
}

ChannelPump::ChannelPump(PumpRole role, QemuEnd qemu, Transport& link, PumpOptions options)
    : impl_(std::make_unique<Impl>(role, qemu, link, options, counters_)) {}

ChannelPump::~ChannelPump() { release_buffers(); }

void ChannelPump::release_buffers() {
  Impl& m = *impl_;
  m.seal_current();
  for (; m.tx_count; --m.tx_count, m.tx_head = (m.tx_head + 1) % m.tx_ring.size()) {
    m.pool.free(m.tx_ring[m.tx_head]);
  }
  for (; m.rx_held_i < m.rx_held_n; ++m.rx_held_i) {
    m.rx_held[m.rx_held_i]->pool->free(m.rx_held[m.rx_held_i]);
  }
}

size_t ChannelPump::poll(TimePoint now) noexcept {
  if (impl_->done) return 0;
  return impl_->step(now);
}

void ChannelPump::add_waits(WaitSet& set) noexcept {
  const Impl& m = *impl_;
  if (m.done) return;
  if (m.want_qemu_read()) set.add(m.qemu.read_fd(), kWaitReadable);
  if (m.want_release()) set.deadline(TimePoint{});  // the link took some: release more now
  if (m.holding && m.next_credit < m.credit_until) set.deadline(m.next_credit);
  if (m.qemu.queued() && !m.qemu_wr_dead) set.add(m.qemu.write_fd(), kWaitWritable);
  set.add(m.link.wait_fd(), m.link.wait_events(m.want_link_read(), m.tx_count > 0));
  set.deadline(m.link.next_deadline());
  if (m.opt.abort_fd >= 0) set.add(m.opt.abort_fd, kWaitReadable);
  if (m.sender && m.opt.codec && m.opt.codec->wake_fd() >= 0 && !m.sent_end) {
    set.add(m.opt.codec->wake_fd(), kWaitReadable);
  }
  if (m.closed_tx) set.deadline(m.linger_until);
  if (m.sender && m.opt.link_buffer_s > 0) set.deadline(m.rate_t0 + std::chrono::seconds(1));
}

bool ChannelPump::finished() const noexcept { return impl_->done; }

const Status& ChannelPump::result() const { return impl_->result; }

Status ChannelPump::run() {
  Engine engine({.mode = impl_->opt.poll_mode});
  engine.add(*this);
  engine.run();
  return result();
}

}  // namespace ferry::pipeline
