// encoders/stream_compressor.cc — see stream_compressor.h.
#include "encoders/stream_compressor.h"

#include <string>

#if FERRY_HAVE_ZSTD
#include <zstd.h>
#endif

namespace ferry::encoders {

#if FERRY_HAVE_ZSTD

struct StreamCompressor::Ctx {
  ZSTD_CCtx* cctx = nullptr;
  ~Ctx() { ZSTD_freeCCtx(cctx); }
};
struct StreamDecompressor::Ctx {
  ZSTD_DCtx* dctx = nullptr;
  ~Ctx() { ZSTD_freeDCtx(dctx); }
};

bool stream_compression_available() { return true; }

Result<std::unique_ptr<StreamCompressor>> StreamCompressor::create(int level) {
  std::unique_ptr<StreamCompressor> c(new StreamCompressor());
  c->ctx_ = std::make_unique<Ctx>();
  c->ctx_->cctx = ZSTD_createCCtx();
  if (!c->ctx_->cctx) return Status(ErrorCode::kInternal, "zstd: cannot create a context");
  c->level_ = level;
  ZSTD_CCtx_setParameter(c->ctx_->cctx, ZSTD_c_compressionLevel, level);
  // The receiver refuses windows above kStreamWindowLogMax; stay well inside.
  ZSTD_CCtx_setParameter(c->ctx_->cctx, ZSTD_c_windowLog, 23);
  return c;
}

StreamCompressor::~StreamCompressor() = default;

// + room for the epilogue of a frame closed by a level change.
size_t StreamCompressor::max_compressed_size(size_t n) { return ZSTD_compressBound(n) + 64; }

void StreamCompressor::set_level(int level) {
  if (level == level_) return;
  level_ = level;
  // zstd applies a new level from the next frame: compress() ends the current one first.
  level_pending_ = true;
}

Result<size_t> StreamCompressor::compress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  if (level_pending_) {
    // Close the running frame (its epilogue leads this block; the receiver's decoder reads
    // concatenated frames), then start the next one at the new level. The window restarts.
    ZSTD_inBuffer none{nullptr, 0, 0};
    for (;;) {
      size_t left = ZSTD_compressStream2(ctx_->cctx, &ob, &none, ZSTD_e_end);
      if (ZSTD_isError(left)) {
        return Status(ErrorCode::kInternal, std::string("zstd: ") + ZSTD_getErrorName(left));
      }
      if (left == 0) break;
      if (ob.pos == ob.size) return Status(ErrorCode::kInternal, "zstd: output buffer too small");
    }
    ZSTD_CCtx_setParameter(ctx_->cctx, ZSTD_c_compressionLevel, level_);
    level_pending_ = false;
  }
  for (;;) {
    size_t left = ZSTD_compressStream2(ctx_->cctx, &ob, &ib, ZSTD_e_flush);
    if (ZSTD_isError(left)) {
      return Status(ErrorCode::kInternal, std::string("zstd: ") + ZSTD_getErrorName(left));
    }
    if (left == 0) break;
    if (ob.pos == ob.size) return Status(ErrorCode::kInternal, "zstd: output buffer too small");
  }
  return ob.pos;
}

Result<std::unique_ptr<StreamDecompressor>> StreamDecompressor::create() {
  std::unique_ptr<StreamDecompressor> d(new StreamDecompressor());
  d->ctx_ = std::make_unique<Ctx>();
  d->ctx_->dctx = ZSTD_createDCtx();
  if (!d->ctx_->dctx) return Status(ErrorCode::kInternal, "zstd: cannot create a context");
  ZSTD_DCtx_setParameter(d->ctx_->dctx, ZSTD_d_windowLogMax, kStreamWindowLogMax);
  return d;
}

StreamDecompressor::~StreamDecompressor() = default;

Status StreamDecompressor::decompress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  while (ib.pos < ib.size) {
    const size_t in_before = ib.pos, out_before = ob.pos;
    uint8_t probe;
    // With the announced output full, give zstd one spare byte: it must not use it.
    ZSTD_outBuffer pb{&probe, 1, 0};
    ZSTD_outBuffer* o = ob.pos < ob.size ? &ob : &pb;
    size_t r = ZSTD_decompressStream(ctx_->dctx, o, &ib);
    if (ZSTD_isError(r)) {
      return Status(ErrorCode::kProtocol, std::string("zstd stream: ") + ZSTD_getErrorName(r) +
                                              " at byte offset " + std::to_string(ib.pos));
    }
    if (pb.pos != 0) {
      return Status(ErrorCode::kProtocol, "zstd stream: block holds more than the announced " +
                                              std::to_string(out.size()) + " bytes");
    }
    if (ib.pos == in_before && ob.pos == out_before) {
      return Status(ErrorCode::kProtocol,
                    "zstd stream: no progress at byte offset " + std::to_string(ib.pos));
    }
  }
  {
    // All input is in; zstd may still hold decoded bytes beyond the announced size.
    uint8_t probe;
    ZSTD_outBuffer pb{&probe, 1, 0};
    ZSTD_inBuffer none{nullptr, 0, 0};
    size_t r = ZSTD_decompressStream(ctx_->dctx, &pb, &none);
    if (ZSTD_isError(r) || pb.pos != 0) {
      return Status(ErrorCode::kProtocol, "zstd stream: block holds more than the announced " +
                                              std::to_string(out.size()) + " bytes");
    }
  }
  if (ob.pos != ob.size) {
    // Flushed blocks decode completely; anything short means a truncated or forged block.
    return Status(ErrorCode::kProtocol, "zstd stream: block gave " + std::to_string(ob.pos) +
                                            " of the announced " + std::to_string(out.size()) +
                                            " bytes");
  }
  return Status::ok();
}

#else  // !FERRY_HAVE_ZSTD

struct StreamCompressor::Ctx {};
struct StreamDecompressor::Ctx {};
bool stream_compression_available() { return false; }
Result<std::unique_ptr<StreamCompressor>> StreamCompressor::create(int) {
  return Status(ErrorCode::kUnavailable, "this build has no zstd (apt-get install libzstd-dev)");
}
StreamCompressor::~StreamCompressor() = default;
size_t StreamCompressor::max_compressed_size(size_t n) { return n + 64; }
void StreamCompressor::set_level(int level) { level_ = level; }  // no zstd: nothing to do
Result<size_t> StreamCompressor::compress(std::span<const uint8_t>, std::span<uint8_t>) {
  return Status(ErrorCode::kUnavailable, "this build has no zstd");
}
Result<std::unique_ptr<StreamDecompressor>> StreamDecompressor::create() {
  return Status(ErrorCode::kUnavailable, "this build has no zstd (apt-get install libzstd-dev)");
}
StreamDecompressor::~StreamDecompressor() = default;
Status StreamDecompressor::decompress(std::span<const uint8_t>, std::span<uint8_t>) {
  return Status(ErrorCode::kUnavailable, "this build has no zstd");
}

#endif

}  // namespace ferry::encoders
