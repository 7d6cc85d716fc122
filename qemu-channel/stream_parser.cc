// qemu-channel/stream_parser.cc — see stream_parser.h. Section numbers (§n) refer to
// shared/docs/qemu-migration-stream.md.
//
// Structure: next() owns the input bookkeeping (carry buffer vs. pushed span) and calls step()
// on one contiguous window. step() either produces one item and says how many bytes it used,
// or says how many bytes (from the window start) it needs before it can. step() only commits
// parser state when it returns an item or switches state (kAgain), so a retry after more input
// is exact; that is what makes every split of the input yield the same items.
#include "qemu-channel/stream_parser.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "common/endian.h"

namespace ferry::qemu {

namespace {

constexpr auto be16 = load_be16;
constexpr auto be32 = load_be32;
constexpr auto be64 = load_be64;

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// Printable, bounded rendering of a name taken from hostile input.
std::string printable(std::string_view s) {
  std::string r;
  for (char c : s.substr(0, 64)) r += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > 64) r += "...";
  return r;
}

// Hostile-input bounds. Real streams are far below each of them.
constexpr uint32_t kMaxMachineName = 4096;
constexpr uint32_t kMaxCapabilities = 256;
constexpr size_t kMaxRamBlocks = 1024;
constexpr uint32_t kMaxMultifdPagesAlloc = 65536;
constexpr uint32_t kMaxMultifdPacketData = 64u << 20;
constexpr uint32_t kMaxRpPayload = 512;  // the source reads at most 512 payload bytes (§6)
constexpr uint64_t kRecvBitmapEndMark = 0x0123456789ABCDEFull;

// zlib's compressBound(TP): the destination rejects longer COMPRESS payloads.
inline uint32_t compress_bound(uint32_t tp) {
  return tp + (tp >> 12) + (tp >> 14) + (tp >> 25) + 13;
}

}  // namespace

enum class StreamParser::State : uint8_t {
  kMainHeader,
  kMainAfterHeader,
  kMainTop,
  kRam,
  kOpaque,
  kPassthrough,
  kMultifdInit,
  kMultifdPacket,
  kRp,
  kRpBitmapEnd,
};

#define ST(s) static_cast<uint8_t>(State::s)
#define NEED(k)               \
  do {                        \
    if (n < (k)) {            \
      need = (k);             \
      return Step::kNeedMore; \
    }                         \
  } while (0)

ChannelRole guess_channel_role(std::span<const uint8_t> first) {
  const uint8_t* p = first.data();
  if (!first.empty() && p[0] == 0x08) return ChannelRole::kMain;
  if (first.size() >= 4) {
    uint32_t w = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    if (w == kQemuVmFileMagic) return ChannelRole::kMain;
    if (w == kMultifdMagic) return ChannelRole::kMultifd;
    uint16_t type = static_cast<uint16_t>(w >> 16), len = static_cast<uint16_t>(w);
    if (type >= 1 && type <= 7 && len <= 512) return ChannelRole::kReturnPath;
  }
  return ChannelRole::kPreempt;
}

const char* channel_role_name(ChannelRole role) {
  switch (role) {
    case ChannelRole::kMain:
      return "main";
    case ChannelRole::kMultifd:
      return "multifd";
    case ChannelRole::kPreempt:
      return "preempt";
    case ChannelRole::kReturnPath:
      return "return-path";
  }
  return "?";
}

const char* item_kind_name(ItemKind kind) {
  switch (kind) {
    case ItemKind::kHeader:
      return "header";
    case ItemKind::kConfiguration:
      return "configuration";
    case ItemKind::kSectionHeader:
      return "section-header";
    case ItemKind::kRamBlockList:
      return "ram-block-list";
    case ItemKind::kRamRecord:
      return "ram-record";
    case ItemKind::kRamEos:
      return "ram-eos";
    case ItemKind::kMultifdFlush:
      return "multifd-flush";
    case ItemKind::kFooter:
      return "footer";
    case ItemKind::kCommand:
      return "command";
    case ItemKind::kPackagedEnd:
      return "packaged-end";
    case ItemKind::kEof:
      return "eof";
    case ItemKind::kVmdesc:
      return "vmdesc";
    case ItemKind::kOpaque:
      return "opaque";
    case ItemKind::kPassthrough:
      return "passthrough";
    case ItemKind::kRpMessage:
      return "rp-message";
    case ItemKind::kRpBitmapEnd:
      return "rp-bitmap-end";
    case ItemKind::kMultifdInit:
      return "multifd-init";
    case ItemKind::kMultifdPacket:
      return "multifd-packet";
  }
  return "?";
}

const char* command_name(uint16_t cmd) {
  static const char* const kNames[] = {
      "INVALID",      "OPEN_RETURN_PATH",     "PING",     "POSTCOPY_ADVISE", "POSTCOPY_LISTEN",
      "POSTCOPY_RUN", "POSTCOPY_RAM_DISCARD", "PACKAGED", "ENABLE_COLO",     "POSTCOPY_RESUME",
      "RECV_BITMAP",  "SWITCHOVER_START"};
  return cmd < sizeof(kNames) / sizeof(kNames[0]) ? kNames[cmd] : "UNKNOWN";
}

const char* rp_type_name(uint16_t type) {
  static const char* const kNames[] = {"INVALID",   "SHUT",        "PONG",       "REQ_PAGES_ID",
                                       "REQ_PAGES", "RECV_BITMAP", "RESUME_ACK", "SWITCHOVER_ACK"};
  return type < sizeof(kNames) / sizeof(kNames[0]) ? kNames[type] : "UNKNOWN";
}

uint64_t MultifdPacketInfo::page_offset(uint32_t i) const { return be64(offsets.data() + 8 * i); }

StreamParser::StreamParser(ParserOptions options) : opt_(options), tp_(options.target_page_size) {
  switch (opt_.role) {
    case ChannelRole::kMain:
      state_ = ST(kMainHeader);
      break;
    case ChannelRole::kMultifd:
      state_ = ST(kMultifdInit);
      break;
    case ChannelRole::kPreempt:
      state_ = ST(kRam);
      break;
    case ChannelRole::kReturnPath:
      state_ = ST(kRp);
      break;
  }
  if (tp_ < 1024 || (tp_ & (tp_ - 1)) != 0) tp_ = 4096;
  ram_id_ = opt_.ram_section_id;
}

void StreamParser::push(std::span<const uint8_t> bytes) {
  if (finished_) return;
  if (in_pos_ < in_len_) {
    // The caller pushed before draining: keep the unconsumed bytes in order.
    carry_.insert(carry_.end(), in_ + in_pos_, in_ + in_len_);
  }
  in_ = bytes.data();
  in_len_ = bytes.size();
  in_pos_ = 0;
}

void StreamParser::finish() { finished_ = true; }

StreamParser::Step StreamParser::fail(uint64_t at, std::string message) {
  if (error_.message.empty()) {
    error_.offset = at;
    error_.message = std::move(message);
  }
  return Step::kError;
}

void StreamParser::enter_passthrough(const char* reason) {
  if (in_package_) {
    // Inside PACKAGED the blob length is known: stay exact and resume after it (§4).
    return_state_ = ST(kMainTop);
    opaque_of_ = OpaqueOf::kPackagedRest;
    opaque_left_ = package_end_ - offset_;
    state_ = ST(kOpaque);
    return;
  }
  passthrough_from_ = static_cast<int64_t>(offset_);
  passthrough_reason_ = reason;
  state_ = ST(kPassthrough);
}

StreamParser::Next StreamParser::next(Item& out) {
  if (!error_.message.empty()) return Next::kError;
  if (carry_pos_ > 0) {
    carry_.erase(carry_.begin(), carry_.begin() + static_cast<std::ptrdiff_t>(carry_pos_));
    carry_pos_ = 0;
  }
  for (;;) {
    const bool from_carry = !carry_.empty();
    const uint8_t* p;
    size_t n;
    if (from_carry) {
      if (need_ > carry_.size()) {
        size_t take = std::min(need_ - carry_.size(), in_len_ - in_pos_);
        carry_.insert(carry_.end(), in_ + in_pos_, in_ + in_pos_ + take);
        in_pos_ += take;
        if (carry_.size() < need_) break;  // still short: wait for input
      }
      p = carry_.data();
      n = carry_.size();
    } else {
      p = in_ + in_pos_;
      n = in_len_ - in_pos_;
    }
    size_t used = 0;
    size_t need = 0;
    const bool was_in_package = in_package_;
    Step s = step(p, n, out, used, need);
    if (s == Step::kItem) {
      out.stream_offset = offset_;
      out.raw = std::span<const uint8_t>(p, used);
      out.in_package = was_in_package;
      offset_ += used;
      need_ = 0;
      if (from_carry) {
        carry_pos_ = used;
      } else {
        in_pos_ += used;
      }
      return Next::kItem;
    }
    if (s == Step::kAgain) continue;
    if (s == Step::kError) return Next::kError;
    // kNeedMore: the pending item starts at p and needs `need` bytes.
    if (need <= n) {
      // A step that asks for bytes it already has would spin forever; never hang on input.
      fail(offset_, "internal error: the parser made no progress (please report this input)");
      return Next::kError;
    }
    need_ = need;
    if (!from_carry) {
      if (n > 0) carry_.assign(p, p + n);
      in_pos_ = in_len_;
      if (n == 0) break;
      continue;  // re-enters through the carry branch, which waits for input
    }
    if (in_pos_ < in_len_) continue;  // top the carry up from the pushed span
    break;
  }
  if (!finished_) return Next::kNeedMore;
  // End of input.
  size_t pending = carry_.size() + (in_len_ - in_pos_);
  if (pending > 0) {
    truncated_ = true;
    fail(offset_, fmt("the %s stream ends inside an item at offset %llu: %zu byte(s) present, "
                      "at least %zu needed; the capture is truncated",
                      channel_role_name(opt_.role), static_cast<unsigned long long>(offset_),
                      pending, need_));
    return Next::kError;
  }
  std::string why;
  if (!at_clean_end(why)) {
    truncated_ = true;
    fail(offset_,
         fmt("the %s stream ends at offset %llu %s; the capture is truncated",
             channel_role_name(opt_.role), static_cast<unsigned long long>(offset_), why.c_str()));
    return Next::kError;
  }
  return Next::kEnd;
}

bool StreamParser::at_clean_end(std::string& why) const {
  const State s = static_cast<State>(state_);
  if (s == State::kPassthrough) return true;
  if (s == State::kOpaque) {
    why =
        fmt("with %llu byte(s) of %s still missing", static_cast<unsigned long long>(opaque_left_),
            opaque_of_ == OpaqueOf::kVmdescJson   ? "vmdesc JSON"
            : opaque_of_ == OpaqueOf::kRecvBitmap ? "RECV_BITMAP bitmap"
                                                  : "PACKAGED blob");
    return false;
  }
  if (in_package_) {
    why = "inside a PACKAGED blob";
    return false;
  }
  switch (opt_.role) {
    case ChannelRole::kMain:
      if (s == State::kMainHeader) {
        why = "before the QEVM header";
        return false;
      }
      if (s == State::kRam) {
        why = "inside a ram section (no EOS)";
        return false;
      }
      if (!seen_eof_) {
        why = "before QEMU_VM_EOF";
        return false;
      }
      return true;
    case ChannelRole::kMultifd:
      if (s == State::kMultifdInit) {
        why = "before the 64-byte multifd handshake";
        return false;
      }
      return true;
    case ChannelRole::kPreempt:
      return true;
    case ChannelRole::kReturnPath:
      if (s == State::kRpBitmapEnd) {
        why = "before the RECV_BITMAP end mark";
        return false;
      }
      return true;
  }
  return true;
}

StreamParser::Step StreamParser::step(const uint8_t* p, size_t n, Item& out, size_t& used,
                                      size_t& need) {
  out.opaque_of = OpaqueOf::kNone;
  if (!in_package_) return step_state(p, n, out, used, need);
  // Inside PACKAGED: the window ends at the blob's end, and no item may cross it.
  const uint64_t left = package_end_ - offset_;
  if (left == 0 && state_ == ST(kMainTop)) {
    in_package_ = false;
    out.kind = ItemKind::kPackagedEnd;
    used = 0;
    return Step::kItem;
  }
  Step s = step_state(p, std::min<uint64_t>(n, left), out, used, need);
  if (s == Step::kNeedMore && need > left) {
    return fail(offset_, fmt("an item at offset %llu runs past the end of the PACKAGED blob "
                             "(which ends at offset %llu)",
                             static_cast<unsigned long long>(offset_),
                             static_cast<unsigned long long>(package_end_)));
  }
  return s;
}

StreamParser::Step StreamParser::step_state(const uint8_t* p, size_t n, Item& out, size_t& used,
                                            size_t& need) {
  switch (static_cast<State>(state_)) {
    case State::kMainHeader: {
      NEED(1);
      if (p[0] == 0x08) {
        // Postcopy recovery connection: no header, commands first (§6).
        recovery_ = true;
        header_done_ = true;
        state_ = ST(kMainTop);
        return Step::kAgain;
      }
      NEED(8);
      uint32_t magic = be32(p);
      uint32_t version = be32(p + 4);
      if (magic != kQemuVmFileMagic) {
        return fail(offset_, fmt("main stream does not start with \"QEVM\" (found 0x%08x) nor with "
                                 "a command (0x08); it is not a QEMU migration stream",
                                 magic));
      }
      if (version != 3) {
        return fail(offset_ + 4,
                    fmt("stream format version %u is not supported (QEMU writes 3)", version));
      }
      magic_ok_ = true;
      header_done_ = true;
      out.kind = ItemKind::kHeader;
      used = 8;
      state_ = ST(kMainAfterHeader);
      return Step::kItem;
    }
    case State::kMainAfterHeader:
      NEED(1);
      if (p[0] == 0x07) return step_config(p, n, out, used, need);
      state_ = ST(kMainTop);
      return Step::kAgain;
    case State::kMainTop:
      return step_main_top(p, n, out, used, need);
    case State::kRam:
      return step_ram(p, n, out, used, need);
    case State::kOpaque: {
      if (opaque_left_ == 0) {
        state_ = return_state_;
        return Step::kAgain;
      }
      NEED(1);
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, opaque_left_));
      out.kind = ItemKind::kOpaque;
      out.opaque_of = opaque_of_;
      used = k;
      opaque_left_ -= k;
      if (opaque_left_ == 0) state_ = return_state_;
      return Step::kItem;
    }
    case State::kPassthrough:
      NEED(1);
      out.kind = ItemKind::kPassthrough;
      used = n;
      return Step::kItem;
    case State::kMultifdInit:
    case State::kMultifdPacket:
      return step_multifd(p, n, out, used, need);
    case State::kRp:
    case State::kRpBitmapEnd:
      return step_rp(p, n, out, used, need);
  }
  return fail(offset_, "internal error: bad parser state");
}

StreamParser::Step StreamParser::step_config(const uint8_t* p, size_t n, Item& out, size_t& used,
                                             size_t& need) {
  // 0x07 be32 len machine { 0x05 str8 name be32 version payload }*   (§1)
  NEED(5);
  uint32_t mlen = be32(p + 1);
  if (mlen > kMaxMachineName) {
    return fail(offset_ + 1, fmt("CONFIGURATION machine name length %u is implausible (max %u)",
                                 mlen, kMaxMachineName));
  }
  size_t pos = 5 + size_t{mlen};
  NEED(pos + 1);
  ConfigInfo ci{};
  ci.machine = std::string_view(reinterpret_cast<const char*>(p + 5), mlen);
  bool unknown = false;
  while (true) {
    NEED(pos + 1);
    if (p[pos] != 0x05) break;
    NEED(pos + 2);
    size_t nlen = p[pos + 1];
    NEED(pos + 2 + nlen + 4);
    std::string_view name(reinterpret_cast<const char*>(p + pos + 2), nlen);
    size_t body = pos + 2 + nlen + 4;
    if (name == "configuration/target-page-bits") {
      NEED(body + 4);
      uint32_t bits = be32(p + body);
      if (bits < 10 || bits > 16) {
        return fail(offset_ + body, fmt("configuration/target-page-bits %u is out of range "
                                        "(10..16)",
                                        bits));
      }
      ci.target_page_bits = bits;
      pos = body + 4;
    } else if (name == "configuration/capabilities") {
      NEED(body + 4);
      uint32_t count = be32(p + body);
      if (count > kMaxCapabilities) {
        return fail(offset_ + body,
                    fmt("configuration/capabilities count %u is implausible", count));
      }
      size_t q = body + 4;
      for (uint32_t i = 0; i < count; ++i) {
        NEED(q + 1);
        size_t clen = p[q];
        NEED(q + 1 + clen);
        std::string_view cap(reinterpret_cast<const char*>(p + q + 1), clen);
        if (cap == "x-ignore-shared") ci.x_ignore_shared = true;
        if (cap == "mapped-ram") ci.mapped_ram = true;
        q += 1 + clen;
      }
      pos = q;
    } else if (name == "configuration/uuid") {
      NEED(body + 16);
      ci.has_uuid = true;
      pos = body + 16;
    } else {
      // Its payload length is unknowable: end the item here, pass the rest through (§1).
      unknown = true;
      break;
    }
  }
  out.kind = ItemKind::kConfiguration;
  out.config = ci;
  used = pos;
  machine_.assign(ci.machine);
  x_ignore_shared_ = ci.x_ignore_shared;
  if (ci.target_page_bits != 0) tp_ = 1u << ci.target_page_bits;
  if (unknown) {
    // The passthrough starts after this item; offset_ is advanced by next().
    passthrough_from_ = static_cast<int64_t>(offset_ + pos);
    passthrough_reason_ = "an unknown CONFIGURATION subsection";
    state_ = ST(kPassthrough);
  } else {
    state_ = ST(kMainTop);
  }
  return Step::kItem;
}

StreamParser::Step StreamParser::step_main_top(const uint8_t* p, size_t n, Item& out, size_t& used,
                                               size_t& need) {
  NEED(1);
  const uint8_t t = p[0];
  if (t != 0x7E) expect_footer_ = false;
  switch (t) {
    case 0x00:
      out.kind = ItemKind::kEof;
      used = 1;
      seen_eof_ = true;
      return Step::kItem;
    case kSectionStart:
    case kSectionFull: {
      NEED(6);
      size_t idlen = p[5];
      NEED(6 + idlen + 8);
      std::string_view idstr(reinterpret_cast<const char*>(p + 6), idlen);
      uint32_t id = be32(p + 1);
      uint32_t version = be32(p + 6 + idlen + 4);
      ++sections_seen_[t];
      if (t == kSectionFull || idstr != "ram" || version != 4 || in_package_) {
        // Device state or a foreign iterable: no length on the wire (§4).
        enter_passthrough(t == kSectionFull ? "a FULL (device state) section"
                          : idstr != "ram"  ? "a START of a section other than \"ram\""
                                            : "a \"ram\" START with a version other than 4");
        return Step::kAgain;
      }
      if (ram_id_ >= 0 && !recovery_ && static_cast<uint32_t>(ram_id_) != id) {
        return fail(offset_, fmt("a second \"ram\" START with section id %u (the first had %lld)",
                                 id, static_cast<long long>(ram_id_)));
      }
      ram_id_ = id;
      out.kind = ItemKind::kSectionHeader;
      out.section = SectionInfo{t, id, idstr, be32(p + 6 + idlen), version};
      used = 6 + idlen + 8;
      state_ = ST(kRam);
      return Step::kItem;
    }
    case kSectionPart:
    case kSectionEnd: {
      NEED(5);
      uint32_t id = be32(p + 1);
      if (ram_id_ < 0 && recovery_) ram_id_ = id;  // see ParserOptions::ram_section_id
      ++sections_seen_[t];
      if (ram_id_ < 0 || static_cast<uint32_t>(ram_id_) != id) {
        enter_passthrough("a PART/END of a section other than \"ram\"");
        return Step::kAgain;
      }
      out.kind = ItemKind::kSectionHeader;
      out.section = SectionInfo{t, id, {}, 0, 0};
      used = 5;
      state_ = ST(kRam);
      return Step::kItem;
    }
    case 0x05:
      return fail(offset_,
                  "a subsection marker (0x05) appears at top level, where QEMU never "
                  "writes one; the stream is corrupt");
    case 0x06: {
      NEED(5);
      uint32_t len = be32(p + 1);
      out.kind = ItemKind::kVmdesc;
      out.vmdesc_len = len;
      used = 5;
      opaque_of_ = OpaqueOf::kVmdescJson;
      opaque_left_ = len;
      return_state_ = ST(kMainTop);
      state_ = ST(kOpaque);
      return Step::kItem;
    }
    case 0x07:
      return fail(offset_,
                  "CONFIGURATION (0x07) appears after other items; QEMU writes it only "
                  "directly after the header");
    case 0x08:
      return step_command(p, n, out, used, need);
    case 0x7E: {
      if (!expect_footer_) {
        return fail(offset_, "a section footer (0x7E) appears where no ram section just ended");
      }
      NEED(5);
      uint32_t id = be32(p + 1);
      if (static_cast<int64_t>(id) != ram_id_) {
        return fail(offset_, fmt("the section footer names section %u but the ram section is %lld",
                                 id, static_cast<long long>(ram_id_)));
      }
      out.kind = ItemKind::kFooter;
      out.section = SectionInfo{0x7E, id, {}, 0, 0};
      used = 5;
      expect_footer_ = false;
      footers_seen_ = true;
      return Step::kItem;
    }
    default:
      return fail(offset_, fmt("unknown top-level item type 0x%02x", t));
  }
}

StreamParser::Step StreamParser::step_command(const uint8_t* p, size_t n, Item& out, size_t& used,
                                              size_t& need) {
  // 0x08 be16 cmd be16 len payload[len]   (§5)
  NEED(5);
  const uint16_t cmd = be16(p + 1);
  const uint16_t len = be16(p + 3);
  NEED(5 + size_t{len});
  const uint8_t* pl = p + 5;
  CommandInfo ci{};
  ci.cmd = cmd;
  ci.len = len;
  ci.payload = std::span<const uint8_t>(pl, len);
  auto bad_len = [&](const char* expect) {
    return fail(offset_,
                fmt("command %s has length %u, QEMU requires %s", command_name(cmd), len, expect));
  };
  switch (cmd) {
    case kCmdInvalid:
      return fail(offset_, "command 0 (INVALID) is rejected by every QEMU");
    case kCmdOpenReturnPath:
    case kCmdPostcopyListen:
    case kCmdPostcopyRun:
    case kCmdEnableColo:
    case kCmdPostcopyResume:
    case kCmdSwitchoverStart:
      if (len != 0) return bad_len("0");
      break;
    case kCmdPing:
      if (len != 4) return bad_len("4");
      ci.ping_value = be32(pl);
      break;
    case kCmdPostcopyAdvise:
      if (len != 0 && len != 16) return bad_len("0 or 16");
      if (len == 16) {
        ci.advise_pagesize_summary = be64(pl);
        ci.advise_target_page_size = be64(pl + 8);
      }
      break;
    case kCmdPostcopyRamDiscard: {
      // u8 version(0) str8 block u8 0 N*(be64 start be64 length)
      if (len < 3) return bad_len("at least 3");
      if (pl[0] != 0) {
        return fail(offset_ + 5,
                    fmt("POSTCOPY_RAM_DISCARD version %u is unknown (QEMU writes 0)", pl[0]));
      }
      size_t blen = pl[1];
      if (2 + blen + 1 > len || (len - 3 - blen) % 16 != 0) {
        return fail(offset_, fmt("POSTCOPY_RAM_DISCARD length %u does not fit a %zu-byte block "
                                 "name plus 16-byte ranges",
                                 len, blen));
      }
      ci.block = std::string_view(reinterpret_cast<const char*>(pl + 2), blen);
      ci.discard_ranges = static_cast<uint32_t>((len - 3 - blen) / 16);
      break;
    }
    case kCmdPackaged:
      if (len != 4) return bad_len("4");
      if (in_package_) {
        return fail(offset_, "a PACKAGED command inside a PACKAGED blob; QEMU never nests them");
      }
      ci.packaged_len = be32(pl);
      break;
    case kCmdRecvBitmap:
      if (len < 1 || size_t{pl[0]} + 1 != len) return bad_len("1 + the block name length");
      ci.block = std::string_view(reinterpret_cast<const char*>(pl + 1), pl[0]);
      break;
    default:
      break;  // unknown to 10.0 but length-delimited: forward it
  }
  if (cmd == kCmdPostcopyAdvise) {
    advise_seen_ = true;
    advise_summary_ = len == 16 ? ci.advise_pagesize_summary : 0;
  }
  out.kind = ItemKind::kCommand;
  out.command = ci;
  used = 5 + len;
  if (cmd == kCmdPackaged) {
    in_package_ = true;
    package_end_ = offset_ + used + ci.packaged_len;
  }
  return Step::kItem;
}

StreamParser::Step StreamParser::step_block_list(const uint8_t* p, size_t n, Item& out,
                                                 size_t& used, size_t& need) {
  // be64 total|MEM_SIZE { str8 idstr be64 used_length [be64 page_size] [be64 mr_addr] }*  (§3.3)
  const uint64_t total = be64(p) & ~uint64_t{tp_ - 1};
  const bool page_sizes =
      advise_seen_ && advise_summary_ != 0 && advise_summary_ != opt_.host_page_size;
  std::vector<RamBlockInfo> blocks;
  uint64_t sum = 0;
  size_t pos = 8;
  while (sum < total) {
    if (blocks.size() >= kMaxRamBlocks) {
      return fail(offset_, fmt("the RAMBlock list has more than %zu blocks", kMaxRamBlocks));
    }
    NEED(pos + 1);
    size_t len = p[pos];
    NEED(pos + 1 + len + 8);
    RamBlockInfo b;
    b.name.assign(reinterpret_cast<const char*>(p + pos + 1), len);
    b.used_length = be64(p + pos + 1 + len);
    pos += 1 + len + 8;
    if (len == 0) return fail(offset_ + pos, "a RAMBlock in the list has an empty name");
    if (b.used_length > total - sum) {
      return fail(offset_ + pos - 8,
                  fmt("RAMBlock '%s' length %llu exceeds the MEM_SIZE total %llu",
                      printable(b.name).c_str(), static_cast<unsigned long long>(b.used_length),
                      static_cast<unsigned long long>(total)));
    }
    sum += b.used_length;
    if (page_sizes) {
      bool has_ps;
      if (sum < total) {
        NEED(pos + 1);
        has_ps = p[pos] == 0;  // a following name's length byte is never 0
      } else {
        NEED(pos + 8);
        has_ps = be64(p + pos) != kRamFlagEos;
      }
      if (has_ps) {
        NEED(pos + 8);
        b.page_size = be64(p + pos);
        pos += 8;
      }
    }
    if (x_ignore_shared_) {
      NEED(pos + 8);
      b.mr_addr = be64(p + pos);
      b.has_mr_addr = true;
      pos += 8;
    }
    blocks.push_back(std::move(b));
  }
  blocks_ = std::move(blocks);
  out.kind = ItemKind::kRamBlockList;
  used = pos;
  return Step::kItem;
}

StreamParser::Step StreamParser::step_ram(const uint8_t* p, size_t n, Item& out, size_t& used,
                                          size_t& need) {
  NEED(8);
  const uint64_t w = be64(p);
  const uint32_t flags = static_cast<uint32_t>(w & (tp_ - 1));
  const uint64_t off = w & ~uint64_t{tp_ - 1};
  const uint32_t base = flags & ~kRamFlagContinue;
  const bool cont = (flags & kRamFlagContinue) != 0;
  size_t pos = 8;
  RamRecordType type;
  switch (base) {
    case kRamFlagPage:
      type = RamRecordType::kPage;
      break;
    case kRamFlagZero:
      type = RamRecordType::kZero;
      break;
    case kRamFlagXbzrle:
      type = RamRecordType::kXbzrle;
      break;
    case kRamFlagCompressPage:
      type = RamRecordType::kCompressed;
      break;
    case kRamFlagEos:
      if (cont) break;
      out.kind = ItemKind::kRamEos;
      used = 8;
      if (opt_.role == ChannelRole::kMain) {
        expect_footer_ = true;
        state_ = ST(kMainTop);
      }
      return Step::kItem;
    case kRamFlagMultifdFlush:
      if (cont) break;
      out.kind = ItemKind::kMultifdFlush;
      used = 8;
      return Step::kItem;
    case kRamFlagMemSize:
      if (cont || opt_.role != ChannelRole::kMain) break;
      return step_block_list(p, n, out, used, need);
    default:
      break;
  }
  if (base != kRamFlagPage && base != kRamFlagZero && base != kRamFlagXbzrle &&
      base != kRamFlagCompressPage) {
    if (base & kRamFlagHook) {
      return fail(offset_, "RAM record with the HOOK flag (RDMA migration) is not supported");
    }
    return fail(offset_, fmt("RAM record word 0x%016llx has an invalid flag combination 0x%03x",
                             static_cast<unsigned long long>(w), flags));
  }
  std::string_view block;
  int block_index = cur_block_index_;
  if (!cont) {
    NEED(9);
    size_t len = p[8];
    if (len == 0) return fail(offset_ + 8, "RAM record has an empty block name");
    NEED(9 + len);
    block = std::string_view(reinterpret_cast<const char*>(p + 9), len);
    pos = 9 + len;
    if (!blocks_.empty()) {
      block_index = -1;
      for (size_t i = 0; i < blocks_.size(); ++i) {
        if (blocks_[i].name == block) {
          block_index = static_cast<int>(i);
          break;
        }
      }
      if (block_index < 0) {
        return fail(offset_ + 8, fmt("RAM record names block '%s', which is not in the RAMBlock "
                                     "list",
                                     printable(block).c_str()));
      }
    }
  } else {
    if (!have_cur_block_) {
      return fail(offset_, "RAM record has CONTINUE but no earlier record named a block");
    }
    block = std::string_view(cur_block_, cur_block_len_);
  }
  if (block_index >= 0 &&
      (off >= blocks_[block_index].used_length || blocks_[block_index].used_length - off < tp_)) {
    return fail(offset_, fmt("RAM record offset 0x%llx is beyond the end of block '%s' (%llu "
                             "bytes)",
                             static_cast<unsigned long long>(off), printable(block).c_str(),
                             static_cast<unsigned long long>(blocks_[block_index].used_length)));
  }
  RamRecord& r = out.ram;
  r.fill = 0;
  switch (type) {
    case RamRecordType::kZero:
      NEED(pos + 1);
      r.fill = p[pos];
      r.payload = std::span<const uint8_t>(p + pos, 1);
      pos += 1;
      break;
    case RamRecordType::kPage:
      NEED(pos + tp_);
      r.payload = std::span<const uint8_t>(p + pos, tp_);
      pos += tp_;
      break;
    case RamRecordType::kXbzrle: {
      NEED(pos + 3);
      if (p[pos] != 0x01) {
        return fail(offset_ + pos,
                    fmt("XBZRLE record has encoding byte 0x%02x (QEMU writes 0x01)", p[pos]));
      }
      uint32_t len = be16(p + pos + 1);
      if (len > tp_) {
        return fail(offset_ + pos + 1,
                    fmt("XBZRLE record length %u exceeds the page size %u", len, tp_));
      }
      NEED(pos + 3 + len);
      r.payload = std::span<const uint8_t>(p + pos + 3, len);
      pos += 3 + len;
      break;
    }
    case RamRecordType::kCompressed: {
      NEED(pos + 4);
      uint32_t len = be32(p + pos);
      if (len > compress_bound(tp_)) {
        return fail(offset_ + pos,
                    fmt("COMPRESS_PAGE record length %u exceeds compressBound(%u)", len, tp_));
      }
      NEED(pos + 4 + len);
      r.payload = std::span<const uint8_t>(p + pos + 4, len);
      pos += 4 + len;
      break;
    }
  }
  // Commit.
  if (!cont) {
    if (block.size() != cur_block_len_ ||
        std::memcmp(cur_block_, block.data(), block.size()) != 0) {
      std::memcpy(cur_block_, block.data(), block.size());
      cur_block_len_ = static_cast<uint8_t>(block.size());
    }
    have_cur_block_ = true;
    cur_block_index_ = block_index;
  }
  out.kind = ItemKind::kRamRecord;
  r.type = type;
  r.continued = cont;
  r.flags = flags;
  r.offset = off;
  r.block = block;
  used = pos;
  return Step::kItem;
}

StreamParser::Step StreamParser::step_multifd(const uint8_t* p, size_t n, Item& out, size_t& used,
                                              size_t& need) {
  if (state_ == ST(kMultifdInit)) {
    // be32 magic be32 version u8 uuid[16] u8 id u8 unused1[7] be64 unused2[4]   (§7)
    NEED(kMultifdInitSize);
    if (be32(p) != kMultifdMagic) {
      return fail(offset_, fmt("multifd channel does not start with magic 0x11223344 (found "
                               "0x%08x)",
                               be32(p)));
    }
    uint32_t version = be32(p + 4);
    if (version != 1) {
      return fail(offset_ + 4,
                  fmt("multifd handshake version %u is not supported (QEMU writes 1)", version));
    }
    out.kind = ItemKind::kMultifdInit;
    out.multifd_init = MultifdInitInfo{version, std::span<const uint8_t>(p + 8, 16), p[24]};
    used = kMultifdInitSize;
    mf_init_done_ = true;
    state_ = ST(kMultifdPacket);
    return Step::kItem;
  }
  NEED(kMultifdPacketHeaderSize);
  if (be32(p) != kMultifdMagic) {
    return fail(offset_, fmt("multifd packet magic is 0x%08x, expected 0x11223344", be32(p)));
  }
  if (be32(p + 4) != 1) {
    return fail(offset_ + 4, fmt("multifd packet version %u is not supported", be32(p + 4)));
  }
  MultifdPacketInfo& m = out.multifd;
  m.flags = be32(p + 8);
  if (m.flags & 0x40) {
    // DEVICE_STATE (10.0, vfio): a different layout; forward verbatim from here.
    enter_passthrough("a multifd DEVICE_STATE packet");
    return Step::kAgain;
  }
  m.pages_alloc = be32(p + 12);
  m.normal_pages = be32(p + 16);
  m.next_packet_size = be32(p + 20);
  m.packet_num = be64(p + 24);
  m.zero_pages = be32(p + 32);
  if (m.pages_alloc > kMaxMultifdPagesAlloc) {
    return fail(offset_ + 12, fmt("multifd packet pages_alloc %u is implausible", m.pages_alloc));
  }
  if (uint64_t{m.normal_pages} + m.zero_pages > m.pages_alloc) {
    return fail(offset_ + 16, fmt("multifd packet has %u normal + %u zero pages but only %u slots",
                                  m.normal_pages, m.zero_pages, m.pages_alloc));
  }
  m.sync = (m.flags & 1) != 0;
  m.compression = m.flags & 0x3E;
  const size_t hdr = kMultifdPacketHeaderSize + 8 * size_t{m.pages_alloc};
  uint64_t data = m.compression == 0 ? uint64_t{m.normal_pages} * tp_ : m.next_packet_size;
  if (data > kMaxMultifdPacketData) {
    return fail(offset_ + 20, fmt("multifd packet data length %llu is implausible",
                                  static_cast<unsigned long long>(data)));
  }
  NEED(hdr + data);
  const char* name = reinterpret_cast<const char*>(p + 64);
  m.block = std::string_view(name, strnlen(name, 256));
  m.header = std::span<const uint8_t>(p, hdr);
  m.offsets = std::span<const uint8_t>(p + kMultifdPacketHeaderSize, 8 * size_t{m.pages_alloc});
  m.data = std::span<const uint8_t>(p + hdr, static_cast<size_t>(data));
  out.kind = ItemKind::kMultifdPacket;
  used = hdr + static_cast<size_t>(data);
  return Step::kItem;
}

StreamParser::Step StreamParser::step_rp(const uint8_t* p, size_t n, Item& out, size_t& used,
                                         size_t& need) {
  if (state_ == ST(kRpBitmapEnd)) {
    NEED(8);
    if (be64(p) != kRecvBitmapEndMark) {
      return fail(offset_, "RECV_BITMAP bitmap is not followed by its end mark 0x0123456789ABCDEF");
    }
    out.kind = ItemKind::kRpBitmapEnd;
    used = 8;
    state_ = ST(kRp);
    return Step::kItem;
  }
  // be16 type be16 len payload[len]   (§6)
  NEED(4);
  const uint16_t type = be16(p);
  const uint16_t len = be16(p + 2);
  if (len > kMaxRpPayload) {
    return fail(offset_, fmt("return-path message %s has length %u; the source accepts at most %u",
                             rp_type_name(type), len, kMaxRpPayload));
  }
  NEED(4 + size_t{len});
  const uint8_t* pl = p + 4;
  RpInfo ri{};
  ri.type = type;
  ri.len = len;
  ri.payload = std::span<const uint8_t>(pl, len);
  auto bad_len = [&](const char* expect) {
    return fail(offset_, fmt("return-path message %s has length %u, QEMU requires %s",
                             rp_type_name(type), len, expect));
  };
  size_t total = 4 + size_t{len};
  switch (type) {
    case kRpShut:
    case kRpPong:
    case kRpResumeAck:
      if (len != 4) return bad_len("4");
      ri.value = be32(pl);
      break;
    case kRpReqPages:
      if (len != 12) return bad_len("12");
      ri.start = be64(pl);
      ri.length = be32(pl + 8);
      break;
    case kRpReqPagesId:
      if (len < 14 || size_t{pl[12]} + 13 != len) return bad_len("13 + the block name length");
      ri.start = be64(pl);
      ri.length = be32(pl + 8);
      ri.block = std::string_view(reinterpret_cast<const char*>(pl + 13), pl[12]);
      break;
    case kRpRecvBitmap:
      if (len < 1 || size_t{pl[0]} + 1 != len) return bad_len("1 + the block name length");
      ri.block = std::string_view(reinterpret_cast<const char*>(pl + 1), pl[0]);
      NEED(total + 8);
      ri.bitmap_size = be64(p + total);
      total += 8;
      break;
    case kRpSwitchoverAck:
      if (len != 0) return bad_len("0");
      break;
    default:
      return fail(offset_, fmt("unknown return-path message type %u", type));
  }
  out.kind = ItemKind::kRpMessage;
  out.rp = ri;
  used = total;
  if (type == kRpRecvBitmap) {
    opaque_of_ = OpaqueOf::kRecvBitmap;
    opaque_left_ = ri.bitmap_size;
    return_state_ = ST(kRpBitmapEnd);
    state_ = ST(kOpaque);
  }
  return Step::kItem;
}

}  // namespace ferry::qemu
