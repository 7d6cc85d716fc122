// dataplane/protocol.h — the ferry link protocol between `ferry send` and `ferry recv`.
//
// Grammar (all integers big-endian):
//   link      := HELLO-frame ACCEPT-frame frame* END-frame     (each direction numbered alone)
//   frame     := type:u32 len:u32 seq:u64 crc:u32 payload[len]                     (20 + len)
//     type    := 1 OPAQUE (sender -> receiver: bytes of QEMU's stream, forwarded as is)
//              | 2 RETURN (receiver -> sender: bytes of QEMU's return path)
//              | 3 END    (no more frames in this direction; len = 0)
//              | 4 CODEC  (sender -> receiver, feature PAGES: the page codec's settings,
//                          before the first PAGES frame; payload grammar in
//                          pipeline/page_stream.h)
//              | 5 PAGES  (sender -> receiver, feature PAGES: encoded RAM pages that the
//                          receiver rebuilds into QEMU RAM records; pipeline/page_stream.h)
//              | 6 HELLO  (sender -> receiver, seq 0: the handshake below)
//              | 7 ACCEPT (receiver -> sender, seq 0: verdict:u8 (1 accepted, 0 rejected)
//                          reason[len-1] (UTF-8, why it was rejected); the receiver closes
//                          after a rejection)
//              | 8 TLS    (either way, seq 0, feature TLS, between HELLO and ACCEPT: TLS 1.3
//                          handshake records; dataplane/security/link_security.h)
//              | 9 SEALED (either way, feature TLS, every frame after ACCEPT: AEAD-protected
//                          frames; dataplane/security/protected_transport.h)
//              | 10 ACK   (either way, feature ACKED, seq 0: next:u64, every data frame of
//                          this direction below seq `next` arrived; the first frame each
//                          side sends on a resumed link; dataplane/resume/)
//              | 11 GONE  (either way, feature ACKED, seq 0, len 0: this side gave up on the
//                          link (it failed or was stopped): the other must not wait for a
//                          new connection)
//              | 12 CACHES_FROZEN (sender -> receiver, feature PAGES: where QEMU's post-copy
//                          package begins, the page caches stop changing; the preempt
//                          channel's pages are encoded against them; pipeline/page_stream.h)
//              | 13 POSTCOPY_PAGE (sender -> receiver, feature PAGES, the postcopy-preempt
//                          channel: one page asked for, against the frozen caches)
//     len     <= kMaxPayload (1 MiB)
//     seq     = 0, 1, 2, ... per direction, no gaps (data frames start at kFirstDataSeq)
//     crc     = CRC32C(payload)
//   handshake := magic[4]="FERY" version:u16(=2) channel:u16 features:u32 session_id:u64
//                [name_len:u8 name[name_len]]              (20 bytes, 21 + name_len with VM_NAME)
//     channel   = the order in which the source QEMU opened its migration connections:
//                 0 = the main stream, 1.. = multifd (or other) channels. The receiver
//                 connects to the destination QEMU in the same order.
//     features  = bits the sender will use; a receiver rejects any bit it does not know.
//                 bit 0 PAGES: CODEC and PAGES frames may follow (ferry send --codec).
//                 bit 1 TLS: TLS frames follow HELLO (mutual authentication), and every
//                 frame after ACCEPT travels SEALED.
//                 bit 2 VM_NAME: name_len and name follow session_id (ferry send --vm): the
//                 VM this migration is for, so that `ferry recv --serve --qemu-dir DIR`
//                 finds its destination QEMU at DIR/NAME.sock. name = [A-Za-z0-9._-]{1,64},
//                 not starting with '.' (a file name that cannot climb out of DIR); the
//                 receiver refuses any other, and a HELLO whose length is not exactly this.
//                 bit 3 ACKED: both sides acknowledge data frames with ACK frames and keep
//                 what the other has not acknowledged, so that a failed link can be
//                 replaced by a new connection of the same channel (ferry send
//                 --resume-within; dataplane/resume/resumable_transport.h).
//                 bit 4 RESUMING (with ACKED): this link replaces the failed link of a
//                 running channel of session_id; a receiver with no such channel refuses it.
//     session_id = random, the same on every channel of one migration.
// A frame buffer (frame_pool.h) holds one or more whole frames back to back.
// No QEMU stream parsing happens here: payloads are opaque bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace ferry::dataplane {

inline constexpr char kMagic[4] = {'F', 'E', 'R', 'Y'};
inline constexpr uint16_t kVersion = 2;
inline constexpr size_t kHandshakeSize = 20;
inline constexpr uint32_t kFeaturePages = 1u << 0;
inline constexpr uint32_t kFeatureTls = 1u << 1;
inline constexpr uint32_t kFeatureVmName = 1u << 2;
inline constexpr uint32_t kFeatureAcked = 1u << 3;
inline constexpr uint32_t kFeatureResuming = 1u << 4;
inline constexpr uint32_t kKnownFeatures =
    kFeaturePages | kFeatureTls | kFeatureVmName | kFeatureAcked | kFeatureResuming;
inline constexpr size_t kMaxVmName = 64;
// The largest HELLO payload: the fixed part, name_len and the longest name.
inline constexpr size_t kMaxHandshakeSize = kHandshakeSize + 1 + kMaxVmName;
inline constexpr size_t kFrameHeaderSize = 20;
inline constexpr uint32_t kMaxPayload = 1u << 20;
inline constexpr uint8_t kAccept = 1;
inline constexpr uint8_t kReject = 0;
// HELLO and ACCEPT take seq 0 of their direction.
inline constexpr uint64_t kFirstDataSeq = 1;

enum class FrameType : uint32_t {
  kOpaque = 1,
  kReturn = 2,
  kEnd = 3,
  kCodec = 4,
  kPages = 5,
  kHello = 6,
  kAccept = 7,
  kTls = 8,
  kSealed = 9,
  kAck = 10,
  kGone = 11,
  kCachesFrozen = 12,
  kPostcopyPage = 13,
};
inline constexpr uint32_t kMaxFrameType = 13;

struct Handshake {
  uint16_t version = kVersion;
  uint16_t channel = 0;
  uint32_t features = 0;
  uint64_t session_id = 0;
  // With kFeatureVmName (encode_handshake sets the bit when this is not empty): the VM.
  std::string vm_name;
};

struct FrameHeader {
  FrameType type = FrameType::kOpaque;
  uint32_t len = 0;
  uint64_t seq = 0;
  uint32_t crc = 0;
};

// Wire layouts, for the size checks only (encoding is done byte by byte, big-endian).
struct WireHandshake {
  char magic[4];
  uint8_t version[2];
  uint8_t channel[2];
  uint8_t features[4];
  uint8_t session_id[8];
};
struct WireFrameHeader {
  uint8_t type[4];
  uint8_t len[4];
  uint8_t seq[8];
  uint8_t crc[4];
};
static_assert(sizeof(WireHandshake) == kHandshakeSize);
static_assert(sizeof(WireFrameHeader) == kFrameHeaderSize);

// The HELLO payload: kHandshakeSize bytes, more with a VM name (which sets kFeatureVmName;
// the caller checked it with check_vm_name).
std::vector<uint8_t> encode_handshake(const Handshake& h);
// Validates magic, version, features, the length (exactly the fixed part plus the name) and
// the name; errors name the byte offset of the bad field.
Result<Handshake> decode_handshake(std::span<const uint8_t> in);
// A VM name as HELLO carries it: [A-Za-z0-9._-]{1,64}, not starting with '.'. The error says
// what is wrong with it, in one sentence.
Status check_vm_name(std::string_view name);

// Writes header (crc computed over payload) to out[kFrameHeaderSize].
void encode_frame_header(FrameType type, uint64_t seq, const void* payload, uint32_t len,
                         uint8_t out[kFrameHeaderSize]);
// Appends a whole frame (header + payload) to out.
void append_frame(std::vector<uint8_t>& out, FrameType type, uint64_t seq, const void* payload,
                  uint32_t len);

inline bool frame_type_known(uint32_t type) { return type >= 1 && type <= kMaxFrameType; }

// Parses the frame header at p (kFrameHeaderSize bytes): type and length checked, nothing
// else (transports use it to find frame boundaries). Errors name the field.
Result<FrameHeader> parse_frame_header(const uint8_t* p);

// Checks a frame buffer's frames in link order: header, sequence (from kFirstDataSeq) and
// CRC. Errors name the link byte offset and sequence number of the bad frame.
class FrameChecker {
 public:
  explicit FrameChecker(uint64_t first_seq = kFirstDataSeq) : expected_seq_(first_seq) {}
  struct Frame {
    FrameHeader header;
    const uint8_t* payload = nullptr;
    uint64_t offset = 0;  // link byte offset of the header
  };
  // Next frame of buf[0..len) from *pos (advanced); false at the end of the buffer.
  Result<bool> next(const uint8_t* buf, size_t len, size_t* pos, Frame& frame);

 private:
  uint64_t expected_seq_;
  uint64_t offset_ = 0;
};

}  // namespace ferry::dataplane
