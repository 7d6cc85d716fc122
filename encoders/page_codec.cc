// Encoder / Decoder: per-page form choice, record framing, cache upkeep, heavy codecs.
#include "encoders/page_codec.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#if FERRY_HAVE_LZ4
#include <lz4.h>
#endif
#if FERRY_HAVE_ZSTD
#include <zstd.h>
#endif
#if FERRY_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

namespace ferry::encoders {
namespace {

constexpr size_t kHdr = sizeof(RecordHeader);

const CodecInfo kCodecs[] = {
#if FERRY_HAVE_LZ4
    {HeavyCodec::kLz4, "lz4", true, ""},
#else
    {HeavyCodec::kLz4, "lz4", false, "built without liblz4 (apt-get install liblz4-dev)"},
#endif
#if FERRY_HAVE_ZSTD
    {HeavyCodec::kZstd, "zstd", true, ""},
#else
    {HeavyCodec::kZstd, "zstd", false, "built without libzstd (apt-get install libzstd-dev)"},
#endif
#if FERRY_HAVE_ISAL
    {HeavyCodec::kDeflate, "igzip", true, ""},
#else
    {HeavyCodec::kDeflate, "igzip", false, "built without ISA-L (apt-get install libisal-dev)"},
#endif
};

inline void put_header(uint8_t* out, Form f, size_t len) {
  out[0] = static_cast<uint8_t>(f);
  out[1] = static_cast<uint8_t>(len);
  out[2] = static_cast<uint8_t>(len >> 8);
}

Status check_config(const CodecConfig& c) {
  const size_t n = c.page_size;
  if (n < 512 || n > kMaxPageSize || (n & (n - 1)) != 0) {
    return error(ErrorCode::kInvalidArgument, "page codec: page size " + std::to_string(n) +
                                                  " is not a power of two between 512 and 65536");
  }
  return Status::ok();
}

}  // namespace

const char* form_name(Form f) {
  switch (f) {
    case Form::kZero:
      return "zero";
    case Form::kSame:
      return "same";
    case Form::kRaw:
      return "raw";
    case Form::kDelta:
      return "delta";
    case Form::kRle:
      return "rle";
    case Form::kLz4:
      return "lz4";
    case Form::kZstd:
      return "zstd";
    case Form::kDeflate:
      return "deflate";
    case Form::kStride:
      return "stride";
  }
  return "?";
}

std::span<const CodecInfo> heavy_codecs() { return kCodecs; }

bool heavy_available(HeavyCodec c) {
  for (const CodecInfo& i : kCodecs) {
    if (i.codec == c) return i.available;
  }
  return false;
}

EncodeParams params_for_effort(int effort) {
  EncodeParams p;
  effort = std::clamp(effort, 0, kMaxEffort);
  if (effort == 0) {
    p.cache_forms = false;
    p.rle = false;
    return p;
  }
  // Best available heavy codec for a zstd-level rung: zstd, else igzip, else LZ4.
  auto strong = [&](int zstd_level, int deflate_level) {
    if (heavy_available(HeavyCodec::kZstd)) {
      p.heavy = HeavyCodec::kZstd;
      p.heavy_level = zstd_level;
    } else if (heavy_available(HeavyCodec::kDeflate)) {
      p.heavy = HeavyCodec::kDeflate;
      p.heavy_level = deflate_level;
    } else if (heavy_available(HeavyCodec::kLz4)) {
      p.heavy = HeavyCodec::kLz4;
      p.heavy_level = 1;
    }
  };
  switch (effort) {
    case 1:
      break;
    case 2:
      if (heavy_available(HeavyCodec::kLz4)) {
        p.heavy = HeavyCodec::kLz4;
        p.heavy_level = 1;
      } else {
        strong(1, 1);
      }
      break;
    case 3:
      strong(1, 1);
      break;
    case 4:
      strong(3, 2);
      break;
    default:
      strong(9, 3);
      break;
  }
  if (effort >= 3) p.good_enough = 16;
  return p;
}

int effort_for_level(CodecLevel level) {
  switch (level) {
    case CodecLevel::kNone:
      return 0;
    case CodecLevel::kFast:
      return 1;
    case CodecLevel::kMax:
      return kMaxEffort;
    case CodecLevel::kAuto:
      return 1;
  }
  return 1;
}

Status decode_status(const DecodeResult& r, const char* what) {
  if (r.ok()) return Status::ok();
  return error(ErrorCode::kProtocol, std::string(what) + ": " + decode_error_name(r.error) +
                                         " at byte " + std::to_string(r.offset) +
                                         "; the sender and receiver disagree, restart the "
                                         "migration");
}

// ---- heavy codec state (allocated once per Encoder/Decoder) ------------------------------

struct Encoder::Heavy {
  std::vector<uint8_t> lz4_state;
#if FERRY_HAVE_ZSTD
  ZSTD_CCtx* zstd = nullptr;
#endif
#if FERRY_HAVE_ISAL
  std::vector<uint8_t> isal_level_buf;
  std::unique_ptr<isal_zstream> zs;
#endif
  ~Heavy() {
#if FERRY_HAVE_ZSTD
    ZSTD_freeCCtx(zstd);
#endif
  }
};

struct Decoder::Heavy {
#if FERRY_HAVE_ZSTD
  ZSTD_DCtx* zstd = nullptr;
#endif
#if FERRY_HAVE_ISAL
  std::unique_ptr<inflate_state> inflate;
#endif
  ~Heavy() {
#if FERRY_HAVE_ZSTD
    ZSTD_freeDCtx(zstd);
#endif
  }
};

// ---- Encoder -----------------------------------------------------------------------------

Encoder::~Encoder() = default;

Result<std::unique_ptr<Encoder>> Encoder::create(const CodecConfig& config) {
  FERRY_RETURN_IF_ERROR(check_config(config));
  std::unique_ptr<Encoder> e(new Encoder());
  e->page_size_ = config.page_size;
  e->k_ = config.kernels != nullptr ? config.kernels : &kernels();
  e->is_zero_ = e->k_->is_zero;
  if (config.use_isal_zero && isal_is_zero() != nullptr && e->k_->level != KernelLevel::kScalar) {
    e->is_zero_ = isal_is_zero();
  }
  auto cache = PageCache::create(config.page_size, config.cache_bytes / config.page_size,
                                 config.cache_policy);
  if (!cache) return cache.status();
  e->cache_ = std::move(cache).value();
  try {
    e->bits_.reset(new uint64_t[rle_scratch_words(config.page_size)]);
    e->trial_[0].reset(new uint8_t[config.page_size]);
    e->trial_[1].reset(new uint8_t[config.page_size]);
    e->heavy_ = std::make_unique<Heavy>();
#if FERRY_HAVE_LZ4
    e->heavy_->lz4_state.resize(static_cast<size_t>(LZ4_sizeofState()));
#endif
#if FERRY_HAVE_ISAL
    e->heavy_->isal_level_buf.resize(ISAL_DEF_LVL3_DEFAULT);
    e->heavy_->zs = std::make_unique<isal_zstream>();
#endif
  } catch (const std::bad_alloc&) {
    return error(ErrorCode::kUnavailable, "page encoder: out of memory");
  }
#if FERRY_HAVE_ZSTD
  e->heavy_->zstd = ZSTD_createCCtx();
  if (e->heavy_->zstd == nullptr) {
    return error(ErrorCode::kUnavailable, "page encoder: cannot create a zstd context");
  }
#endif
  e->params_ = params_for_effort(1);
  return e;
}

// Compresses the page with the configured heavy codec into dst (cap bytes); kTooBig when it
// does not fit or the codec is missing.
size_t Encoder::try_heavy(const uint8_t* page, uint8_t* dst, size_t cap) noexcept {
  const size_t n = page_size_;
  // Without LZ4/zstd/ISA-L some of these are unused.
  (void)n;
  (void)page;
  (void)dst;
  (void)cap;
  switch (params_.heavy) {
    case HeavyCodec::kNone:
      return kTooBig;
    case HeavyCodec::kLz4: {
#if FERRY_HAVE_LZ4
      const int r =
          LZ4_compress_fast_extState(heavy_->lz4_state.data(), reinterpret_cast<const char*>(page),
                                     reinterpret_cast<char*>(dst), static_cast<int>(n),
                                     static_cast<int>(cap), std::max(1, params_.heavy_level));
      return r > 0 ? static_cast<size_t>(r) : kTooBig;
#else
      return kTooBig;
#endif
    }
    case HeavyCodec::kZstd: {
#if FERRY_HAVE_ZSTD
      const size_t r = ZSTD_compressCCtx(heavy_->zstd, dst, cap, page, n, params_.heavy_level);
      return ZSTD_isError(r) ? kTooBig : r;
#else
      return kTooBig;
#endif
    }
    case HeavyCodec::kDeflate: {
#if FERRY_HAVE_ISAL
      isal_zstream* zs = heavy_->zs.get();
      isal_deflate_stateless_init(zs);
      zs->level = static_cast<uint32_t>(std::clamp(params_.heavy_level, 0, 3));
      zs->level_buf = heavy_->isal_level_buf.data();
      zs->level_buf_size = static_cast<uint32_t>(heavy_->isal_level_buf.size());
      zs->next_in = const_cast<uint8_t*>(page);
      zs->avail_in = static_cast<uint32_t>(n);
      zs->next_out = dst;
      zs->avail_out = static_cast<uint32_t>(cap);
      zs->end_of_stream = 1;
      zs->flush = NO_FLUSH;
      zs->gzip_flag = IGZIP_DEFLATE;
      const int r = isal_deflate_stateless(zs);
      return r == COMP_OK ? zs->total_out : kTooBig;
#else
      return kTooBig;
#endif
    }
  }
  return kTooBig;
}

size_t Encoder::encode_page(uint64_t key, const uint8_t* page, uint8_t* out, Form* form) noexcept {
  const uint32_t slot = cache_->find(key);
  Form f;
  const size_t rec =
      encode_against(slot == PageCache::kNone ? nullptr : cache_->data(slot), page, out, &f);
  if (form != nullptr) *form = f;
  if (frozen_) return rec;
  if (f == Form::kZero) {
    cache_->remove(key);
  } else if (f == Form::kSame) {
    cache_->touch(slot);
  } else {
    uint32_t s = slot;
    if (s == PageCache::kNone) {
      const uint64_t ev = cache_->evictions();
      s = cache_->insert(key);
      stats_.cache_evictions += cache_->evictions() - ev;
    } else {
      s = cache_->touch(s);
    }
    if (s != PageCache::kNone) std::memcpy(cache_->data(s), page, page_size_);
  }
  return rec;
}

size_t Encoder::encode_against(const uint8_t* base, const uint8_t* page, uint8_t* out,
                               Form* form) noexcept {
  const size_t n = page_size_;
  stats_.pages_in++;
  stats_.bytes_in += n;
  if (is_zero_(page, n)) {
    out[0] = static_cast<uint8_t>(Form::kZero);
    stats_.pages[0]++;
    stats_.bytes_out[0] += 1;
    if (form != nullptr) *form = Form::kZero;
    return 1;
  }

  // The best payload so far, in trial_[best_buf]; raw (n bytes, no header) to start with.
  Form best = Form::kRaw;
  size_t best_len = n;
  int best_buf = 0;
  // A payload must beat raw's record (1 + n) with its own (3 + len).
  const size_t max_payload = n - kHdr;
  auto consider = [&](Form f, size_t len) {
    if (len != kTooBig && len < best_len && len <= max_payload) {
      best = f;
      best_len = len;
      best_buf ^= 1;  // the trial buffer just written becomes the best one
    }
  };

  if (base != nullptr && params_.cache_forms) {
    const bool any = k_->diff_bitmap(page, base, n, bits_.get());
    if (!any) {
      out[0] = static_cast<uint8_t>(Form::kSame);
      stats_.pages[1]++;
      stats_.bytes_out[1] += 1;
      if (form != nullptr) *form = Form::kSame;
      return 1;
    }
    consider(Form::kDelta,
             delta_encode(page, n, bits_.get(), trial_[best_buf ^ 1].get(), max_payload));
  }
  if (params_.rle && best_len > params_.good_enough) {
    consider(Form::kRle, rle_encode(*k_, page, n, trial_[best_buf ^ 1].get(),
                                    std::min(best_len - 1, max_payload), bits_.get()));
  }
  if (params_.heavy != HeavyCodec::kNone && best_len > params_.good_enough) {
    static constexpr Form kHeavyForm[] = {Form::kRaw, Form::kLz4, Form::kZstd, Form::kDeflate};
    consider(kHeavyForm[static_cast<int>(params_.heavy)],
             try_heavy(page, trial_[best_buf ^ 1].get(), std::min(best_len - 1, max_payload)));
  }

  size_t rec;
  unsigned stride = 0;
  if (best == Form::kRaw && params_.word_stride) {
    stride = choose_word_stride(page, n);
    if (stride != 0) best = Form::kStride;
  }
  if (best == Form::kRaw) {
    out[0] = static_cast<uint8_t>(Form::kRaw);
    std::memcpy(out + 1, page, n);
    rec = 1 + n;
  } else if (best == Form::kStride) {
    out[0] = static_cast<uint8_t>(Form::kStride);
    out[1] = static_cast<uint8_t>(stride);
    word_stride_encode(page, n, stride, out + 2);
    rec = 2 + n;
  } else {
    put_header(out, best, best_len);
    std::memcpy(out + kHdr, trial_[best_buf].get(), best_len);
    rec = kHdr + best_len;
  }

  const size_t fi = static_cast<size_t>(best);
  stats_.pages[fi]++;
  stats_.bytes_out[fi] += rec;
  if (form != nullptr) *form = best;
  return rec;
}

BatchResult Encoder::encode_batch(std::span<const PageRef> pages, std::span<uint8_t> out,
                                  std::span<uint32_t> record_ends, std::span<Form> forms) noexcept {
  BatchResult r;
  const bool want_ends = record_ends.size() >= pages.size();
  const bool want_forms = forms.size() >= pages.size();
  for (const PageRef& p : pages) {
    if (out.size() - r.bytes < max_record_size()) break;
    Form f;
    r.bytes += encode_page(p.key, p.data, out.data() + r.bytes, &f);
    if (want_ends) record_ends[r.pages] = static_cast<uint32_t>(r.bytes);
    if (want_forms) forms[r.pages] = f;
    ++r.pages;
  }
  return r;
}

// ---- Decoder -----------------------------------------------------------------------------

Decoder::~Decoder() = default;

Result<std::unique_ptr<Decoder>> Decoder::create(const CodecConfig& config) {
  FERRY_RETURN_IF_ERROR(check_config(config));
  std::unique_ptr<Decoder> d(new Decoder());
  d->page_size_ = config.page_size;
  auto cache = PageCache::create(config.page_size, config.cache_bytes / config.page_size,
                                 config.cache_policy);
  if (!cache) return cache.status();
  d->cache_ = std::move(cache).value();
  try {
    d->heavy_ = std::make_unique<Heavy>();
#if FERRY_HAVE_ISAL
    d->heavy_->inflate = std::make_unique<inflate_state>();
#endif
  } catch (const std::bad_alloc&) {
    return error(ErrorCode::kUnavailable, "page decoder: out of memory");
  }
#if FERRY_HAVE_ZSTD
  d->heavy_->zstd = ZSTD_createDCtx();
  if (d->heavy_->zstd == nullptr) {
    return error(ErrorCode::kUnavailable, "page decoder: cannot create a zstd context");
  }
#endif
  return d;
}

DecodeResult Decoder::decode_record(uint64_t key, std::span<const uint8_t> in, uint8_t* out,
                                    size_t* consumed, Form* form) noexcept {
  // A zero record needs no copy (the most common one: no lookup for it).
  const bool zero = !in.empty() && in[0] == static_cast<uint8_t>(Form::kZero);
  const uint32_t slot = zero ? PageCache::kNone : cache_->find(key);
  Form f = Form::kRaw;
  const DecodeResult r = decode_against(slot == PageCache::kNone ? nullptr : cache_->data(slot), in,
                                        out, consumed, &f);
  if (form != nullptr) *form = f;
  if (!r.ok() || frozen_) return r;
  // Every non-zero form leaves the decoded page as the key's cached copy (mirrors the encoder).
  if (f == Form::kZero) {
    cache_->remove(key);
  } else if (f == Form::kSame) {
    cache_->touch(slot);
  } else {
    const uint32_t s = slot == PageCache::kNone ? cache_->insert(key) : cache_->touch(slot);
    if (s != PageCache::kNone) std::memcpy(cache_->data(s), out, page_size_);
  }
  return r;
}

DecodeResult Decoder::decode_against(const uint8_t* base, std::span<const uint8_t> in, uint8_t* out,
                                     size_t* consumed, Form* form) noexcept {
  const size_t n = page_size_;
  const uint8_t* p = in.data();
  const size_t len = in.size();
  if (len == 0) return {DecodeError::kTruncated, 0};
  const uint8_t fb = p[0];
  if (fb >= kFormCount) return {DecodeError::kBadForm, 0};
  const Form f = static_cast<Form>(fb);
  if (form != nullptr) *form = f;

  switch (f) {
    case Form::kZero:
      std::memset(out, 0, n);
      *consumed = 1;
      return {};
    case Form::kSame:
      if (base == nullptr) return {DecodeError::kNotCached, 0};
      std::memcpy(out, base, n);
      *consumed = 1;
      return {};
    case Form::kRaw:
      if (len - 1 < n) return {DecodeError::kTruncated, static_cast<uint32_t>(len)};
      std::memcpy(out, p + 1, n);
      *consumed = 1 + n;
      break;
    case Form::kStride:
      if (len < 2) return {DecodeError::kTruncated, static_cast<uint32_t>(len)};
      if (!valid_word_stride(p[1])) return {DecodeError::kBadLength, 1};
      if (len - 2 < n) return {DecodeError::kTruncated, static_cast<uint32_t>(len)};
      word_stride_decode(p + 2, n, p[1], out);
      *consumed = 2 + n;
      break;
    default: {
      if (len < kHdr) return {DecodeError::kTruncated, static_cast<uint32_t>(len)};
      const size_t pl = size_t{p[1]} | (size_t{p[2]} << 8);
      if (pl == 0 || pl > n - kHdr) return {DecodeError::kBadLength, 1};
      if (pl > len - kHdr) return {DecodeError::kTruncated, static_cast<uint32_t>(len)};
      const uint8_t* payload = p + kHdr;
      DecodeResult r;
      switch (f) {
        case Form::kDelta:
          if (base == nullptr) return {DecodeError::kNotCached, 0};
          std::memcpy(out, base, n);
          r = delta_decode(payload, pl, out, n);
          break;
        case Form::kRle:
          r = rle_decode(payload, pl, out, n);
          break;
        case Form::kLz4: {
#if FERRY_HAVE_LZ4
          const int got = LZ4_decompress_safe(reinterpret_cast<const char*>(payload),
                                              reinterpret_cast<char*>(out), static_cast<int>(pl),
                                              static_cast<int>(n));
          if (got != static_cast<int>(n)) r = {DecodeError::kCodec, 0};
#else
          r = {DecodeError::kUnavailable, 0};
#endif
          break;
        }
        case Form::kZstd: {
#if FERRY_HAVE_ZSTD
          const size_t got = ZSTD_decompressDCtx(heavy_->zstd, out, n, payload, pl);
          if (ZSTD_isError(got) || got != n) r = {DecodeError::kCodec, 0};
#else
          r = {DecodeError::kUnavailable, 0};
#endif
          break;
        }
        case Form::kDeflate: {
#if FERRY_HAVE_ISAL
          inflate_state* st = heavy_->inflate.get();
          isal_inflate_init(st);
          st->next_in = const_cast<uint8_t*>(payload);
          st->avail_in = static_cast<uint32_t>(pl);
          st->next_out = out;
          st->avail_out = static_cast<uint32_t>(n);
          st->crc_flag = ISAL_DEFLATE;
          const int ret = isal_inflate_stateless(st);
          if (ret != ISAL_DECOMP_OK || st->total_out != n) r = {DecodeError::kCodec, 0};
#else
          r = {DecodeError::kUnavailable, 0};
#endif
          break;
        }
        default:
          r = {DecodeError::kBadForm, 0};
          break;
      }
      if (!r.ok()) {
        r.offset += static_cast<uint32_t>(kHdr);
        return r;
      }
      *consumed = kHdr + pl;
      break;
    }
  }
  return {};
}

DecodeResult Decoder::decode_batch(std::span<const uint64_t> keys, std::span<const uint8_t> in,
                                   uint8_t* pages_out, std::span<Form> forms) noexcept {
  size_t off = 0;
  const bool want_forms = forms.size() >= keys.size();
  for (size_t i = 0; i < keys.size(); ++i) {
    size_t used = 0;
    Form f;
    DecodeResult r = decode_record(keys[i], in.subspan(off), pages_out + i * page_size_, &used, &f);
    if (!r.ok()) {
      r.offset += static_cast<uint32_t>(off);
      return r;
    }
    if (want_forms) forms[i] = f;
    off += used;
  }
  if (off != in.size()) return {DecodeError::kTrailing, static_cast<uint32_t>(off)};
  return {};
}

}  // namespace ferry::encoders
