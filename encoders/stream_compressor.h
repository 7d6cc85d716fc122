// encoders/stream_compressor.h — one zstd stream across many buffers.
//
// Per-page codecs (page_codec.h) see 4 KiB at a time; guest memory repeats itself across
// pages (text, structured records), which only a compressor with a window spanning pages can
// exploit — as QEMU's multifd zstd does per channel. StreamCompressor compresses each buffer
// (a PAGES frame's records) as a flushed block of one long zstd frame: the receiver decodes
// each buffer as it arrives, and matches reach back into earlier buffers.
//
// Both ends must process the same buffers in the same order (like the page caches). The
// compression level may change between buffers: the buffer after a change ends the running
// zstd frame and starts a new one (the window restarts); the decompressor does not need to
// know it.
//
// Threads: one instance per stream, one thread at a time. No allocation after create().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"

namespace ferry::encoders {

// Largest window the decompressor accepts (bounds the receiver's memory): 2^27 = 128 MiB.
inline constexpr int kStreamWindowLogMax = 27;

class StreamCompressor {
 public:
  // kUnavailable when the build has no zstd.
  static Result<std::unique_ptr<StreamCompressor>> create(int level);
  ~StreamCompressor();
  StreamCompressor(const StreamCompressor&) = delete;
  StreamCompressor& operator=(const StreamCompressor&) = delete;

  // Output capacity that always suffices for n input bytes.
  static size_t max_compressed_size(size_t n);
  void set_level(int level);
  int level() const { return level_; }
  // Compresses in as the next block of the stream into out (out.size() >=
  // max_compressed_size(in.size())). Returns the bytes written; an error leaves the stream
  // unusable (end the session).
  Result<size_t> compress(std::span<const uint8_t> in, std::span<uint8_t> out);

 private:
  StreamCompressor() = default;
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
  int level_ = 1;
  bool level_pending_ = false;
};

class StreamDecompressor {
 public:
  static Result<std::unique_ptr<StreamDecompressor>> create();
  ~StreamDecompressor();
  StreamDecompressor(const StreamDecompressor&) = delete;
  StreamDecompressor& operator=(const StreamDecompressor&) = delete;

  // Decodes one block produced by compress(): all of in, into exactly out.size() bytes.
  // Hostile input gives an error naming the byte offset, never a crash; after an error the
  // stream is unusable.
  Status decompress(std::span<const uint8_t> in, std::span<uint8_t> out);

 private:
  StreamDecompressor() = default;
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

bool stream_compression_available();

}  // namespace ferry::encoders
