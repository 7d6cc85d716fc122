// encoders/stream_compressor.cc — see stream_compressor.h.
#include "encoders/stream_compressor.h"

#include <algorithm>
#include <string>

#if FERRY_HAVE_ZSTD
#include <zstd.h>
#include <zstd_errors.h>
#endif
#if FERRY_HAVE_LZMA
#include <lzma.h>
#endif

namespace ferry::encoders {

const char* stream_kind_name(StreamKind kind) {
  return kind == StreamKind::kLzma ? "lzma" : "zstd";
}

bool stream_compression_available(StreamKind kind) {
  return kind == StreamKind::kLzma ? FERRY_HAVE_LZMA : FERRY_HAVE_ZSTD;
}

namespace {

Status unavailable(StreamKind kind) {
  return Status(ErrorCode::kUnavailable,
                kind == StreamKind::kLzma ? "this build has no LZMA (apt-get install liblzma-dev)"
                                          : "this build has no zstd (apt-get install libzstd-dev)");
}

#if FERRY_HAVE_LZMA
const char* lzma_error(lzma_ret r) {
  switch (r) {
    case LZMA_MEM_ERROR:
      return "out of memory";
    case LZMA_MEMLIMIT_ERROR:
      return "memory limit";
    case LZMA_OPTIONS_ERROR:
      return "unsupported options";
    case LZMA_DATA_ERROR:
      return "corrupt data";
    case LZMA_BUF_ERROR:
      return "no progress possible";
    case LZMA_PROG_ERROR:
      return "programming error";
    default:
      return "error";
  }
}

// Raw LZMA2 (no .xz container: ferry's frames carry lengths). The encoder uses the preset's
// dictionary, capped; the decoder `dict` bytes (the sender's announced dictionary). A raw
// decoder takes no memory limit: its memory is fixed here by `dict` (LZMA2 bounds lc + lp, so
// nothing in the stream grows it), and checked against what that dictionary should cost.
lzma_ret lzma2_init(lzma_stream* s, int preset, bool encoder, uint32_t dict = kLzmaDictMax) {
  lzma_options_lzma opt;
  if (lzma_lzma_preset(&opt, static_cast<uint32_t>(preset))) return LZMA_OPTIONS_ERROR;
  opt.dict_size = encoder ? std::min(opt.dict_size, kLzmaDictMax) : dict;
  const lzma_filter filters[] = {{LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, nullptr}};
  if (encoder) return lzma_raw_encoder(s, filters);
  constexpr uint64_t kDecoderOverhead = 1u << 20;  // probabilities and buffers besides dict
  if (lzma_raw_decoder_memusage(filters) > uint64_t{dict} + kDecoderOverhead) {
    return LZMA_MEMLIMIT_ERROR;
  }
  return lzma_raw_decoder(s, filters);
}
#endif

}  // namespace

uint32_t lzma_dict_bytes(int preset) {
  preset = std::clamp(preset, 0, kLzmaPresetMax);
#if FERRY_HAVE_LZMA
  lzma_options_lzma opt;
  if (!lzma_lzma_preset(&opt, static_cast<uint32_t>(preset))) {
    return std::min(opt.dict_size, kLzmaDictMax);
  }
#endif
  static constexpr uint32_t kPresetDict[] = {256u << 10, 1u << 20, 2u << 20};  // liblzma's
  return std::min(kPresetDict[preset], kLzmaDictMax);
}

struct StreamCompressor::Ctx {
#if FERRY_HAVE_ZSTD
  ZSTD_CCtx* cctx = nullptr;
#endif
#if FERRY_HAVE_LZMA
  lzma_stream lz = LZMA_STREAM_INIT;
#endif
  ~Ctx() {
#if FERRY_HAVE_ZSTD
    ZSTD_freeCCtx(cctx);
#endif
#if FERRY_HAVE_LZMA
    lzma_end(&lz);
#endif
  }
};

struct StreamDecompressor::Ctx {
#if FERRY_HAVE_ZSTD
  ZSTD_DCtx* dctx = nullptr;
#endif
#if FERRY_HAVE_LZMA
  lzma_stream lz = LZMA_STREAM_INIT;
#endif
  ~Ctx() {
#if FERRY_HAVE_ZSTD
    ZSTD_freeDCtx(dctx);
#endif
#if FERRY_HAVE_LZMA
    lzma_end(&lz);
#endif
  }
};

Result<std::unique_ptr<StreamCompressor>> StreamCompressor::create(StreamKind kind, int level) {
  if (!stream_compression_available(kind)) return unavailable(kind);
  std::unique_ptr<StreamCompressor> c(new StreamCompressor());
  c->ctx_ = std::make_unique<Ctx>();
  c->kind_ = kind;
  c->level_ = level;
  if (kind == StreamKind::kLzma) {
#if FERRY_HAVE_LZMA
    if (level < 0 || level > kLzmaPresetMax) {
      return Status(ErrorCode::kInvalidArgument, "LZMA preset " + std::to_string(level) + " (0.." +
                                                     std::to_string(kLzmaPresetMax) + ")");
    }
    if (lzma_ret r = lzma2_init(&c->ctx_->lz, level, true); r != LZMA_OK) {
      return Status(ErrorCode::kInternal, std::string("lzma: ") + lzma_error(r));
    }
#endif
    return c;
  }
#if FERRY_HAVE_ZSTD
  c->ctx_->cctx = ZSTD_createCCtx();
  if (!c->ctx_->cctx) return Status(ErrorCode::kInternal, "zstd: cannot create a context");
  ZSTD_CCtx_setParameter(c->ctx_->cctx, ZSTD_c_compressionLevel, level);
  // 8 MiB, announced in CODEC (the receiver holds no more). Long-distance matching over
  // 128 MiB was tried (docs/ENCODING.md): 35 % slower at zstd -1 for ~1 % fewer bytes.
  ZSTD_CCtx_setParameter(c->ctx_->cctx, ZSTD_c_windowLog, kStreamWindowLog);
#endif
  return c;
}

StreamCompressor::~StreamCompressor() = default;

// zstd: + room for the epilogue of a frame closed by a level change. LZMA2: liblzma's bound
// for a whole .xz block (headers included), which covers a raw LZMA2 block of n bytes.
size_t StreamCompressor::max_compressed_size(size_t n) {
  size_t bound = n + 64;
#if FERRY_HAVE_ZSTD
  bound = std::max(bound, ZSTD_compressBound(n) + 64);
#endif
#if FERRY_HAVE_LZMA
  bound = std::max(bound, lzma_block_buffer_bound(n));
#endif
  return bound;
}

void StreamCompressor::set_level(int level) {
  if (level == level_) return;
  if (kind_ == StreamKind::kLzma) level = std::clamp(level, 0, kLzmaPresetMax);
  level_ = level;
  // Both apply a new level from the next block on: compress() closes the running frame or
  // chunk first.
  level_pending_ = true;
}

Result<size_t> StreamCompressor::compress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (!stream_compression_available(kind_)) return unavailable(kind_);
  return kind_ == StreamKind::kLzma ? compress_lzma(in, out) : compress_zstd(in, out);
}

Result<std::unique_ptr<StreamDecompressor>> StreamDecompressor::create(StreamKind kind,
                                                                       uint64_t window_bytes) {
  if (!stream_compression_available(kind)) return unavailable(kind);
  std::unique_ptr<StreamDecompressor> d(new StreamDecompressor());
  d->ctx_ = std::make_unique<Ctx>();
  d->kind_ = kind;
  if (kind == StreamKind::kLzma) {
    if (window_bytes == 0) window_bytes = kLzmaDictMax;
    if (window_bytes < kLzmaDictMin || window_bytes > kLzmaDictMax) {
      return Status(ErrorCode::kInvalidArgument,
                    "LZMA2 dictionary of " + std::to_string(window_bytes) + " bytes (" +
                        std::to_string(kLzmaDictMin) + ".." + std::to_string(kLzmaDictMax) + ")");
    }
    d->window_ = window_bytes;
#if FERRY_HAVE_LZMA
    if (lzma_ret r = lzma2_init(&d->ctx_->lz, 0, false, static_cast<uint32_t>(window_bytes));
        r != LZMA_OK) {
      return Status(ErrorCode::kInternal, std::string("lzma: ") + lzma_error(r));
    }
#endif
    return d;
  }
  if (window_bytes == 0) window_bytes = uint64_t{1} << kStreamWindowLogMax;
  int log = 0;
  while (log < 63 && (uint64_t{1} << log) < window_bytes) ++log;
  if ((uint64_t{1} << log) != window_bytes || log < kStreamWindowLogMin ||
      log > kStreamWindowLogMax) {
    return Status(ErrorCode::kInvalidArgument, "zstd window of " + std::to_string(window_bytes) +
                                                   " bytes (a power of two, 2^" +
                                                   std::to_string(kStreamWindowLogMin) + "..2^" +
                                                   std::to_string(kStreamWindowLogMax) + ")");
  }
  d->window_ = window_bytes;
#if FERRY_HAVE_ZSTD
  d->ctx_->dctx = ZSTD_createDCtx();
  if (!d->ctx_->dctx) return Status(ErrorCode::kInternal, "zstd: cannot create a context");
  if (ZSTD_isError(ZSTD_DCtx_setParameter(d->ctx_->dctx, ZSTD_d_windowLogMax, log))) {
    return Status(ErrorCode::kInternal,
                  "zstd: cannot limit the window to 2^" + std::to_string(log));
  }
#endif
  return d;
}

StreamDecompressor::~StreamDecompressor() = default;

Status StreamDecompressor::decompress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (!stream_compression_available(kind_)) return unavailable(kind_);
  return kind_ == StreamKind::kLzma ? decompress_lzma(in, out) : decompress_zstd(in, out);
}

// ---------------------------------------------------------------------------- zstd

#if FERRY_HAVE_ZSTD

Result<size_t> StreamCompressor::compress_zstd(std::span<const uint8_t> in,
                                               std::span<uint8_t> out) {
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

Status StreamDecompressor::decompress_zstd(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  while (ib.pos < ib.size) {
    const size_t in_before = ib.pos, out_before = ob.pos;
    uint8_t probe;
    // With the announced output full, give zstd one spare byte: it must not use it.
    ZSTD_outBuffer pb{&probe, 1, 0};
    ZSTD_outBuffer* o = ob.pos < ob.size ? &ob : &pb;
    size_t r = ZSTD_decompressStream(ctx_->dctx, o, &ib);
    if (ZSTD_isError(r) && ZSTD_getErrorCode(r) == ZSTD_error_frameParameter_windowTooLarge) {
      return Status(ErrorCode::kProtocol,
                    "zstd stream: a frame needs a window above the " + std::to_string(window_) +
                        " bytes the sender announced, at byte offset " + std::to_string(ib.pos));
    }
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

Result<size_t> StreamCompressor::compress_zstd(std::span<const uint8_t>, std::span<uint8_t>) {
  return unavailable(StreamKind::kZstd);
}
Status StreamDecompressor::decompress_zstd(std::span<const uint8_t>, std::span<uint8_t>) {
  return unavailable(StreamKind::kZstd);
}

#endif

// ---------------------------------------------------------------------------- LZMA2

#if FERRY_HAVE_LZMA

Result<size_t> StreamCompressor::compress_lzma(std::span<const uint8_t> in,
                                               std::span<uint8_t> out) {
  lzma_stream& s = ctx_->lz;
  if (level_pending_) {
    // A fresh encoder: its first chunk resets the dictionary and carries the new preset's
    // properties, which the decoder reads from the chunk headers.
    if (lzma_ret r = lzma2_init(&s, level_, true); r != LZMA_OK) {
      return Status(ErrorCode::kInternal, std::string("lzma: ") + lzma_error(r));
    }
    level_pending_ = false;
  }
  s.next_in = in.data();
  s.avail_in = in.size();
  s.next_out = out.data();
  s.avail_out = out.size();
  for (;;) {
    const lzma_ret r = lzma_code(&s, LZMA_SYNC_FLUSH);
    if (r == LZMA_STREAM_END) break;  // the block is flushed
    if (r != LZMA_OK) return Status(ErrorCode::kInternal, std::string("lzma: ") + lzma_error(r));
    if (s.avail_out == 0) return Status(ErrorCode::kInternal, "lzma: output buffer too small");
  }
  return out.size() - s.avail_out;
}

Status StreamDecompressor::decompress_lzma(std::span<const uint8_t> in, std::span<uint8_t> out) {
  lzma_stream& s = ctx_->lz;
  s.next_in = in.data();
  s.avail_in = in.size();
  s.next_out = out.data();
  s.avail_out = out.size();
  uint8_t probe;
  bool probing = false;  // the announced output is full: one spare byte it must not use
  for (;;) {
    if (s.avail_out == 0 && !probing) {
      probing = true;
      s.next_out = &probe;
      s.avail_out = 1;
    }
    const size_t in_before = s.avail_in, out_before = s.avail_out;
    const lzma_ret r = lzma_code(&s, LZMA_RUN);
    const size_t at = in.size() - s.avail_in;
    if (probing && s.avail_out == 0) {
      return Status(ErrorCode::kProtocol, "lzma stream: block holds more than the announced " +
                                              std::to_string(out.size()) + " bytes");
    }
    if (r == LZMA_STREAM_END) {
      // An end marker: ferry never finishes its streams, so the block is forged.
      return Status(ErrorCode::kProtocol,
                    "lzma stream: end of stream at byte offset " + std::to_string(at));
    }
    if (r == LZMA_DATA_ERROR) {
      return Status(ErrorCode::kProtocol,
                    "lzma stream: corrupt data (or a match beyond the " + std::to_string(window_) +
                        "-byte dictionary the sender announced) at byte offset " +
                        std::to_string(at));
    }
    if (r != LZMA_OK && r != LZMA_BUF_ERROR) {
      return Status(ErrorCode::kProtocol, std::string("lzma stream: ") + lzma_error(r) +
                                              " at byte offset " + std::to_string(at));
    }
    if (s.avail_in == in_before && s.avail_out == out_before) break;  // nothing more to do
  }
  if (s.avail_in != 0) {
    return Status(ErrorCode::kProtocol, "lzma stream: " + std::to_string(s.avail_in) +
                                            " bytes left over after the announced " +
                                            std::to_string(out.size()) + " bytes");
  }
  const size_t got = probing ? out.size() : out.size() - s.avail_out;
  if (got != out.size()) {
    // Flushed blocks decode completely; anything short means a truncated or forged block.
    return Status(ErrorCode::kProtocol, "lzma stream: block gave " + std::to_string(got) +
                                            " of the announced " + std::to_string(out.size()) +
                                            " bytes");
  }
  return Status::ok();
}

#else  // !FERRY_HAVE_LZMA

Result<size_t> StreamCompressor::compress_lzma(std::span<const uint8_t>, std::span<uint8_t>) {
  return unavailable(StreamKind::kLzma);
}
Status StreamDecompressor::decompress_lzma(std::span<const uint8_t>, std::span<uint8_t>) {
  return unavailable(StreamKind::kLzma);
}

#endif

}  // namespace ferry::encoders
