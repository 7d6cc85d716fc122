// encoders/codecs.h — the single-page codecs: RLE of a page (ME2) and delta against a base.
//
// These are the stateless pieces under Encoder/Decoder (page_codec.h); tests, fuzzers and
// benchmarks call them directly. Wire grammar: docs/ENCODING.md. Encoders are canonical: one
// input has exactly one encoding, identical for every kernel variant. Decoders accept any
// well-formed input (not only canonical) and treat it as hostile: every length is checked
// against the input and the output, the first error is returned with its byte offset, and
// nothing is ever written outside [out, out + n).
#pragma once

#include <cstddef>
#include <cstdint>

#include "encoders/kernels.h"

namespace ferry::encoders {

// Returned by the encoders when the encoding would exceed the caller's capacity.
inline constexpr size_t kTooBig = SIZE_MAX;

// A run of identical bytes shorter than this stays inside a literal (a run chunk costs a
// header and a byte; breaking a literal costs another header).
inline constexpr size_t kRleMinRun = 4;
// Unchanged gaps shorter than this stay inside a delta literal (a new record costs >= 2 bytes).
inline constexpr size_t kDeltaMinGap = 3;
// Largest page the codecs accept (lengths in records are u16 + implied raw size).
inline constexpr size_t kMaxPageSize = 65536;

enum class DecodeError : uint8_t {
  kOk = 0,
  kTruncated,    // input ends inside a header or a payload
  kBadVarint,    // a length longer than 4 bytes
  kBadLength,    // a zero length, or a value no valid encoder emits
  kOverrun,      // the record would write past the end of the page
  kShort,        // input ended before the page was complete
  kBadForm,      // unknown form byte
  kNotCached,    // "same"/delta for a page the cache does not hold
  kUnavailable,  // a codec this build lacks (LZ4, zstd or ISA-L missing)
  kCodec,        // LZ4/zstd/deflate rejected the payload
  kTrailing,     // bytes left over after the last record of a batch
};

struct DecodeResult {
  DecodeError error = DecodeError::kOk;
  uint32_t offset = 0;  // byte offset into the input where the error was found
  bool ok() const { return error == DecodeError::kOk; }
};

// One sentence fragment naming the error, e.g. "input truncated".
const char* decode_error_name(DecodeError e);

// RLE (ME2) of one buffer of n bytes (1 <= n <= kMaxPageSize). Writes at most cap bytes to out
// and returns the length, or kTooBig. bits is scratch of rle_scratch_words(n) words. Bytes of
// out past the returned length, up to cap, may be overwritten.
constexpr size_t rle_scratch_words(size_t n) { return 4 * bitmap_words(n) + 3; }
size_t rle_encode(const Kernels& k, const uint8_t* page, size_t n, uint8_t* out, size_t cap,
                  uint64_t* bits);
// Fills exactly n bytes of out from in[0, len). Any error leaves out partly written; nothing
// past out + n is ever written.
DecodeResult rle_decode(const uint8_t* in, size_t len, uint8_t* out, size_t n);

// Delta of cur against base (both n bytes). diff_bits must hold k.diff_bitmap(cur, base, n)
// (the encoder computes it once for the "same" test too). Returns the length (0 when equal)
// or kTooBig.
size_t delta_encode(const uint8_t* cur, size_t n, const uint64_t* diff_bits, uint8_t* out,
                    size_t cap);
// Applies in[0, len) to out, which must already hold the base (n bytes).
DecodeResult delta_decode(const uint8_t* in, size_t len, uint8_t* out, size_t n);

// Word stride: the page as little-endian 64-bit words w, each replaced by w[i] - w[i - k]
// (mod 2^64; the first k words stay). Arrays of counters, ids, pointers and page-table entries
// step by a constant that byte-oriented compressors (zstd, LZMA) do not see; after the
// transform such a page is mostly repeated small values. Meant for pages that go through a
// stream compressor next (it does not shrink a page by itself). n is a multiple of 8.
inline constexpr unsigned kWordStrides[] = {1, 2, 8};  // in words: 8, 16 and 64-byte records
bool valid_word_stride(unsigned k);
// The stride in kWordStrides whose differences are most often small (|d| < 2^16), or 0 when
// none beats the page as it is by a margin (an eighth of its words).
unsigned choose_word_stride(const uint8_t* page, size_t n);
void word_stride_encode(const uint8_t* page, size_t n, unsigned k, uint8_t* out);
// k must be valid_word_stride(); out != in.
void word_stride_decode(const uint8_t* in, size_t n, unsigned k, uint8_t* out);

}  // namespace ferry::encoders
