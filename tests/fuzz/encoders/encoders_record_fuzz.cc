// Fuzzing of the record stream (Decoder::decode_batch: every form, including LZ4, zstd and
// igzip payloads, cache lookups for "same"/delta). Input layout:
//   byte 0: effort (mod kMaxEffort + 1); byte 1: key count (1..16, low bits), bit 7 the word
//   stride form on; rest: payload bytes.
// (1) the rest as a hostile batch for a Decoder whose cache was warmed with 8 known pages:
//     it must fail cleanly (offset inside the input) or decode; never write outside the pages.
// (2) the rest as page contents (edits over the warm pages): an Encoder warmed the same way
//     encodes them, a second warmed Decoder must rebuild them exactly, and both caches must
//     end identical.
#include <cstring>
#include <vector>

#include "encoders/page_codec.h"
#include "tests/fuzz/encoders/fuzz_reference.h"

using namespace ferry::encoders;

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kWarm = 8;

std::vector<uint8_t> warm_page(size_t k) {
  std::vector<uint8_t> p(kPage, 0);
  for (size_t i = 0; i < kPage; ++i) {
    if (k % 2 == 0 && i % 64 < 8) p[i] = static_cast<uint8_t>(i * 7 + k);
    if (k % 2 == 1) p[i] = static_cast<uint8_t>((i * 2654435761u) >> (k + 8));
  }
  return p;
}

const std::vector<std::vector<uint8_t>>& warm_pages() {
  static const auto v = [] {
    std::vector<std::vector<uint8_t>> w;
    for (size_t k = 0; k < kWarm; ++k) w.push_back(warm_page(k));
    return w;
  }();
  return v;
}

CodecConfig config() {
  CodecConfig c;
  c.page_size = kPage;
  c.cache_bytes = 12 * kPage;  // smaller than warm + new keys: eviction is exercised
  return c;
}

// Feeds the warm pages through enc (when given) and dec as raw-encoded records.
void warm(Encoder* enc, Decoder* dec) {
  std::unique_ptr<Encoder> own;
  if (enc == nullptr) {
    own = std::move(Encoder::create(config())).value();
    enc = own.get();
  }
  std::vector<uint8_t> rec(enc->max_record_size()), out(kPage);
  for (size_t k = 0; k < kWarm; ++k) {
    const size_t len = enc->encode_page(k, warm_pages()[k].data(), rec.data(), nullptr);
    size_t used;
    Form f;
    if (!dec->decode_record(k, {rec.data(), len}, out.data(), &used, &f).ok()) fuzz::fuzz_fail();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int effort = data[0] % (kMaxEffort + 1);
  const size_t nkeys = 1 + data[1] % 16;
  const uint8_t* rest = data + 2;
  const size_t rest_len = size - 2;
  std::vector<uint64_t> keys(nkeys);
  for (size_t i = 0; i < nkeys; ++i) keys[i] = (i * 5 + data[0]) % 20;  // warm and cold keys

  {  // (1) hostile batch
    auto dec = std::move(Decoder::create(config())).value();
    warm(nullptr, dec.get());
    std::vector<uint8_t> out(nkeys * kPage + 64, 0xee);
    const DecodeResult r = dec->decode_batch(keys, {rest, rest_len}, out.data());
    if (!r.ok() && r.offset > rest_len) fuzz::fuzz_fail();
    for (size_t g = nkeys * kPage; g < out.size(); ++g) {
      if (out[g] != 0xee) fuzz::fuzz_fail();
    }
  }

  {  // (2) round trip of pages derived from the input
    auto enc = std::move(Encoder::create(config())).value();
    auto dec = std::move(Decoder::create(config())).value();
    warm(enc.get(), dec.get());
    EncodeParams params = params_for_effort(effort);
    params.word_stride = (data[1] & 0x80) != 0;  // as ferry send sets it before a stream
    enc->set_params(params);
    std::vector<std::vector<uint8_t>> pages(nkeys);
    std::vector<PageRef> refs(nkeys);
    for (size_t i = 0; i < nkeys; ++i) {
      // Start from the key's warm copy (or zero), overwrite a window with input bytes.
      pages[i] = keys[i] < kWarm ? warm_pages()[keys[i]] : std::vector<uint8_t>(kPage, 0);
      if (rest_len > 0) {
        const size_t at = (i * 977) % kPage;
        const size_t len = std::min(rest_len, kPage - at);
        if (i % 3 != 2) std::memcpy(pages[i].data() + at, rest, len);
      }
      refs[i] = {keys[i], pages[i].data()};
    }
    std::vector<uint8_t> wire(enc->max_encoded_size(nkeys));
    const BatchResult br = enc->encode_batch(refs, wire);
    if (br.pages != nkeys) fuzz::fuzz_fail();
    std::vector<uint8_t> out(nkeys * kPage);
    const DecodeResult r = dec->decode_batch(keys, {wire.data(), br.bytes}, out.data());
    if (!r.ok()) fuzz::fuzz_fail();
    for (size_t i = 0; i < nkeys; ++i) {
      if (std::memcmp(out.data() + i * kPage, pages[i].data(), kPage) != 0) fuzz::fuzz_fail();
    }
    if (enc->cache().keys_by_recency() != dec->cache().keys_by_recency()) fuzz::fuzz_fail();
    if (enc->cache().state_digest() != dec->cache().state_digest()) fuzz::fuzz_fail();
  }
  return 0;
}
