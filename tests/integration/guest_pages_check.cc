// Round trips of every page form and every kernel variant on real guest memory: two RAM dumps
// of one rig guest (pmemsave), the second taken after its workload ran on, so a page that the
// guest changed in between is a real delta against its earlier copy. test_encoding.py
// guest_pages makes the dumps and runs this.
//
//   guest_pages_check EARLIER LATER
//
// Every check names the first page that fails it and makes the exit code 1:
//  1. zero detection: every kernel variant (and ISA-L) agrees with a byte comparison;
//  2. RLE: every variant writes the scalar variant's bytes, which decode to the page and
//     match the byte-at-a-time reading of docs/ENCODING.md §2 (or every variant finds that
//     the page does not fit);
//  3. delta of each later page against its earlier copy: the same bytes from every variant,
//     decoded over the earlier copy (and read byte at a time as docs/ENCODING.md §3) they
//     give the later page;
//  4. word stride: every stride round-trips every page;
//  5. the Encoder/Decoder pair (cache, form choice, framing): windows of EARLIER and LATER in
//     turn through one cache smaller than the guest (pages are re-sent while cached, fall out,
//     and come back whole), for every effort and every heavy codec with every kernel variant;
//     decoded pages equal the input and every variant writes the same records;
//  6. the records of the word-stride run through a zstd and an LZMA2 stream, block by block.
// Then it requires that every form occurred at least once: dumps that exercise nothing fail.
#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "encoders/codecs.h"
#include "encoders/kernels.h"
#include "encoders/page_codec.h"
#include "encoders/stream_compressor.h"
#include "tests/fuzz/encoders/fuzz_reference.h"

namespace ferry::encoders {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kBatch = 64;              // pages per encode_batch, as ferry send
constexpr size_t kCacheBytes = 16u << 20;  // 4096 pages: far fewer than the guest has
constexpr size_t kWindow = 1024;           // pages of one dump between the other's

struct Dump {
  std::string path;
  std::vector<uint8_t> bytes;
  size_t pages() const { return bytes.size() / kPage; }
  const uint8_t* page(size_t i) const { return bytes.data() + i * kPage; }
};

int g_failures = 0;

#define CHECK_OR_FAIL(cond, ...)                  \
  do {                                            \
    if (!(cond)) {                                \
      std::fprintf(stderr, "FAIL: " __VA_ARGS__); \
      std::fputc('\n', stderr);                   \
      ++g_failures;                               \
      return;                                     \
    }                                             \
  } while (0)

bool read_dump(const char* path, Dump* d) {
  d->path = path;
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) {
    std::fprintf(stderr, "guest_pages_check: cannot open %s: %s\n", path, std::strerror(errno));
    return false;
  }
  uint8_t buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0)
    d->bytes.insert(d->bytes.end(), buf, buf + got);
  const bool err = std::ferror(f) != 0;
  std::fclose(f);
  if (err || d->bytes.empty() || d->bytes.size() % kPage != 0) {
    std::fprintf(stderr, "guest_pages_check: %s: %zu bytes, not a whole number of pages\n", path,
                 d->bytes.size());
    return false;
  }
  return true;
}

std::vector<const Kernels*> variants() {
  std::vector<const Kernels*> v;
  for (const KernelVariant& kv : kernel_variants()) {
    if (kv.available) v.push_back(kv.kernels);
  }
  return v;
}

// One page's output from the first kernel variant; every later variant must write the same.
class SameAsFirst {
 public:
  void reset() { have_ = false; }
  bool matches(const uint8_t* out, size_t len) {
    if (!have_) {
      have_ = true;
      len_ = len;
      if (len != kTooBig) bytes_.assign(out, out + len);
      return true;
    }
    return len == len_ && (len == kTooBig || std::memcmp(out, bytes_.data(), len) == 0);
  }
  size_t len() const { return len_; }

 private:
  bool have_ = false;
  size_t len_ = 0;
  std::vector<uint8_t> bytes_;
};

void check_zero(const Dump& d, uint64_t* zero_pages) {
  static const uint8_t kZeros[kPage] = {};
  const IsZeroFn isal = isal_is_zero();
  *zero_pages = 0;
  for (size_t i = 0; i < d.pages(); ++i) {
    const bool truth = std::memcmp(d.page(i), kZeros, kPage) == 0;
    *zero_pages += truth;
    for (const Kernels* k : variants()) {
      CHECK_OR_FAIL(k->is_zero(d.page(i), kPage) == truth, "%s page %zu: %s is_zero says %d",
                    d.path.c_str(), i, k->name, !truth);
    }
    if (isal != nullptr) {
      CHECK_OR_FAIL(isal(d.page(i), kPage) == truth, "%s page %zu: isal_zero_detect says %d",
                    d.path.c_str(), i, !truth);
    }
  }
}

void check_rle(const Dump& d, uint64_t* encoded) {
  std::vector<uint64_t> bits(rle_scratch_words(kPage));
  std::vector<uint8_t> enc(kPage + 64), out(kPage), ref;
  SameAsFirst first;
  *encoded = 0;
  for (size_t i = 0; i < d.pages(); ++i) {
    first.reset();
    for (const Kernels* k : variants()) {
      // The encoder's capacity for RLE: below raw's record.
      const size_t len = rle_encode(*k, d.page(i), kPage, enc.data(), kPage - 3, bits.data());
      CHECK_OR_FAIL(first.matches(enc.data(), len), "%s page %zu: %s RLE differs from %s",
                    d.path.c_str(), i, k->name, variants()[0]->name);
      if (len == kTooBig) continue;
      std::memset(out.data(), 0xcc, kPage);
      const DecodeResult r = rle_decode(enc.data(), len, out.data(), kPage);
      CHECK_OR_FAIL(r.ok(), "%s page %zu: RLE decode: %s at %u", d.path.c_str(), i,
                    decode_error_name(r.error), r.offset);
      CHECK_OR_FAIL(std::memcmp(out.data(), d.page(i), kPage) == 0,
                    "%s page %zu: RLE round trip differs", d.path.c_str(), i);
      CHECK_OR_FAIL(fuzz::ref_rle_decode(enc.data(), len, kPage, &ref) &&
                        std::memcmp(ref.data(), d.page(i), kPage) == 0,
                    "%s page %zu: RLE bytes do not follow docs/ENCODING.md §2", d.path.c_str(), i);
    }
    *encoded += first.len() != kTooBig;
  }
}

void check_delta(const Dump& a, const Dump& b, uint64_t* changed) {
  std::vector<uint64_t> bits(bitmap_words(kPage));
  std::vector<uint8_t> enc(kPage), out(kPage), ref;
  SameAsFirst first;
  *changed = 0;
  const size_t pages = std::min(a.pages(), b.pages());
  for (size_t i = 0; i < pages; ++i) {
    const bool differs = std::memcmp(a.page(i), b.page(i), kPage) != 0;
    *changed += differs;
    first.reset();
    for (const Kernels* k : variants()) {
      CHECK_OR_FAIL(k->diff_bitmap(b.page(i), a.page(i), kPage, bits.data()) == differs,
                    "page %zu: %s diff_bitmap says %d", i, k->name, !differs);
      if (!differs) continue;
      const size_t len = delta_encode(b.page(i), kPage, bits.data(), enc.data(), kPage - 3);
      CHECK_OR_FAIL(first.matches(enc.data(), len), "page %zu: %s delta differs from %s", i,
                    k->name, variants()[0]->name);
      if (len == kTooBig) continue;
      std::memcpy(out.data(), a.page(i), kPage);
      const DecodeResult r = delta_decode(enc.data(), len, out.data(), kPage);
      CHECK_OR_FAIL(r.ok(), "page %zu: delta decode: %s at %u", i, decode_error_name(r.error),
                    r.offset);
      CHECK_OR_FAIL(std::memcmp(out.data(), b.page(i), kPage) == 0,
                    "page %zu: delta round trip differs", i);
      ref.assign(a.page(i), a.page(i) + kPage);
      CHECK_OR_FAIL(fuzz::ref_delta_decode(enc.data(), len, &ref) &&
                        std::memcmp(ref.data(), b.page(i), kPage) == 0,
                    "page %zu: delta bytes do not follow docs/ENCODING.md §3", i);
    }
  }
}

void check_stride(const Dump& d, uint64_t* chosen) {
  std::vector<uint8_t> enc(kPage), out(kPage);
  *chosen = 0;
  for (size_t i = 0; i < d.pages(); ++i) {
    const unsigned pick = choose_word_stride(d.page(i), kPage);
    CHECK_OR_FAIL(pick == 0 || valid_word_stride(pick), "%s page %zu: stride %u chosen",
                  d.path.c_str(), i, pick);
    *chosen += pick != 0;
    for (unsigned k : kWordStrides) {
      word_stride_encode(d.page(i), kPage, k, enc.data());
      word_stride_decode(enc.data(), kPage, k, out.data());
      CHECK_OR_FAIL(std::memcmp(out.data(), d.page(i), kPage) == 0,
                    "%s page %zu: stride %u round trip differs", d.path.c_str(), i, k);
    }
  }
}

struct PipelineRun {
  std::string name;
  EncodeParams params;
};

std::vector<PipelineRun> pipeline_runs() {
  std::vector<PipelineRun> runs;
  for (int e = 0; e <= 5; ++e)
    runs.push_back({"effort " + std::to_string(e), params_for_effort(e)});
  EncodeParams stride = params_for_effort(1);
  stride.rle = false;  // as ferry send before a stream: raw pages go word-differenced
  stride.word_stride = true;
  runs.push_back({"word stride", stride});
  for (const CodecInfo& c : heavy_codecs()) {
    if (!c.available) continue;
    EncodeParams p = params_for_effort(1);
    p.heavy = c.codec;
    p.heavy_level = 1;
    p.good_enough = 0;  // always try the heavy codec too
    runs.push_back({std::string("heavy ") + c.name, p});
  }
  return runs;
}

// Encodes EARLIER and LATER through one Encoder and decodes through one Decoder; returns the
// CRC32C of all records (the same for every kernel variant) and adds the forms to `forms`.
// records, when given, receives every batch's records as one block each.
uint32_t run_pipeline(const PipelineRun& run, const Kernels* k, const Dump& a, const Dump& b,
                      uint64_t forms[kFormCount], std::vector<std::vector<uint8_t>>* records) {
  CodecConfig cfg;
  cfg.page_size = kPage;
  cfg.cache_bytes = kCacheBytes;
  cfg.kernels = k;
  auto enc = Encoder::create(cfg);
  auto dec = Decoder::create(cfg);
  if (!enc || !dec) {
    std::fprintf(stderr, "FAIL: %s: cannot create the codec pair\n", run.name.c_str());
    ++g_failures;
    return 0;
  }
  (*enc)->set_params(run.params);
  std::vector<uint8_t> out((*enc)->max_encoded_size(kBatch));
  std::vector<uint8_t> decoded(kBatch * kPage);
  std::vector<PageRef> refs;
  std::vector<uint64_t> keys;
  std::vector<Form> fs(kBatch);
  uint32_t crc = 0;
  // A migration's order in miniature: a window of EARLIER, then the same window of LATER
  // (its pages are still cached: same or delta), window after window, so the cache evicts;
  // then EARLIER's first window again, long evicted, so its pages come back whole.
  struct Step {
    const Dump* dump;
    size_t first, count;
  };
  std::vector<Step> steps;
  for (size_t w = 0; w < a.pages(); w += kWindow) {
    const size_t count = std::min(kWindow, a.pages() - w);
    steps.push_back({&a, w, count});
    steps.push_back({&b, w, count});
  }
  steps.push_back({&a, 0, std::min(kWindow, a.pages())});
  for (const Step& st : steps) {
    const Dump* d = st.dump;
    for (size_t first = st.first; first < st.first + st.count; first += kBatch) {
      const size_t count = std::min(kBatch, st.first + st.count - first);
      refs.clear();
      keys.clear();
      for (size_t i = first; i < first + count; ++i) {
        refs.push_back({i, d->page(i)});
        keys.push_back(i);
      }
      const BatchResult r = (*enc)->encode_batch(refs, out, {}, fs);
      if (r.pages != count) {
        std::fprintf(stderr, "FAIL: %s %s: batch at page %zu encoded %zu of %zu pages\n",
                     run.name.c_str(), k->name, first, r.pages, count);
        ++g_failures;
        return crc;
      }
      crc = crc32c_extend(crc, out.data(), r.bytes);
      for (size_t i = 0; i < count; ++i) forms[static_cast<size_t>(fs[i])]++;
      if (records != nullptr) records->emplace_back(out.begin(), out.begin() + r.bytes);
      const DecodeResult dr = (*dec)->decode_batch(keys, {out.data(), r.bytes}, decoded.data(), {});
      if (!dr.ok()) {
        std::fprintf(stderr, "FAIL: %s %s: %s page %zu: decode: %s at %u\n", run.name.c_str(),
                     k->name, d->path.c_str(), first, decode_error_name(dr.error), dr.offset);
        ++g_failures;
        return crc;
      }
      for (size_t i = 0; i < count; ++i) {
        if (std::memcmp(decoded.data() + i * kPage, d->page(first + i), kPage) != 0) {
          std::fprintf(stderr, "FAIL: %s %s: %s page %zu decodes to other bytes\n",
                       run.name.c_str(), k->name, d->path.c_str(), first + i);
          ++g_failures;
          return crc;
        }
      }
    }
  }
  return crc;
}

// Blocks of records through one stream of each kind, decompressed in order.
void check_streams(const std::vector<std::vector<uint8_t>>& blocks) {
  for (StreamKind kind : {StreamKind::kZstd, StreamKind::kLzma}) {
    const char* name = kind == StreamKind::kZstd ? "zstd" : "LZMA2";
    auto c = StreamCompressor::create(kind, kind == StreamKind::kZstd ? 9 : 0);
    auto d = StreamDecompressor::create(kind);
    if (!c || !d) {
      std::printf("%s stream: not in this build (%s)\n", name,
                  (!c ? c.status() : d.status()).message().c_str());
      continue;
    }
    std::vector<uint8_t> packed, back;
    uint64_t in_bytes = 0, out_bytes = 0;
    for (size_t i = 0; i < blocks.size(); ++i) {
      const auto& blk = blocks[i];
      packed.resize(StreamCompressor::max_compressed_size(blk.size()));
      auto n = (*c)->compress(blk, packed);
      CHECK_OR_FAIL(n.has_value(), "%s stream block %zu: %s", name, i,
                    n.status().message().c_str());
      back.assign(blk.size(), 0);
      const Status s = (*d)->decompress({packed.data(), *n}, back);
      CHECK_OR_FAIL(s.is_ok(), "%s stream block %zu: %s", name, i, s.message().c_str());
      CHECK_OR_FAIL(back == blk, "%s stream block %zu decompresses to other bytes", name, i);
      in_bytes += blk.size();
      out_bytes += *n;
    }
    std::printf("%s stream: %zu blocks, %" PRIu64 " -> %" PRIu64 " bytes\n", name, blocks.size(),
                in_bytes, out_bytes);
  }
}

// Forms of a heavy codec exist only where the build has that codec.
bool form_in_build(Form f) {
  switch (f) {
    case Form::kLz4:
      return heavy_available(HeavyCodec::kLz4);
    case Form::kZstd:
      return heavy_available(HeavyCodec::kZstd);
    case Form::kDeflate:
      return heavy_available(HeavyCodec::kDeflate);
    default:
      return true;
  }
}

int run(const char* earlier, const char* later) {
  Dump a, b;
  if (!read_dump(earlier, &a) || !read_dump(later, &b)) return 2;
  if (a.pages() != b.pages()) {
    std::fprintf(stderr, "guest_pages_check: the dumps differ in size (%zu and %zu pages)\n",
                 a.pages(), b.pages());
    return 2;
  }
  std::printf("dumps: %zu pages each; kernel variants:", a.pages());
  for (const Kernels* k : variants()) std::printf(" %s", k->name);
  std::printf("\n");

  uint64_t zero = 0, rle = 0, changed = 0, strided = 0;
  for (const Dump* d : {&a, &b}) {
    check_zero(*d, &zero);
    check_rle(*d, &rle);
    check_stride(*d, &strided);
    std::printf("%s: %" PRIu64 " zero pages, %" PRIu64 " that RLE shrinks, %" PRIu64
                " a word stride suits\n",
                d->path.c_str(), zero, rle, strided);
  }
  check_delta(a, b, &changed);
  std::printf("pages that changed between the dumps: %" PRIu64 "\n", changed);

  uint64_t forms[kFormCount] = {};
  std::vector<std::vector<uint8_t>> stride_records;
  for (const PipelineRun& r : pipeline_runs()) {
    uint64_t run_forms[kFormCount] = {};
    uint32_t first_crc = 0;
    for (size_t v = 0; v < variants().size(); ++v) {
      const bool keep = r.params.word_stride && v == 0;
      const uint32_t crc =
          run_pipeline(r, variants()[v], a, b, run_forms, keep ? &stride_records : nullptr);
      if (v == 0) first_crc = crc;
      if (crc != first_crc) {
        std::fprintf(stderr, "FAIL: %s: %s writes other records than %s\n", r.name.c_str(),
                     variants()[v]->name, variants()[0]->name);
        ++g_failures;
      }
    }
    std::printf("%-14s", r.name.c_str());
    for (size_t f = 0; f < kFormCount; ++f) {
      if (run_forms[f] != 0) {
        std::printf(" %s %" PRIu64, form_name(static_cast<Form>(f)), run_forms[f]);
      }
      forms[f] += run_forms[f];
    }
    std::printf("\n");
  }
  check_streams(stride_records);

  for (size_t f = 0; f < kFormCount; ++f) {
    const Form form = static_cast<Form>(f);
    if (!form_in_build(form)) continue;
    if (forms[f] == 0) {
      std::fprintf(stderr, "FAIL: no page took the %s form: the dumps do not exercise it\n",
                   form_name(form));
      ++g_failures;
    }
  }
  std::printf("%s: %d failure(s)\n", g_failures == 0 ? "PASS" : "FAIL", g_failures);
  return g_failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace ferry::encoders

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr,
                 "usage: guest_pages_check EARLIER LATER\n"
                 "  two pmemsave dumps of one guest; checks every page form and kernel variant\n"
                 "  on their pages (see the comment at the top of guest_pages_check.cc)\n");
    return 2;
  }
  return ferry::encoders::run(argv[1], argv[2]);
}
