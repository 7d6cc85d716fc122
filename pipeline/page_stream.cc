// pipeline/page_stream.cc — see page_stream.h.
#include "pipeline/page_stream.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/clock.h"
#include "common/crc32c.h"
#include "policy/effort.h"

namespace ferry::pipeline {

using dataplane::FrameType;
using qemu::ItemKind;
using qemu::StreamParser;

namespace {

constexpr uint8_t kPagesStream = 1;  // PAGES flags bit 0; bits 1..7: the shard
constexpr int kPagesShardShift = 1;
constexpr size_t kStreamHeader = 5;  // kind:u8 content_len:u32

// The frame stream at each effort (efforts 0..2: none, the records go out as they are).
struct StreamChoice {
  bool on = false;
  encoders::StreamKind kind = encoders::StreamKind::kZstd;
  int level = 0;
};
// The one LZMA2 preset ferry send uses: its dictionary is announced in CODEC.
constexpr int kLzmaPreset = 0;
StreamChoice stream_for_effort(int effort) {
  using encoders::StreamKind;
  if (effort < 3) return {};
  // Without LZMA in the build, 6 is 5.
  if (effort >= 6 && encoders::stream_compression_available(StreamKind::kLzma)) {
    return {true, StreamKind::kLzma, kLzmaPreset};
  }
  return {true, StreamKind::kZstd, effort >= 5 ? 9 : effort == 4 ? 3 : 1};
}
// OPAQUE frames are cut at this size (the link sees steady frames, the receiver small ones).
constexpr size_t kOpaqueFrame = 256u << 10;

void put_be(uint8_t* p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) {
    p[i] = static_cast<uint8_t>(v);
    v >>= 8;
  }
}
uint64_t get_be(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

// A ZERO record has no page bytes: the encoder reads a shared zero page.
const uint8_t* zero_page() {
  static const std::vector<uint8_t> kZeroPage(encoders::kMaxPageSize, 0);
  return kZeroPage.data();
}

// A held item's share of the hold and of a release's budget: its bytes and a record header.
constexpr size_t kHeldOverhead = 16;
// held_pages_: a page QEMU wrote twice while held is not promoted (its copies keep order).
constexpr uint64_t kHeldTwice = UINT64_MAX;
// Requests remembered for pages not held yet (QEMU keeps a handful open; with preempt the
// pages come on the other channel and never here): beyond this many they are forgotten.
constexpr size_t kMaxWanted = 4096;
// After serving a page asked for, QEMU 7.2's scan for dirty pages goes on from it: without a
// hold the pages it writes next (the fault's neighbours, which the guest often touches next)
// reach the destination right after it. Held, they would wait behind the whole held stream,
// and the guest faulted on them again (docs/BENCHMARKS.md, "Held pages on the preempt link").
// So the next kTrailPages held pages of the same block within kTrailSpan pages after a page
// asked for go ahead of the rest, on the main link. At most kMaxTrails faults are followed.
constexpr uint32_t kTrailPages = 32;
constexpr uint32_t kTrailSpan = 1024;
constexpr size_t kMaxTrails = 16;

std::string mib(uint64_t bytes) {
  return bytes % (1u << 20) == 0 ? std::to_string(bytes >> 20) + " MiB"
                                 : std::to_string(bytes >> 10) + " KiB";
}

}  // namespace

void encode_codec(const CodecAnnouncement& c, uint8_t out[kCodecPayloadSize]) {
  out[0] = kCodecVersion;
  put_be(out + 1, c.page_size, 4);
  put_be(out + 5, c.cache_bytes, 8);
  out[13] = static_cast<uint8_t>(c.shards);
  out[14] = static_cast<uint8_t>(c.cache_policy);
  put_be(out + 15, c.max_pages, 2);
  out[17] = static_cast<uint8_t>(c.zstd_window_log);
  put_be(out + 18, c.lzma_dict, 4);
}

// ---------------------------------------------------------------------------- sender

PageStreamEncoder::PageStreamEncoder(const PageCodecOptions& options) : opt_(options) {
  // auto starts with the zstd stream (policy/effort.h), not at the level's lightest effort.
  effort_ = opt_.fixed_effort >= 0 ? std::min(opt_.fixed_effort, encoders::kMaxEffort)
            : opt_.level == encoders::CodecLevel::kAuto ? policy::kAutoFirstEffort
                                                        : encoders::effort_for_level(opt_.level);
  counters_.effort.store(effort_);
  opt_.encode_threads = std::clamp(opt_.encode_threads, 1u, kMaxShards);
}

PageStreamEncoder::~PageStreamEncoder() = default;

Status PageStreamEncoder::start(std::span<const uint8_t> first, FrameWriter& out) {
  head_.insert(head_.end(), first.begin(), first.end());
  if (head_.size() < 4) return Status::ok();
  started_ = true;
  const qemu::ChannelRole role = qemu::guess_channel_role(head_);
  main_ = role == qemu::ChannelRole::kMain;
  std::vector<uint8_t> bytes;
  bytes.swap(head_);
  if (main_) {
    stats_.adopt(qemu::ChannelRole::kMain);
    parser_ = std::make_unique<StreamParser>(qemu::ParserOptions{});
    parser_->push(bytes);
    return drain(bytes, out);
  }
  if (route_ && role == qemu::ChannelRole::kPreempt) {
    // Parsed record by record, so that pages routed here go between two of QEMU's.
    preempt_ = true;
    stats_.adopt(role);
    parser_ = std::make_unique<StreamParser>(qemu::ParserOptions{.role = role});
    route_->open();
    parser_->push(bytes);
    return forward_preempt(out);
  }
  // Not parsed here: the counts come from stats_'s own parser, the only one on these bytes.
  stats_.on_bytes(bytes);
  add_opaque(bytes, out);
  flush_opaque(out);
  return Status::ok();
}

Status PageStreamEncoder::encode(std::span<const uint8_t> bytes, FrameWriter& out) {
  if (!started_) return start(bytes, out);
  if (preempt_) {
    parser_->push(bytes);
    return forward_preempt(out);
  }
  if (!main_) {
    stats_.on_bytes(bytes);
    add_opaque(bytes, out);
    flush_opaque(out);
    return Status::ok();
  }
  adapt_effort(out.backlog());
  const auto t0 = std::chrono::steady_clock::now();
  parser_->push(bytes);
  Status st = drain(bytes, out);
  const int64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  busy_ns_ += ns;
  counters_.encode_ns.fetch_add(static_cast<uint64_t>(ns), std::memory_order_relaxed);
  return st;
}

Status PageStreamEncoder::finish(FrameWriter& out) {
  if (!started_) {
    stats_.on_bytes(head_);
    stats_.on_end();
    if (!head_.empty()) add_opaque(head_, out);
    flush_opaque(out);
    return Status::ok();
  }
  if (main_) {
    parser_->finish();
    // A stream cut short (a cancelled migration) still goes out as it was.
    Status st = drain({}, out);
    if (!st) return st;
    if (holding_) FERRY_RETURN_IF_ERROR(release(SIZE_MAX, out));
    if (holding_ && route_) route_->main_done();
  } else if (preempt_) {
    parser_->finish();
    FERRY_RETURN_IF_ERROR(forward_preempt(out));
    if (!preempt_eos_.empty()) {
      end_preempt(out);
    } else {
      // QEMU closed without its end marker (a migration that failed): nothing goes here now.
      route_->close(routed_);
      routed_.clear();
    }
  } else {
    stats_.on_end();
  }
  flush_opaque(out);
  return Status::ok();
}

// The parser's next item (true), or false once the bytes pushed so far are used up, the
// stream ended, or finish() found it cut mid-item (QEMU will say why); an error for a stream
// that is not valid.
Result<bool> PageStreamEncoder::next_item(qemu::Item& it, std::string_view stream) {
  const auto r = parser_->next(it);
  if (r == StreamParser::Next::kItem) return true;
  if (r != StreamParser::Next::kError) return false;
  const auto* e = parser_->error();
  stats_.stop("stopped counting at byte offset " + std::to_string(e->offset) + ": " + e->message,
              parser_->truncated());
  if (parser_->truncated()) return false;
  return Status(ErrorCode::kProtocol, "the source QEMU's " + std::string(stream) +
                                          " is not valid at byte offset " +
                                          std::to_string(e->offset) + ": " + e->message);
}

// Items the parser has for the bytes pushed so far; everything is framed before returning,
// because the items point into those bytes (`pushed`) or into the parser's carry buffer.
Status PageStreamEncoder::drain(std::span<const uint8_t> pushed, FrameWriter& out) {
  qemu::Item it;
  for (;;) {
    auto got = next_item(it, "stream");
    if (!got) return got.status();
    if (!*got) break;
    stats_.count(it, *parser_);  // every item, whatever the effort: --stats-json's page counts
    const bool page = it.kind == ItemKind::kRamRecord && !it.in_package &&
                      (it.ram.type == qemu::RamRecordType::kPage ||
                       (it.ram.type == qemu::RamRecordType::kZero && it.ram.fill == 0)) &&
                      effort_ > 0;
    if (!page) {
      if (it.kind == ItemKind::kPackagedEnd && !holding_) package_framed_ = true;
      const bool package = it.kind == ItemKind::kCommand && it.command.cmd == qemu::kCmdPackaged;
      if (it.kind == ItemKind::kCommand && it.command.cmd == qemu::kCmdPostcopyRamDiscard &&
          counters_.discard_seen_ns.load(std::memory_order_relaxed) == 0) {
        counters_.discard_seen_ns.store(static_cast<int64_t>(now_ns()), std::memory_order_relaxed);
      }
      if (holding_) {
        if (it.kind == ItemKind::kEof) eof_held_ = true;
        hold_item(it, false, package);
        continue;
      }
      FERRY_RETURN_IF_ERROR(flush_pages(out));
      if (package) FERRY_RETURN_IF_ERROR(freeze_caches(out));
      add_opaque(it.raw, out);
      continue;
    }
    const uint32_t tp = parser_->target_page_size();
    const uint64_t index = it.ram.offset / tp;
    if (index > UINT32_MAX) {
      return Status(ErrorCode::kProtocol,
                    "RAM offset beyond 16 TiB at byte offset " + std::to_string(it.stream_offset));
    }
    if (holding_) {
      hold_item(it, true);
      continue;
    }
    const uint8_t* data =
        it.ram.type == qemu::RamRecordType::kZero ? zero_page() : it.ram.payload.data();
    // A record that straddled two reads sits in the parser's carry buffer, which the next
    // item may reuse: keep a copy until the batch is encoded.
    if (data != zero_page() &&
        (data < pushed.data() || data + tp > pushed.data() + pushed.size())) {
      if (nstaged_ == staged_.size()) staged_.emplace_back();
      std::vector<uint8_t>& copy = staged_[nstaged_++];
      copy.assign(data, data + tp);
      data = copy.data();
    }
    add_page(it.ram.block, static_cast<uint32_t>(index), data, out);
  }
  FERRY_RETURN_IF_ERROR(flush_pages(out));
  flush_opaque(out);
  return Status::ok();
}

// A page into its shard's open batch (after the opaque bytes ahead of it); data stays
// valid until the next flush_pages().
void PageStreamEncoder::add_page(std::string_view block, uint32_t index, const uint8_t* data,
                                 FrameWriter& out) {
  flush_opaque(out);
  if (shards_.empty()) shards_.resize(opt_.encode_threads);
  Shard& sh = shards_[shard_of_page(block, index)];
  Batch& b = sh.open;
  if (!b.pages.empty() && (b.pages.size() == kBatch || block != b.block)) close_batch(sh);
  if (b.pages.empty()) b.block.assign(block);
  b.pages.push_back({0, data});
  b.index.push_back(index);
}

// ------------------------------------------------------- post-copy: the held stream

bool PageStreamEncoder::hold() {
  if (!started_ || !main_ || holding_) return holding_;
  holding_ = true;
  if (route_) route_->main_holding();
  // What went last before the hold is not known here: a promoted page waits for the next
  // held page's place.
  released_page_last_ = false;
  return true;
}

void PageStreamEncoder::hold_item(const qemu::Item& it, bool page, bool freeze) {
  if (!page) {
    // Runs of other items (section headers, EOS) stay one item up to an OPAQUE frame's size.
    if (freeze || held_.empty() || held_.back().page || held_.back().released ||
        held_.back().bytes.size() + it.raw.size() > kOpaqueFrame) {
      held_.emplace_back().freeze = freeze;
    }
    Held& h = held_.back();
    h.bytes.insert(h.bytes.end(), it.raw.begin(), it.raw.end());
    if (it.kind == ItemKind::kPackagedEnd) h.package_end = true;
    held_bytes_ += it.raw.size();
    return;
  }
  const uint64_t seq = held_front_ + held_.size();
  Held& h = held_.emplace_back();
  h.page = true;
  h.block.assign(it.ram.block);
  h.index = static_cast<uint32_t>(it.ram.offset / parser_->target_page_size());
  if (it.ram.type == qemu::RamRecordType::kPage)
    h.bytes.assign(it.ram.payload.begin(), it.ram.payload.end());
  held_bytes_ += h.bytes.size() + kHeldOverhead;
  if (wanted_count_ > 0) {
    auto w = wanted_.find(h.block);
    if (w != wanted_.end() && w->second.erase(h.index)) {
      --wanted_count_;
      urgent_.push_back(seq);
      return;
    }
  }
  auto [at, fresh] = held_pages_[h.block].try_emplace(h.index, seq);
  if (!fresh) at->second = kHeldTwice;
  // A page held twice keeps its copies in order: only a page's first copy goes early.
  if (fresh && on_trail(h.block, h.index)) next_.push_back(seq);
  if (held_bytes_ > held_peak_.load(std::memory_order_relaxed)) {
    held_peak_.store(held_bytes_, std::memory_order_relaxed);
  }
}

void PageStreamEncoder::promote(std::string_view block, uint64_t start, uint64_t length) {
  if (!holding_) return;
  auto& held = held_pages_[std::string(block)];
  const uint32_t tp = parser_->target_page_size();
  bool missed = false;
  for (uint64_t off = start - start % tp; off < start + length; off += tp) {
    const auto index = static_cast<uint32_t>(off / tp);
    auto p = held.find(index);
    if (p == held.end()) {
      // Not held: QEMU may still write it here (without preempt it does so next).
      if (wanted_count_ == kMaxWanted) {
        wanted_.clear();
        wanted_count_ = 0;
      }
      wanted_count_ += wanted_[std::string(block)].insert(index).second ? 1 : 0;
      missed = true;
      continue;
    }
    if (p->second == kHeldTwice) continue;
    urgent_.push_back(p->second);
    held.erase(p);
  }
  missed_ += missed ? 1 : 0;
  // Its neighbours: those held already go next, those QEMU writes from now on too.
  const uint64_t last = (start + std::max<uint64_t>(length, 1) - 1) / tp;
  if (last >= UINT32_MAX - kTrailSpan) return;
  if (trails_.size() == kMaxTrails) trails_.erase(trails_.begin());
  Trail& t = trails_.emplace_back();
  t.block.assign(block);
  t.from = static_cast<uint32_t>(last + 1);
  t.end = t.from + kTrailSpan;
  t.left = kTrailPages;
  for (uint32_t i = t.from; i < t.from + kTrailPages && t.left > 0; ++i) {
    auto p = held.find(i);
    if (p == held.end() || p->second == kHeldTwice) continue;
    next_.push_back(p->second);
    --t.left;
  }
}

// A page QEMU writes into the hold soon after serving a page asked for just before it.
bool PageStreamEncoder::on_trail(const std::string& block, uint32_t index) {
  for (Trail& t : trails_) {
    if (t.left > 0 && index >= t.from && index < t.end && t.block == block) {
      --t.left;
      return true;
    }
  }
  return false;
}

// A held page goes in the stream's order: no longer promotable.
void PageStreamEncoder::forget_held(const std::string& block, uint32_t index, uint64_t seq) {
  auto b = held_pages_.find(block);
  if (b == held_pages_.end()) return;
  if (auto p = b->second.find(index); p != b->second.end() && p->second == seq) b->second.erase(p);
}

Status PageStreamEncoder::release(size_t bytes, FrameWriter& out) {
  if (!holding_ || (urgent_.empty() && (bytes == 0 || held_.empty()))) return Status::ok();
  adapt_effort(out.backlog());
  const auto t0 = std::chrono::steady_clock::now();
  auto frame_item = [&](Held& h) {
    if (h.page) {
      add_page(h.block, h.index, h.bytes.empty() ? zero_page() : h.bytes.data(), out);
    } else {
      // Pages before other items: their order is the stream's.
      Status st = flush_pages(out);
      if (st && h.freeze) st = freeze_caches(out);
      if (!st) return st;
      add_opaque(h.bytes, out);
      if (h.package_end) package_framed_ = true;
    }
    released_page_last_ = h.page;
    h.released = true;
    held_bytes_ -= h.bytes.size() + (h.page ? kHeldOverhead : 0);
    return Status::ok();
  };
  // A page record may go right after another one, or where a held one begins: unless a page
  // went last, the other items ahead of the first held page go first.
  auto make_room_for_a_page = [&]() -> Status {
    for (size_t i = 0; !released_page_last_ && i < held_.size() && !held_[i].page; ++i) {
      if (!held_[i].released) FERRY_RETURN_IF_ERROR(frame_item(held_[i]));
    }
    return Status::ok();
  };
  if (!urgent_.empty()) {
    const uint32_t tp = parser_->target_page_size();
    // On the preempt link when its channel takes them: the main link's queue is long. A
    // block whose host pages span several target pages is loaded a whole host page at a
    // time, so its pages stay in order on the main channel.
    size_t on_main = 0;
    for (uint64_t& seq : urgent_) {
      Held& h = held_[seq - held_front_];
      if (h.released) continue;
      if (route_ && !whole_host_pages(h.block) &&
          route_->push(page_record(h.block, uint64_t{h.index} * tp,
                                   h.bytes.empty() ? nullptr : h.bytes.data(), tp))) {
        h.released = true;
        held_bytes_ -= h.bytes.size() + kHeldOverhead;
        stats_.answered_from_hold(h.block, uint64_t{h.index} * tp);
        continue;
      }
      urgent_[on_main++] = seq;
    }
    if (on_main > 0) FERRY_RETURN_IF_ERROR(make_room_for_a_page());
    for (size_t i = 0; i < on_main; ++i) {
      Held& h = held_[urgent_[i] - held_front_];
      FERRY_RETURN_IF_ERROR(frame_item(h));
      stats_.answered_from_hold(h.block, uint64_t{h.index} * tp);
    }
    promoted_.fetch_add(urgent_.size(), std::memory_order_relaxed);
    urgent_.clear();
    // In frames of their own: with several shards a batch of bulk could go first.
    FERRY_RETURN_IF_ERROR(flush_pages(out));
  }
  size_t taken = 0;
  // The neighbours of pages asked for (kTrailPages), out of the link's share, then the rest.
  size_t next_done = 0;
  for (; next_done < next_.size() && taken < bytes; ++next_done) {
    const uint64_t seq = next_[next_done];
    if (seq < held_front_) continue;
    Held& h = held_[seq - held_front_];
    if (h.released) continue;
    FERRY_RETURN_IF_ERROR(make_room_for_a_page());
    forget_held(h.block, h.index, seq);
    taken += h.bytes.size() + kHeldOverhead;
    FERRY_RETURN_IF_ERROR(frame_item(h));
    followed_.fetch_add(1, std::memory_order_relaxed);
  }
  next_.erase(next_.begin(), next_.begin() + static_cast<std::ptrdiff_t>(next_done));
  for (size_t i = 0; i < held_.size() && taken < bytes; ++i) {
    Held& h = held_[i];
    if (h.released) continue;
    if (h.page) forget_held(h.block, h.index, held_front_ + i);
    taken += h.bytes.size() + kHeldOverhead;
    FERRY_RETURN_IF_ERROR(frame_item(h));
  }
  FERRY_RETURN_IF_ERROR(flush_pages(out));
  flush_opaque(out);
  // Framed: their pages were encoded and copied into frames.
  while (!held_.empty() && held_.front().released) {
    held_.pop_front();
    ++held_front_;
  }
  // QEMU's whole stream is framed: no page comes for the preempt channel any more.
  if (eof_held_ && held_.empty() && route_) route_->main_done();
  const int64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  busy_ns_ += ns;
  counters_.encode_ns.fetch_add(static_cast<uint64_t>(ns), std::memory_order_relaxed);
  return Status::ok();
}

// ------------------------------------------- post-copy: the preempt channel's stream

// QEMU's records as they are, one by one, with the pages routed here between them. A QEMU
// record that says CONTINUE, after a routed one of another block, names its block again.
Status PageStreamEncoder::forward_preempt(FrameWriter& out) {
  qemu::Item it;
  for (;;) {
    auto got = next_item(it, "postcopy-preempt stream");
    if (!got) return got.status();
    if (!*got) break;
    stats_.count(it, *parser_);
    if (!preempt_eos_.empty()) end_preempt(out);  // QEMU wrote on after its EOS
    if (it.kind == ItemKind::kRamEos) {
      // QEMU's end of this stream: the destination reads nothing after it. It waits while
      // the main channel's hold may still route pages here (PreemptRoute::waiting_for_main).
      preempt_eos_.assign(it.raw.begin(), it.raw.end());
      if (!route_->waiting_for_main()) end_preempt(out);
      continue;
    }
    if (it.kind != ItemKind::kRamRecord) {
      add_opaque(it.raw, out);
      continue;
    }
    if (it.ram.type == qemu::RamRecordType::kPage &&
        add_postcopy_page(it.ram.block, it.ram.offset, it.ram.payload, out)) {
      continue;
    }
    if (it.ram.continued && it.ram.block != preempt_block_) {
      constexpr uint8_t kContinue = 0x20;  // RAM_SAVE_FLAG_CONTINUE, in W's last byte
      uint8_t head[8 + 1];
      std::memcpy(head, it.raw.data(), 8);
      head[7] &= static_cast<uint8_t>(~kContinue);
      head[8] = static_cast<uint8_t>(it.ram.block.size());
      add_opaque({head, sizeof head}, out);
      add_opaque({reinterpret_cast<const uint8_t*>(it.ram.block.data()), it.ram.block.size()}, out);
      add_opaque(it.raw.subspan(8), out);
    } else {
      add_opaque(it.raw, out);
    }
    preempt_block_.assign(it.ram.block);
  }
  // Between two records now: what was routed meanwhile goes here.
  if (route_->pending()) route_->take(routed_);
  add_routed(out);
  flush_opaque(out);
  return Status::ok();
}

void PageStreamEncoder::add_routed(FrameWriter& out) {
  for (const std::vector<uint8_t>& r : routed_) {
    const auto page = read_page_record(r);
    if (page && !page->page.empty() &&
        add_postcopy_page(page->block, page->offset, page->page, out)) {
      continue;
    }
    add_opaque(r, out);
    preempt_block_.assign(reinterpret_cast<const char*>(r.data()) + 9, r[8]);
  }
  routed_.clear();
}

Status PageStreamEncoder::write_routed(FrameWriter& out) {
  if (!preempt_ || !route_->pending()) return Status::ok();
  // Everything forwarded so far ends at a record: QEMU's bytes of a record not complete yet
  // wait in the parser.
  route_->take(routed_);
  add_routed(out);
  if (!preempt_eos_.empty() && !route_->waiting_for_main()) end_preempt(out);
  flush_opaque(out);
  return Status::ok();
}

// The last pages routed here, then QEMU's EOS; nothing is routed here after it.
void PageStreamEncoder::end_preempt(FrameWriter& out) {
  route_->close(routed_);
  add_routed(out);
  add_opaque(preempt_eos_, out);
  preempt_eos_.clear();
}

// ------------------------------- post-copy: pages against the frozen caches (postcopy_bases.h)

// QEMU's post-copy package begins: the caches stop changing here, at both ends (after the
// pages before it).
Status PageStreamEncoder::freeze_caches(FrameWriter& out) {
  const uint32_t tp = parser_->target_page_size();
  if (bases_ == nullptr || caches_frozen_ || tp == 0) return Status::ok();
  FERRY_RETURN_IF_ERROR(flush_pages(out));
  flush_opaque(out);
  caches_frozen_ = true;
  auto frozen = std::make_unique<PostcopyBases::Frozen>();
  frozen->page_size = tp;
  // Encoders are made with the first page: a stream without pages so far has no caches (both
  // ends then make theirs after this frame, and never freeze them).
  for (Shard& sh : shards_) {
    if (!sh.encoder) break;
    sh.encoder->freeze_cache();
    frozen->shards.push_back(&sh.encoder->cache());
  }
  frozen->block_ids = block_ids_;
  for (const auto& [name, id] : block_ids_) {
    if (whole_host_pages(name)) frozen->whole_host_pages.insert(name);
  }
  bases_->publish(std::move(frozen));
  put_be(out.begin_frame(4), tp, 4);
  out.end_frame(FrameType::kCachesFrozen, 4);
  return Status::ok();
}

// A page for the preempt link: a POSTCOPY_PAGE frame, against the page's frozen copy when
// there is one. False when the main channel has not frozen its caches (then QEMU's bytes go
// as they are).
bool PageStreamEncoder::add_postcopy_page(std::string_view block, uint64_t offset,
                                          std::span<const uint8_t> page, FrameWriter& out) {
  const PostcopyBases::Frozen* frozen = bases_ ? bases_->frozen() : nullptr;
  if (frozen == nullptr || page.size() != frozen->page_size || block.empty() ||
      block.size() > UINT8_MAX || offset % frozen->page_size != 0) {
    return false;
  }
  if (!postcopy_encoder_) {
    encoders::CodecConfig cfg;
    cfg.page_size = frozen->page_size;
    auto e = encoders::Encoder::create(cfg);
    if (!e) return false;
    postcopy_encoder_ = std::move(*e);
    // Per page (no stream: a page asked for must not wait for others): up to LZ4.
    postcopy_encoder_->set_params(encoders::params_for_effort(2));
  }
  flush_opaque(out);
  const size_t head = 1 + block.size() + 8 + 4;
  uint8_t* p = out.begin_frame(head + postcopy_encoder_->max_record_size());
  p[0] = static_cast<uint8_t>(block.size());
  std::memcpy(p + 1, block.data(), block.size());
  put_be(p + 1 + block.size(), offset, 8);
  put_be(p + 9 + block.size(), crc32c(page.data(), page.size()), 4);
  const uint8_t* base = frozen->base(block, offset / frozen->page_size);
  encoders::Form form;
  const size_t rec = postcopy_encoder_->encode_against(base, page.data(), p + head, &form);
  out.end_frame(FrameType::kPostcopyPage, head + rec);
  preempt_block_.assign(block);
  counters_.postcopy_pages.fetch_add(1, std::memory_order_relaxed);
  counters_.postcopy_record_bytes.fetch_add(rec, std::memory_order_relaxed);
  if (form == encoders::Form::kSame || form == encoders::Form::kDelta) {
    counters_.postcopy_against_base.fetch_add(1, std::memory_order_relaxed);
  }
  return true;
}

void PageStreamEncoder::add_opaque(std::span<const uint8_t> raw, FrameWriter& out) {
  while (!raw.empty()) {
    size_t take = std::min(raw.size(), kOpaqueFrame - opaque_.size());
    opaque_.insert(opaque_.end(), raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(take));
    raw = raw.subspan(take);
    if (opaque_.size() == kOpaqueFrame) flush_opaque(out);
  }
}

void PageStreamEncoder::flush_opaque(FrameWriter& out) {
  if (opaque_.empty()) return;
  uint8_t* p = out.begin_frame(opaque_.size());
  std::memcpy(p, opaque_.data(), opaque_.size());
  out.end_frame(FrameType::kOpaque, opaque_.size());
  opaque_.clear();
}

uint32_t PageStreamEncoder::block_id(std::string_view name) {
  auto [it, fresh] =
      block_ids_.try_emplace(std::string(name), static_cast<uint32_t>(block_ids_.size()));
  return it->second;
}

// Shard of a page: i % N, except for blocks with host pages larger than the target page
// (announced in the ram START block list when post-copy is on): shard 0, in order.
unsigned PageStreamEncoder::shard_of_page(std::string_view block, uint64_t index) {
  const unsigned n = static_cast<unsigned>(shards_.size());
  if (n == 1) return 0;
  return whole_host_pages(block) ? 0 : encoders::shard_of(index, n);
}

bool PageStreamEncoder::whole_host_pages(std::string_view block) {
  auto it = whole_host_pages_.find(std::string(block));
  if (it == whole_host_pages_.end()) {
    bool whole = false;
    for (const auto& info : parser_->ram_blocks()) {
      if (info.name == block) whole = info.page_size > parser_->target_page_size();
    }
    it = whole_host_pages_.emplace(std::string(block), whole).first;
  }
  return it->second;
}

void PageStreamEncoder::close_batch(Shard& sh) {
  if (sh.open.pages.empty()) return;
  if (nclosed_ == closed_.size()) closed_.emplace_back();
  Batch& b = closed_[nclosed_++];
  b.shard = static_cast<unsigned>(&sh - shards_.data());
  b.block.swap(sh.open.block);
  b.pages.swap(sh.open.pages);
  b.index.swap(sh.open.index);
  sh.open.pages.clear();
  sh.open.index.clear();
}

size_t PageStreamEncoder::max_frame(const Batch& b) const {
  const size_t n = b.pages.size();
  const size_t max_content = 4 * n + n * encoders::max_record_size(parser_->target_page_size());
  return 2 + b.block.size() + 2 +
         (use_stream_ ? kStreamHeader + encoders::StreamCompressor::max_compressed_size(max_content)
                      : max_content);
}

// One batch into a PAGES frame payload at dst (max_frame(b) bytes); returns its length.
// Touches only the shard's own state: shards encode on separate threads.
Result<size_t> PageStreamEncoder::encode_batch(Shard& sh, Batch& b, uint8_t* dst) {
  const uint32_t id = block_ids_.at(b.block);
  for (size_t i = 0; i < b.pages.size(); ++i) b.pages[i].key = page_key(id, b.index[i]);
  const size_t n = b.pages.size();
  const size_t head = 2 + b.block.size() + 2;
  // content = page_index[n] record[n]; with a stream it goes through it as one block.
  const size_t max_content = 4 * n + sh.encoder->max_encoded_size(n);
  const bool stream = use_stream_;
  uint8_t* p = dst;
  p[0] = static_cast<uint8_t>((stream ? kPagesStream : 0) | (b.shard << kPagesShardShift));
  p[1] = static_cast<uint8_t>(b.block.size());
  std::memcpy(p + 2, b.block.data(), b.block.size());
  put_be(p + 2 + b.block.size(), n, 2);
  if (stream && sh.records.size() < max_content) sh.records.resize(max_content);
  uint8_t* content = stream ? sh.records.data() : p + head;
  for (size_t i = 0; i < n; ++i) put_be(content + 4 * i, b.index[i], 4);
  auto r = sh.encoder->encode_batch(b.pages, {content + 4 * n, max_content - 4 * n}, b.ends,
                                    {b.forms, n});
  if (r.pages != n) return Status(ErrorCode::kInternal, "page encoder stopped short");
  const size_t content_len = 4 * n + r.bytes;
  size_t body = content_len;
  if (stream) {
    p[head] = static_cast<uint8_t>(sh.stream->kind());
    put_be(p + head + 1, content_len, 4);
    auto z = sh.stream->compress(
        {content, content_len},
        {p + head + kStreamHeader, encoders::StreamCompressor::max_compressed_size(max_content)});
    if (!z) return z.status();
    body = kStreamHeader + *z;
  }
  b.wire_len = body;
  return head + body;
}

// Encodes every pending batch (all shards' open ones too) and frames them in order. One
// shard: straight into the link's frame. Several: each shard's batches on its own thread into
// the batch's buffer, then copied into frames here.
Status PageStreamEncoder::flush_pages(FrameWriter& out) {
  for (Shard& sh : shards_) close_batch(sh);
  if (nclosed_ == 0) return Status::ok();
  const uint32_t tp = parser_->target_page_size();
  if (!shards_[0].encoder) {
    encoders::CodecConfig cfg;
    cfg.page_size = tp;
    cfg.cache_bytes = opt_.cache_bytes / shards_.size();
    cfg.cache_policy = opt_.cache_policy;
    for (Shard& sh : shards_) {
      auto e = encoders::Encoder::create(cfg);
      if (!e) return e.status();
      sh.encoder = std::move(*e);
    }
    FERRY_RETURN_IF_ERROR(apply_effort());
    if (shards_.size() > 1) {
      threads_ = std::make_unique<ForkJoin>(static_cast<unsigned>(shards_.size()));
    }
    counters_.shards.store(static_cast<unsigned>(shards_.size()), std::memory_order_relaxed);
  }
  if (!codec_sent_) {
    // The limits this encoder keeps: kBatch pages per frame, the compressors' windows.
    CodecAnnouncement c;
    c.page_size = tp;
    c.cache_bytes = opt_.cache_bytes;
    c.shards = static_cast<unsigned>(shards_.size());
    c.cache_policy = opt_.cache_policy;
    c.max_pages = kBatch;
    using encoders::StreamKind;
    c.zstd_window_log =
        encoders::stream_compression_available(StreamKind::kZstd) ? encoders::kStreamWindowLog : 0;
    c.lzma_dict = encoders::stream_compression_available(StreamKind::kLzma)
                      ? encoders::lzma_dict_bytes(kLzmaPreset)
                      : 0;
    uint8_t* p = out.begin_frame(kCodecPayloadSize);
    encode_codec(c, p);
    out.end_frame(FrameType::kCodec, kCodecPayloadSize);
    codec_sent_ = true;
  }
  // Block ids in order of first appearance, assigned here so both ends agree.
  for (size_t j = 0; j < nclosed_; ++j) block_id(closed_[j].block);
  if (!threads_) {
    for (size_t j = 0; j < nclosed_; ++j) {
      Batch& b = closed_[j];
      uint8_t* p = out.begin_frame(max_frame(b));
      auto len = encode_batch(shards_[0], b, p);
      if (!len) return len.status();
      out.end_frame(FrameType::kPages, *len);
    }
  } else {
    threads_->run([this](unsigned part) {
      for (size_t j = 0; j < nclosed_; ++j) {
        Batch& b = closed_[j];
        if (b.shard != part) continue;
        if (b.frame.size() < max_frame(b)) b.frame.resize(max_frame(b));
        auto len = encode_batch(shards_[part], b, b.frame.data());
        b.status = len ? Status::ok() : len.status();
        b.frame_len = len ? *len : 0;
      }
    });
    for (size_t j = 0; j < nclosed_; ++j) {
      Batch& b = closed_[j];
      if (!b.status) return b.status;
      std::memcpy(out.begin_frame(b.frame_len), b.frame.data(), b.frame_len);
      out.end_frame(FrameType::kPages, b.frame_len);
    }
  }
  for (size_t j = 0; j < nclosed_; ++j) {
    Batch& b = closed_[j];
    const size_t n = b.pages.size();
    counters_.wire_bytes.fetch_add(b.wire_len, std::memory_order_relaxed);
    uint32_t prev = 0;
    for (size_t i = 0; i < n; ++i) {
      const auto f = static_cast<size_t>(b.forms[i]);
      counters_.pages[f].fetch_add(1, std::memory_order_relaxed);
      counters_.bytes[f].fetch_add(b.ends[i] - prev, std::memory_order_relaxed);
      prev = b.ends[i];
    }
    counters_.page_bytes_in.fetch_add(n * tp, std::memory_order_relaxed);
    counters_.shard_pages[b.shard].fetch_add(n, std::memory_order_relaxed);
    counters_.effort_pages[effort_].fetch_add(n, std::memory_order_relaxed);
    b.pages.clear();
    b.index.clear();
  }
  uint64_t hits = 0, misses = 0, evictions = 0, declined = 0;
  uint64_t capacity = 0, peak = 0, resizes = 0;
  for (const Shard& sh : shards_) {
    const encoders::PageCache& c = sh.encoder->cache();
    hits += c.hits();
    misses += c.misses();
    evictions += c.evictions();
    declined += c.declined();
    capacity += c.capacity() * c.page_size();
    peak += c.peak_size() * c.page_size();
    resizes += c.resizes();
  }
  counters_.cache_capacity_bytes.store(capacity, std::memory_order_relaxed);
  counters_.cache_peak_bytes.store(peak, std::memory_order_relaxed);
  counters_.cache_resizes.store(resizes, std::memory_order_relaxed);
  counters_.cache_hits.store(hits, std::memory_order_relaxed);
  counters_.cache_misses.store(misses, std::memory_order_relaxed);
  counters_.cache_evictions.store(evictions, std::memory_order_relaxed);
  counters_.cache_declined.store(declined, std::memory_order_relaxed);
  nclosed_ = 0;
  nstaged_ = 0;
  return Status::ok();
}

// --codec auto: the effort follows the link backlog and how busy encoding keeps this thread
// (policy/effort.h decides; the encoder only measures and applies).
void PageStreamEncoder::adapt_effort(size_t backlog) {
  if (shards_.empty() || !shards_[0].encoder) return;
  if (const int want = requested_effort_.load(std::memory_order_relaxed); want >= 0) {
    // The policy engine decides: no local adaptation.
    const int e = std::clamp(want, 0, encoders::kMaxEffort);
    if (e != effort_) {
      effort_ = e;
      (void)apply_effort();
      counters_.effort.store(effort_, std::memory_order_relaxed);
      counters_.effort_changes.fetch_add(1, std::memory_order_relaxed);
    }
    return;
  }
  if (opt_.level != encoders::CodecLevel::kAuto || opt_.fixed_effort >= 0) return;
  // How busy encoding kept this thread over the last window: a short queue while the encoder
  // idles only means QEMU had little to send (zero pages, a sync), not that we are too slow.
  const auto now = std::chrono::steady_clock::now();
  if (window_start_ == std::chrono::steady_clock::time_point{}) window_start_ = now;
  const int64_t window_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now - window_start_).count();
  if (window_ns >= 100'000'000) {
    busy_fraction_ = static_cast<double>(busy_ns_) / static_cast<double>(window_ns);
    busy_ns_ = 0;
    window_start_ = now;
  }
  const int next = policy::next_auto_effort(effort_, backlog, busy_fraction_);
  if (next == effort_) return;
  effort_ = next;
  // The last window measured the old effort: decide the next step on the new one's own.
  busy_fraction_ = -1;
  busy_ns_ = 0;
  window_start_ = now;
  (void)apply_effort();  // only fails when the build lacks zstd; then per-page forms remain
  counters_.effort.store(effort_, std::memory_order_relaxed);
  counters_.effort_changes.fetch_add(1, std::memory_order_relaxed);
}

// Per-page forms for the effort, plus the frame stream at 3..6 (per-page heavy codecs then
// stay off: the stream sees across pages and does better).
Status PageStreamEncoder::apply_effort() {
  const StreamChoice choice = stream_for_effort(effort_);
  if (!choice.on || !encoders::stream_compression_available(choice.kind)) {
    const encoders::EncodeParams p = encoders::params_for_effort(std::min(effort_, 2));
    for (Shard& sh : shards_) sh.encoder->set_params(p);
    // The streams stay: both ends feed them only STREAM frames, so they resume in step.
    use_stream_ = false;
    return Status::ok();
  }
  // Per page only what the stream cannot see (zero, same as the cached copy, small deltas,
  // words that step by a constant); RLE output would hide the text and records it matches
  // across pages.
  encoders::EncodeParams p = encoders::params_for_effort(1);
  p.rle = false;
  p.word_stride = true;
  for (Shard& sh : shards_) {
    sh.encoder->set_params(p);
    auto& slot = choice.kind == encoders::StreamKind::kLzma ? sh.lzma : sh.zstd;
    if (!slot) {
      auto z = encoders::StreamCompressor::create(choice.kind, choice.level);
      if (!z) return z.status();
      slot = std::move(*z);
    } else {
      slot->set_level(choice.level);
    }
    sh.stream = slot.get();
  }
  use_stream_ = true;
  return Status::ok();
}

// ---------------------------------------------------------------------------- receiver

PageStreamDecoder::~PageStreamDecoder() = default;

uint32_t PageStreamDecoder::block_id(std::string_view name) {
  auto [it, fresh] =
      block_ids_.try_emplace(std::string(name), static_cast<uint32_t>(block_ids_.size()));
  return it->second;
}

// Each announced limit is checked against this receiver's own before anything is allocated;
// the decoders, caches and buffers are then sized by the announcement, not by the maximums.
Status PageStreamDecoder::read_codec(std::span<const uint8_t> payload) {
  auto refuse = [](std::string what) {
    return Status(ErrorCode::kInvalidArgument, "CODEC frame: " + std::move(what));
  };
  if (!decoders_.empty()) return Status(ErrorCode::kProtocol, "a second CODEC frame");
  if (payload.empty() || payload[0] != kCodecVersion) {
    const std::string v = payload.empty() ? "none" : std::to_string(payload[0]);
    return Status(ErrorCode::kProtocol, "CODEC frame: version " + v + ", this receiver speaks " +
                                            std::to_string(kCodecVersion) +
                                            "; run the same ferry version on both hosts");
  }
  if (payload.size() != kCodecPayloadSize) {
    return Status(ErrorCode::kProtocol, "CODEC frame: " + std::to_string(payload.size()) +
                                            " bytes, version " + std::to_string(kCodecVersion) +
                                            " has " + std::to_string(kCodecPayloadSize));
  }
  const uint8_t* p = payload.data();
  if (!encoders::valid_cache_policy(p[14])) {
    return Status(ErrorCode::kProtocol, "CODEC frame: unknown page cache policy " +
                                            std::to_string(p[14]) +
                                            "; update ferry recv to the sender's version");
  }
  encoders::CodecConfig cfg;
  cfg.cache_policy = static_cast<encoders::CachePolicy>(p[14]);
  const uint64_t page_size = get_be(p + 1, 4);
  const uint64_t cache_bytes = get_be(p + 5, 8);
  const unsigned shards = p[13];
  const unsigned max_pages = static_cast<unsigned>(get_be(p + 15, 2));
  const int zstd_log = p[17];
  const uint32_t lzma_dict = static_cast<uint32_t>(get_be(p + 18, 4));
  if (page_size < 512 || page_size > encoders::kMaxPageSize || (page_size & (page_size - 1))) {
    return refuse("page size " + std::to_string(page_size) +
                  " is not a power of two between 512 and " +
                  std::to_string(encoders::kMaxPageSize));
  }
  if (cache_bytes > limits_.max_cache_bytes) {
    return refuse("the sender's page cache (" + mib(cache_bytes) + ") is larger than " +
                  "--max-cache-mib (" + mib(limits_.max_cache_bytes) + ")");
  }
  if (shards == 0 || shards > kMaxShards) {
    return Status(ErrorCode::kProtocol, "CODEC frame: " + std::to_string(shards) +
                                            " encode shards (1.." + std::to_string(kMaxShards) +
                                            ")");
  }
  if (max_pages == 0 || max_pages > limits_.max_pages ||
      max_pages * page_size > limits_.max_frame_page_bytes) {
    return refuse("the sender's " + std::to_string(max_pages) + " pages of " +
                  std::to_string(page_size) + " bytes per PAGES frame are outside this " +
                  "receiver's 1.." + std::to_string(limits_.max_pages) + " pages and " +
                  mib(limits_.max_frame_page_bytes) + " per frame");
  }
  if (zstd_log != 0 &&
      (zstd_log < encoders::kStreamWindowLogMin || zstd_log > limits_.max_zstd_window_log)) {
    return refuse("the sender's zstd window of 2^" + std::to_string(zstd_log) +
                  " bytes is outside this receiver's 2^" +
                  std::to_string(encoders::kStreamWindowLogMin) + "..2^" +
                  std::to_string(limits_.max_zstd_window_log));
  }
  if (lzma_dict != 0 && (lzma_dict < encoders::kLzmaDictMin || lzma_dict > limits_.max_lzma_dict)) {
    return refuse("the sender's LZMA2 dictionary of " + std::to_string(lzma_dict) +
                  " bytes is outside this receiver's " + std::to_string(encoders::kLzmaDictMin) +
                  ".." + std::to_string(limits_.max_lzma_dict));
  }
  const uint64_t zstd_window = zstd_log ? uint64_t{1} << zstd_log : 0;
  const uint64_t stream_bytes = uint64_t{shards} * (zstd_window + lzma_dict);
  if (stream_bytes > limits_.max_stream_bytes) {
    return refuse(std::to_string(shards) + " shards with " + mib(zstd_window) + " zstd and " +
                  mib(lzma_dict) + " LZMA2 windows need " + mib(stream_bytes) +
                  ", more than this receiver's " + mib(limits_.max_stream_bytes));
  }
  cfg.page_size = page_size;
  cfg.cache_bytes = cache_bytes / shards;  // as the sender splits it
  for (unsigned i = 0; i < shards; ++i) {
    auto d = encoders::Decoder::create(cfg);
    if (!d) {
      decoders_.clear();
      return Status(d.status().code(), "CODEC frame: " + d.status().message());
    }
    decoders_.push_back(std::move(*d));
  }
  zstd_streams_.resize(shards);
  lzma_streams_.resize(shards);
  page_size_ = cfg.page_size;
  max_pages_ = max_pages;
  zstd_window_ = zstd_window;
  lzma_dict_ = lzma_dict;
  rebuilder_ = std::make_unique<qemu::StreamRebuilder>(static_cast<uint32_t>(page_size_));
  return Status::ok();
}

Status PageStreamDecoder::decode(FrameType type, std::span<const uint8_t> payload, ByteQueue& out) {
  if (type == FrameType::kOpaque) {
    out.append(payload.data(), payload.size());
    // The bytes may hold RAM records of any block: the next page names its block.
    if (rebuilder_) rebuilder_->reset();
    return Status::ok();
  }
  if (type == FrameType::kCodec) return read_codec(payload);
  if (type == FrameType::kCachesFrozen) return freeze_caches(payload);
  if (type == FrameType::kPostcopyPage) return decode_postcopy_page(payload, out);
  if (type != FrameType::kPages) {
    return Status(ErrorCode::kProtocol,
                  "unexpected frame type " + std::to_string(static_cast<uint32_t>(type)));
  }
  if (decoders_.empty()) return Status(ErrorCode::kProtocol, "PAGES frame before the CODEC frame");
  const uint8_t* p = payload.data();
  const size_t len = payload.size();
  if (len < 2 || p[1] == 0 || len < 2u + p[1] + 2) {
    return Status(ErrorCode::kProtocol, "PAGES frame: truncated header (byte offset 0)");
  }
  const bool stream = p[0] & kPagesStream;
  const unsigned shard = p[0] >> kPagesShardShift;
  if (shard >= decoders_.size()) {
    return Status(ErrorCode::kProtocol, "PAGES frame: shard " + std::to_string(shard) + " of " +
                                            std::to_string(decoders_.size()) + " (byte offset 0)");
  }
  std::string_view block(reinterpret_cast<const char*>(p + 2), p[1]);
  const size_t at_count = 2 + p[1];
  const size_t n = get_be(p + at_count, 2);
  const size_t at_content = at_count + 2;
  if (n == 0 || n > max_pages_) {
    return Status(ErrorCode::kProtocol, "PAGES frame: " + std::to_string(n) +
                                            " pages at byte offset " + std::to_string(at_count) +
                                            " (the sender announced 1.." +
                                            std::to_string(max_pages_) + " per frame)");
  }
  if (!block_ids_.contains(std::string(block)) && block_ids_.size() >= limits_.max_blocks) {
    return Status(ErrorCode::kProtocol,
                  "PAGES frame: block '" + std::string(block) + "' is one more than the " +
                      std::to_string(limits_.max_blocks) + " RAM blocks this receiver keeps apart");
  }
  // content = page_index[n] record[n], in the frame or as the next block of a stream.
  std::span<const uint8_t> content = payload.subspan(at_content);
  size_t content_at = at_content;  // for error offsets (into the decompressed block if stream)
  if (stream) {
    if (content.size() < kStreamHeader) {
      return Status(ErrorCode::kProtocol, "PAGES frame: truncated stream header at byte offset " +
                                              std::to_string(at_content));
    }
    const uint8_t kind = content[0];
    if (kind != static_cast<uint8_t>(encoders::StreamKind::kZstd) &&
        kind != static_cast<uint8_t>(encoders::StreamKind::kLzma)) {
      return Status(ErrorCode::kProtocol, "PAGES frame: unknown stream kind " +
                                              std::to_string(kind) + " at byte offset " +
                                              std::to_string(at_content));
    }
    const size_t raw_len = get_be(content.data() + 1, 4);
    if (raw_len > 4 * n + n * encoders::max_record_size(page_size_)) {
      return Status(ErrorCode::kProtocol, "PAGES frame: content length " + std::to_string(raw_len) +
                                              " at byte offset " + std::to_string(at_content) +
                                              " exceeds " + std::to_string(n) + " pages");
    }
    const auto stream_kind = static_cast<encoders::StreamKind>(kind);
    const bool lzma = stream_kind == encoders::StreamKind::kLzma;
    const uint64_t window = lzma ? lzma_dict_ : zstd_window_;
    if (window == 0) {
      return Status(ErrorCode::kProtocol,
                    std::string("PAGES frame: a ") + (lzma ? "LZMA2" : "zstd") +
                        " stream block at byte offset " + std::to_string(at_content) +
                        ", but the sender announced none in its CODEC frame");
    }
    auto& dstream = lzma ? lzma_streams_[shard] : zstd_streams_[shard];
    if (!dstream) {
      auto z = encoders::StreamDecompressor::create(stream_kind, window);
      if (!z) return Status(z.status().code(), "PAGES frame: " + z.status().message());
      dstream = std::move(*z);
    }
    records_.resize(raw_len);
    if (auto st = dstream->decompress(content.subspan(kStreamHeader), records_); !st) {
      return Status(st.code(), "PAGES frame (from byte offset " +
                                   std::to_string(at_content + kStreamHeader) +
                                   "): " + st.message());
    }
    content = records_;
    content_at = 0;
  }
  if (content.size() < 4 * n) {
    return Status(ErrorCode::kProtocol, "PAGES frame: " + std::to_string(n) +
                                            " page indexes do not fit at byte offset " +
                                            std::to_string(content_at));
  }
  const uint32_t id = block_id(block);
  keys_.resize(n);
  forms_.resize(n);
  pages_buf_.resize(n * page_size_);
  for (size_t i = 0; i < n; ++i) {
    keys_[i] = page_key(id, static_cast<uint32_t>(get_be(content.data() + 4 * i, 4)));
  }
  auto r = decoders_[shard]->decode_batch(keys_, content.subspan(4 * n), pages_buf_.data(), forms_);
  if (!r.ok()) {
    return Status(ErrorCode::kProtocol,
                  "PAGES frame: " + std::string(encoders::decode_error_name(r.error)) +
                      " at byte offset " + std::to_string(content_at + 4 * n + r.offset) +
                      (stream ? " of its decompressed content" : ""));
  }
  for (size_t i = 0; i < n; ++i) {
    qemu::RamRecordOut rec;
    rec.block = block;
    rec.offset = (keys_[i] & ((uint64_t{1} << 40) - 1)) * page_size_;
    if (forms_[i] == encoders::Form::kZero) {
      rec.type = qemu::RamRecordType::kZero;
    } else {
      rec.type = qemu::RamRecordType::kPage;
      rec.payload = {pages_buf_.data() + i * page_size_, page_size_};
    }
    const size_t max = qemu::StreamRebuilder::ram_record_size(rec);
    const size_t w = rebuilder_->write_ram_record(rec, {out.reserve(max), max});
    if (w == 0) {
      return Status(ErrorCode::kProtocol, "PAGES frame: cannot rebuild page " + std::to_string(i) +
                                              " of block '" + std::string(block) + "'");
    }
    out.commit(w);
  }
  pages_.fetch_add(n, std::memory_order_relaxed);
  return Status::ok();
}

// The sender's caches stopped changing here: so do these (postcopy_bases.h).
Status PageStreamDecoder::freeze_caches(std::span<const uint8_t> payload) {
  if (payload.size() != 4) {
    return Status(ErrorCode::kProtocol,
                  "CACHES_FROZEN frame: " + std::to_string(payload.size()) + " bytes, not 4");
  }
  if (caches_frozen_) return Status(ErrorCode::kProtocol, "a second CACHES_FROZEN frame");
  const uint64_t page_size = get_be(payload.data(), 4);
  if (page_size < 512 || page_size > encoders::kMaxPageSize || (page_size & (page_size - 1)) ||
      (page_size_ != 0 && page_size != page_size_)) {
    return Status(ErrorCode::kProtocol,
                  "CACHES_FROZEN frame: page size " + std::to_string(page_size) +
                      " (the CODEC frame: " + std::to_string(page_size_) + ")");
  }
  caches_frozen_ = true;
  auto frozen = std::make_unique<PostcopyBases::Frozen>();
  frozen->page_size = page_size;
  for (auto& d : decoders_) {
    d->freeze_cache();
    frozen->shards.push_back(&d->cache());
  }
  frozen->block_ids = block_ids_;
  if (bases_) bases_->publish(std::move(frozen));
  return Status::ok();
}

// One page of the preempt channel, against the main channel's frozen copy, as a PAGE record.
Status PageStreamDecoder::decode_postcopy_page(std::span<const uint8_t> payload, ByteQueue& out) {
  auto refuse = [](const std::string& what) {
    return Status(ErrorCode::kProtocol, "POSTCOPY_PAGE frame: " + what);
  };
  const uint8_t* p = payload.data();
  const size_t len = payload.size();
  if (len < 1 || p[0] == 0 || len < 1u + p[0] + 12 + 1) {
    return refuse("truncated header (byte offset 0)");
  }
  const std::string_view block(reinterpret_cast<const char*>(p + 1), p[0]);
  const size_t at_offset = 1 + p[0];
  const uint64_t offset = get_be(p + at_offset, 8);
  const auto crc = static_cast<uint32_t>(get_be(p + at_offset + 8, 4));
  // The main channel's decoder published them before the destination QEMU had the post-copy
  // package, hence before it asked for any page: waiting is for a misbehaving peer only.
  const PostcopyBases::Frozen* frozen = nullptr;
  if (bases_) {
    frozen = bases_->frozen();
    if (frozen == nullptr) frozen = bases_->wait(std::chrono::seconds(10));
  }
  if (frozen == nullptr) {
    return refuse("no CACHES_FROZEN frame came on the main channel before it");
  }
  const size_t page_size = frozen->page_size;
  if (offset % page_size != 0) {
    return refuse("offset " + std::to_string(offset) + " is not a multiple of the page size " +
                  std::to_string(page_size));
  }
  if (!postcopy_decoder_) {
    encoders::CodecConfig cfg;
    cfg.page_size = page_size;
    auto d = encoders::Decoder::create(cfg);
    if (!d) return refuse(d.status().message());
    postcopy_decoder_ = std::move(*d);
    postcopy_page_.resize(page_size);
  }
  const size_t at_record = at_offset + 12;
  size_t used = 0;
  encoders::Form form;
  const auto r = postcopy_decoder_->decode_against(frozen->base(block, offset / page_size),
                                                   payload.subspan(at_record),
                                                   postcopy_page_.data(), &used, &form);
  if (!r.ok()) {
    return refuse(std::string(encoders::decode_error_name(r.error)) + " at byte offset " +
                  std::to_string(at_record + r.offset));
  }
  if (at_record + used != len) {
    return refuse("bytes left over at byte offset " + std::to_string(at_record + used));
  }
  if (crc32c(postcopy_page_.data(), page_size) != crc) {
    return refuse("page at offset " + std::to_string(offset) + " of block '" + std::string(block) +
                  "' does not match the sender's checksum (the two ends' copies of it differ)");
  }
  const size_t n = page_record_size(block, postcopy_page_.data(), page_size);
  write_page_record(out.reserve(n), block, offset, postcopy_page_.data(), page_size);
  out.commit(n);
  pages_.fetch_add(1, std::memory_order_relaxed);
  return Status::ok();
}

}  // namespace ferry::pipeline
