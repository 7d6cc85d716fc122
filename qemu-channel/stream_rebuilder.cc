// qemu-channel/stream_rebuilder.cc — see stream_rebuilder.h.
#include "qemu-channel/stream_rebuilder.h"

#include <cstring>

#include "common/endian.h"

namespace ferry::qemu {

namespace {

constexpr auto put_be16 = store_be16;
constexpr auto put_be32 = store_be32;
constexpr auto put_be64 = store_be64;

size_t body_size(const RamRecordOut& rec) {
  switch (rec.type) {
    case RamRecordType::kZero:
      return 1;
    case RamRecordType::kPage:
      return rec.payload.size();
    case RamRecordType::kXbzrle:
      return 3 + rec.payload.size();
    case RamRecordType::kCompressed:
      return 4 + rec.payload.size();
  }
  return 0;
}

}  // namespace

StreamRebuilder::StreamRebuilder(uint32_t target_page_size) : tp_(target_page_size) {
  if (tp_ < 1024 || (tp_ & (tp_ - 1)) != 0) tp_ = 4096;
}

size_t StreamRebuilder::ram_record_size(const RamRecordOut& rec) {
  return 8 + 1 + rec.block.size() + body_size(rec);
}

size_t StreamRebuilder::write_ram_record(const RamRecordOut& rec, std::span<uint8_t> dst) noexcept {
  if (rec.block.empty() || rec.block.size() > 255 || (rec.offset & (tp_ - 1)) != 0) return 0;
  uint32_t flag = 0;
  switch (rec.type) {
    case RamRecordType::kZero:
      flag = kRamFlagZero;
      break;
    case RamRecordType::kPage:
      if (rec.payload.size() != tp_) return 0;
      flag = kRamFlagPage;
      break;
    case RamRecordType::kXbzrle:
      if (rec.payload.size() > tp_) return 0;
      flag = kRamFlagXbzrle;
      break;
    case RamRecordType::kCompressed:
      if (rec.payload.size() > UINT32_MAX) return 0;
      flag = kRamFlagCompressPage;
      break;
  }
  const bool cont = rec.allow_continue && have_last_block_ && rec.block.size() == last_block_len_ &&
                    std::memcmp(rec.block.data(), last_block_, last_block_len_) == 0;
  const size_t size = 8 + (cont ? 0 : 1 + rec.block.size()) + body_size(rec);
  if (dst.size() < size) return 0;
  uint8_t* p = dst.data();
  put_be64(p, rec.offset | flag | (cont ? kRamFlagContinue : 0));
  p += 8;
  if (!cont) {
    *p++ = static_cast<uint8_t>(rec.block.size());
    std::memcpy(p, rec.block.data(), rec.block.size());
    p += rec.block.size();
    std::memcpy(last_block_, rec.block.data(), rec.block.size());
    last_block_len_ = static_cast<uint8_t>(rec.block.size());
    have_last_block_ = true;
    ++names_;
  }
  switch (rec.type) {
    case RamRecordType::kZero:
      *p = rec.fill;
      break;
    case RamRecordType::kPage:
      std::memcpy(p, rec.payload.data(), rec.payload.size());
      break;
    case RamRecordType::kXbzrle:
      p[0] = 0x01;
      put_be16(p + 1, static_cast<uint16_t>(rec.payload.size()));
      std::memcpy(p + 3, rec.payload.data(), rec.payload.size());
      break;
    case RamRecordType::kCompressed:
      put_be32(p, static_cast<uint32_t>(rec.payload.size()));
      std::memcpy(p + 4, rec.payload.data(), rec.payload.size());
      break;
  }
  ++records_;
  return size;
}

bool StreamRebuilder::append_ram_record(const RamRecordOut& rec, std::vector<uint8_t>& out) {
  const size_t at = out.size();
  out.resize(at + ram_record_size(rec));
  size_t k = write_ram_record(rec, std::span<uint8_t>(out.data() + at, out.size() - at));
  out.resize(at + k);
  return k != 0;
}

void StreamRebuilder::append(const Item& item, std::vector<uint8_t>& out) {
  if (item.kind == ItemKind::kRamRecord) {
    RamRecordOut rec;
    rec.type = item.ram.type;
    rec.offset = item.ram.offset;
    rec.block = item.ram.block;
    rec.payload = item.ram.payload;
    rec.fill = item.ram.fill;
    rec.allow_continue = item.ram.continued;
    if (append_ram_record(rec, out)) return;
    // Unreachable for parser output (it validated the same constraints); stay exact anyway.
  }
  out.insert(out.end(), item.raw.begin(), item.raw.end());
}

}  // namespace ferry::qemu
