// encoders/page_codec.h — turn batches of guest pages into page records and back.
//
// The sender runs one Encoder per encode shard, the receiver one Decoder per shard. Each owns a
// PageCache (page_cache.h) of the same capacity and policy; records of one shard must be
// decoded in the order they were encoded, all of them: the caches evolve from the record
// sequence, so a record dropped or reordered after encode() desynchronises the two ends. (Drop
// superseded pages *before* encoding.) A decode error leaves the Decoder's cache undefined: end
// the session.
//
// Sharding for --encode-threads N: shard_of(page_index, N) = page_index % N. Give each shard
// its own Encoder/Decoder pair with cache_bytes = cache-mib / N; a page then always meets the
// same cache, so per-page order is kept without any shared state.
//
// Record grammar (details and the per-form payloads: docs/ENCODING.md):
//   record  := form:u8 [ len:u16le payload[len] ]     ; zero, same: no len; raw: payload[page]
//
// Threads: an Encoder/Decoder is used by one thread at a time; distinct instances share
// nothing (no globals besides the read-only kernel table). No call on the batch path
// allocates, locks or logs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"
#include "encoders/codecs.h"
#include "encoders/kernels.h"
#include "encoders/page_cache.h"

namespace ferry::encoders {

// Form byte of a record. Values are wire format: never renumber.
enum class Form : uint8_t {
  kZero = 0,     // all-zero page; no payload
  kSame = 1,     // equal to the cached copy; no payload
  kRaw = 2,      // page_size bytes, no length field
  kDelta = 3,    // delta against the cached copy (codecs.h)
  kRle = 4,      // RLE of the page (codecs.h)
  kLz4 = 5,      // LZ4 block of the page
  kZstd = 6,     // zstd frame of the page
  kDeflate = 7,  // raw deflate (ISA-L igzip) of the page
  kStride = 8,   // stride:u8 + the page word-differenced (codecs.h), page_size bytes
};
inline constexpr size_t kFormCount = 9;
// Largest record: a stride record (2 + page_size bytes).
inline constexpr size_t max_record_size(size_t page_size) { return 2 + page_size; }

struct RecordHeader {  // for forms with a payload (not zero, same, raw)
  uint8_t form;
  uint8_t len_le[2];
};
static_assert(sizeof(RecordHeader) == 3, "record header is 3 bytes on the wire");

const char* form_name(Form f);

// Heavier codecs, tried after RLE when the effort allows.
enum class HeavyCodec : uint8_t { kNone = 0, kLz4, kZstd, kDeflate };

struct CodecInfo {
  HeavyCodec codec;
  const char* name;
  bool available;
  const char* why_not;  // when !available
};
// Registration table: which heavy codecs this build has, and why not.
std::span<const CodecInfo> heavy_codecs();
bool heavy_available(HeavyCodec c);

// --codec none|fast|max|auto
enum class CodecLevel : uint8_t { kNone = 0, kFast, kMax, kAuto };

// What the encoder tries for each page; the policy may change it between batches.
struct EncodeParams {
  bool cache_forms = true;  // "same" and delta (needs a cache)
  bool rle = true;
  HeavyCodec heavy = HeavyCodec::kNone;
  int heavy_level = 1;  // lz4: acceleration (>= 1); zstd: level; deflate: 0..3
  // Stop trying costlier forms once the best encoding so far is at most this many bytes.
  uint32_t good_enough = 64;
  // A page that would go raw goes word-differenced (stride form) when that makes its words
  // small. Only worth it when a stream compressor follows (pipeline/page_stream.h): the record
  // itself is one byte longer than raw.
  bool word_stride = false;
};

// Effort ladder, cheapest first. 0: zero/raw; 1: + same, delta, RLE; 2: + LZ4; 3: + zstd -1
// (igzip -1 without zstd); 4: zstd -3; 5 and 6: zstd -9. Codecs missing from the build are
// skipped down the ladder. `auto` starts at 1 and the policy moves it. (pipeline/page_stream.h
// replaces the per-page heavy codec by a stream across pages from 3 on; its 6 is LZMA2.)
inline constexpr int kMaxEffort = 6;
EncodeParams params_for_effort(int effort);
int effort_for_level(CodecLevel level);

struct CodecConfig {
  size_t page_size = 4096;  // power of two, 512 .. kMaxPageSize; identical on both ends
  size_t cache_bytes = 0;   // this shard's cache; identical on both ends; 0 = no cache
  CachePolicy cache_policy = kDefaultCachePolicy;  // identical on both ends
  const Kernels* kernels = nullptr;                // null: kernels(); tests force a variant
  bool use_isal_zero = true;                       // ISA-L zero detection when built with it
};

// The shard (0 .. shards-1) that owns a page, for --encode-threads.
inline unsigned shard_of(uint64_t page_index, unsigned shards) {
  return static_cast<unsigned>(page_index % shards);
}

struct PageRef {
  uint64_t key;         // stable page identity (e.g. block id << 40 | page index)
  const uint8_t* data;  // page_size bytes, read only
};

struct EncodeStats {
  uint64_t pages[kFormCount] = {};
  uint64_t bytes_out[kFormCount] = {};  // record bytes including headers
  uint64_t pages_in = 0;
  uint64_t bytes_in = 0;
  uint64_t cache_evictions = 0;
};

struct BatchResult {
  size_t pages = 0;  // pages encoded (a prefix of the batch)
  size_t bytes = 0;  // bytes written
};

class Encoder {
 public:
  static Result<std::unique_ptr<Encoder>> create(const CodecConfig& config);
  ~Encoder();
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;

  size_t page_size() const { return page_size_; }
  // Upper bound of one record / of a batch of n records.
  size_t max_record_size() const { return encoders::max_record_size(page_size_); }
  size_t max_encoded_size(size_t pages) const { return pages * max_record_size(); }

  void set_params(const EncodeParams& p) { params_ = p; }
  const EncodeParams& params() const { return params_; }

  // Encodes pages in order into out, records back to back, the cheapest form for each. Stops
  // before a page whose worst case would not fit (out.size() >= max_encoded_size(n) encodes
  // all). record_ends[i] / forms[i], when given (size >= pages.size()), receive the end offset
  // of record i in out and its form. Updates the cache as described above.
  BatchResult encode_batch(std::span<const PageRef> pages, std::span<uint8_t> out,
                           std::span<uint32_t> record_ends = {},
                           std::span<Form> forms = {}) noexcept;
  // One page into out (capacity >= max_record_size()); returns the record length.
  size_t encode_page(uint64_t key, const uint8_t* page, uint8_t* out, Form* form) noexcept;
  // One page against base, the copy the receiver is known to hold (or null: no same/delta
  // form), leaving the cache alone. For pages of another stream that reads a frozen cache
  // (pipeline/postcopy_bases.h).
  size_t encode_against(const uint8_t* base, const uint8_t* page, uint8_t* out,
                        Form* form) noexcept;

  // From now on records are encoded against the cache as it is, and change nothing in it:
  // another thread may then read it (its pages stay valid while this Encoder lives). The
  // Decoder freezes at the same record.
  void freeze_cache() { frozen_ = true; }
  bool cache_frozen() const { return frozen_; }

  const EncodeStats& stats() const { return stats_; }
  const PageCache& cache() const { return *cache_; }

 private:
  Encoder() = default;
  size_t try_heavy(const uint8_t* page, uint8_t* dst, size_t cap) noexcept;

  size_t page_size_ = 0;
  const Kernels* k_ = nullptr;
  IsZeroFn is_zero_ = nullptr;
  EncodeParams params_;
  std::unique_ptr<PageCache> cache_;
  bool frozen_ = false;
  std::unique_ptr<uint64_t[]> bits_;
  std::unique_ptr<uint8_t[]> trial_[2];
  struct Heavy;
  std::unique_ptr<Heavy> heavy_;
  EncodeStats stats_;
};

class Decoder {
 public:
  static Result<std::unique_ptr<Decoder>> create(const CodecConfig& config);
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  size_t page_size() const { return page_size_; }

  // Decodes exactly keys.size() records that fill `in` completely; page i goes to
  // pages_out + i * page_size (caller-owned, keys.size() * page_size bytes). forms[i], when
  // given, receives each record's form (the rebuilder can emit a QEMU ZERO record for kZero).
  // Error offsets are relative to in.data().
  DecodeResult decode_batch(std::span<const uint64_t> keys, std::span<const uint8_t> in,
                            uint8_t* pages_out, std::span<Form> forms = {}) noexcept;
  // One record at the start of in; *consumed receives its length.
  DecodeResult decode_record(uint64_t key, std::span<const uint8_t> in, uint8_t* page_out,
                             size_t* consumed, Form* form) noexcept;
  // One record encoded by Encoder::encode_against() with the same base (null: a "same" or
  // delta record is kNotCached); the cache is not involved.
  DecodeResult decode_against(const uint8_t* base, std::span<const uint8_t> in, uint8_t* page_out,
                              size_t* consumed, Form* form) noexcept;

  // As Encoder::freeze_cache(), at the same record.
  void freeze_cache() { frozen_ = true; }
  bool cache_frozen() const { return frozen_; }

  const PageCache& cache() const { return *cache_; }

 private:
  Decoder() = default;

  size_t page_size_ = 0;
  std::unique_ptr<PageCache> cache_;
  bool frozen_ = false;
  struct Heavy;
  std::unique_ptr<Heavy> heavy_;
};

// Status sentence for a decode error, e.g. for the receiver's log.
Status decode_status(const DecodeResult& r, const char* what);

}  // namespace ferry::encoders
