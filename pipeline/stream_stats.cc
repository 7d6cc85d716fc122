// pipeline/stream_stats.cc — see stream_stats.h.
#include "pipeline/stream_stats.h"

namespace ferry::pipeline {

using qemu::ItemKind;
using qemu::StreamParser;

StreamStats::StreamStats(bool return_path) : return_path_(return_path) {}

void StreamStats::on_bytes(std::span<const uint8_t> bytes) noexcept {
  if (stopped_) return;
  if (!role_known_) {
    head_.insert(head_.end(), bytes.begin(), bytes.end());
    if (head_.size() >= 4) begin();
    return;
  }
  feed(bytes);
}

// The role is known from the first bytes: start the parser on them.
void StreamStats::begin() {
  role_ = return_path_ ? qemu::ChannelRole::kReturnPath : qemu::guess_channel_role(head_);
  role_known_ = true;
  qemu::ParserOptions opt;
  opt.role = role_;
  parser_ = std::make_unique<StreamParser>(opt);
  std::vector<uint8_t> first;
  first.swap(head_);
  feed(first);
}

void StreamStats::feed(std::span<const uint8_t> bytes) {
  if (!bytes.empty()) parser_->push(bytes);
  qemu::Item it;
  for (;;) {
    auto r = parser_->next(it);
    if (r == StreamParser::Next::kNeedMore || r == StreamParser::Next::kEnd) return;
    if (r == StreamParser::Next::kError) {
      stop("stopped counting at byte offset " + std::to_string(parser_->error()->offset) + ": " +
               parser_->error()->message,
           parser_->truncated());
      return;
    }
    count(it, *parser_);
  }
}

void StreamStats::adopt(qemu::ChannelRole role) {
  role_ = role;
  role_known_ = true;
}

void StreamStats::stop(std::string note, bool truncated) {
  note_ = std::move(note);
  truncated_ = truncated;
  stopped_ = true;
}

void StreamStats::count(const qemu::Item& it, const StreamParser& parser) noexcept {
  switch (it.kind) {
    case ItemKind::kRamRecord:
      switch (it.ram.type) {
        case qemu::RamRecordType::kZero:
          zero.fetch_add(1, std::memory_order_relaxed);
          break;
        case qemu::RamRecordType::kPage:
          normal.fetch_add(1, std::memory_order_relaxed);
          break;
        case qemu::RamRecordType::kXbzrle:
          xbzrle.fetch_add(1, std::memory_order_relaxed);
          break;
        case qemu::RamRecordType::kCompressed:
          compressed.fetch_add(1, std::memory_order_relaxed);
          break;
      }
      if (requests_) {
        requests_->page(it.ram.block, it.ram.offset, role_ == qemu::ChannelRole::kPreempt);
      }
      break;
    case ItemKind::kMultifdPacket:
      multifd_packets.fetch_add(1, std::memory_order_relaxed);
      normal.fetch_add(it.multifd.normal_pages, std::memory_order_relaxed);
      zero.fetch_add(it.multifd.zero_pages, std::memory_order_relaxed);
      if (requests_) {
        for (uint32_t i = 0; i < it.multifd.normal_pages; ++i) {
          requests_->page(it.multifd.block, it.multifd.page_offset(i), false);
        }
      }
      break;
    case ItemKind::kRpMessage:
      rp_messages.fetch_add(1, std::memory_order_relaxed);
      if (it.rp.type == qemu::kRpReqPagesId || it.rp.type == qemu::kRpReqPages) {
        page_requests.fetch_add(1, std::memory_order_relaxed);
        if (it.rp.type == qemu::kRpReqPagesId) request_block_.assign(it.rp.block);
        if (requests_) requests_->request(request_block_, it.rp.start, it.rp.length, Clock::now());
        if (promote_) promote_->promote(request_block_, it.rp.start, it.rp.length);
      }
      break;
    case ItemKind::kCommand:
      commands.fetch_add(1, std::memory_order_relaxed);
      if (it.command.cmd == qemu::kCmdPostcopyListen) {
        postcopy.store(true, std::memory_order_relaxed);
      }
      break;
    case ItemKind::kHeader:
      saw_header_ = true;
      break;
    case ItemKind::kEof:
      saw_eof_ = true;
      break;
    case ItemKind::kPassthrough:
      if (note_.empty()) {
        note_ = "counting stopped at byte offset " + std::to_string(parser.passthrough_from()) +
                ": " + parser.passthrough_reason();
      }
      break;
    default:
      break;
  }
}

void StreamStats::on_end() noexcept {
  if (stopped_) return;
  if (!role_known_ && !head_.empty()) begin();  // fewer than 4 bytes in all
  if (!parser_) return;
  parser_->finish();
  feed({});
}

}  // namespace ferry::pipeline
