// Google Benchmark of qemu-channel's StreamParser (and the rebuilder) on a stream of normal
// pages, the common case of a default QEMU 7.2 precopy stream (§3.5). Bytes/s are stream bytes.
#include <benchmark/benchmark.h>

#include <vector>

#include "qemu-channel/stream_parser.h"
#include "qemu-channel/stream_rebuilder.h"
#include "tests/unit/qemu-channel/test_stream_writer.h"

namespace {

using ferry::qemu::Item;
using ferry::qemu::ItemKind;
using ferry::qemu::StreamParser;

// 64 MiB of RAM in PART sections of 256 pages, every record but the first per block CONTINUE.
const std::vector<uint8_t>& page_stream() {
  static const std::vector<uint8_t> s = [] {
    ferry::qemu::testing::StreamWriter w;
    constexpr uint64_t kPages = 16384;
    w.header().config("pc-i440fx-7.2").start(2, "ram").mem_size({{"pc.ram", kPages * 4096}});
    w.eos().footer(2);
    for (uint64_t i = 0; i < kPages; ++i) {
      if (i % 256 == 0) w.part(2);
      w.page(i == 0 ? "pc.ram" : "", i * 4096, static_cast<uint8_t>(i));
      if (i % 256 == 255) w.eos().footer(2);
    }
    w.end(2).eos().footer(2).eof();
    return w.bytes;
  }();
  return s;
}

// Parses the stream pushed in pieces of `range(0)` bytes (0 = all at once).
void BM_ParsePages(benchmark::State& state) {
  const auto& s = page_stream();
  const size_t piece = state.range(0) == 0 ? s.size() : static_cast<size_t>(state.range(0));
  uint64_t pages = 0;
  for (auto _ : state) {
    StreamParser p;
    Item it;
    for (size_t pos = 0; pos < s.size(); pos += piece) {
      p.push(std::span<const uint8_t>(s.data() + pos, std::min(piece, s.size() - pos)));
      if (pos + piece >= s.size()) p.finish();
      while (p.next(it) == StreamParser::Next::kItem) {
        pages += it.kind == ItemKind::kRamRecord;
      }
    }
    if (p.error()) state.SkipWithError(p.error()->message.c_str());
  }
  benchmark::DoNotOptimize(pages);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * s.size()));
  state.counters["pages/s"] =
      benchmark::Counter(static_cast<double>(pages), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ParsePages)
    ->Arg(0)
    ->Arg(32 * 1024)
    ->Arg(64 * 1024)
    ->Arg(4000)
    ->Unit(benchmark::kMillisecond);

// A multifd channel: 64 full packets of 128 pages (32 MiB), pushed in `range(0)`-byte
// pieces. A packet is larger than a piece, so each one is assembled in the carry buffer.
void BM_ParseMultifd(benchmark::State& state) {
  static const std::vector<uint8_t> s = [] {
    ferry::qemu::testing::StreamWriter w;
    w.multifd_init(0);
    std::vector<uint64_t> offs;
    for (uint64_t i = 0; i < 128; ++i) offs.push_back(i * 4096);
    for (uint64_t n = 0; n < 64; ++n) w.multifd_packet(0, "pc.ram", offs, n);
    return w.bytes;
  }();
  const size_t piece = static_cast<size_t>(state.range(0));
  uint64_t pages = 0;
  for (auto _ : state) {
    StreamParser p({.role = ferry::qemu::ChannelRole::kMultifd});
    Item it;
    for (size_t pos = 0; pos < s.size(); pos += piece) {
      p.push(std::span<const uint8_t>(s.data() + pos, std::min(piece, s.size() - pos)));
      if (pos + piece >= s.size()) p.finish();
      while (p.next(it) == StreamParser::Next::kItem) {
        if (it.kind == ItemKind::kMultifdPacket) pages += it.multifd.normal_pages;
      }
    }
    if (p.error()) state.SkipWithError(p.error()->message.c_str());
  }
  benchmark::DoNotOptimize(pages);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * s.size()));
}
BENCHMARK(BM_ParseMultifd)->Arg(64 * 1024)->Arg(1 << 20)->Unit(benchmark::kMillisecond);

// Parse + rebuild into a reused output buffer (the receiver's path; bound by memcpy).
void BM_ParseRebuildPages(benchmark::State& state) {
  const auto& s = page_stream();
  std::vector<uint8_t> out;
  out.reserve(s.size());
  for (auto _ : state) {
    StreamParser p;
    ferry::qemu::StreamRebuilder rb;
    Item it;
    out.clear();
    p.push(s);
    p.finish();
    while (p.next(it) == StreamParser::Next::kItem) rb.append(it, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * s.size()));
}
BENCHMARK(BM_ParseRebuildPages)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
