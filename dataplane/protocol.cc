// dataplane/protocol.cc — see protocol.h for the grammar.
#include "dataplane/protocol.h"

#include <cstdio>
#include <cstring>

#include "common/crc32c.h"
#include "common/endian.h"

namespace ferry::dataplane {
namespace {

constexpr auto put_be = store_be;
constexpr auto get_be = load_be;

uint32_t payload_crc(const void* p, uint32_t len) {
  static const uint8_t kEmpty = 0;
  return crc32c(len ? p : &kEmpty, len);
}

std::string hex32(uint32_t v) {
  char b[9];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

}  // namespace

std::vector<uint8_t> encode_handshake(const Handshake& h) {
  std::vector<uint8_t> out(kHandshakeSize);
  const uint32_t features = h.features | (h.vm_name.empty() ? 0 : kFeatureVmName);
  std::memcpy(out.data(), kMagic, 4);
  put_be(out.data() + 4, h.version, 2);
  put_be(out.data() + 6, h.channel, 2);
  put_be(out.data() + 8, features, 4);
  put_be(out.data() + 12, h.session_id, 8);
  if (features & kFeatureVmName) {
    out.push_back(static_cast<uint8_t>(h.vm_name.size()));
    out.insert(out.end(), h.vm_name.begin(), h.vm_name.end());
  }
  return out;
}

Status check_vm_name(std::string_view name) {
  if (name.empty()) return error(ErrorCode::kInvalidArgument, "the VM name is empty");
  if (name.size() > kMaxVmName) {
    return error(ErrorCode::kInvalidArgument,
                 "the VM name is longer than " + std::to_string(kMaxVmName) + " characters");
  }
  if (name[0] == '.') {
    return error(ErrorCode::kInvalidArgument, "the VM name starts with '.'");
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return error(ErrorCode::kInvalidArgument,
                   "the VM name has a character other than A-Z a-z 0-9 . _ -");
    }
  }
  return Status::ok();
}

Result<Handshake> decode_handshake(std::span<const uint8_t> bytes) {
  if (bytes.size() < kHandshakeSize) {
    return error(ErrorCode::kProtocol, "handshake: HELLO of " + std::to_string(bytes.size()) +
                                           " bytes, expected at least " +
                                           std::to_string(kHandshakeSize));
  }
  const uint8_t* in = bytes.data();
  if (std::memcmp(in, kMagic, 4) != 0) {
    return error(ErrorCode::kProtocol, "handshake: bad magic at byte offset 0 (expected FERY)");
  }
  Handshake h;
  h.version = static_cast<uint16_t>(get_be(in + 4, 2));
  if (h.version != kVersion) {
    return error(ErrorCode::kProtocol, "handshake: unsupported version " +
                                           std::to_string(h.version) + " at byte offset 4");
  }
  h.channel = static_cast<uint16_t>(get_be(in + 6, 2));
  h.features = static_cast<uint32_t>(get_be(in + 8, 4));
  if (h.features & ~kKnownFeatures) {
    return error(ErrorCode::kProtocol, "handshake: unknown feature bits 0x" +
                                           hex32(h.features & ~kKnownFeatures) +
                                           " at byte offset 8 (upgrade ferry recv)");
  }
  if ((h.features & kFeatureResuming) && !(h.features & kFeatureAcked)) {
    return error(ErrorCode::kProtocol,
                 "handshake: feature RESUMING without ACKED at byte offset 8 (a link that "
                 "acknowledges nothing cannot resume)");
  }
  h.session_id = get_be(in + 12, 8);
  size_t want = kHandshakeSize;
  if (h.features & kFeatureVmName) {
    if (bytes.size() < kHandshakeSize + 1) {
      return error(ErrorCode::kProtocol,
                   "handshake: the VM name's length at byte offset 20 is missing");
    }
    const size_t n = in[kHandshakeSize];
    want = kHandshakeSize + 1 + n;
    if (bytes.size() == want) {
      h.vm_name.assign(reinterpret_cast<const char*>(in) + kHandshakeSize + 1, n);
      if (auto st = check_vm_name(h.vm_name); !st) {
        h.vm_name.clear();  // never echoed: it may hold anything
        return error(ErrorCode::kProtocol,
                     "handshake: bad VM name at byte offset 21: " + st.message());
      }
    }
  }
  if (bytes.size() != want) {
    return error(ErrorCode::kProtocol, "handshake: HELLO of " + std::to_string(bytes.size()) +
                                           " bytes, expected " + std::to_string(want));
  }
  return h;
}

void encode_frame_header(FrameType type, uint64_t seq, const void* payload, uint32_t len,
                         uint8_t out[kFrameHeaderSize]) {
  put_be(out, static_cast<uint32_t>(type), 4);
  put_be(out + 4, len, 4);
  put_be(out + 8, seq, 8);
  put_be(out + 16, payload_crc(payload, len), 4);
}

void append_frame(std::vector<uint8_t>& out, FrameType type, uint64_t seq, const void* payload,
                  uint32_t len) {
  size_t at = out.size();
  out.resize(at + kFrameHeaderSize + len);
  encode_frame_header(type, seq, payload, len, out.data() + at);
  if (len) std::memcpy(out.data() + at + kFrameHeaderSize, payload, len);
}

Result<FrameHeader> parse_frame_header(const uint8_t* h) {
  FrameHeader fh;
  uint32_t type = static_cast<uint32_t>(get_be(h, 4));
  fh.len = static_cast<uint32_t>(get_be(h + 4, 4));
  fh.seq = get_be(h + 8, 8);
  fh.crc = static_cast<uint32_t>(get_be(h + 16, 4));
  if (type < 1 || type > kMaxFrameType) {
    return error(ErrorCode::kProtocol, "frame: bad type " + std::to_string(type));
  }
  fh.type = static_cast<FrameType>(type);
  if (fh.len > kMaxPayload || (fh.type == FrameType::kEnd && fh.len != 0)) {
    return error(ErrorCode::kProtocol, "frame: bad length " + std::to_string(fh.len));
  }
  return fh;
}

Result<bool> FrameChecker::next(const uint8_t* buf, size_t len, size_t* pos, Frame& frame) {
  if (*pos >= len) return false;
  const uint64_t at = offset_;
  if (len - *pos < kFrameHeaderSize) {
    return error(ErrorCode::kProtocol,
                 "frame: truncated header at byte offset " + std::to_string(at));
  }
  const uint8_t* h = buf + *pos;
  auto fh = parse_frame_header(h);
  if (!fh) {
    return error(ErrorCode::kProtocol,
                 fh.status().message() + " at byte offset " + std::to_string(at));
  }
  if (len - *pos - kFrameHeaderSize < fh->len) {
    return error(ErrorCode::kProtocol,
                 "frame: truncated payload at byte offset " + std::to_string(at));
  }
  if (fh->seq != expected_seq_) {
    return error(ErrorCode::kProtocol, "frame: sequence " + std::to_string(fh->seq) +
                                           ", expected " + std::to_string(expected_seq_) +
                                           " at byte offset " + std::to_string(at + 8));
  }
  const uint8_t* payload = h + kFrameHeaderSize;
  if (payload_crc(payload, fh->len) != fh->crc) {
    return error(ErrorCode::kProtocol, "frame: crc32c mismatch at byte offset " +
                                           std::to_string(at + 16) + " (frame seq " +
                                           std::to_string(fh->seq) + ")");
  }
  frame.header = *fh;
  frame.payload = payload;
  frame.offset = at;
  *pos += kFrameHeaderSize + fh->len;
  offset_ += kFrameHeaderSize + fh->len;
  ++expected_seq_;
  return true;
}

}  // namespace ferry::dataplane
