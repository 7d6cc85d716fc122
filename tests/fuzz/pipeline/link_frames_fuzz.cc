// Fuzzing of ferry recv's link receive path: a byte stream of ferry frames as a transport
// hands it over (dataplane/protocol.h FrameChecker: header, sequence from kFirstDataSeq, CRC),
// dispatched as the receiving pump does (pipeline/channel_pump.cc with a codec: OPAQUE, CODEC,
// PAGES, CACHES_FROZEN and POSTCOPY_PAGE to PageStreamDecoder, nothing after END, any other
// type an error; without a session's shared caches a POSTCOPY_PAGE frame is an error).
// Input: mode:u8 frames[]. Mode bit 0 set: each frame's seq and CRC are rewritten to the right
// values first (where a whole header is present), so mutations reach the payload decoders
// instead of dying at the CRC check; clear: the bytes go in as they are. The CODEC frame comes
// from the input too, so the sender's announced limits are hostile as well.
// Must never crash or hang, and a frame may only grow the rebuilt stream by what it can stand
// for: its own length (OPAQUE) or the announced pages per frame, each a page and a record
// header at most (PAGES).
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/crc32c.h"
#include "dataplane/protocol.h"
#include "pipeline/page_stream.h"

using ferry::ByteQueue;
using ferry::dataplane::FrameChecker;
using ferry::dataplane::FrameType;
using ferry::dataplane::kFrameHeaderSize;
using ferry::pipeline::DecoderLimits;
using ferry::pipeline::PageStreamDecoder;

namespace {

void put_be(uint8_t* p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}

// Rewrites seq and CRC of every frame whose header and payload are whole.
void fix_frames(std::vector<uint8_t>& b) {
  uint64_t seq = ferry::dataplane::kFirstDataSeq;
  size_t at = 0;
  while (b.size() - at >= kFrameHeaderSize) {
    uint8_t* h = b.data() + at;
    const uint32_t len =
        (uint32_t{h[4]} << 24) | (uint32_t{h[5]} << 16) | (uint32_t{h[6]} << 8) | h[7];
    if (b.size() - at - kFrameHeaderSize < len) break;
    put_be(h + 8, seq++, 8);
    put_be(h + 16, ferry::crc32c(h + kFrameHeaderSize, len), 4);
    at += kFrameHeaderSize + len;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::vector<uint8_t> link(data + 1, data + size);
  if (data[0] & 1) fix_frames(link);

  // A receiver's limits, smaller than ferry recv's so the fuzzer's memory stays low; the checks
  // are the same code.
  DecoderLimits limits;
  limits.max_cache_bytes = 1u << 20;
  limits.max_frame_page_bytes = 1u << 20;
  limits.max_stream_bytes = 64u << 20;
  limits.max_blocks = 256;
  PageStreamDecoder dec(limits);
  // A PAGES frame's records: a page each, behind at most a RAM record header (offset+flags,
  // block name length and name).
  const size_t max_pages_growth =
      limits.max_frame_page_bytes + ferry::pipeline::kMaxPagesPerFrame * (8 + 1 + 255);

  FrameChecker check;
  FrameChecker::Frame f;
  ByteQueue out;
  size_t pos = 0;
  bool got_end = false;
  for (;;) {
    auto got = check.next(link.data(), link.size(), &pos, f);
    if (!got || !*got) break;
    if (f.payload < link.data() || f.payload + f.header.len > link.data() + link.size()) {
      __builtin_trap();
    }
    if (got_end) break;  // "frame after END": the session ends
    const FrameType type = f.header.type;
    if (type == FrameType::kEnd) {
      got_end = true;
      continue;
    }
    if (type != FrameType::kOpaque && type != FrameType::kCodec && type != FrameType::kPages &&
        type != FrameType::kCachesFrozen && type != FrameType::kPostcopyPage) {
      break;  // "unexpected frame type"
    }
    const size_t before = out.size();
    if (!dec.decode(type, {f.payload, f.header.len}, out).is_ok()) break;
    const size_t grew = out.size() - before;
    if (type == FrameType::kOpaque && grew != f.header.len) __builtin_trap();
    if ((type == FrameType::kCodec || type == FrameType::kCachesFrozen) && grew != 0) {
      __builtin_trap();
    }
    if (type == FrameType::kPages && grew > max_pages_growth) __builtin_trap();
    out.consume(out.size());  // QEMU took it
  }
  return 0;
}
