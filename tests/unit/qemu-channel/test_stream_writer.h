// tests/unit/qemu-channel/test_stream_writer.h — a tiny, independent writer of QEMU migration
// stream bytes for tests, benchmarks and the fuzz seed corpus. It writes the grammar of
// shared/docs/qemu-migration-stream.md directly (it does not use the rebuilder), so parser and
// rebuilder are checked against a second implementation.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::qemu::testing {

class StreamWriter {
 public:
  std::vector<uint8_t> bytes;

  StreamWriter& u8(uint8_t v) {
    bytes.push_back(v);
    return *this;
  }
  StreamWriter& be16(uint16_t v) { return u8(v >> 8).u8(v & 0xff); }
  StreamWriter& be32(uint32_t v) { return be16(v >> 16).be16(v & 0xffff); }
  StreamWriter& be64(uint64_t v) {
    return be32(static_cast<uint32_t>(v >> 32)).be32(v & 0xffffffffu);
  }
  StreamWriter& str8(std::string_view s) {
    u8(static_cast<uint8_t>(s.size()));
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  StreamWriter& raw(const std::vector<uint8_t>& v) {
    bytes.insert(bytes.end(), v.begin(), v.end());
    return *this;
  }
  StreamWriter& fill(size_t n, uint8_t b) {
    bytes.insert(bytes.end(), n, b);
    return *this;
  }

  // §1
  StreamWriter& header() { return be32(0x5145564D).be32(3); }
  StreamWriter& config(std::string_view machine) {
    u8(0x07).be32(static_cast<uint32_t>(machine.size()));
    bytes.insert(bytes.end(), machine.begin(), machine.end());
    return *this;
  }
  StreamWriter& config_caps(const std::vector<std::string>& caps) {
    u8(0x05).str8("configuration/capabilities").be32(1).be32(static_cast<uint32_t>(caps.size()));
    for (const auto& c : caps) str8(c);
    return *this;
  }
  StreamWriter& config_uuid() {
    u8(0x05).str8("configuration/uuid").be32(1);
    return fill(16, 0xab);
  }
  // §2
  StreamWriter& start(uint32_t id, std::string_view idstr, uint32_t instance = 0,
                      uint32_t version = 4) {
    return u8(0x01).be32(id).str8(idstr).be32(instance).be32(version);
  }
  StreamWriter& full(uint32_t id, std::string_view idstr) {
    return u8(0x04).be32(id).str8(idstr).be32(0).be32(1);
  }
  StreamWriter& part(uint32_t id) { return u8(0x02).be32(id); }
  StreamWriter& end(uint32_t id) { return u8(0x03).be32(id); }
  StreamWriter& footer(uint32_t id) { return u8(0x7E).be32(id); }
  StreamWriter& eof() { return u8(0x00); }
  StreamWriter& vmdesc(std::string_view json) {
    u8(0x06).be32(static_cast<uint32_t>(json.size()));
    bytes.insert(bytes.end(), json.begin(), json.end());
    return *this;
  }
  // §3
  struct Block {
    std::string name;
    uint64_t len;
    uint64_t page_size = 0;  // written when non-zero
    uint64_t mr_addr = 0;
    bool write_mr = false;
  };
  StreamWriter& mem_size(const std::vector<Block>& blocks) {
    uint64_t total = 0;
    for (const auto& b : blocks) total += b.len;
    be64(total | 0x04);
    for (const auto& b : blocks) {
      str8(b.name).be64(b.len);
      if (b.page_size) be64(b.page_size);
      if (b.write_mr) be64(b.mr_addr);
    }
    return *this;
  }
  // block empty => CONTINUE
  StreamWriter& word(uint64_t off, uint32_t flags, std::string_view block) {
    be64(off | flags | (block.empty() ? 0x20 : 0));
    if (!block.empty()) str8(block);
    return *this;
  }
  StreamWriter& zero(std::string_view block, uint64_t off, uint8_t fill_byte = 0) {
    return word(off, 0x02, block).u8(fill_byte);
  }
  StreamWriter& page(std::string_view block, uint64_t off, uint8_t pattern, size_t tp = 4096) {
    word(off, 0x08, block);
    for (size_t i = 0; i < tp; ++i) u8(static_cast<uint8_t>(pattern + i * 7));
    return *this;
  }
  StreamWriter& xbzrle(std::string_view block, uint64_t off, const std::vector<uint8_t>& delta) {
    word(off, 0x40, block).u8(0x01).be16(static_cast<uint16_t>(delta.size()));
    return raw(delta);
  }
  StreamWriter& compressed(std::string_view block, uint64_t off, const std::vector<uint8_t>& z) {
    word(off, 0x100, block).be32(static_cast<uint32_t>(z.size()));
    return raw(z);
  }
  StreamWriter& eos() { return be64(0x10); }
  StreamWriter& multifd_flush() { return be64(0x200); }
  // §5
  StreamWriter& command(uint16_t cmd, const std::vector<uint8_t>& payload) {
    u8(0x08).be16(cmd).be16(static_cast<uint16_t>(payload.size()));
    return raw(payload);
  }
  StreamWriter& ping(uint32_t v) { return u8(0x08).be16(2).be16(4).be32(v); }
  StreamWriter& open_rp() { return u8(0x08).be16(1).be16(0); }
  StreamWriter& advise(uint64_t summary, uint64_t tp) {
    return u8(0x08).be16(3).be16(16).be64(summary).be64(tp);
  }
  StreamWriter& advise_empty() { return u8(0x08).be16(3).be16(0); }
  StreamWriter& listen() { return u8(0x08).be16(4).be16(0); }
  StreamWriter& run() { return u8(0x08).be16(5).be16(0); }
  StreamWriter& discard(std::string_view block,
                        const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
    u8(0x08).be16(6).be16(static_cast<uint16_t>(3 + block.size() + 16 * ranges.size()));
    u8(0).str8(block).u8(0);
    for (auto [s, l] : ranges) be64(s).be64(l);
    return *this;
  }
  StreamWriter& packaged(const std::vector<uint8_t>& blob) {
    u8(0x08).be16(7).be16(4).be32(static_cast<uint32_t>(blob.size()));
    return raw(blob);
  }
  StreamWriter& recv_bitmap_cmd(std::string_view block) {
    u8(0x08).be16(10).be16(static_cast<uint16_t>(1 + block.size()));
    return str8(block);
  }
  StreamWriter& resume() { return u8(0x08).be16(9).be16(0); }
  // §6
  StreamWriter& rp(uint16_t type, const std::vector<uint8_t>& payload) {
    be16(type).be16(static_cast<uint16_t>(payload.size()));
    return raw(payload);
  }
  StreamWriter& rp_u32(uint16_t type, uint32_t v) { return be16(type).be16(4).be32(v); }
  StreamWriter& rp_req_pages_id(uint64_t start, uint32_t len, std::string_view block) {
    be16(3).be16(static_cast<uint16_t>(13 + block.size())).be64(start).be32(len);
    return str8(block);
  }
  StreamWriter& rp_req_pages(uint64_t start, uint32_t len) {
    return be16(4).be16(12).be64(start).be32(len);
  }
  StreamWriter& rp_recv_bitmap(std::string_view block, size_t bitmap_bytes) {
    be16(5).be16(static_cast<uint16_t>(1 + block.size())).str8(block).be64(bitmap_bytes);
    for (size_t i = 0; i < bitmap_bytes; ++i) u8(static_cast<uint8_t>(i * 13));
    return be64(0x0123456789ABCDEFull);
  }
  // §7
  StreamWriter& multifd_init(uint8_t id) {
    be32(0x11223344).be32(1).fill(16, 0).u8(id).fill(7, 0);
    return fill(32, 0);
  }
  // A packet whose normal pages have the given offsets; nocomp data unless compressed_len >= 0.
  StreamWriter& multifd_packet(uint32_t flags, std::string_view block,
                               const std::vector<uint64_t>& offsets, uint64_t packet_num,
                               int compressed_len = -1, uint32_t pages_alloc = 128) {
    uint32_t normal = static_cast<uint32_t>(offsets.size());
    uint32_t next = compressed_len >= 0 ? static_cast<uint32_t>(compressed_len) : normal * 4096;
    be32(0x11223344).be32(1).be32(flags).be32(pages_alloc).be32(normal).be32(next).be64(packet_num);
    fill(32, 0);
    size_t at = bytes.size();
    fill(256, 0);
    for (size_t i = 0; i < block.size() && i < 255; ++i) bytes[at + i] = block[i];
    for (uint32_t i = 0; i < pages_alloc; ++i) be64(i < normal ? offsets[i] : 0);
    if (compressed_len >= 0) return fill(static_cast<size_t>(compressed_len), 0x5a);
    for (uint32_t i = 0; i < normal; ++i) {
      for (size_t j = 0; j < 4096; ++j) u8(static_cast<uint8_t>(i + j));
    }
    return *this;
  }
};

}  // namespace ferry::qemu::testing
