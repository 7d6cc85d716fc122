// qemu-channel/stream_parser.h — incremental pull parser for QEMU live-migration byte streams.
//
// Role: turn the bytes QEMU writes on one migration connection (main, multifd, postcopy
// preempt) or reads back on the return path into a sequence of Items: opaque framing that must
// be forwarded byte-exact (header, configuration, commands, section headers, footers, vmdesc)
// and RAM records whose page payloads the pipeline may re-encode. The wire format and every
// rule used here is in shared/docs/qemu-migration-stream.md (section numbers "§n" below).
//
// Properties:
//  * Pull parser: push() bytes, then call next() until it returns kNeedMore.
//  * Incremental: any split of the input yields the same items. The one exception is the
//    chunking of kOpaque / kPassthrough items, which follows the input (they are streamed as
//    bytes arrive and never wait for more); their concatenation is split-invariant.
//  * Zero copy on the fast path: items are views into the pushed bytes. Only an item that
//    straddles two pushes is assembled in an internal carry buffer (at most one item).
//  * Exact: concatenating item.raw over all items reproduces the consumed input byte-for-byte.
//  * Hostile input: every length is checked; the first error is latched with its byte offset
//    and one sentence; after an error next() returns kError forever.
//  * Pass-through (§4): from the first item that cannot be length-parsed (a FULL section, a
//    START/PART/END of a section other than "ram", a "ram" START whose version is not 4, an
//    unknown configuration subsection, a multifd DEVICE_STATE packet) every further byte is
//    emitted as kPassthrough, streaming. Inside a PACKAGED blob the same triggers give kOpaque
//    up to the blob's end (its length is known), and parsing resumes after it: a postcopy
//    stream stays parseable to its EOF.
//
// Threading: a StreamParser is a plain value used by one thread at a time.
//
// Typical use (sender side):
//   StreamParser parser({.role = ChannelRole::kMain});
//   Item item;
//   while (ssize_t got = read(fd, buf, sizeof buf); got > 0) {
//     parser.push({buf, size_t(got)});
//     while (parser.next(item) == StreamParser::Next::kItem) {
//       if (item.kind == ItemKind::kRamRecord) { /* encode item.ram.payload */ }
//       else { /* forward item.raw byte-exact; commands/kPackagedEnd/kEof are barriers */ }
//     }
//     if (parser.error()) { /* offset + sentence */ }
//   }
//   parser.finish(); then drain next() until kEnd or kError.
// Receiver side: StreamRebuilder (stream_rebuilder.h) writes RAM records back; a multifd
// packet is rebuilt as item.multifd.header followed by its page data (normal_pages * TP bytes
// in offset order when uncompressed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::qemu {

// Which connection the bytes come from (§6, §7).
enum class ChannelRole : uint8_t {
  kMain,        // "QEVM" header ..., or a postcopy-recovery connection (first byte 0x08, §6)
  kMultifd,     // MultiFDInit_t (64 bytes) then RAM packets (§7)
  kPreempt,     // postcopy-preempt channel: raw RAM records, no header, no sections (§3.4)
  kReturnPath,  // destination -> source messages (§6)
};

const char* channel_role_name(ChannelRole role);

// Which channel a connection is, from its first bytes (at least 4 when available): "QEVM" or
// 0x08 (a recovery connection) = main, 0x11223344 = multifd, a plausible return-path message
// header = return path, anything else = preempt (raw RAM records have no magic).
ChannelRole guess_channel_role(std::span<const uint8_t> first_bytes);

enum class ItemKind : uint8_t {
  kHeader,         // be32 "QEVM", be32 3
  kConfiguration,  // 0x07 machine name + known subsections (see Item::config)
  kSectionHeader,  // START/PART/END header of the "ram" section (see Item::section)
  kRamBlockList,   // MEM_SIZE word + RAMBlock list (§3.3); blocks in StreamParser::ram_blocks()
  kRamRecord,      // one ZERO / PAGE / XBZRLE / COMPRESS record (see Item::ram)
  kRamEos,         // be64 0x10: end of one ram section payload (or of the preempt channel)
  kMultifdFlush,   // be64 0x200: RAM_SAVE_FLAG_MULTIFD_FLUSH (8.0+)
  kFooter,         // 0x7E be32 section_id after a ram section
  kCommand,        // 0x08 be16 cmd be16 len payload (see Item::command). For PACKAGED the
                   // item is the 9-byte command only; the blob's items follow with in_package
                   // set, then kPackagedEnd.
  kPackagedEnd,    // zero-length marker: the PACKAGED blob ended here (a barrier, §8.1)
  kEof,            // 0x00
  kVmdesc,         // 0x06 be32 len; the JSON follows as kOpaque items (OpaqueOf::kVmdescJson)
  kOpaque,         // a chunk of a length-known blob we do not decode (see Item::opaque_of)
  kPassthrough,    // a chunk of the verbatim tail (everything from passthrough_from() on)
  kRpMessage,      // return path: be16 type be16 len payload (+ be64 size for RECV_BITMAP)
  kRpBitmapEnd,    // return path: be64 0x0123456789ABCDEF closing a RECV_BITMAP bitmap
  kMultifdInit,    // 64-byte MultiFDInit_t
  kMultifdPacket,  // 320-byte header + offsets + page data (see Item::multifd)
};

const char* item_kind_name(ItemKind kind);

// What a kOpaque chunk belongs to.
enum class OpaqueOf : uint8_t {
  kNone,
  kVmdescJson,    // body of kVmdesc
  kPackagedRest,  // rest of a PACKAGED blob from the first item that cannot be length-parsed
                  // (device FULL sections); ends at the blob's end, then parsing resumes
  kRecvBitmap,    // the little-endian bitmap after a return-path RECV_BITMAP message
};

// Section type bytes (§2).
enum SectionType : uint8_t {
  kSectionStart = 0x01,
  kSectionPart = 0x02,
  kSectionEnd = 0x03,
  kSectionFull = 0x04,
};

// QEMU_VM_COMMAND numbers (§5).
enum CommandId : uint16_t {
  kCmdInvalid = 0,
  kCmdOpenReturnPath = 1,
  kCmdPing = 2,
  kCmdPostcopyAdvise = 3,
  kCmdPostcopyListen = 4,
  kCmdPostcopyRun = 5,
  kCmdPostcopyRamDiscard = 6,
  kCmdPackaged = 7,
  kCmdEnableColo = 8,
  kCmdPostcopyResume = 9,
  kCmdRecvBitmap = 10,
  kCmdSwitchoverStart = 11,
};
// "OPEN_RETURN_PATH" etc.; "UNKNOWN" for numbers QEMU 10.0 does not define.
const char* command_name(uint16_t cmd);

// Return-path message types (§6).
enum RpType : uint16_t {
  kRpShut = 1,
  kRpPong = 2,
  kRpReqPagesId = 3,
  kRpReqPages = 4,
  kRpRecvBitmap = 5,
  kRpResumeAck = 6,
  kRpSwitchoverAck = 7,
};
const char* rp_type_name(uint16_t type);

// RAM record flag bits (§3.1).
inline constexpr uint32_t kRamFlagFull = 0x001;
inline constexpr uint32_t kRamFlagZero = 0x002;
inline constexpr uint32_t kRamFlagMemSize = 0x004;
inline constexpr uint32_t kRamFlagPage = 0x008;
inline constexpr uint32_t kRamFlagEos = 0x010;
inline constexpr uint32_t kRamFlagContinue = 0x020;
inline constexpr uint32_t kRamFlagXbzrle = 0x040;
inline constexpr uint32_t kRamFlagHook = 0x080;
inline constexpr uint32_t kRamFlagCompressPage = 0x100;
inline constexpr uint32_t kRamFlagMultifdFlush = 0x200;

inline constexpr uint32_t kQemuVmFileMagic = 0x5145564D;  // "QEVM"
inline constexpr uint32_t kMultifdMagic = 0x11223344;
inline constexpr size_t kMultifdInitSize = 64;
inline constexpr size_t kMultifdPacketHeaderSize = 320;

enum class RamRecordType : uint8_t { kZero, kPage, kXbzrle, kCompressed };

// One RAM page record. Wire grammar (§3.1):
//   record  := be64 W [str8 block] body          W = offset | flags; block absent iff CONTINUE
//   body    := ZERO: u8 fill | PAGE: TP bytes | XBZRLE: u8 0x01 be16 n n*u8 (n <= TP)
//            | COMPRESS: be32 n n*u8 (zlib)
struct RamRecord {
  RamRecordType type;
  bool continued;          // the source set RAM_SAVE_FLAG_CONTINUE (no block name on wire)
  uint32_t flags;          // W & (TP-1), as on the wire (includes CONTINUE)
  uint64_t offset;         // byte offset inside the RAMBlock (W & ~(TP-1))
  std::string_view block;  // RAMBlock idstr (resolved through CONTINUE); valid like raw
  std::span<const uint8_t> payload;  // ZERO: the 1 fill byte; PAGE: TP bytes; XBZRLE: the n
                                     // delta bytes (after u8 0x01 be16 n); COMPRESS: n bytes
  uint8_t fill;                      // ZERO only
};

// START/PART/END header of the ram section, or a footer.
struct SectionInfo {
  uint8_t type;  // SectionType (kFooter: 0x7E)
  uint32_t section_id;
  std::string_view idstr;  // START only ("ram")
  uint32_t instance_id;    // START only
  uint32_t version_id;     // START only
};

struct CommandInfo {
  uint16_t cmd;
  uint16_t len;
  std::span<const uint8_t> payload;  // the len bytes
  uint32_t ping_value;               // PING
  uint32_t packaged_len;             // PACKAGED: L, the blob bytes that follow the command
  uint64_t advise_pagesize_summary;  // POSTCOPY_ADVISE with len 16
  uint64_t advise_target_page_size;  // POSTCOPY_ADVISE with len 16
  std::string_view block;            // POSTCOPY_RAM_DISCARD, RECV_BITMAP
  uint32_t discard_ranges;           // POSTCOPY_RAM_DISCARD: number of (start, length) pairs
};

struct RpInfo {
  uint16_t type;
  uint16_t len;
  std::span<const uint8_t> payload;
  uint32_t value;          // SHUT error flag, PONG value, RESUME_ACK value
  uint64_t start;          // REQ_PAGES(_ID)
  uint32_t length;         // REQ_PAGES(_ID)
  std::string_view block;  // REQ_PAGES_ID, RECV_BITMAP
  uint64_t bitmap_size;    // RECV_BITMAP: bytes of bitmap that follow (as kOpaque)
};

struct ConfigInfo {
  std::string_view machine;   // e.g. "pc-i440fx-7.2"
  uint32_t target_page_bits;  // 0 when the subsection is absent (then TP = 4096)
  bool x_ignore_shared;
  bool mapped_ram;
  bool has_uuid;
};

struct MultifdInitInfo {
  uint32_t version;
  std::span<const uint8_t> uuid;  // 16 bytes
  uint8_t channel_id;
};

// RAM packet (§7). Grammar:
//   header  := be32 magic be32 version be32 flags be32 pages_alloc be32 normal_pages
//              be32 next_packet_size be64 packet_num be32 zero_pages(10.x) be32 unused
//              3*be64 unused char ramblock[256]
//   packet  := header be64 offset[pages_alloc] data
//   data    := compression none: normal_pages * TP bytes; otherwise next_packet_size bytes
struct MultifdPacketInfo {
  uint32_t flags;
  uint32_t pages_alloc;
  uint32_t normal_pages;
  uint32_t zero_pages;  // 10.x; 0 on 7.2
  uint32_t next_packet_size;
  uint64_t packet_num;
  bool sync;                         // flags bit 0
  uint32_t compression;              // flags bits 1..5 (0 = none)
  std::string_view block;            // NUL-trimmed ramblock field
  std::span<const uint8_t> header;   // 320 + 8*pages_alloc bytes (header and offsets)
  std::span<const uint8_t> offsets;  // 8*pages_alloc bytes, be64 each
  std::span<const uint8_t> data;     // page data
  // Offset of normal page i (i < normal_pages).
  uint64_t page_offset(uint32_t i) const;
};

// One parsed item. `raw` (and every view in the decoded fields) is valid until the next call
// to push(), next() or finish() on the parser that produced it.
struct Item {
  ItemKind kind = ItemKind::kEof;
  bool in_package = false;               // inside a PACKAGED blob
  OpaqueOf opaque_of = OpaqueOf::kNone;  // kOpaque only
  uint64_t stream_offset = 0;            // offset of raw[0] in the channel's byte stream
  std::span<const uint8_t> raw;          // exact bytes of the item as they were on the wire
  // Decoded fields; only the one matching `kind` is meaningful.
  RamRecord ram{};
  SectionInfo section{};           // kSectionHeader, kFooter
  CommandInfo command{};           // kCommand
  RpInfo rp{};                     // kRpMessage
  ConfigInfo config{};             // kConfiguration
  MultifdInitInfo multifd_init{};  // kMultifdInit
  MultifdPacketInfo multifd{};     // kMultifdPacket
  uint32_t vmdesc_len = 0;         // kVmdesc
};

struct RamBlockInfo {
  std::string name;
  uint64_t used_length = 0;
  uint64_t page_size = 0;  // 0 when not on the wire
  uint64_t mr_addr = 0;    // valid when has_mr_addr
  bool has_mr_addr = false;
};

struct ParseError {
  uint64_t offset = 0;  // byte offset in the channel's stream where the problem is
  std::string message;  // one sentence
};

struct ParserOptions {
  ChannelRole role = ChannelRole::kMain;
  // Target page size (4096 on x86). A configuration/target-page-bits subsection overrides it.
  uint32_t target_page_size = 4096;
  // Host page size the source runs with; decides whether §3.3 page_size fields can exist.
  uint32_t host_page_size = 4096;
  // Postcopy-recovery connections (first byte 0x08) carry no ram START. If the ram section id
  // is known from the previous connection, set it here; otherwise the first PART/END whose id
  // is unknown on such a connection is taken as "ram".
  int64_t ram_section_id = -1;
};

class StreamParser {
 public:
  explicit StreamParser(ParserOptions options = {});

  // Appends input. The parser references `bytes` without copying: they must stay valid and
  // unchanged until next() returns kNeedMore (or until the next push()). Any bytes of an
  // incomplete item are copied into the carry buffer when next() returns kNeedMore.
  void push(std::span<const uint8_t> bytes);

  enum class Next : uint8_t {
    kItem,      // `out` holds an item
    kNeedMore,  // all pushed bytes consumed (or held in carry); push more or finish()
    kEnd,       // finish() was called and the stream ended cleanly
    kError,     // error() holds the first error
  };
  // Produces the next item. Never blocks; cost is O(1) per item plus the size of any carry.
  Next next(Item& out);

  // No more input will come. The next call to next() reports kEnd if the stream ended at a
  // valid place, or an error with the offset of the truncated item.
  void finish();

  // The first error, or nullptr.
  const ParseError* error() const { return error_.message.empty() ? nullptr : &error_; }

  // Offset of the first byte emitted as kPassthrough, or -1.
  int64_t passthrough_from() const { return passthrough_from_; }
  // finish() found the stream cut short: inside an item, or before its role's clean end (a
  // main stream before QEMU_VM_EOF). error() says where.
  bool truncated() const { return truncated_; }
  // Why the pass-through began (a static sentence), or "" if it has not.
  const char* passthrough_reason() const { return passthrough_reason_; }
  // Section headers recognised at top level (also inside PACKAGED), indexed by SectionType
  // 1..4, including the START/FULL/PART that switched to pass-through or opaque. Sections
  // inside pass-through or opaque bytes are not seen.
  uint64_t sections_seen(uint8_t type) const { return type < 5 ? sections_seen_[type] : 0; }
  // Total bytes consumed so far (sum of raw sizes of all items returned).
  uint64_t consumed() const { return offset_; }

  // Stream facts learned so far.
  ChannelRole role() const { return opt_.role; }
  const std::vector<RamBlockInfo>& ram_blocks() const { return blocks_; }
  const std::string& machine() const { return machine_; }
  uint32_t target_page_size() const { return tp_; }
  bool magic_ok() const { return magic_ok_; }
  bool recovery_connection() const { return recovery_; }
  int64_t ram_section_id() const { return ram_id_; }
  bool footers_seen() const { return footers_seen_; }

 private:
  enum class Step : uint8_t { kItem, kNeedMore, kAgain, kError };
  enum class State : uint8_t;

  Step step(const uint8_t* p, size_t n, Item& out, size_t& used, size_t& need);
  Step step_state(const uint8_t* p, size_t n, Item& out, size_t& used, size_t& need);
  Step fail(uint64_t at, std::string message);
  Step step_main_top(const uint8_t* p, size_t n, Item& out, size_t& used, size_t& need);
  Step step_config(const uint8_t* p, size_t n, Item& out, size_t& used, size_t& need);
  Step step_ram(const uint8_t* p, size_t n, Item& out, size_t& used, size_t& need);
  Step step_block_list(const uint8_t* p, size_t n, Item& out, size_t& used, size_t& need);
  Step step_command(const uint8_t* p, size_t n, Item& out, size_t& used, size_t& need);
  Step step_multifd(const uint8_t* p, size_t n, Item& out, size_t& used, size_t& need);
  Step step_rp(const uint8_t* p, size_t n, Item& out, size_t& used, size_t& need);
  void enter_passthrough(const char* reason);
  bool at_clean_end(std::string& why) const;

  ParserOptions opt_;
  uint32_t tp_;
  uint8_t state_;
  uint8_t return_state_ = 0;  // state to go back to after an opaque run
  OpaqueOf opaque_of_ = OpaqueOf::kNone;
  uint64_t opaque_left_ = 0;

  // Input: carry_[carry_pos_..] precedes in_[in_pos_..] in the stream.
  std::vector<uint8_t> carry_;
  size_t carry_pos_ = 0;
  const uint8_t* in_ = nullptr;
  size_t in_len_ = 0;
  size_t in_pos_ = 0;
  size_t need_ = 0;  // total bytes the pending item needs, counted from its first byte
  bool finished_ = false;

  uint64_t offset_ = 0;
  int64_t passthrough_from_ = -1;
  const char* passthrough_reason_ = "";
  uint64_t sections_seen_[5] = {0, 0, 0, 0, 0};
  ParseError error_;

  bool magic_ok_ = false;
  bool recovery_ = false;
  bool header_done_ = false;
  bool seen_eof_ = false;
  bool truncated_ = false;
  bool footers_seen_ = false;
  bool expect_footer_ = false;
  bool in_package_ = false;
  uint64_t package_end_ = 0;
  int64_t ram_id_ = -1;
  bool advise_seen_ = false;
  uint64_t advise_summary_ = 0;
  bool x_ignore_shared_ = false;
  std::string machine_;
  std::vector<RamBlockInfo> blocks_;
  // Current block for CONTINUE (per channel: this parser sees one channel).
  char cur_block_[256];
  uint8_t cur_block_len_ = 0;
  bool have_cur_block_ = false;
  int cur_block_index_ = -1;  // index into blocks_, -1 when unknown
  bool mf_init_done_ = false;
};

}  // namespace ferry::qemu
