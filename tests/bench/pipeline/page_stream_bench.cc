// ferry send's encoder on a whole QEMU main stream (pipeline/page_stream.h PageStreamEncoder):
// parse, encode, frame. 64 MiB of guest RAM with real-looking pages (random, text, sparse,
// structured, a fifth zero), sent twice: the second pass has one word changed in every other
// page (delta) and the rest unchanged (same). Fed in 256 KiB reads, as ferry send reads QEMU.
//
//   build/tests/bench/pipeline/page_stream_bench --benchmark_min_time=0.5
//
// Per effort (1 fast, 3/4/5 zstd stream -1/-3/-9) and --encode-threads 1..2: throughput in
// QEMU-stream bytes per second, x_memcpy = that / memcpy of the same stream measured in the
// same process, ratio = link bytes / stream bytes. The 2-thread rows against the 1-thread row
// of the same effort give what --encode-threads buys on this machine.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <random>
#include <vector>

#include "common/byte_queue.h"
#include "dataplane/protocol.h"
#include "pipeline/page_stream.h"
#include "tests/unit/encoders/page_sets.h"
#include "tests/unit/qemu-channel/test_stream_writer.h"

namespace ferry::pipeline {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kRamPages = 16384;  // 64 MiB
constexpr size_t kRead = 256u << 10;

const std::vector<uint8_t>& stream() {
  static const std::vector<uint8_t> s = [] {
    namespace t = encoders::testing;
    std::mt19937_64 rng(2026);
    std::vector<t::Page> ram(kRamPages);
    for (size_t i = 0; i < kRamPages; ++i) {
      switch (i % 5) {
        case 0:
          ram[i] = t::random_page(rng, kPage);
          break;
        case 1:
          ram[i] = t::text_page(rng, kPage);
          break;
        case 2:
          ram[i] = t::sparse_page(rng, kPage);
          break;
        case 3:
          ram[i] = t::structured_page(rng, kPage);
          break;
        default:
          ram[i] = t::Page(kPage, 0);
          break;
      }
    }
    qemu::testing::StreamWriter w;
    w.header().config("pc-i440fx-7.2");
    w.start(2, "ram").mem_size({{"pc.ram", kRamPages * kPage}}).eos().footer(2);
    for (int pass = 0; pass < 2; ++pass) {
      w.part(2);
      for (size_t i = 0; i < kRamPages; ++i) {
        if (pass == 1 && i % 2 == 0) ram[i] = t::one_word_changed(rng, ram[i]);
        const std::string_view name = i == 0 ? "pc.ram" : "";
        if (i % 5 == 4) {
          w.zero(name, i * kPage);
        } else {
          w.word(i * kPage, 0x08, name).raw(ram[i]);
        }
      }
      w.eos().footer(2);
    }
    w.end(2).eos().footer(2).eof();
    return w.bytes;
  }();
  return s;
}

double memcpy_bytes_per_s() {
  static const double rate = [] {
    const auto& s = stream();
    std::vector<uint8_t> dst(s.size());
    double best = 0;
    for (int r = 0; r < 5; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      for (size_t at = 0; at < s.size(); at += kRead) {
        std::memcpy(dst.data() + at, s.data() + at, std::min(kRead, s.size() - at));
      }
      benchmark::DoNotOptimize(dst.data());
      const double dt =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, static_cast<double>(s.size()) / dt);
    }
    return best;
  }();
  return rate;
}

void BM_PageStreamEncode(benchmark::State& state) {
  const int effort = static_cast<int>(state.range(0));
  const auto threads = static_cast<unsigned>(state.range(1));
  const auto& s = stream();
  uint64_t wire = 0;
  double encode_s = 0;
  for (auto _ : state) {
    state.PauseTiming();
    PageCodecOptions opt;
    opt.fixed_effort = effort;
    opt.cache_bytes = 128u << 20;
    opt.encode_threads = threads;
    auto enc = std::make_unique<PageStreamEncoder>(opt);
    ByteQueue q;
    uint64_t seq = 0, frames = 0;
    state.ResumeTiming();
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t at = 0; at < s.size(); at += kRead) {
      pipeline::FrameWriter fw(q, seq, frames);
      if (!enc->encode({s.data() + at, std::min(kRead, s.size() - at)}, fw).is_ok()) {
        state.SkipWithError("encode failed");
        return;
      }
      wire += q.size();
      q.consume(q.size());  // the link took it
    }
    pipeline::FrameWriter fw(q, seq, frames);
    (void)enc->finish(fw);
    encode_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.PauseTiming();
    enc.reset();  // thread and cache teardown is not encoding
    state.ResumeTiming();
  }
  const double bytes = static_cast<double>(s.size()) * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["ratio"] = static_cast<double>(wire) / bytes;
  state.counters["x_memcpy"] = bytes / encode_s / memcpy_bytes_per_s();
}
BENCHMARK(BM_PageStreamEncode)
    ->ArgNames({"effort", "threads"})
    ->ArgsProduct({{1, 3, 4, 5, 6}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace ferry::pipeline

BENCHMARK_MAIN();
