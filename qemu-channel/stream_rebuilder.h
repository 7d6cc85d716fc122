// qemu-channel/stream_rebuilder.h — turns parsed items (with RAM payloads possibly replaced
// upstream) back into the bytes QEMU expects on one channel.
//
// The rebuilder owns RAM_SAVE_FLAG_CONTINUE (§3.2 of qemu-migration-stream.md): it emits
// CONTINUE only when the previous RAM record *it emitted on this channel* named the same
// block, which is exactly the destination's `last_recv_block[channel]`. A record that repeats
// its block name is always legal, so a caller that reorders or drops records stays correct.
//
// Byte-exactness: QEMU's source sometimes repeats a block name although CONTINUE would have
// been legal (after postcopy start and preempt-channel switches it resets last_sent_block).
// To reproduce a stream unchanged, pass `allow_continue = record.continued` (what append(Item)
// does); a pipeline that re-encodes freely may pass true.
//
// Threading: one rebuilder per channel, used by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "qemu-channel/stream_parser.h"

namespace ferry::qemu {

// A RAM record to emit. For ZERO `payload` is ignored and `fill` is written; for PAGE it must
// be exactly TP bytes; for XBZRLE at most TP bytes (the delta, without the u8 0x01 be16 n
// prefix); for COMPRESS the zlib bytes.
struct RamRecordOut {
  RamRecordType type = RamRecordType::kPage;
  uint64_t offset = 0;     // byte offset in the block, a multiple of TP
  std::string_view block;  // 1..255 bytes
  std::span<const uint8_t> payload;
  uint8_t fill = 0;
  bool allow_continue = true;  // false: always write the block name
};

class StreamRebuilder {
 public:
  explicit StreamRebuilder(uint32_t target_page_size = 4096);

  // Bytes write_ram_record() needs at most for a record of this shape.
  static size_t ram_record_size(const RamRecordOut& rec);

  // Writes one RAM record into dst. Returns the bytes written, or 0 if dst is too small or the
  // record is malformed (bad block name length, PAGE payload != TP, XBZRLE > TP, offset not
  // page aligned); then nothing is written and the CONTINUE state is unchanged. noexcept, no
  // allocation: usable per page.
  size_t write_ram_record(const RamRecordOut& rec, std::span<uint8_t> dst) noexcept;

  // Appends one RAM record to out; false if malformed (nothing appended).
  bool append_ram_record(const RamRecordOut& rec, std::vector<uint8_t>& out);

  // Appends an item as parsed. RAM records are re-encoded through write_ram_record() with
  // allow_continue = item.ram.continued (so an unchanged stream is reproduced byte-for-byte);
  // every other kind is copied from item.raw.
  void append(const Item& item, std::vector<uint8_t>& out);

  // Forget the last emitted block (a new connection to the destination).
  void reset() {
    last_block_len_ = 0;
    have_last_block_ = false;
  }

  uint64_t records_written() const { return records_; }
  uint64_t names_written() const { return names_; }

 private:
  uint32_t tp_;
  char last_block_[256];
  uint8_t last_block_len_ = 0;
  bool have_last_block_ = false;
  uint64_t records_ = 0;
  uint64_t names_ = 0;
};

}  // namespace ferry::qemu
