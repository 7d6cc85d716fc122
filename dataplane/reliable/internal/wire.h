// dataplane/reliable/internal/wire.h — the datagrams of ferry's reliable transport (private to
// reliable/). Every datagram is one of five kinds behind a common 8-byte prefix.
//
// Grammar (integers big-endian; pkt, frame, cum, lo, hi and limits are the low 32 bits of
// 64-bit counters, unwrapped by the receiver against its own counter, so a window must stay
// below 2^31):
//   datagram := common (syn | synack | data | ack | reset)
//   common   := kind:u8 flags:u8 aux:u16 conn:u32                                        (8)
//     kind     1 SYN | 2 SYNACK | 3 DATA | 4 ACK | 5 RESET
//     conn     the connection id: random, never 0, chosen by the client; a datagram with
//              another id (an old connection, a stray) is dropped and counted
//   syn      := common(kind=1, aux=version) params                                      (24)
//   synack   := common(kind=2, aux=version, conn=the SYN's) params                      (24)
//   params   := max_datagram:u32 pkt_window:u32 frame_credit:u32 max_frame:u32
//     max_datagram  the largest datagram the sender of params can send and receive
//     pkt_window    packets it tracks beyond its cumulative ack (the peer sends no further)
//     frame_credit  frames the peer may send before the first ACK (its free rx buffers)
//     max_frame     the largest frame it accepts
//   data     := common(kind=3, flags=FIN?, aux=tx) pkt:u32 frame:u32 offset:u32
//               frame_len:u32 body                                                 (24 + n)
//     pkt      packet number 0, 1, ... per direction; a retransmission reuses its number
//     tx       which transmission of pkt this is: 0 the first, 1.. resends (mod 2^16)
//     body     bytes [offset, offset + n) of frame number `frame`, whose length is frame_len:
//              the receiver copies it straight to that offset of the frame's pool buffer
//     FIN      no body; frame = the number of frames sent before the end (reliable like data)
//   ack      := common(kind=4, flags=COMPLETE?, aux=n) cum:u32 from:u32 complete_to:u32
//               frame_limit:u32 ack_delay_us:u32 newest:u32 newest_tx:u16 0:u16
//               range[n]                                                            (36 + 8n)
//     cum          every packet below it was received
//     range        lo:u32 hi:u32: packets [lo, hi) received, above cum, ascending
//     from, complete_to  every received packet in [from, complete_to) is in a range; a list
//                  too long for one ack goes out in turns (the next ack goes on from
//                  complete_to, and starts over at cum after reaching the newest packet)
//     COMPLETE     flag: the list reached the newest packet received; nothing above it
//                  arrived (the sender may take any gap for a loss, tails included)
//     frame_limit  the sender may send frames numbered below it (flow control: the
//                  receiver's free rx buffers); never decreases
//     ack_delay_us how long the receiver held this ack after its newest packet arrived
//     newest, newest_tx  the packet (and its transmission) that arrived last: tells which
//                  copy of a resent packet got there (an ack of the first copy is no news
//                  of the resend: without this, a late ack would date the delivery from the
//                  resend and make every packet sent before it look lost)
//     An ACK with nothing new is also the heartbeat.
//   reset    := common(kind=5, aux=reason)                                               (8)
//     reason   1 protocol error; the receiver fails the link
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry::dataplane::reliable::wire {

inline constexpr uint16_t kVersion = 1;

enum Kind : uint8_t { kSyn = 1, kSynAck = 2, kData = 3, kAck = 4, kReset = 5 };
inline constexpr uint8_t kFlagFin = 1u << 0;       // DATA
inline constexpr uint8_t kFlagComplete = 1u << 0;  // ACK
inline constexpr uint16_t kResetProtocol = 1;

struct Common {
  uint8_t kind;
  uint8_t flags;
  uint8_t aux[2];
  uint8_t conn[4];
};
struct Params {
  uint8_t max_datagram[4];
  uint8_t pkt_window[4];
  uint8_t frame_credit[4];
  uint8_t max_frame[4];
};
struct WireSyn {
  Common common;
  Params params;
};
struct WireData {
  Common common;
  uint8_t pkt[4];
  uint8_t frame[4];
  uint8_t offset[4];
  uint8_t frame_len[4];
};
struct WireAck {
  Common common;
  uint8_t cum[4];
  uint8_t from[4];
  uint8_t complete_to[4];
  uint8_t frame_limit[4];
  uint8_t ack_delay_us[4];
  uint8_t newest[4];
  uint8_t newest_tx[2];
  uint8_t reserved[2];
};
struct WireRange {
  uint8_t lo[4];
  uint8_t hi[4];
};

inline constexpr size_t kCommonSize = 8;
inline constexpr size_t kSynSize = 24;
inline constexpr size_t kDataHeaderSize = 24;
inline constexpr size_t kAckHeaderSize = 36;
inline constexpr size_t kRangeSize = 8;
inline constexpr size_t kMaxAckRanges = 64;
inline constexpr size_t kMaxAckSize = kAckHeaderSize + kMaxAckRanges * kRangeSize;
static_assert(sizeof(Common) == kCommonSize);
static_assert(sizeof(WireSyn) == kSynSize);
static_assert(sizeof(WireData) == kDataHeaderSize);
static_assert(sizeof(WireAck) == kAckHeaderSize);
static_assert(sizeof(WireRange) == kRangeSize);

inline void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void put32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}
inline uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline uint32_t get32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// A 32-bit wire number back to the 64-bit counter nearest to `near` (within +-2^31).
inline uint64_t unwrap(uint32_t wire, uint64_t near) {
  const int32_t d = static_cast<int32_t>(wire - static_cast<uint32_t>(near));
  return near + static_cast<uint64_t>(static_cast<int64_t>(d));
}

inline void put_common(uint8_t* p, Kind kind, uint8_t flags, uint16_t aux, uint32_t conn) {
  p[0] = kind;
  p[1] = flags;
  put16(p + 2, aux);
  put32(p + 4, conn);
}

struct SynParams {
  uint32_t max_datagram = 0;
  uint32_t pkt_window = 0;
  uint32_t frame_credit = 0;
  uint32_t max_frame = 0;
};

inline void put_syn(uint8_t* p, Kind kind, uint32_t conn, const SynParams& s) {
  put_common(p, kind, 0, kVersion, conn);
  put32(p + 8, s.max_datagram);
  put32(p + 12, s.pkt_window);
  put32(p + 16, s.frame_credit);
  put32(p + 20, s.max_frame);
}
inline SynParams get_syn(const uint8_t* p) {
  return {get32(p + 8), get32(p + 12), get32(p + 16), get32(p + 20)};
}

inline void put_data(uint8_t* p, uint8_t flags, uint16_t tx, uint32_t conn, uint64_t pkt,
                     uint64_t frame, uint32_t offset, uint32_t frame_len) {
  put_common(p, kData, flags, tx, conn);
  put32(p + 8, static_cast<uint32_t>(pkt));
  put32(p + 12, static_cast<uint32_t>(frame));
  put32(p + 16, offset);
  put32(p + 20, frame_len);
}

}  // namespace ferry::dataplane::reliable::wire
