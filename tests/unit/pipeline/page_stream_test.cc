// Unit tests of pipeline/page_stream.h: a QEMU main stream through PageStreamEncoder (fed in random
// splits, so pages straddle reads), ferry frames, and PageStreamDecoder comes out as a stream
// with the same items: every non-RAM item byte-exact, every RAM record with the same type,
// block, offset and page bytes (only CONTINUE may differ). Hostile PAGES frames are errors.
#include "pipeline/page_stream.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "../qemu-channel/test_stream_writer.h"
#include "dataplane/protocol.h"

namespace ferry::pipeline {
namespace {

using dataplane::FrameChecker;
using dataplane::FrameType;
using ferry::ByteQueue;
using pipeline::FrameWriter;
using qemu::ItemKind;
using qemu::StreamParser;
using qemu::testing::StreamWriter;

std::vector<uint8_t> page_bytes(std::mt19937& rng, int kind, uint64_t seed) {
  std::vector<uint8_t> p(4096);
  switch (kind) {
    case 0:  // random
      for (auto& b : p) b = static_cast<uint8_t>(rng());
      break;
    case 1: {  // text-like
      static const char* w[] = {"guest ", "memory ", "page ", "dirty ", "qemu ", "log\n"};
      size_t i = 0;
      while (i < p.size()) {
        const char* s = w[rng() % 6];
        for (; *s && i < p.size(); ++s) p[i++] = static_cast<uint8_t>(*s);
      }
      break;
    }
    case 2:  // sparse
      for (int k = 0; k < 5; ++k) p[rng() % p.size()] = static_cast<uint8_t>(1 + rng() % 255);
      break;
    default:  // structured, depends on seed only (repeats across passes)
      for (size_t i = 0; i < p.size(); i += 8) p[i] = static_cast<uint8_t>(seed + i / 64);
      break;
  }
  return p;
}

// A main stream with several passes over the same pages (so same/delta/cache paths run),
// CONTINUE chains, XBZRLE records between pages, a PACKAGED blob with RAM records inside, and
// a non-zero-fill ZERO record.
std::vector<uint8_t> sample_stream(uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  StreamWriter w;
  w.header().config("pc-i440fx-7.2");
  w.start(2, "ram").mem_size({{"pc.ram", 0x800000}, {"vga.vram", 0x40000}}).eos().footer(2);
  std::vector<std::vector<uint8_t>> ram(1024);
  for (int pass = 0; pass < 3; ++pass) {
    w.part(2);
    std::string last;
    for (size_t i = 0; i < ram.size(); ++i) {
      const uint64_t off = i * 4096;
      const char* block = (i % 37 == 5) ? "vga.vram" : "pc.ram";
      const uint64_t boff = (i % 37 == 5) ? (i % 64) * 4096 : off;
      if (pass > 0 && i % 3 == 0) continue;                // not re-dirtied
      std::string_view name = last == block ? "" : block;  // CONTINUE when legal
      last = block;
      if (i % 11 == 0) {
        w.zero(name, boff);
        continue;
      }
      if (pass > 0 && i % 13 == 1) {
        w.xbzrle(name, boff, {0x01, 0x02, 0xaa});
        continue;
      }
      if (pass > 0 && i % 5 == 2 && !ram[i].empty()) {
        ram[i][rng() % 4096] ^= 0x5a;  // one-byte change: delta
      } else {
        ram[i] = page_bytes(rng, static_cast<int>(i % 4), i);
      }
      w.word(boff, 0x08, name).raw(ram[i]);
    }
    w.eos().footer(2);
  }
  w.zero("pc.ram", 0x10000, 0x7f);  // a ZERO with a non-zero fill stays opaque
  StreamWriter pkg;
  pkg.listen().part(2).page("pc.ram", 0x3000, 9).eos().footer(2).full(7, "timer").fill(16, 1);
  w.packaged(pkg.bytes);
  w.part(2).page("pc.ram", 0x2000, 5).page("", 0x3000, 6).eos().footer(2);
  w.end(2).eos().footer(2).eof();
  return w.bytes;
}

struct Parsed {
  std::vector<qemu::Item> items;
  std::vector<std::vector<uint8_t>> raw;      // copies
  std::vector<std::vector<uint8_t>> payload;  // RAM payload copies
  std::vector<std::string> block;
  bool error = false;
};

Parsed parse_all(const std::vector<uint8_t>& s) {
  Parsed out;
  StreamParser p;
  p.push(s);
  p.finish();
  qemu::Item it;
  for (;;) {
    auto r = p.next(it);
    if (r == StreamParser::Next::kEnd) break;
    if (r != StreamParser::Next::kItem) {
      out.error = true;
      break;
    }
    out.items.push_back(it);
    out.raw.emplace_back(it.raw.begin(), it.raw.end());
    out.payload.emplace_back(it.ram.payload.begin(), it.ram.payload.end());
    out.block.emplace_back(it.ram.block);
  }
  return out;
}

// Decodes every frame of `wire` from byte `from` on into a QEMU stream (all of it must be
// whole frames); shards_seen: the shard of each PAGES frame.
std::vector<uint8_t> decode_all(const ByteQueue& wire, size_t from = 0,
                                std::vector<unsigned>* shards_seen = nullptr) {
  PageStreamDecoder dec(64u << 20);
  FrameChecker check(0);
  auto bytes = wire.pending().subspan(from);
  size_t pos = 0;
  ByteQueue out;
  FrameChecker::Frame f;
  for (;;) {
    auto got = check.next(bytes.data(), bytes.size(), &pos, f);
    EXPECT_TRUE(got.has_value());
    if (!got.has_value() || !*got) break;
    if (shards_seen && f.header.type == FrameType::kPages) {
      shards_seen->push_back(f.payload[0] >> 1);
    }
    auto st = dec.decode(f.header.type, {f.payload, f.header.len}, out);
    EXPECT_TRUE(st.is_ok()) << st.message();
    if (!st.is_ok()) break;
  }
  EXPECT_EQ(pos, bytes.size());
  auto o = out.pending();
  return {o.begin(), o.end()};
}

// Runs the stream through encoder -> frames -> decoder. prefill: bytes already queued toward
// the link (drives --codec auto's effort).
std::vector<uint8_t> round_trip(const std::vector<uint8_t>& in, encoders::CodecLevel level,
                                uint32_t split_seed, size_t prefill, PageCodecCounters** counters,
                                std::unique_ptr<PageStreamEncoder>& enc, unsigned threads = 1,
                                std::vector<unsigned>* shards_seen = nullptr,
                                const std::vector<int>* efforts = nullptr,
                                encoders::CachePolicy policy = encoders::kDefaultCachePolicy) {
  PageCodecOptions opt;
  opt.level = level;
  opt.cache_bytes = 4u << 20;
  opt.cache_policy = policy;
  opt.encode_threads = threads;
  enc = std::make_unique<PageStreamEncoder>(opt);
  ByteQueue wire;
  std::vector<uint8_t> junk(prefill, 0xee);
  wire.append(junk.data(), junk.size());
  uint64_t seq = 0, frames = 0;
  FrameWriter fw(wire, seq, frames);
  std::mt19937 rng(split_seed);
  size_t at = 0, chunks = 0;
  while (at < in.size()) {
    size_t n = std::min(in.size() - at, size_t{1} + rng() % 20000);
    // The encoder may keep views into its input only during the call: hand it a copy.
    std::vector<uint8_t> chunk(in.begin() + static_cast<long>(at),
                               in.begin() + static_cast<long>(at + n));
    if (efforts) enc->set_effort((*efforts)[chunks % efforts->size()]);  // as the policy does
    ++chunks;
    auto st = enc->encode(chunk, fw);
    EXPECT_TRUE(st.is_ok()) << st.message();
    if (!st.is_ok()) break;
    at += n;
  }
  EXPECT_TRUE(enc->finish(fw).is_ok());
  *counters = const_cast<PageCodecCounters*>(&enc->counters());
  return decode_all(wire, prefill, shards_seen);
}

// Encoded pages: PAGE and fill-0 ZERO records outside PACKAGED blobs.
bool encoded_page(const qemu::Item& it) {
  return it.kind == ItemKind::kRamRecord && !it.in_package &&
         (it.ram.type == qemu::RamRecordType::kPage ||
          (it.ram.type == qemu::RamRecordType::kZero && it.ram.fill == 0));
}

// Item order of a parsed stream; with any_page_order, each run of encoded pages between two
// other items sorted by (block, offset) (encode shards may swap pages within such a run).
std::vector<size_t> item_order(const Parsed& p, bool any_page_order) {
  std::vector<size_t> order(p.items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (!any_page_order) return order;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && encoded_page(p.items[j])) ++j;
    std::sort(order.begin() + static_cast<long>(i), order.begin() + static_cast<long>(j),
              [&](size_t x, size_t y) {
                return std::tie(p.block[x], p.items[x].ram.offset) <
                       std::tie(p.block[y], p.items[y].ram.offset);
              });
    i = j == i ? i + 1 : j;
  }
  return order;
}

void expect_same_items(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b,
                       bool any_page_order = false) {
  Parsed pa = parse_all(a), pb = parse_all(b);
  ASSERT_FALSE(pa.error);
  ASSERT_FALSE(pb.error) << "the rebuilt stream does not parse";
  ASSERT_EQ(pa.items.size(), pb.items.size());
  const std::vector<size_t> oa = item_order(pa, any_page_order);
  const std::vector<size_t> ob = item_order(pb, any_page_order);
  for (size_t k = 0; k < pa.items.size(); ++k) {
    const size_t i = oa[k], j = ob[k];
    const auto& x = pa.items[i];
    const auto& y = pb.items[j];
    ASSERT_EQ(x.kind, y.kind) << "item " << i;
    if (x.kind == ItemKind::kRamRecord) {
      EXPECT_EQ(x.ram.type, y.ram.type) << "item " << i;
      EXPECT_EQ(pa.block[i], pb.block[j]) << "item " << i;
      EXPECT_EQ(x.ram.offset, y.ram.offset) << "item " << i;
      EXPECT_EQ(pa.payload[i], pb.payload[j]) << "item " << i;
      EXPECT_EQ(x.in_package, y.in_package);
      if (x.in_package || x.ram.type == qemu::RamRecordType::kXbzrle) {
        EXPECT_EQ(pa.raw[i], pb.raw[j]) << "opaque RAM record " << i << " changed";
      }
    } else {
      EXPECT_EQ(pa.raw[i], pb.raw[j])
          << "item " << i << " (" << qemu::item_kind_name(x.kind) << ") changed";
    }
  }
}

TEST(PageStream, RoundTripEveryLevelSplitAndShardCount) {
  for (auto level :
       {encoders::CodecLevel::kFast, encoders::CodecLevel::kMax, encoders::CodecLevel::kAuto}) {
    for (uint32_t split = 1; split <= 3; ++split) {
      for (unsigned threads : {1u, 2u, 3u}) {
        auto in = sample_stream(split);
        PageCodecCounters* c = nullptr;
        std::unique_ptr<PageStreamEncoder> enc;
        std::vector<unsigned> shards;
        auto out = round_trip(in, level, split, 0, &c, enc, threads, &shards);
        SCOPED_TRACE("level " + std::to_string(static_cast<int>(level)) + " split " +
                     std::to_string(split) + " threads " + std::to_string(threads));
        expect_same_items(in, out, threads > 1);
        uint64_t pages = 0;
        for (auto& p : c->pages) pages += p.load();
        EXPECT_GT(pages, 1000u);
        EXPECT_GT(c->pages[static_cast<int>(encoders::Form::kSame)].load() +
                      c->pages[static_cast<int>(encoders::Form::kDelta)].load(),
                  0u)
            << "later passes should meet the cache";
        // Every shard carried frames, and only those.
        std::vector<bool> seen(threads, false);
        for (unsigned sh : shards) {
          ASSERT_LT(sh, threads);
          seen[sh] = true;
        }
        for (unsigned i = 0; i < threads; ++i) EXPECT_TRUE(seen[i]) << "shard " << i;
      }
    }
  }
}

// The sender's cache policy reaches the receiver in CODEC: with either, the receiver's caches
// follow the sender's (a mismatch would fail "same"/delta decoding), and the cache counters
// are kept.
TEST(PageStream, CachePolicyTravelsInCodec) {
  for (auto policy : {encoders::CachePolicy::kLru, encoders::CachePolicy::kAgedClock}) {
    SCOPED_TRACE(encoders::cache_policy_name(policy));
    auto in = sample_stream(1);
    PageCodecCounters* c = nullptr;
    std::unique_ptr<PageStreamEncoder> enc;
    auto out =
        round_trip(in, encoders::CodecLevel::kFast, 1, 0, &c, enc, 2, nullptr, nullptr, policy);
    expect_same_items(in, out, true);
    EXPECT_GT(c->cache_hits.load(), 0u);
    EXPECT_GT(c->cache_misses.load(), 0u);
    // A hit goes as same or delta, or as RLE when that is shorter than the delta.
    EXPECT_GE(c->cache_hits.load(), c->pages[static_cast<int>(encoders::Form::kSame)].load() +
                                        c->pages[static_cast<int>(encoders::Form::kDelta)].load());
  }
}

// Offsets of the RAM page records of `block`, in stream order.
std::vector<uint64_t> page_order(const std::vector<uint8_t>& s, const std::string& block) {
  Parsed p = parse_all(s);
  std::vector<uint64_t> offs;
  for (size_t i = 0; i < p.items.size(); ++i) {
    if (p.items[i].kind == ItemKind::kRamRecord && p.block[i] == block) {
      offs.push_back(p.items[i].ram.offset);
    }
  }
  return offs;
}

// With post-copy a block backed by 2 MiB host pages announces its page size; its host pages
// must reach the destination whole and in order, so all its pages stay on shard 0. A block of
// 4 KiB pages is spread over the shards (its pages may then swap places).
TEST(PageStream, HostPagesLargerThanTheTargetPageStayInOrder) {
  std::mt19937 rng(3);
  StreamWriter w;
  w.header().config("pc-i440fx-7.2").advise(0x201000, 4096);
  w.start(2, "ram")
      .mem_size({{"pc.ram", 0x800000, 0x200000}, {"vga.vram", 0x40000, 0x1000}})
      .eos()
      .footer(2);
  w.part(2);
  for (uint64_t i = 0; i < 1024; ++i) {
    w.word(i * 4096, 0x08, i ? "" : "pc.ram").raw(page_bytes(rng, 0, i));
  }
  for (uint64_t i = 0; i < 64; ++i) {
    w.word(i * 4096, 0x08, i ? "" : "vga.vram").raw(page_bytes(rng, 1, i));
  }
  w.eos().footer(2).end(2).eos().footer(2).eof();
  PageCodecCounters* c = nullptr;
  std::unique_ptr<PageStreamEncoder> enc;
  auto out = round_trip(w.bytes, encoders::CodecLevel::kFast, 1, 0, &c, enc, 2);
  expect_same_items(w.bytes, out, true);
  EXPECT_EQ(page_order(out, "pc.ram"), page_order(w.bytes, "pc.ram"));
  EXPECT_NE(page_order(out, "vga.vram"), page_order(w.bytes, "vga.vram"))
      << "4 KiB pages should be spread over both shards";
}

TEST(PageStream, AutoClimbsWhileTheLinkIsBehind) {
  auto in = sample_stream(9);
  PageCodecCounters* c = nullptr;
  std::unique_ptr<PageStreamEncoder> enc;
  auto out = round_trip(in, encoders::CodecLevel::kAuto, 5, 4u << 20, &c, enc);
  expect_same_items(in, out);
  EXPECT_GE(c->effort.load(), 3) << "a full link queue should move auto to the zstd stream";
  EXPECT_GT(c->effort_changes.load(), 0u);
  EXPECT_LT(c->wire_bytes.load(), c->page_bytes_in.load() / 2);
}

// auto's first pages already go through the zstd stream (policy::kAutoFirstEffort): on a fast
// link the queue may never build, and effort 1 would put more bytes out than multifd zstd.
TEST(PageStream, AutoStartsWithTheZstdStream) {
  auto in = sample_stream(9);
  PageCodecCounters* c = nullptr;
  std::unique_ptr<PageStreamEncoder> enc;
  auto out = round_trip(in, encoders::CodecLevel::kAuto, 5, 0, &c, enc);
  expect_same_items(in, out);
  EXPECT_EQ(c->effort_pages[1].load(), 0u) << "no page at effort 1 (no stream)";
  EXPECT_GT(c->effort_pages[3].load(), 0u) << "the first pages through the zstd -1 stream";
}

// The policy moves the effort between reads: zstd levels, LZMA2 and no stream at all take
// turns, and every shard's zstd and LZMA2 streams resume in step on the receiver.
TEST(PageStream, EffortChangesBetweenReadsKeepStreamsInStep) {
  const std::vector<int> efforts = {6, 5, 6, 3, 1, 6, 4, 0, 6, 6, 5};
  for (unsigned threads : {1u, 2u}) {
    auto in = sample_stream(4);
    PageCodecCounters* c = nullptr;
    std::unique_ptr<PageStreamEncoder> enc;
    std::vector<unsigned> shards;
    auto out =
        round_trip(in, encoders::CodecLevel::kAuto, 4, 0, &c, enc, threads, &shards, &efforts);
    SCOPED_TRACE("threads " + std::to_string(threads));
    expect_same_items(in, out, threads > 1);
    EXPECT_GE(c->effort_changes.load(), 8u);
  }
}

// The sender parses its stream once: the encoder's counts (--stats-json's pages, commands,
// multifd packets, role and note) equal what a StreamStats tap finds in the same bytes, on the
// main channel (where the encoder parses), on a multifd channel (which it forwards unparsed), on
// a main stream cut mid-record, and on a channel of fewer than 4 bytes.
// Post-copy (issue 19): once holding, the encoder frames nothing until release(); a page the
// destination asks for goes out ahead of the held stream, at a place where a page record is
// valid (the rebuilt stream parses), once; a page held twice is not moved (its copies keep
// their order); everything else keeps its order and bytes.
TEST(PageStream, SaysWhenQemusPostcopyPackageWasFramed) {
  // The pump starts post-copy's pacing once the package is in the kernel (ChannelPump): not
  // before the blob's end went into frames, and not for a stream without one.
  StreamWriter w;
  w.header().config("pc-i440fx-7.2");
  w.start(2, "ram").mem_size({{"pc.ram", 0x100000}}).eos().footer(2);
  w.part(2).page("pc.ram", 0x1000, 3).eos().footer(2);
  StreamWriter pkg;
  pkg.listen().part(2).page("pc.ram", 0x3000, 9).eos().footer(2).full(7, "timer").fill(16, 1);
  w.packaged(pkg.bytes);
  const size_t package_end = w.bytes.size();
  w.part(2).page("pc.ram", 0x2000, 5).eos().footer(2).end(2).eos().footer(2).eof();
  const std::vector<uint8_t>& in = w.bytes;
  PageCodecOptions opt;
  opt.level = encoders::CodecLevel::kFast;
  PageStreamEncoder enc(opt);
  ByteQueue wire;
  uint64_t seq = 0, frames = 0;
  FrameWriter fw(wire, seq, frames);
  ASSERT_TRUE(enc.encode(std::span(in).first(package_end - 1), fw).is_ok());
  EXPECT_FALSE(enc.postcopy_package_framed());
  ASSERT_TRUE(enc.encode(std::span(in).subspan(package_end - 1), fw).is_ok());
  EXPECT_TRUE(enc.postcopy_package_framed());

  StreamWriter none;
  none.header().config("pc-i440fx-7.2");
  none.start(2, "ram").mem_size({{"pc.ram", 0x100000}}).eos().footer(2);
  none.part(2).page("pc.ram", 0x2000, 5).eos().footer(2).end(2).eos().footer(2).eof();
  PageStreamEncoder plain(opt);
  ASSERT_TRUE(plain.encode(none.bytes, fw).is_ok());
  EXPECT_FALSE(plain.postcopy_package_framed());
}

TEST(PageStream, HeldPagesAskedForGoFirst) {
  std::mt19937 rng(7);
  StreamWriter w;
  w.header().config("pc-i440fx-7.2");
  w.start(2, "ram").mem_size({{"pc.ram", 0x400000}}).eos().footer(2);
  std::vector<std::vector<uint8_t>> content;
  size_t held_from = 0;  // the hold begins after section 0, before the next section header
  for (int section = 0; section < 3; ++section) {
    if (section == 1) held_from = w.bytes.size();
    w.part(2);
    for (uint64_t i = 0; i < 100; ++i) {
      const uint64_t page = section * 100 + i;
      content.push_back(page_bytes(rng, static_cast<int>(page % 4), page));
      w.word(page * 4096, 0x08, i == 0 ? "pc.ram" : "").raw(content.back());
    }
    w.eos().footer(2);
  }
  w.part(2).page("pc.ram", 205 * 4096, 0x55).eos().footer(2);  // page 205 again: held twice
  w.end(2).eos().footer(2);                                    // QEMU_VM_EOF comes last, below
  const std::vector<uint8_t>& in = w.bytes;

  PageCodecOptions opt;
  opt.level = encoders::CodecLevel::kFast;
  opt.cache_bytes = 4u << 20;
  PageStreamEncoder enc(opt);
  ByteQueue wire;
  uint64_t seq = 0, frames = 0;
  FrameWriter fw(wire, seq, frames);
  ASSERT_TRUE(enc.encode(std::span(in).first(64), fw).is_ok());
  ASSERT_TRUE(enc.encode(std::span(in).subspan(64, held_from - 64), fw).is_ok());
  ASSERT_TRUE(enc.hold());
  const size_t before = wire.size();
  for (size_t at = held_from; at < in.size();) {
    const size_t n = std::min(in.size() - at, size_t{1} + rng() % 9000);
    std::vector<uint8_t> chunk(in.begin() + static_cast<long>(at),
                               in.begin() + static_cast<long>(at + n));
    ASSERT_TRUE(enc.encode(chunk, fw).is_ok());
    at += n;
  }
  EXPECT_EQ(wire.size(), before) << "a holding encoder framed something before release()";
  EXPECT_GT(enc.held_bytes(), 200u * 4096);

  // Before anything was released: after the next section's header, ahead of its first page.
  enc.promote("pc.ram", 150 * 4096, 4096);
  ASSERT_TRUE(enc.release(0, fw).is_ok());
  ASSERT_TRUE(enc.release(8192, fw).is_ok());  // pages 100 and 101
  enc.promote("pc.ram", 260 * 4096 + 100, 1);  // any byte of the page
  enc.promote("pc.ram", 205 * 4096, 4096);     // held twice: stays
  enc.promote("pc.ram", 150 * 4096, 4096);     // already out: nothing
  enc.promote("vga.vram", 0, 4096);            // never comes: nothing
  ASSERT_TRUE(enc.release(0, fw).is_ok());
  EXPECT_EQ(enc.promoted_pages(), 2u);
  // Asked for before QEMU wrote it (post-copy without preempt: QEMU writes it next, on this
  // channel): it goes first once it comes.
  enc.promote("pc.ram", 310 * 4096, 4096);
  StreamWriter more;
  more.part(2).page("pc.ram", 310 * 4096, 0x31).eos().footer(2).eof();
  ASSERT_TRUE(enc.encode(more.bytes, fw).is_ok());
  ASSERT_TRUE(enc.release(0, fw).is_ok());
  EXPECT_EQ(enc.promoted_pages(), 3u);
  ASSERT_TRUE(enc.finish(fw).is_ok());
  std::vector<uint8_t> whole = in;
  whole.insert(whole.end(), more.bytes.begin(), more.bytes.end());
  EXPECT_EQ(enc.held_bytes(), 0u);

  const std::vector<uint8_t> out = decode_all(wire);
  Parsed pi = parse_all(whole), po = parse_all(out);
  ASSERT_FALSE(po.error) << "the rebuilt stream does not parse";
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> pages_in, pages_out;
  std::vector<std::vector<uint8_t>> other_in, other_out;
  for (auto [p, pages, other] :
       {std::tie(pi, pages_in, other_in), std::tie(po, pages_out, other_out)}) {
    for (size_t i = 0; i < p.items.size(); ++i) {
      if (encoded_page(p.items[i])) {
        pages.emplace_back(p.items[i].ram.offset / 4096, p.payload[i]);
      } else {
        other.push_back(p.raw[i]);
      }
    }
  }
  EXPECT_EQ(other_in, other_out) << "items other than pages changed or moved";
  ASSERT_EQ(pages_out.size(), pages_in.size());
  std::vector<uint64_t> order;
  for (auto& [page, bytes] : pages_out) order.push_back(page);
  const std::vector<uint64_t> next(order.begin() + 100, order.begin() + 106);
  // The share of two pages after 150 went to its neighbours (NeighboursOfAPageAskedForGoNext).
  EXPECT_EQ(next, (std::vector<uint64_t>{150, 151, 152, 260, 310, 153}));
  // Every page with its content, once; page 205's second copy still after its first.
  auto sorted_in = pages_in, sorted_out = pages_out;
  std::stable_sort(sorted_in.begin(), sorted_in.end(),
                   [](auto& a, auto& b) { return a.first < b.first; });
  std::stable_sort(sorted_out.begin(), sorted_out.end(),
                   [](auto& a, auto& b) { return a.first < b.first; });
  EXPECT_EQ(sorted_in, sorted_out);
}

// An encoder fed a stream up to held_from, then holding the rest (post-copy, StreamCodec::
// hold), writing its frames to wire.
struct Holding {
  Holding(const std::vector<uint8_t>& stream, size_t held_from) : enc(options()) {
    EXPECT_TRUE(enc.encode(std::span(stream).first(held_from), fw).is_ok());
    EXPECT_TRUE(enc.hold());
    EXPECT_TRUE(enc.encode(std::span(stream).subspan(held_from), fw).is_ok());
  }
  static PageCodecOptions options() {
    PageCodecOptions opt;
    opt.level = encoders::CodecLevel::kFast;
    opt.cache_bytes = 4u << 20;
    return opt;
  }
  PageStreamEncoder enc;
  ByteQueue wire;
  uint64_t seq = 0, frames = 0;
  FrameWriter fw{wire, seq, frames};
};

// The page numbers of a parsed stream's RAM records, in order.
std::vector<uint64_t> page_numbers(const Parsed& p) {
  std::vector<uint64_t> out;
  for (const qemu::Item& it : p.items) {
    if (it.kind == ItemKind::kRamRecord) out.push_back(it.ram.offset / 4096);
  }
  return out;
}

// After serving a page asked for, QEMU 7.2 goes on scanning from it, so without a hold its
// next pages follow the fault at once. Held, the next kTrailPages pages after a page asked
// for go ahead of the rest (within the link's share): those already held, and those QEMU
// writes after the request (a page not held yet, asked for, then its neighbours).
TEST(PageStream, NeighboursOfAPageAskedForGoNext) {
  std::mt19937 rng(5);
  StreamWriter w;
  w.header().config("pc-i440fx-7.2");
  w.start(2, "ram").mem_size({{"pc.ram", 0x400000}}).eos().footer(2);
  const size_t held_from = w.bytes.size();
  w.part(2);
  for (uint64_t page = 100; page < 200; ++page) {
    w.word(page * 4096, 0x08, page == 100 ? "pc.ram" : "").raw(page_bytes(rng, 0, page));
  }
  w.eos().footer(2);
  Holding h(w.bytes, held_from);
  PageStreamEncoder& enc = h.enc;
  FrameWriter& fw = h.fw;

  enc.promote("pc.ram", 150 * 4096, 4096);
  ASSERT_TRUE(enc.release(0, fw).is_ok());                 // the page asked for: no share needed
  ASSERT_TRUE(enc.release(10 * (4096 + 16), fw).is_ok());  // a share of 10 pages
  EXPECT_EQ(enc.held_pages_followed(), 10u);
  enc.promote("pc.ram", 400 * 4096, 4096);  // not held yet: QEMU writes it, then its next
  StreamWriter more;
  more.part(2);
  for (uint64_t page = 400; page < 406; ++page) {
    more.word(page * 4096, 0x08, page == 400 ? "pc.ram" : "").raw(page_bytes(rng, 1, page));
  }
  more.eos().footer(2).end(2).eos().footer(2).eof();
  ASSERT_TRUE(enc.encode(more.bytes, fw).is_ok());
  ASSERT_TRUE(enc.release(0, fw).is_ok());
  ASSERT_TRUE(enc.release(SIZE_MAX, fw).is_ok());
  ASSERT_TRUE(enc.finish(fw).is_ok());
  EXPECT_EQ(enc.held_pages_followed(), 32u + 5u);

  Parsed po = parse_all(decode_all(h.wire));
  ASSERT_FALSE(po.error) << "the rebuilt stream does not parse";
  const std::vector<uint64_t> order = page_numbers(po);
  std::vector<uint64_t> want = {150};
  for (uint64_t p = 151; p <= 160; ++p) want.push_back(p);
  want.push_back(400);
  for (uint64_t p = 161; p <= 182; ++p) want.push_back(p);
  for (uint64_t p = 401; p <= 405; ++p) want.push_back(p);
  for (uint64_t p = 100; p < 150; ++p) want.push_back(p);
  for (uint64_t p = 183; p < 200; ++p) want.push_back(p);
  EXPECT_EQ(order, want);
}

// A page QEMU writes twice while held keeps its copies in order, even on a trail: only a
// page's first copy goes ahead as a neighbour.
TEST(PageStream, APageHeldTwiceKeepsItsOrderOnATrail) {
  std::mt19937 rng(9);
  StreamWriter w;
  w.header().config("pc-i440fx-7.2");
  w.start(2, "ram").mem_size({{"pc.ram", 0x400000}}).eos().footer(2);
  const size_t held_from = w.bytes.size();
  w.part(2);
  for (uint64_t page = 100; page < 110; ++page) {
    w.word(page * 4096, 0x08, page == 100 ? "pc.ram" : "").raw(page_bytes(rng, 0, page));
  }
  w.word(150 * 4096, 0x08, "").raw(std::vector<uint8_t>(4096, 0x01));  // beyond the first 32
  w.eos().footer(2);
  Holding h(w.bytes, held_from);
  PageStreamEncoder& enc = h.enc;
  FrameWriter& fw = h.fw;
  enc.promote("pc.ram", 100 * 4096, 4096);
  StreamWriter more;  // QEMU writes 150 again, then 120 (both within the trail's span)
  more.part(2)
      .word(150 * 4096, 0x08, "pc.ram")
      .raw(std::vector<uint8_t>(4096, 0x02))
      .word(120 * 4096, 0x08 | 0x20, "")
      .raw(page_bytes(rng, 1, 120));
  more.eos().footer(2).end(2).eos().footer(2).eof();
  ASSERT_TRUE(enc.encode(more.bytes, fw).is_ok());
  ASSERT_TRUE(enc.release(SIZE_MAX, fw).is_ok());
  ASSERT_TRUE(enc.finish(fw).is_ok());
  Parsed po = parse_all(decode_all(h.wire));
  ASSERT_FALSE(po.error) << "the rebuilt stream does not parse";
  const std::vector<uint64_t> order = page_numbers(po);
  std::vector<uint8_t> copies_of_150;
  for (size_t i = 0; i < po.items.size(); ++i) {
    if (po.items[i].kind == ItemKind::kRamRecord && po.items[i].ram.offset == 150 * 4096) {
      copies_of_150.push_back(po.payload[i][0]);
    }
  }
  EXPECT_EQ(order, (std::vector<uint64_t>{100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 120,
                                          150, 150}));
  EXPECT_EQ(copies_of_150, (std::vector<uint8_t>{0x01, 0x02})) << "the second copy went first";
}

// With postcopy-preempt, a held page asked for goes into the preempt channel's stream
// instead (preempt_route.h): between two of QEMU's records there, naming its block (a ZERO
// record for a zero page), and QEMU's next record there names its own block again if it said
// CONTINUE. It is no longer in the main stream. QEMU's end of the preempt stream (EOS) waits
// until the main channel's hold is framed, QEMU's end included: a page asked for meanwhile
// still goes before it.
TEST(PageStream, HeldPagesAskedForGoOnThePreemptStream) {
  std::mt19937 rng(11);
  StreamWriter w;
  w.header().config("pc-i440fx-7.2");
  w.start(2, "ram").mem_size({{"pc.ram", 0x400000}, {"vga.vram", 0x40000}}).eos().footer(2);
  const size_t held_from = w.bytes.size();
  std::vector<std::vector<uint8_t>> content(200);
  w.part(2);
  for (uint64_t page = 100; page < 200; ++page) {
    if (page == 170) {
      w.word(page * 4096, 0x02 | 0x20, "").u8(0);  // a zero page
      continue;
    }
    content[page] = page_bytes(rng, static_cast<int>(page % 4), page);
    w.word(page * 4096, 0x08, page == 100 ? "pc.ram" : "").raw(content[page]);
  }
  w.eos().footer(2).end(2).eos().footer(2).eof();

  PreemptRoute route;
  PageCodecOptions opt;
  opt.level = encoders::CodecLevel::kFast;
  opt.cache_bytes = 4u << 20;
  PageStreamEncoder main_enc(opt), preempt_enc(opt);
  main_enc.set_preempt_route(&route);
  preempt_enc.set_preempt_route(&route);
  ByteQueue main_wire, preempt_wire;
  uint64_t mseq = 0, mframes = 0, pseq = 0, pframes = 0;
  FrameWriter mw(main_wire, mseq, mframes), pw(preempt_wire, pseq, pframes);
  ASSERT_TRUE(main_enc.encode(std::span(w.bytes).first(held_from), mw).is_ok());
  ASSERT_TRUE(main_enc.hold());
  ASSERT_TRUE(main_enc.encode(std::span(w.bytes).subspan(held_from), mw).is_ok());
  EXPECT_EQ(main_enc.wake_fd(), -1) << "only the preempt channel's codec takes routed pages";

  // Before the preempt channel exists: the page goes first on the main channel.
  main_enc.promote("pc.ram", 110 * 4096, 4096);
  ASSERT_TRUE(main_enc.release(0, mw).is_ok());
  EXPECT_EQ(route.routed(), 0u);

  // QEMU's preempt stream begins (a vga.vram page); then two held pages are asked for.
  StreamWriter p1;
  p1.word(0, 0x08, "vga.vram").raw(std::vector<uint8_t>(4096, 0x61));
  p1.word(4096, 0x08 | 0x20, "");  // half a record: QEMU's next write completes it
  ASSERT_TRUE(preempt_enc.encode(p1.bytes, pw).is_ok());
  EXPECT_GE(preempt_enc.wake_fd(), 0);
  main_enc.promote("pc.ram", 150 * 4096, 4096);
  main_enc.promote("pc.ram", 170 * 4096, 4096);
  ASSERT_TRUE(main_enc.release(0, mw).is_ok());
  EXPECT_EQ(route.routed(), 2u);
  EXPECT_TRUE(route.pending());
  ASSERT_TRUE(preempt_enc.write_routed(pw).is_ok());
  EXPECT_FALSE(route.pending());
  pollfd wake{preempt_enc.wake_fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&wake, 1, 0), 0) << "nothing waits, yet the pump would be woken";
  StreamWriter p2;  // the rest of QEMU's CONTINUE record, then its end of the stream
  p2.raw(std::vector<uint8_t>(4096, 0x62)).eos();
  ASSERT_TRUE(preempt_enc.encode(p2.bytes, pw).is_ok());
  const size_t before_eos = preempt_wire.size();
  // QEMU is done with the preempt stream, but pages are still held: one more goes there.
  main_enc.promote("pc.ram", 180 * 4096, 4096);
  ASSERT_TRUE(main_enc.release(0, mw).is_ok());
  EXPECT_EQ(route.routed(), 3u);
  ASSERT_TRUE(preempt_enc.write_routed(pw).is_ok());
  EXPECT_GT(preempt_wire.size(), before_eos);
  // The hold drains, QEMU's end of the main stream included: then the EOS goes.
  ASSERT_TRUE(main_enc.release(SIZE_MAX, mw).is_ok());
  EXPECT_TRUE(route.pending());
  ASSERT_TRUE(preempt_enc.write_routed(pw).is_ok());
  EXPECT_FALSE(route.push({1, 2, 3})) << "a page routed after the EOS would be lost";
  EXPECT_EQ(main_enc.promoted_pages(), 4u);
  ASSERT_TRUE(main_enc.finish(mw).is_ok());
  ASSERT_TRUE(preempt_enc.finish(pw).is_ok());

  // The preempt stream: QEMU's page, the routed ones, QEMU's next page naming its block.
  const std::vector<uint8_t> pre = decode_all(preempt_wire);
  StreamParser pp(qemu::ParserOptions{.role = qemu::ChannelRole::kPreempt});
  pp.push(pre);
  pp.finish();
  qemu::Item it;
  std::vector<std::string> seen;
  for (;;) {
    auto r = pp.next(it);
    if (r == StreamParser::Next::kEnd) break;
    ASSERT_EQ(r, StreamParser::Next::kItem) << "the preempt stream does not parse";
    if (it.kind == ItemKind::kRamEos) {
      seen.push_back("EOS");
      continue;
    }
    ASSERT_EQ(it.kind, ItemKind::kRamRecord);
    seen.push_back(std::string(it.ram.block) + " " + std::to_string(it.ram.offset / 4096) +
                   (it.ram.continued ? " continue" : ""));
    if (it.ram.block == "pc.ram" && it.ram.type == qemu::RamRecordType::kPage) {
      EXPECT_EQ(std::vector<uint8_t>(it.ram.payload.begin(), it.ram.payload.end()),
                content[it.ram.offset / 4096]);
    }
    if (it.ram.block == "pc.ram" && it.ram.offset == 170 * 4096) {
      EXPECT_EQ(it.ram.type, qemu::RamRecordType::kZero);
      EXPECT_EQ(it.ram.fill, 0);
    }
    if (it.ram.block == "vga.vram" && it.ram.offset == 4096) {
      EXPECT_EQ(it.ram.payload[0], 0x62);
    }
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"vga.vram 0", "pc.ram 150", "pc.ram 170", "vga.vram 1",
                                            "pc.ram 180", "EOS"}));

  // The main stream: every page but the routed ones, 110 first.
  Parsed po = parse_all(decode_all(main_wire));
  ASSERT_FALSE(po.error) << "the rebuilt main stream does not parse";
  const std::vector<uint64_t> order = page_numbers(po);
  ASSERT_EQ(order.size(), 97u);
  EXPECT_EQ(order[0], 110u);
  for (uint64_t routed : {150u, 170u, 180u}) {
    EXPECT_EQ(std::count(order.begin(), order.end(), routed), 0) << routed;
  }
}

// Calls f(type, payload) for every frame of wire.
template <typename F>
void for_each_frame(const ByteQueue& wire, F f) {
  FrameChecker check(0);
  auto bytes = wire.pending();
  size_t pos = 0;
  FrameChecker::Frame fr;
  for (;;) {
    auto got = check.next(bytes.data(), bytes.size(), &pos, fr);
    ASSERT_TRUE(got.has_value());
    if (!*got) break;
    f(fr.header.type, std::span<const uint8_t>(fr.payload, fr.header.len));
  }
  EXPECT_EQ(pos, bytes.size());
}

// Post-copy with preempt (postcopy_bases.h): the main channel's caches freeze where QEMU's
// post-copy package begins, at both ends; the pages asked for go on the preempt link as
// same/delta against the frozen copies, QEMU's own and those routed from the hold, and come
// out as the pages QEMU sent, even though the receiver's main channel decoded later copies of
// some of them first.
TEST(PageStream, PostcopyPagesGoAgainstTheFrozenCaches) {
  std::mt19937 rng(21);
  std::mt19937_64 rng64(21);
  auto changed = [&](std::vector<uint8_t> p) {
    p[rng() % p.size()] ^= 0x5a;
    return p;
  };
  std::vector<std::vector<uint8_t>> before(200), after(200);
  StreamWriter w;
  w.header().config("pc-i440fx-7.2");
  w.start(2, "ram").mem_size({{"pc.ram", 0x400000}}).eos().footer(2);
  w.part(2);
  for (uint64_t page = 0; page < 200; ++page) {
    before[page] = page_bytes(rng, page % 2 ? 0 : 1, page);
    w.word(page * 4096, 0x08, page == 0 ? "pc.ram" : "").raw(before[page]);
  }
  w.eos().footer(2);
  const size_t package_at = w.bytes.size();
  StreamWriter pkg;
  pkg.listen().run();
  w.packaged(pkg.bytes);
  // After the switch: pages 0..12 and 60 again, changed (60 will be asked for while held).
  w.part(2);
  for (uint64_t page : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 60}) {
    after[page] = changed(before[page]);
    w.word(page * 4096, 0x08, page == 0 ? "pc.ram" : "").raw(after[page]);
  }
  w.eos().footer(2).end(2).eos().footer(2).eof();

  PreemptRoute route;
  PostcopyBases send_bases, recv_bases;
  PageCodecOptions opt;
  opt.level = encoders::CodecLevel::kFast;
  opt.cache_bytes = 4u << 20;
  PageStreamEncoder main_enc(opt), preempt_enc(opt);
  for (PageStreamEncoder* e : {&main_enc, &preempt_enc}) {
    e->set_preempt_route(&route);
    e->set_postcopy_bases(&send_bases);
  }
  ByteQueue main_wire, preempt_wire;
  uint64_t mseq = 0, mframes = 0, pseq = 0, pframes = 0;
  FrameWriter mw(main_wire, mseq, mframes), pw(preempt_wire, pseq, pframes);
  ASSERT_TRUE(main_enc.encode(std::span(w.bytes).first(package_at), mw).is_ok());
  ASSERT_TRUE(main_enc.hold());
  ASSERT_TRUE(main_enc.encode(std::span(w.bytes).subspan(package_at), mw).is_ok());
  EXPECT_EQ(send_bases.frozen(), nullptr) << "the package is still held";
  ASSERT_TRUE(main_enc.release(1, mw).is_ok());  // the package
  ASSERT_NE(send_bases.frozen(), nullptr);
  // The main link takes the later copies of 0..12 (a page's held size: 4096 + 16); 60 stays.
  ASSERT_TRUE(main_enc.release(13 * (4096 + 16), mw).is_ok());

  // QEMU's preempt stream: 100 changed (delta), 150 as it was (same), 300 never sent, and two
  // pages whose delta would come out wrong against the main channel's later copy at either
  // end: 10 changed elsewhere than that copy (if ferry recv's cache took it), 11 changed from
  // that copy (if ferry send's cache took it). Their frozen copies are those before the switch.
  std::vector<uint8_t> p100 = changed(before[100]), p10 = changed(before[10]);
  std::vector<uint8_t> p11 = changed(after[11]), p300 = page_bytes(rng, 0, 300);
  StreamWriter q;
  q.word(100 * 4096, 0x08, "pc.ram").raw(p100);
  q.word(150 * 4096, 0x08, "").raw(before[150]);
  q.word(10 * 4096, 0x08, "").raw(p10);
  q.word(11 * 4096, 0x08, "").raw(p11);
  q.word(300 * 4096, 0x08, "").raw(p300);
  ASSERT_TRUE(preempt_enc.encode(q.bytes, pw).is_ok());
  main_enc.promote("pc.ram", 60 * 4096, 4096);
  ASSERT_TRUE(main_enc.release(0, mw).is_ok());
  EXPECT_EQ(route.routed(), 1u);
  ASSERT_TRUE(preempt_enc.write_routed(pw).is_ok());
  ASSERT_TRUE(main_enc.release(SIZE_MAX, mw).is_ok());
  StreamWriter eos;
  eos.eos();
  ASSERT_TRUE(preempt_enc.encode(eos.bytes, pw).is_ok());
  ASSERT_TRUE(main_enc.finish(mw).is_ok());
  ASSERT_TRUE(preempt_enc.finish(pw).is_ok());

  const PageCodecCounters& k = preempt_enc.counters();
  EXPECT_EQ(k.postcopy_pages.load(), 6u);
  EXPECT_EQ(k.postcopy_against_base.load(), 5u) << "100, 150, 10, 11 and the routed 60";
  EXPECT_LT(preempt_wire.size(), 4096u + 5 * 200) << "one raw page, five small records";

  // The receiver decodes the whole main stream first: its later copies of 10 and 11 must not
  // become the bases of the preempt channel's.
  PageStreamDecoder main_dec(64u << 20), preempt_dec(64u << 20);
  main_dec.set_postcopy_bases(&recv_bases);
  preempt_dec.set_postcopy_bases(&recv_bases);
  ByteQueue main_out, preempt_out;
  int frozen_frames = 0;
  for_each_frame(main_wire, [&](FrameType t, std::span<const uint8_t> payload) {
    frozen_frames += t == FrameType::kCachesFrozen;
    auto st = main_dec.decode(t, payload, main_out);
    ASSERT_TRUE(st.is_ok()) << st.message();
  });
  EXPECT_EQ(frozen_frames, 1);
  std::vector<uint8_t> first_page_frame;
  for_each_frame(preempt_wire, [&](FrameType t, std::span<const uint8_t> payload) {
    if (t == FrameType::kPostcopyPage && first_page_frame.empty()) {
      first_page_frame.assign(payload.begin(), payload.end());
    }
    auto st = preempt_dec.decode(t, payload, preempt_out);
    ASSERT_TRUE(st.is_ok()) << st.message();
  });

  const auto main_bytes = main_out.pending();
  Parsed mo = parse_all(std::vector<uint8_t>(main_bytes.begin(), main_bytes.end()));
  ASSERT_FALSE(mo.error);
  size_t checked = 0;
  for (size_t i = 0; i < mo.items.size(); ++i) {
    if (mo.items[i].kind != ItemKind::kRamRecord || mo.items[i].in_package) continue;
    const uint64_t page = mo.items[i].ram.offset / 4096;
    const bool late = checked >= 200;  // the pages after the package
    EXPECT_EQ(mo.payload[i], late ? after[page] : before[page]) << page;
    ++checked;
  }
  EXPECT_EQ(checked, 200u + 13) << "60 went on the preempt link";

  StreamParser pp(qemu::ParserOptions{.role = qemu::ChannelRole::kPreempt});
  pp.push(preempt_out.pending());
  pp.finish();
  qemu::Item it;
  std::vector<uint64_t> pages;
  const std::map<uint64_t, const std::vector<uint8_t>*> want = {
      {100, &p100}, {150, &before[150]}, {10, &p10}, {11, &p11}, {300, &p300}, {60, &after[60]}};
  for (;;) {
    auto r = pp.next(it);
    if (r == StreamParser::Next::kEnd) break;
    ASSERT_EQ(r, StreamParser::Next::kItem) << "the preempt stream does not parse";
    if (it.kind == ItemKind::kRamEos) break;
    ASSERT_EQ(it.kind, ItemKind::kRamRecord);
    const uint64_t page = it.ram.offset / 4096;
    pages.push_back(page);
    EXPECT_EQ(std::vector<uint8_t>(it.ram.payload.begin(), it.ram.payload.end()), *want.at(page))
        << page;
  }
  EXPECT_EQ(pages, (std::vector<uint64_t>{100, 150, 10, 11, 300, 60}));

  // A page that decodes to other bytes than the sender's (bases that differ) is an error.
  ASSERT_FALSE(first_page_frame.empty());
  first_page_frame[1 + 6 + 8] ^= 1;  // its crc ("pc.ram")
  auto st = preempt_dec.decode(FrameType::kPostcopyPage, first_page_frame, preempt_out);
  EXPECT_NE(st.message().find("does not match the sender's checksum"), std::string::npos)
      << st.message();
}

TEST(PageStream, EncoderCountsTheStreamAsATapWould) {
  StreamWriter mf;
  mf.multifd_init(1).multifd_packet(0, "pc.ram", {0x1000, 0x5000}, 7).multifd_packet(1, "", {}, 8);
  std::vector<uint8_t> cut = sample_stream(5);
  cut.resize(cut.size() / 2 + 7);
  const std::vector<std::vector<uint8_t>> streams = {sample_stream(6), mf.bytes, cut, {0x51, 0x45}};
  for (size_t k = 0; k < streams.size(); ++k) {
    SCOPED_TRACE("stream " + std::to_string(k));
    const std::vector<uint8_t>& in = streams[k];
    PageCodecOptions opt;
    opt.cache_bytes = 4u << 20;
    PageStreamEncoder enc(opt);
    StreamStats tap(false);
    ByteQueue wire;
    uint64_t seq = 0, frames = 0;
    FrameWriter fw(wire, seq, frames);
    std::mt19937 rng(static_cast<uint32_t>(k));
    for (size_t at = 0; at < in.size();) {
      const size_t n = std::min(in.size() - at, size_t{1} + rng() % 9000);
      std::vector<uint8_t> chunk(in.begin() + static_cast<long>(at),
                                 in.begin() + static_cast<long>(at + n));
      tap.on_bytes(chunk);
      ASSERT_TRUE(enc.encode(chunk, fw).is_ok());
      at += n;
    }
    tap.on_end();
    ASSERT_TRUE(enc.finish(fw).is_ok());
    const StreamStats& got = enc.stream_stats();
    EXPECT_EQ(got.zero.load(), tap.zero.load());
    EXPECT_EQ(got.normal.load(), tap.normal.load());
    EXPECT_EQ(got.xbzrle.load(), tap.xbzrle.load());
    EXPECT_EQ(got.compressed.load(), tap.compressed.load());
    EXPECT_EQ(got.commands.load(), tap.commands.load());
    EXPECT_EQ(got.multifd_packets.load(), tap.multifd_packets.load());
    EXPECT_EQ(got.rp_messages.load(), tap.rp_messages.load());
    EXPECT_STREQ(got.role(), tap.role());
    EXPECT_EQ(got.note(), tap.note());
    if (k == 1) {
      EXPECT_EQ(got.multifd_packets.load(), 2u);
    }
    if (k == 2) {
      EXPECT_NE(got.note(), "") << "a cut stream stops counting";
    }
  }
  // Not vacuous: the main stream has pages of each class the tap counts.
  StreamStats tap(false);
  tap.on_bytes(streams[0]);
  tap.on_end();
  EXPECT_GT(tap.normal.load(), 0u);
  EXPECT_GT(tap.zero.load(), 0u);
  EXPECT_GT(tap.xbzrle.load(), 0u);
}

// A CODEC frame as ferry send writes it: 4 KiB pages, `cache` bytes, `shards` shards.
std::vector<uint8_t> codec_frame(const CodecAnnouncement& c) {
  std::vector<uint8_t> p(kCodecPayloadSize);
  encode_codec(c, p.data());
  return p;
}

CodecAnnouncement real_sender(uint64_t cache = 1u << 20, unsigned shards = 1) {
  CodecAnnouncement c;
  c.cache_bytes = cache;
  c.shards = shards;
  c.max_pages = 64;
  c.zstd_window_log = encoders::kStreamWindowLog;
  c.lzma_dict = encoders::lzma_dict_bytes(0);
  return c;
}

// A PAGES frame of shard 0, block "pc.ram", pages 0..n-1 (4 KiB each) as the page encoder
// writes them, optionally through `stream` (content = page_index[n] record[n]).
std::vector<uint8_t> pages_frame(const std::vector<std::vector<uint8_t>>& pages,
                                 encoders::StreamCompressor* stream = nullptr) {
  encoders::CodecConfig cfg;
  auto enc = encoders::Encoder::create(cfg);
  EXPECT_TRUE(enc);
  encoders::EncodeParams params = encoders::params_for_effort(1);
  params.cache_forms = false;
  (*enc)->set_params(params);
  const size_t n = pages.size();
  std::vector<encoders::PageRef> refs;
  for (size_t i = 0; i < n; ++i) refs.push_back({page_key(0, uint32_t(i)), pages[i].data()});
  std::vector<uint8_t> content(4 * n + (*enc)->max_encoded_size(n));
  for (size_t i = 0; i < n; ++i) {
    const uint32_t idx = uint32_t(i);
    content[4 * i] = uint8_t(idx >> 24);
    content[4 * i + 1] = uint8_t(idx >> 16);
    content[4 * i + 2] = uint8_t(idx >> 8);
    content[4 * i + 3] = uint8_t(idx);
  }
  auto r = (*enc)->encode_batch(refs, {content.data() + 4 * n, content.size() - 4 * n});
  EXPECT_EQ(r.pages, n);
  content.resize(4 * n + r.bytes);
  std::vector<uint8_t> f = {uint8_t(stream ? 1 : 0), 6,         'p', 'c', '.', 'r', 'a', 'm',
                            uint8_t(n >> 8),         uint8_t(n)};
  if (!stream) {
    f.insert(f.end(), content.begin(), content.end());
    return f;
  }
  std::vector<uint8_t> z(encoders::StreamCompressor::max_compressed_size(content.size()));
  auto zl = stream->compress(content, z);
  EXPECT_TRUE(zl);
  const size_t len = content.size();
  f.push_back(uint8_t(stream->kind()));
  for (int sh = 24; sh >= 0; sh -= 8) f.push_back(uint8_t(len >> sh));
  f.insert(f.end(), z.begin(), z.begin() + long(*zl));
  return f;
}

std::vector<std::vector<uint8_t>> zero_pages(size_t n) {
  return std::vector<std::vector<uint8_t>>(n, std::vector<uint8_t>(4096, 0));
}

TEST(PageStreamDecoder, RefusesCodecLimitsAboveItsOwn) {
  ByteQueue out;
  struct Case {
    const char* what;  // in the refusal
    CodecAnnouncement c;
  };
  std::vector<Case> cases;
  auto add = [&](const char* what, auto change) {
    CodecAnnouncement c = real_sender();
    change(c);
    cases.push_back({what, c});
  };
  add("--max-cache-mib", [](CodecAnnouncement& c) { c.cache_bytes = 2u << 20; });
  add("page size", [](CodecAnnouncement& c) { c.page_size = 3000; });
  add("encode shards", [](CodecAnnouncement& c) { c.shards = 65; });
  add("4097 pages", [](CodecAnnouncement& c) { c.max_pages = 4097; });
  add("0 pages", [](CodecAnnouncement& c) { c.max_pages = 0; });
  add("per frame", [](CodecAnnouncement& c) {  // 4096 pages of 64 KiB: 256 MiB a frame
    c.max_pages = 4096;
    c.page_size = 65536;
  });
  add("zstd window of 2^25", [](CodecAnnouncement& c) { c.zstd_window_log = 25; });
  add("zstd window of 2^9", [](CodecAnnouncement& c) { c.zstd_window_log = 9; });
  add("LZMA2 dictionary of 4194304", [](CodecAnnouncement& c) { c.lzma_dict = 4u << 20; });
  add("LZMA2 dictionary of 100", [](CodecAnnouncement& c) { c.lzma_dict = 100; });
  add("64 shards", [](CodecAnnouncement& c) {  // 64 x (16 MiB + 2 MiB) > 1 GiB
    c.shards = 64;
    c.zstd_window_log = 24;
    c.lzma_dict = 2u << 20;
  });
  for (const Case& k : cases) {
    PageStreamDecoder dec(1u << 20);
    Status st = dec.decode(FrameType::kCodec, codec_frame(k.c), out);
    ASSERT_FALSE(st.is_ok()) << k.what;
    EXPECT_NE(st.message().find(k.what), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("CODEC frame"), std::string::npos) << st.message();
    // Refused, nothing built: a PAGES frame still finds no CODEC.
    EXPECT_FALSE(dec.decode(FrameType::kPages, pages_frame(zero_pages(1)), out).is_ok());
  }
  // Other versions (5: the same layout, a fixed-size cache; 6: the same, without CACHES_FROZEN
  // and POSTCOPY_PAGE), and version 7 cut short or padded.
  const std::vector<std::vector<uint8_t>> bad = {
      {},
      {3, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 2},
      {4, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 2, 1},
      {5, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 1, 0, 64, 23, 0, 4, 0, 0},
      {6, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 1, 0, 64, 23, 0, 4, 0, 0},
  };
  for (const auto& c : bad) {
    PageStreamDecoder dec(1u << 20);
    Status st = dec.decode(FrameType::kCodec, c, out);
    ASSERT_FALSE(st.is_ok());
    EXPECT_NE(st.message().find("version"), std::string::npos) << st.message();
  }
  std::vector<uint8_t> c = codec_frame(real_sender());
  c.push_back(0);
  EXPECT_FALSE(PageStreamDecoder(1u << 20).decode(FrameType::kCodec, c, out).is_ok());
  c.resize(kCodecPayloadSize - 1);
  EXPECT_FALSE(PageStreamDecoder(1u << 20).decode(FrameType::kCodec, c, out).is_ok());
  // The largest real sender: 64 shards, 64 pages of 64 KiB, zstd 2^23 and LZMA2 256 KiB.
  CodecAnnouncement big = real_sender(256u << 20, 64);
  big.page_size = 65536;
  PageStreamDecoder dec(256u << 20);
  EXPECT_TRUE(dec.decode(FrameType::kCodec, codec_frame(big), out).is_ok());
}

// Every PAGES frame is held to what CODEC announced: a frame beyond it fails with a sentence
// naming the limit, while the same frame within the limits decodes.
TEST(PageStreamDecoder, EnforcesAnnouncedLimitsOnEveryFrame) {
  ByteQueue out;
  // Pages per frame: 64 announced; a 65-page frame of valid records is refused.
  {
    PageStreamDecoder dec(1u << 20);
    ASSERT_TRUE(dec.decode(FrameType::kCodec, codec_frame(real_sender()), out).is_ok());
    ASSERT_TRUE(dec.decode(FrameType::kPages, pages_frame(zero_pages(64)), out).is_ok());
    Status st = dec.decode(FrameType::kPages, pages_frame(zero_pages(65)), out);
    ASSERT_FALSE(st.is_ok());
    EXPECT_NE(st.message().find("65 pages"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("announced 1..64"), std::string::npos) << st.message();
  }
  if (!encoders::stream_compression_available(encoders::StreamKind::kZstd)) return;
  // zstd: the sender's compressor uses a 2^23 window; a receiver told 2^22 refuses its block,
  // told 2^23 decodes it.
  for (int log : {22, 23}) {
    auto z = encoders::StreamCompressor::create(encoders::StreamKind::kZstd, 1);
    ASSERT_TRUE(z);
    CodecAnnouncement c = real_sender();
    c.zstd_window_log = log;
    PageStreamDecoder dec(1u << 20);
    ASSERT_TRUE(dec.decode(FrameType::kCodec, codec_frame(c), out).is_ok());
    Status st = dec.decode(FrameType::kPages, pages_frame(zero_pages(8), z->get()), out);
    if (log == 23) {
      EXPECT_TRUE(st.is_ok()) << st.message();
    } else {
      ASSERT_FALSE(st.is_ok());
      EXPECT_NE(st.message().find("window above the 4194304 bytes the sender announced"),
                std::string::npos)
          << st.message();
    }
  }
  // A stream kind the CODEC frame announced no window for.
  {
    auto z = encoders::StreamCompressor::create(encoders::StreamKind::kZstd, 1);
    CodecAnnouncement c = real_sender();
    c.zstd_window_log = 0;
    PageStreamDecoder dec(1u << 20);
    ASSERT_TRUE(dec.decode(FrameType::kCodec, codec_frame(c), out).is_ok());
    Status st = dec.decode(FrameType::kPages, pages_frame(zero_pages(1), z->get()), out);
    ASSERT_FALSE(st.is_ok());
    EXPECT_NE(st.message().find("announced none"), std::string::npos) << st.message();
  }
  if (!encoders::stream_compression_available(encoders::StreamKind::kLzma)) return;
  // LZMA2: two equal random pages, the second a match 4 KiB back. A receiver told the minimal
  // 4 KiB dictionary cannot reach it; told the sender's real 256 KiB, it decodes.
  std::mt19937 rng(7);
  std::vector<std::vector<uint8_t>> pages(2, std::vector<uint8_t>(4096));
  for (auto& b : pages[0]) b = uint8_t(rng());
  pages[1] = pages[0];
  for (uint32_t dict : {encoders::kLzmaDictMin, encoders::lzma_dict_bytes(0)}) {
    auto z = encoders::StreamCompressor::create(encoders::StreamKind::kLzma, 0);
    ASSERT_TRUE(z);
    CodecAnnouncement c = real_sender();
    c.lzma_dict = dict;
    PageStreamDecoder dec(1u << 20);
    ASSERT_TRUE(dec.decode(FrameType::kCodec, codec_frame(c), out).is_ok());
    Status st = dec.decode(FrameType::kPages, pages_frame(pages, z->get()), out);
    if (dict == encoders::kLzmaDictMin) {
      ASSERT_FALSE(st.is_ok());
      EXPECT_NE(st.message().find("4096-byte dictionary the sender announced"), std::string::npos)
          << st.message();
    } else {
      EXPECT_TRUE(st.is_ok()) << st.message();
    }
  }
}

// More distinct RAM blocks than the receiver keeps apart.
TEST(PageStreamDecoder, BoundsDistinctBlocks) {
  DecoderLimits lim;
  lim.max_cache_bytes = 1u << 20;
  lim.max_blocks = 3;
  PageStreamDecoder dec(lim);
  ByteQueue out;
  ASSERT_TRUE(dec.decode(FrameType::kCodec, codec_frame(real_sender()), out).is_ok());
  for (char b : {'a', 'b', 'c', 'a', 'd'}) {
    std::vector<uint8_t> f = pages_frame(zero_pages(1));
    f[1] = 1;
    f.erase(f.begin() + 2, f.begin() + 8);
    f.insert(f.begin() + 2, uint8_t(b));
    Status st = dec.decode(FrameType::kPages, f, out);
    EXPECT_EQ(st.is_ok(), b != 'd') << b << ": " << st.message();
  }
}

TEST(PageStreamDecoder, RejectsHostileFrames) {
  PageStreamDecoder dec(1u << 20);
  ByteQueue out;
  // PAGES before CODEC.
  std::vector<uint8_t> pages = {0, 6, 'p', 'c', '.', 'r', 'a', 'm', 0, 1, 0, 0, 0, 0, 0};
  EXPECT_FALSE(dec.decode(FrameType::kPages, pages, out).is_ok());
  CodecAnnouncement c = real_sender(1u << 20, 2);
  c.cache_policy = encoders::CachePolicy::kLru;
  c.max_pages = kMaxPagesPerFrame;
  std::vector<uint8_t> codec = codec_frame(c);
  codec[14] = 2;  // an unknown policy
  EXPECT_FALSE(dec.decode(FrameType::kCodec, codec, out).is_ok());
  codec = codec_frame(c);
  ASSERT_TRUE(dec.decode(FrameType::kCodec, codec, out).is_ok());
  EXPECT_FALSE(dec.decode(FrameType::kCodec, codec, out).is_ok()) << "a second CODEC frame";
  // A shard beyond the CODEC frame's, zero-length block, count beyond the payload, truncated
  // records, an unknown stream kind, a bad zstd block, a bad LZMA2 block, a stream header cut
  // short.
  std::vector<std::vector<uint8_t>> bad = {
      {0x04, 1, 'x', 0, 1, 0, 0, 0, 0, 0},
      {0, 0, 0, 1, 0, 0, 0, 0, 0},
      {0, 1, 'x', 0xff, 0xff, 0, 0, 0, 0},
      {0, 1, 'x', 0, 1, 0, 0, 0, 0, 2, 1, 2, 3},
      {1, 1, 'x', 0, 1, 3, 0, 0, 0x10, 0x04, 0x28, 0xb5, 0x2f, 0xfd, 0},
      {1, 1, 'x', 0, 1, 1, 0, 0, 0x10, 0x04, 0x28, 0xb5, 0x2f, 0xfd, 0},
      {1, 1, 'x', 0, 1, 2, 0, 0, 0x10, 0x04, 0xe0, 0x0f, 0xff, 0x00, 0x20, 0x5d, 0, 0, 0},
      {1, 1, 'x', 0, 1, 2, 0, 0},
  };
  for (const auto& b : bad) {
    ByteQueue o;
    auto s = dec.decode(FrameType::kPages, b, o);
    EXPECT_FALSE(s.is_ok());
    EXPECT_FALSE(s.message().empty());
  }
}

}  // namespace
}  // namespace ferry::pipeline
