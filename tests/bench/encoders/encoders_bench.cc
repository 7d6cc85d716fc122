// Kernel and codec benchmarks, one core, 4 KiB pages, per page set. Every throughput is
// compared with memcpy of the same pages measured in the same process (counter x_memcpy);
// codecs also report their compression ratio (counter ratio = input bytes / output bytes).
//
//   ninja -C build-enc tests/bench/encoders/encoders_bench
//   build-enc/tests/bench/encoders/encoders_bench --benchmark_min_time=0.2
//
// Page sets (tests/unit/encoders/page_sets.h): random, text, sparse, structured, zero; the
// delta benchmarks encode "one word changed" pages against the set's own pages. With
// FERRY_BENCH_GUEST_PAGES=DUMP (a guest's RAM, e.g. QMP pmemsave) one more set, "guest": 256
// of the dump's non-zero pages, evenly spread over it.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "encoders/codecs.h"
#include "encoders/kernels.h"
#include "encoders/page_codec.h"
#include "tests/unit/encoders/page_sets.h"

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

constexpr size_t kPage = 4096;
constexpr size_t kPages = 256;  // 1 MiB per set: stays in L2/L3 like a batch being encoded

using testing::Page;

struct PageSet {
  std::string name;
  std::vector<Page> pages;
  std::vector<Page> changed;  // one_word_changed(pages[i])
};

// kPages non-zero pages of a RAM dump, evenly spread over its non-zero pages.
std::vector<Page> guest_pages(const char* path) {
  std::vector<Page> nonzero;
  if (FILE* f = std::fopen(path, "rb")) {
    Page p(kPage);
    while (std::fread(p.data(), 1, kPage, f) == kPage) {
      if (std::any_of(p.begin(), p.end(), [](uint8_t b) { return b != 0; })) nonzero.push_back(p);
    }
    std::fclose(f);
  }
  if (nonzero.size() < kPages) {
    std::fprintf(stderr, "FERRY_BENCH_GUEST_PAGES=%s: fewer than %zu non-zero pages\n", path,
                 kPages);
    std::exit(2);
  }
  std::vector<Page> picked;
  for (size_t i = 0; i < kPages; ++i) picked.push_back(nonzero[i * nonzero.size() / kPages]);
  return picked;
}

const std::vector<PageSet>& sets() {
  static const std::vector<PageSet> s = [] {
    std::vector<PageSet> v;
    std::mt19937_64 rng(2026);
    const char* names[] = {"random", "text", "sparse", "structured", "zero"};
    for (const char* name : names) {
      PageSet ps{name, {}, {}};
      for (size_t i = 0; i < kPages; ++i) {
        const std::string n = name;
        Page p = n == "random"       ? testing::random_page(rng, kPage)
                 : n == "text"       ? testing::text_page(rng, kPage)
                 : n == "sparse"     ? testing::sparse_page(rng, kPage)
                 : n == "structured" ? testing::structured_page(rng, kPage)
                                     : Page(kPage, 0);
        ps.changed.push_back(testing::one_word_changed(rng, p));
        ps.pages.push_back(std::move(p));
      }
      v.push_back(std::move(ps));
    }
    if (const char* dump = std::getenv("FERRY_BENCH_GUEST_PAGES")) {
      PageSet ps{"guest", guest_pages(dump), {}};
      for (const Page& p : ps.pages) ps.changed.push_back(testing::one_word_changed(rng, p));
      v.push_back(std::move(ps));
    }
    return v;
  }();
  return s;
}

// memcpy of the set's pages, page by page into one destination page: bytes per second.
double memcpy_rate(size_t set) {
  static std::map<size_t, double> cache;
  auto it = cache.find(set);
  if (it != cache.end()) return it->second;
  const auto& pages = sets()[set].pages;
  std::vector<uint8_t> dst(kPage);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    size_t bytes = 0;
    for (int loop = 0; loop < 200; ++loop) {
      for (const Page& p : pages) {
        std::memcpy(dst.data(), p.data(), kPage);
        benchmark::DoNotOptimize(dst.data());
        benchmark::ClobberMemory();
        bytes += kPage;
      }
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(bytes) / s);
  }
  cache[set] = best;
  return best;
}

// Common finish: bytes processed, x_memcpy, ratio.
void finish(benchmark::State& st, size_t set, size_t in_bytes, size_t out_bytes) {
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * kPage));
  const double rate = static_cast<double>(st.iterations() * kPage);
  st.counters["x_memcpy"] =
      benchmark::Counter(rate / memcpy_rate(set), benchmark::Counter::kIsRate);
  if (out_bytes > 0) {
    st.counters["ratio"] = static_cast<double>(in_bytes) / static_cast<double>(out_bytes);
  }
}

void BM_Memcpy(benchmark::State& st, size_t set) {
  const auto& pages = sets()[set].pages;
  std::vector<uint8_t> dst(kPage);
  size_t i = 0;
  for (auto _ : st) {
    std::memcpy(dst.data(), pages[i++ % kPages].data(), kPage);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  finish(st, set, 0, 0);
}

void BM_ZeroDetect(benchmark::State& st, size_t set, IsZeroFn fn) {
  const auto& pages = sets()[set].pages;
  size_t i = 0;
  for (auto _ : st) benchmark::DoNotOptimize(fn(pages[i++ % kPages].data(), kPage));
  finish(st, set, 0, 0);
}

void BM_RleEncode(benchmark::State& st, size_t set, const Kernels* k) {
  const auto& pages = sets()[set].pages;
  std::vector<uint8_t> out(2 * kPage);
  std::vector<uint64_t> bits(rle_scratch_words(kPage));
  size_t i = 0, in = 0, outb = 0;
  for (auto _ : st) {
    const size_t len =
        rle_encode(*k, pages[i++ % kPages].data(), kPage, out.data(), kPage - 3, bits.data());
    benchmark::DoNotOptimize(len);
    in += kPage;
    outb += len == kTooBig ? kPage + 1 : len + 3;  // what the record would cost
  }
  finish(st, set, in, outb);
}

void BM_RleDecode(benchmark::State& st, size_t set) {
  const auto& pages = sets()[set].pages;
  std::vector<std::vector<uint8_t>> enc(kPages);
  std::vector<uint64_t> bits(rle_scratch_words(kPage));
  for (size_t j = 0; j < kPages; ++j) {
    enc[j].resize(2 * kPage);
    enc[j].resize(
        rle_encode(kernels(), pages[j].data(), kPage, enc[j].data(), 2 * kPage, bits.data()));
  }
  std::vector<uint8_t> out(kPage);
  size_t i = 0;
  for (auto _ : st) {
    const auto& e = enc[i++ % kPages];
    benchmark::DoNotOptimize(rle_decode(e.data(), e.size(), out.data(), kPage));
    benchmark::ClobberMemory();
  }
  finish(st, set, 0, 0);
}

void BM_DeltaEncode(benchmark::State& st, size_t set, const Kernels* k) {
  const auto& s = sets()[set];
  std::vector<uint8_t> out(kPage);
  std::vector<uint64_t> bits(rle_scratch_words(kPage));
  size_t i = 0, in = 0, outb = 0;
  for (auto _ : st) {
    const size_t j = i++ % kPages;
    k->diff_bitmap(s.changed[j].data(), s.pages[j].data(), kPage, bits.data());
    const size_t len = delta_encode(s.changed[j].data(), kPage, bits.data(), out.data(), kPage - 3);
    benchmark::DoNotOptimize(len);
    in += kPage;
    outb += len + 3;
  }
  finish(st, set, in, outb);
}

// As the Decoder does it: copy the cached base, then apply the delta.
void BM_DeltaDecode(benchmark::State& st, size_t set) {
  const auto& s = sets()[set];
  std::vector<std::vector<uint8_t>> enc(kPages);
  std::vector<uint64_t> bits(rle_scratch_words(kPage));
  for (size_t j = 0; j < kPages; ++j) {
    kernels().diff_bitmap(s.changed[j].data(), s.pages[j].data(), kPage, bits.data());
    enc[j].resize(kPage);
    enc[j].resize(delta_encode(s.changed[j].data(), kPage, bits.data(), enc[j].data(), kPage));
  }
  std::vector<uint8_t> out(kPage);
  size_t i = 0;
  for (auto _ : st) {
    const size_t j = i++ % kPages;
    std::memcpy(out.data(), s.pages[j].data(), kPage);
    benchmark::DoNotOptimize(delta_decode(enc[j].data(), enc[j].size(), out.data(), kPage));
    benchmark::ClobberMemory();
  }
  finish(st, set, 0, 0);
}

// Heavy codecs through the real Encoder/Decoder with only that codec enabled (RLE off), so the
// numbers include the record framing and fallback to raw.
void BM_Heavy(benchmark::State& st, size_t set, HeavyCodec c, int level, bool decode) {
  if (!heavy_available(c)) {
    st.SkipWithError("codec not available in this build");
    return;
  }
  const auto& pages = sets()[set].pages;
  CodecConfig cfg;
  auto enc = std::move(Encoder::create(cfg)).value();
  auto dec = std::move(Decoder::create(cfg)).value();
  EncodeParams p;
  p.cache_forms = false;
  p.rle = false;
  p.heavy = c;
  p.heavy_level = level;
  enc->set_params(p);
  std::vector<std::vector<uint8_t>> recs(kPages);
  size_t total = 0;
  for (size_t j = 0; j < kPages; ++j) {
    recs[j].resize(enc->max_record_size());
    recs[j].resize(enc->encode_page(j, pages[j].data(), recs[j].data(), nullptr));
    total += recs[j].size();
  }
  std::vector<uint8_t> out(enc->max_record_size());
  size_t i = 0;
  for (auto _ : st) {
    const size_t j = i++ % kPages;
    if (decode) {
      size_t used;
      Form f;
      benchmark::DoNotOptimize(dec->decode_record(j, recs[j], out.data(), &used, &f));
    } else {
      benchmark::DoNotOptimize(enc->encode_page(j, pages[j].data(), out.data(), nullptr));
    }
    benchmark::ClobberMemory();
  }
  finish(st, set, kPages * kPage, total);
}

// The whole Encoder (zero test, cache, form choice, framing, cache update) at an effort level,
// first pass (cold cache, every page new) and re-send pass (every page one word changed).
void BM_EncoderEffort(benchmark::State& st, size_t set, int effort, bool resend) {
  const auto& s = sets()[set];
  CodecConfig cfg;
  cfg.cache_bytes = 2 * kPages * kPage;
  auto enc = std::move(Encoder::create(cfg)).value();
  enc->set_params(params_for_effort(effort));
  std::vector<uint8_t> out(enc->max_record_size());
  if (resend) {
    for (size_t j = 0; j < kPages; ++j) enc->encode_page(j, s.pages[j].data(), out.data(), nullptr);
  }
  size_t i = 0, outb = 0, in = 0;
  uint64_t round = 0;
  for (auto _ : st) {
    const size_t j = i % kPages;
    // Alternate base and changed copies so every re-send really differs from the cache.
    const Page& pg = resend ? (((i / kPages) & 1) == 0 ? s.changed[j] : s.pages[j]) : s.pages[j];
    const uint64_t key = resend ? j : (round << 8 | j);  // first pass: always a new key
    outb += enc->encode_page(key, pg.data(), out.data(), nullptr);
    in += kPage;
    if (++i % kPages == 0) ++round;
  }
  finish(st, set, in, outb);
}

// Issue 18: the whole Encoder (effort 1) on a working set swept pass after pass, with one word
// changed per page per pass, its cache 1/1.25 or 1/2 of the set, per cache policy: speed, and
// "cached", the share of pages that left as same or delta.
void BM_CacheSweep(benchmark::State& st, size_t set, CachePolicy policy, int ws_percent) {
  const auto& s = sets();
  CodecConfig cfg;
  cfg.cache_bytes = kPages * 100 / static_cast<size_t>(ws_percent) * kPage;
  cfg.cache_policy = policy;
  auto enc = std::move(Encoder::create(cfg)).value();
  std::vector<uint8_t> out(enc->max_record_size());
  const auto& pages = s[set];
  for (size_t j = 0; j < kPages; ++j) {
    enc->encode_page(j, pages.pages[j].data(), out.data(), nullptr);
  }
  size_t i = 0, outb = 0, in = 0, cached = 0;
  for (auto _ : st) {
    const size_t j = i % kPages;
    const Page& pg = ((i / kPages) & 1) == 0 ? pages.changed[j] : pages.pages[j];
    Form f;
    outb += enc->encode_page(j, pg.data(), out.data(), &f);
    cached += f == Form::kSame || f == Form::kDelta;
    in += kPage;
    ++i;
  }
  finish(st, set, in, outb);
  st.counters["cached"] = static_cast<double>(cached) / static_cast<double>(i ? i : 1);
}

void register_all() {
  const auto& s = sets();
  std::vector<const Kernels*> ks;
  for (const KernelVariant& kv : kernel_variants()) {
    if (kv.available) ks.push_back(kv.kernels);
  }
  for (size_t set = 0; set < s.size(); ++set) {
    const std::string n = s[set].name;
    benchmark::RegisterBenchmark(("memcpy/" + n).c_str(), BM_Memcpy, set);
    if (n == "zero") {
      for (const Kernels* k : ks) {
        benchmark::RegisterBenchmark(("zero_detect/" + n + "/" + k->name).c_str(), BM_ZeroDetect,
                                     set, k->is_zero);
      }
      if (isal_is_zero() != nullptr) {
        benchmark::RegisterBenchmark(("zero_detect/" + n + "/isal").c_str(), BM_ZeroDetect, set,
                                     isal_is_zero());
      }
      continue;
    }
    for (const Kernels* k : ks) {
      benchmark::RegisterBenchmark(("rle_encode/" + n + "/" + k->name).c_str(), BM_RleEncode, set,
                                   k);
    }
    benchmark::RegisterBenchmark(("rle_decode/" + n).c_str(), BM_RleDecode, set);
    for (const Kernels* k : ks) {
      benchmark::RegisterBenchmark(("delta_encode/" + n + "+1word/" + k->name).c_str(),
                                   BM_DeltaEncode, set, k);
    }
    benchmark::RegisterBenchmark(("delta_decode/" + n + "+1word").c_str(), BM_DeltaDecode, set);
    struct H {
      const char* name;
      HeavyCodec c;
      int level;
    };
    for (const H& h : {H{"lz4", HeavyCodec::kLz4, 1}, H{"zstd-1", HeavyCodec::kZstd, 1},
                       H{"igzip-1", HeavyCodec::kDeflate, 1}}) {
      benchmark::RegisterBenchmark((std::string(h.name) + "_encode/" + n).c_str(), BM_Heavy, set,
                                   h.c, h.level, false);
      benchmark::RegisterBenchmark((std::string(h.name) + "_decode/" + n).c_str(), BM_Heavy, set,
                                   h.c, h.level, true);
    }
    for (const CachePolicy policy : {CachePolicy::kLru, CachePolicy::kAgedClock}) {
      for (const int ws_percent : {125, 200}) {
        benchmark::RegisterBenchmark(("cache_sweep/" + n + "/" + cache_policy_name(policy) + "/ws" +
                                      std::to_string(ws_percent) + "pct")
                                         .c_str(),
                                     BM_CacheSweep, set, policy, ws_percent);
      }
    }
    for (int effort : {0, 1, 2, 3, 5}) {
      benchmark::RegisterBenchmark(
          ("encoder_effort" + std::to_string(effort) + "/" + n + "/first").c_str(),
          BM_EncoderEffort, set, effort, false);
      benchmark::RegisterBenchmark(
          ("encoder_effort" + std::to_string(effort) + "/" + n + "/resend1word").c_str(),
          BM_EncoderEffort, set, effort, true);
    }
  }
}

}  // namespace
}  // namespace ferry::encoders

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  ferry::encoders::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
