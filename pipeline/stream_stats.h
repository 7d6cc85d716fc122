// pipeline/stream_stats.h — counts of one direction of a QEMU channel (pages by class,
// commands, multifd packets, return-path messages) for --stats-json, progress and the policy.
// Counting only: the bytes are forwarded whatever it finds.
//
// Two ways to feed it, so that each byte is parsed once:
//   - as a StreamTap (pipeline/channel_pump.h) it runs its own stream parser over the bytes
//     the pump forwards (opaque channels, the return path, the receiver's rebuilt stream);
//   - fed by a parser that already runs over the same bytes: PageStreamEncoder on the
//     sender's main channel hands over every item it parses (adopt(), count(), stop()).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "pipeline/channel_pump.h"
#include "pipeline/page_requests.h"
#include "qemu-channel/stream_parser.h"

namespace ferry::pipeline {

class StreamStats final : public StreamTap {
 public:
  // return_path: the bytes are the destination's return path; otherwise the role (main,
  // multifd, preempt) is guessed from the first bytes.
  explicit StreamStats(bool return_path);

  // Tap: parses the bytes itself. Pump thread.
  void on_bytes(std::span<const uint8_t> bytes) noexcept override;
  void on_end() noexcept override;

  // Fed by someone else's parser, on the thread that runs it, instead of on_bytes/on_end:
  // adopt() once the role is known, then count() for every item in stream order, and stop()
  // when that parser gives up early (note: where and why, as in --stats-json).
  void adopt(qemu::ChannelRole role);
  void count(const qemu::Item& it, const qemu::StreamParser& parser) noexcept;
  // truncated: the parser's finish() found the stream cut short (StreamParser::truncated()).
  void stop(std::string note, bool truncated = false);

  // The destination's page requests (return path) and the pages of the stream are matched
  // in `requests` (page_requests.h), shared by every channel: on ferry recv the pages written
  // to the destination, on ferry send those the source wrote. Before the pump starts; null =
  // not tracked.
  void track_requests(PageRequestTracker* requests) { requests_ = requests; }
  // ferry send's return path: each page request also goes to the channel's codec, which
  // releases a page it still holds ahead of the rest (StreamCodec::promote). Before the
  // pump starts; the codec runs on the same pump's thread.
  void promote_into(StreamCodec* codec) { promote_ = codec; }
  // ferry send: the page at offset of block answered the requests for it from ferry's own
  // hold (StreamCodec::promote), not from QEMU.
  void answered_from_hold(std::string_view block, uint64_t offset) noexcept {
    if (requests_) requests_->page(block, offset, Clock::now(), false);
  }

  // Safe to read from any thread while the pump runs.
  std::atomic<uint64_t> zero{0}, normal{0}, xbzrle{0}, compressed{0};
  std::atomic<uint64_t> rp_messages{0}, commands{0}, multifd_packets{0};
  // Return path: REQ_PAGES and REQ_PAGES_ID messages (post-copy page requests).
  std::atomic<uint64_t> page_requests{0};
  // POSTCOPY_LISTEN went by: from here the destination may run the VM with pages missing.
  std::atomic<bool> postcopy{false};

  // After the pump ended (pump thread joined):
  const char* role() const { return role_known_ ? qemu::channel_role_name(role_) : "none"; }
  // The parser stopped counting here (pass-through or a parse error), or "".
  const std::string& note() const { return note_; }
  // A main stream that began with QEMU's header ("QEVM") and was parsed to its last byte,
  // where it stopped before its end marker (QEMU_VM_EOF): QEMU stopped mid-migration.
  bool ended_early() const { return saw_header_ && !saw_eof_ && truncated_; }

 private:
  void begin();
  void feed(std::span<const uint8_t> bytes);

  bool return_path_;
  bool role_known_ = false;
  qemu::ChannelRole role_ = qemu::ChannelRole::kMain;
  std::vector<uint8_t> head_;  // first bytes, until the role is known
  std::unique_ptr<qemu::StreamParser> parser_;
  bool stopped_ = false;
  bool saw_header_ = false, saw_eof_ = false, truncated_ = false;
  std::string note_;
  PageRequestTracker* requests_ = nullptr;
  StreamCodec* promote_ = nullptr;
  std::string request_block_;  // REQ_PAGES names no block: the last REQ_PAGES_ID's
};

}  // namespace ferry::pipeline
