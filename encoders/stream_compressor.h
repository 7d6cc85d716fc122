// encoders/stream_compressor.h — one compressed stream (zstd or LZMA2) across many buffers.
//
// Per-page codecs (page_codec.h) see 4 KiB at a time; guest memory repeats itself across
// pages (text, structured records), which only a compressor with a window spanning pages can
// exploit — as QEMU's multifd zstd does per channel. StreamCompressor compresses each buffer
// (a PAGES frame's records) as a flushed block of one long stream: the receiver decodes each
// buffer as it arrives, and matches reach back into earlier buffers.
//
// Two kinds: zstd (levels 1..19; the fast rungs) and LZMA2 (liblzma, raw LZMA2, presets
// 0..9; for slow links: on guest memory preset 0 puts 4-9 % fewer bytes on the link than
// zstd -9 and 0-3 % fewer than zstd -17, at about a third of zstd -9's speed — see
// docs/ENCODING.md). A block is flushed with ZSTD_e_flush / LZMA_SYNC_FLUSH.
//
// Both ends must process the same buffers in the same order (like the page caches). The
// level may change between buffers: the buffer after a change ends the running zstd frame
// and starts a new one, or starts a new LZMA2 chunk with a dictionary reset (the window
// restarts either way); the decompressor does not need to know it.
//
// Threads: one instance per stream, one thread at a time. No allocation after create().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"

namespace ferry::encoders {

// Stream windows, which bound the receiver's memory per stream. The sender announces the
// window it uses (pipeline/page_stream.h, CODEC); the receiver refuses an announcement above its
// maximum and builds each decompressor to hold exactly the announced window, so a block that
// needs more fails instead of allocating.
//   zstd: the compressor's window, 2^23 = 8 MiB; the most a decompressor accepts, 2^24.
inline constexpr int kStreamWindowLog = 23;
inline constexpr int kStreamWindowLogMin = 10;  // ZSTD_WINDOWLOG_ABSOLUTEMIN
inline constexpr int kStreamWindowLogMax = 24;
//   LZMA2 (raw: no dictionary size on the wire): the compressor's preset dictionary, capped at
//   kLzmaDictMax (presets 0..2 use 256 KiB .. 2 MiB); the decompressor holds the announced
//   one, and a match reaching beyond it is corrupt data.
inline constexpr uint32_t kLzmaDictMin = 4096;  // LZMA_DICT_SIZE_MIN
inline constexpr uint32_t kLzmaDictMax = 2u << 20;
inline constexpr int kLzmaPresetMax = 2;
// The dictionary the compressor uses at an LZMA preset (0..kLzmaPresetMax).
uint32_t lzma_dict_bytes(int preset);

// On the wire (pipeline/page_stream.h) as the first byte of a stream block.
enum class StreamKind : uint8_t { kZstd = 1, kLzma = 2 };
const char* stream_kind_name(StreamKind kind);

class StreamCompressor {
 public:
  // level: zstd 1..19, LZMA preset 0..kLzmaPresetMax. kUnavailable when the build lacks the
  // library.
  static Result<std::unique_ptr<StreamCompressor>> create(StreamKind kind, int level);
  ~StreamCompressor();
  StreamCompressor(const StreamCompressor&) = delete;
  StreamCompressor& operator=(const StreamCompressor&) = delete;

  // Output capacity that always suffices for n input bytes (either kind).
  static size_t max_compressed_size(size_t n);
  StreamKind kind() const { return kind_; }
  void set_level(int level);
  int level() const { return level_; }
  // Compresses in as the next block of the stream into out (out.size() >=
  // max_compressed_size(in.size())). Returns the bytes written; an error leaves the stream
  // unusable (end the session).
  Result<size_t> compress(std::span<const uint8_t> in, std::span<uint8_t> out);

 private:
  StreamCompressor() = default;
  Result<size_t> compress_zstd(std::span<const uint8_t> in, std::span<uint8_t> out);
  Result<size_t> compress_lzma(std::span<const uint8_t> in, std::span<uint8_t> out);
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
  StreamKind kind_ = StreamKind::kZstd;
  int level_ = 1;
  bool level_pending_ = false;
};

class StreamDecompressor {
 public:
  // window_bytes: the sender's announced window (zstd: a power of two, 2^kStreamWindowLogMin
  // .. 2^kStreamWindowLogMax; LZMA2: its dictionary, kLzmaDictMin .. kLzmaDictMax), the most
  // this decompressor holds; 0: the maximum. kInvalidArgument outside those bounds.
  static Result<std::unique_ptr<StreamDecompressor>> create(StreamKind kind,
                                                            uint64_t window_bytes = 0);
  ~StreamDecompressor();
  StreamDecompressor(const StreamDecompressor&) = delete;
  StreamDecompressor& operator=(const StreamDecompressor&) = delete;

  // Decodes one block produced by compress(): all of in, into exactly out.size() bytes.
  // Hostile input gives an error naming the byte offset, never a crash; after an error the
  // stream is unusable.
  Status decompress(std::span<const uint8_t> in, std::span<uint8_t> out);

 private:
  StreamDecompressor() = default;
  Status decompress_zstd(std::span<const uint8_t> in, std::span<uint8_t> out);
  Status decompress_lzma(std::span<const uint8_t> in, std::span<uint8_t> out);
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
  StreamKind kind_ = StreamKind::kZstd;
  uint64_t window_ = 0;
};

bool stream_compression_available(StreamKind kind);

}  // namespace ferry::encoders
