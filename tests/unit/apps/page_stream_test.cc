// Unit tests of apps/page_stream.h: a QEMU main stream through PageStreamEncoder (fed in random
// splits, so pages straddle reads), ferry frames, and PageStreamDecoder comes out as a stream
// with the same items: every non-RAM item byte-exact, every RAM record with the same type,
// block, offset and page bytes (only CONTINUE may differ). Hostile PAGES frames are errors.
#include "apps/page_stream.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "../qemu-channel/test_stream_writer.h"
#include "dataplane/protocol.h"

namespace ferry::apps {
namespace {

using dataplane::ByteQueue;
using dataplane::FrameDecoder;
using dataplane::FrameType;
using dataplane::FrameWriter;
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
      if (pass > 0 && i % 3 == 0) continue;  // not re-dirtied
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

// Runs the stream through encoder -> frames -> decoder. prefill: bytes already queued toward
// the link (drives --codec auto's effort).
std::vector<uint8_t> round_trip(const std::vector<uint8_t>& in, encoders::CodecLevel level,
                                uint32_t split_seed, size_t prefill, PageCodecCounters** counters,
                                std::unique_ptr<PageStreamEncoder>& enc) {
  PageCodecOptions opt;
  opt.level = level;
  opt.cache_bytes = 4u << 20;
  enc = std::make_unique<PageStreamEncoder>(opt);
  ByteQueue wire;
  std::vector<uint8_t> junk(prefill, 0xee);
  wire.append(junk.data(), junk.size());
  uint64_t seq = 0, frames = 0;
  FrameWriter fw(wire, seq, frames);
  std::mt19937 rng(split_seed);
  size_t at = 0;
  while (at < in.size()) {
    size_t n = std::min(in.size() - at, size_t{1} + rng() % 20000);
    // The encoder may keep views into its input only during the call: hand it a copy.
    std::vector<uint8_t> chunk(in.begin() + static_cast<long>(at),
                               in.begin() + static_cast<long>(at + n));
    auto st = enc->encode(chunk, fw);
    EXPECT_TRUE(st.is_ok()) << st.message();
    if (!st.is_ok()) break;
    at += n;
  }
  EXPECT_TRUE(enc->finish(fw).is_ok());
  *counters = const_cast<PageCodecCounters*>(&enc->counters());

  PageStreamDecoder dec(64u << 20);
  FrameDecoder fd;
  auto bytes = wire.pending().subspan(prefill);
  fd.push(bytes.data(), bytes.size());
  ByteQueue out;
  FrameDecoder::Frame f;
  for (;;) {
    auto got = fd.next(f);
    EXPECT_TRUE(got.has_value());
    if (!got.has_value() || !*got) break;
    auto st = dec.decode(f.header.type, {f.payload, f.header.len}, out);
    EXPECT_TRUE(st.is_ok()) << st.message();
    if (!st.is_ok()) break;
  }
  EXPECT_EQ(fd.buffered(), 0u);
  auto o = out.pending();
  return {o.begin(), o.end()};
}

void expect_same_items(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  Parsed pa = parse_all(a), pb = parse_all(b);
  ASSERT_FALSE(pa.error);
  ASSERT_FALSE(pb.error) << "the rebuilt stream does not parse";
  ASSERT_EQ(pa.items.size(), pb.items.size());
  for (size_t i = 0; i < pa.items.size(); ++i) {
    const auto& x = pa.items[i];
    const auto& y = pb.items[i];
    ASSERT_EQ(x.kind, y.kind) << "item " << i;
    if (x.kind == ItemKind::kRamRecord) {
      EXPECT_EQ(x.ram.type, y.ram.type) << "item " << i;
      EXPECT_EQ(pa.block[i], pb.block[i]) << "item " << i;
      EXPECT_EQ(x.ram.offset, y.ram.offset) << "item " << i;
      EXPECT_EQ(pa.payload[i], pb.payload[i]) << "item " << i;
      EXPECT_EQ(x.in_package, y.in_package);
      if (x.in_package || x.ram.type == qemu::RamRecordType::kXbzrle) {
        EXPECT_EQ(pa.raw[i], pb.raw[i]) << "opaque RAM record " << i << " changed";
      }
    } else {
      EXPECT_EQ(pa.raw[i], pb.raw[i]) << "item " << i << " (" << qemu::item_kind_name(x.kind)
                                      << ") changed";
    }
  }
}

TEST(PageStream, RoundTripEveryLevelAndSplit) {
  for (auto level : {encoders::CodecLevel::kFast, encoders::CodecLevel::kMax,
                     encoders::CodecLevel::kAuto}) {
    for (uint32_t split = 1; split <= 3; ++split) {
      auto in = sample_stream(split);
      PageCodecCounters* c = nullptr;
      std::unique_ptr<PageStreamEncoder> enc;
      auto out = round_trip(in, level, split, 0, &c, enc);
      SCOPED_TRACE("level " + std::to_string(static_cast<int>(level)) + " split " +
                   std::to_string(split));
      expect_same_items(in, out);
      uint64_t pages = 0;
      for (auto& p : c->pages) pages += p.load();
      EXPECT_GT(pages, 1000u);
      EXPECT_GT(c->pages[static_cast<int>(encoders::Form::kSame)].load() +
                    c->pages[static_cast<int>(encoders::Form::kDelta)].load(),
                0u)
          << "later passes should meet the cache";
    }
  }
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

TEST(PageStreamDecoder, RejectsHostileFrames) {
  PageStreamDecoder dec(1u << 20);
  ByteQueue out;
  // PAGES before CODEC.
  std::vector<uint8_t> pages = {0, 6, 'p', 'c', '.', 'r', 'a', 'm', 0, 1, 0, 0, 0, 0, 0};
  EXPECT_FALSE(dec.decode(FrameType::kPages, pages, out).is_ok());
  // A cache larger than allowed.
  std::vector<uint8_t> codec = {1, 0, 0, 0x10, 0, 0, 0, 0, 0, 0x40, 0, 0, 0};
  auto st = dec.decode(FrameType::kCodec, codec, out);
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("--max-cache-mib"), std::string::npos);
  codec = {1, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0x10, 0, 0};  // 4 KiB pages, 1 MiB cache
  ASSERT_TRUE(dec.decode(FrameType::kCodec, codec, out).is_ok());
  // Bad flags, zero-length block, count beyond the payload, truncated records, bad stream.
  std::vector<std::vector<uint8_t>> bad = {
      {0x80, 1, 'x', 0, 1, 0, 0, 0, 0, 0},
      {0, 0, 0, 1, 0, 0, 0, 0, 0},
      {0, 1, 'x', 0xff, 0xff, 0, 0, 0, 0},
      {0, 1, 'x', 0, 1, 0, 0, 0, 0, 2, 1, 2, 3},
      {1, 1, 'x', 0, 1, 0, 0, 0, 0, 0, 0, 0x10, 0x01, 0x28, 0xb5, 0x2f, 0xfd, 0},
  };
  for (const auto& b : bad) {
    ByteQueue o;
    auto s = dec.decode(FrameType::kPages, b, o);
    EXPECT_FALSE(s.is_ok());
    EXPECT_FALSE(s.message().empty());
  }
}

}  // namespace
}  // namespace ferry::apps
