// Fuzzing of ferry recv's page-frame decoding (pipeline/page_stream.h PageStreamDecoder: PAGES
// headers, the zstd frame stream, record decoding, the rebuilder) with hostile frames.
// Input: a sequence of  type:u8 len:u16le payload[len]  (type % 5: 0 OPAQUE, 1 PAGES,
// 2 CODEC, 3 CACHES_FROZEN, 4 POSTCOPY_PAGE). A valid CODEC frame (4 KiB pages, 256 KiB cache,
// 2 encode shards, the receiver's largest limits) comes first,
// so PAGES frames reach the decoders of both shards; POSTCOPY_PAGE frames decode against the
// same decoder's frozen caches (on ferry recv another channel's decoder reads them). A decode
// error ends the input, as it ends a session. Must never crash, hang or allocate beyond the
// limits.
#include <array>
#include <cstdint>
#include <cstring>

#include "pipeline/page_stream.h"

using ferry::ByteQueue;
using ferry::dataplane::FrameType;
using ferry::pipeline::PageStreamDecoder;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  PageStreamDecoder dec(1u << 20);
  ferry::pipeline::PostcopyBases bases;
  dec.set_postcopy_bases(&bases);
  ByteQueue out;
  static const auto kCodec = [] {
    ferry::pipeline::CodecAnnouncement c;
    c.cache_bytes = 256u << 10;
    c.shards = 2;
    c.cache_policy = ferry::encoders::CachePolicy::kLru;
    c.max_pages = ferry::pipeline::kMaxPagesPerFrame;  // the grammar's bound, not ferry send's
    c.zstd_window_log = ferry::encoders::kStreamWindowLogMax;
    c.lzma_dict = ferry::encoders::kLzmaDictMax;
    std::array<uint8_t, ferry::pipeline::kCodecPayloadSize> p;
    ferry::pipeline::encode_codec(c, p.data());
    return p;
  }();
  if (!dec.decode(FrameType::kCodec, kCodec, out).is_ok()) __builtin_trap();
  static const FrameType kTypes[] = {FrameType::kOpaque, FrameType::kPages, FrameType::kCodec,
                                     FrameType::kCachesFrozen, FrameType::kPostcopyPage};
  size_t at = 0;
  while (at + 3 <= size) {
    FrameType type = kTypes[data[at] % 5];
    // Before the caches froze, a POSTCOPY_PAGE frame waits for them (seconds): freeze them.
    if (type == FrameType::kPostcopyPage && bases.frozen() == nullptr) {
      type = FrameType::kCachesFrozen;
    }
    size_t len = data[at + 1] | (size_t{data[at + 2]} << 8);
    at += 3;
    if (len > size - at) len = size - at;
    if (!dec.decode(type, {data + at, len}, out).is_ok()) break;
    at += len;
    // The rebuilt stream may only grow by what the frames can stand for.
    if (out.size() > (size_t{64} << 20)) __builtin_trap();
  }
  return 0;
}
