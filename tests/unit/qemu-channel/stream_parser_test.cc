// Unit tests of qemu-channel/stream_parser and stream_rebuilder on handmade streams.
#include "qemu-channel/stream_parser.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "qemu-channel/stream_rebuilder.h"
#include "tests/unit/qemu-channel/test_stream_writer.h"

namespace ferry::qemu {
namespace {

using testing::StreamWriter;

// A copy of one item, with the decoded fields that matter rendered as text so whole item
// sequences can be compared across splits.
struct Copy {
  ItemKind kind;
  uint64_t offset;
  bool in_package;
  OpaqueOf opaque_of;
  std::vector<uint8_t> raw;
  std::string info;
  bool operator==(const Copy&) const = default;
};

std::string describe(const Item& it) {
  char buf[512];
  switch (it.kind) {
    case ItemKind::kRamRecord:
      std::snprintf(buf, sizeof buf, "ram t=%d c=%d f=0x%x off=0x%llx blk=%s pl=%zu fill=%u",
                    static_cast<int>(it.ram.type), it.ram.continued, it.ram.flags,
                    static_cast<unsigned long long>(it.ram.offset),
                    std::string(it.ram.block).c_str(), it.ram.payload.size(), it.ram.fill);
      return buf;
    case ItemKind::kSectionHeader:
    case ItemKind::kFooter:
      std::snprintf(buf, sizeof buf, "sec t=%u id=%u %s i=%u v=%u", it.section.type,
                    it.section.section_id, std::string(it.section.idstr).c_str(),
                    it.section.instance_id, it.section.version_id);
      return buf;
    case ItemKind::kCommand:
      std::snprintf(buf, sizeof buf, "cmd %s len=%u ping=%u pkg=%u blk=%s n=%u",
                    command_name(it.command.cmd), it.command.len, it.command.ping_value,
                    it.command.packaged_len, std::string(it.command.block).c_str(),
                    it.command.discard_ranges);
      return buf;
    case ItemKind::kRpMessage:
      std::snprintf(
          buf, sizeof buf, "rp %s v=%u s=%llu l=%u blk=%s bm=%llu", rp_type_name(it.rp.type),
          it.rp.value, static_cast<unsigned long long>(it.rp.start), it.rp.length,
          std::string(it.rp.block).c_str(), static_cast<unsigned long long>(it.rp.bitmap_size));
      return buf;
    case ItemKind::kMultifdPacket:
      std::snprintf(buf, sizeof buf, "mf n=%u sync=%d c=%u blk=%s data=%zu num=%llu",
                    it.multifd.normal_pages, it.multifd.sync, it.multifd.compression,
                    std::string(it.multifd.block).c_str(), it.multifd.data.size(),
                    static_cast<unsigned long long>(it.multifd.packet_num));
      return buf;
    case ItemKind::kConfiguration:
      return "cfg " + std::string(it.config.machine) + (it.config.x_ignore_shared ? " xis" : "");
    default:
      return item_kind_name(it.kind);
  }
}

struct Parsed {
  std::vector<Copy> items;
  std::vector<uint8_t> rebuilt;
  bool error = false;
  uint64_t error_offset = 0;
  std::string error_message;
  int64_t passthrough_from = -1;
  std::vector<RamBlockInfo> blocks;
};

bool mergeable(ItemKind k) { return k == ItemKind::kOpaque || k == ItemKind::kPassthrough; }

// Parses `in` fed in pieces whose sizes come from `cuts` (empty: one push).
Parsed parse(const std::vector<uint8_t>& in, ParserOptions opt = {}, uint32_t seed = 0,
             size_t max_piece = 0) {
  Parsed r;
  StreamParser parser(opt);
  StreamRebuilder rb(opt.target_page_size);
  std::mt19937 rng(seed);
  size_t pos = 0;
  Item it;
  bool done = false;
  while (!done) {
    size_t piece = in.size() - pos;
    if (max_piece != 0 && piece > 0) {
      piece = std::min(piece, std::uniform_int_distribution<size_t>(1, max_piece)(rng));
    }
    // Each piece lives in its own heap buffer that dies after the drain, so a parser that
    // kept a stale view would be caught by ASan.
    std::vector<uint8_t> buf(in.begin() + static_cast<std::ptrdiff_t>(pos),
                             in.begin() + static_cast<std::ptrdiff_t>(pos + piece));
    pos += piece;
    parser.push(buf);
    if (pos == in.size()) parser.finish();
    for (;;) {
      auto n = parser.next(it);
      if (n == StreamParser::Next::kItem) {
        Copy c{it.kind,
               it.stream_offset,
               it.in_package,
               it.opaque_of,
               std::vector<uint8_t>(it.raw.begin(), it.raw.end()),
               describe(it)};
        if (!r.items.empty() && mergeable(c.kind) && r.items.back().kind == c.kind &&
            r.items.back().opaque_of == c.opaque_of) {
          r.items.back().raw.insert(r.items.back().raw.end(), c.raw.begin(), c.raw.end());
        } else {
          r.items.push_back(std::move(c));
        }
        rb.append(it, r.rebuilt);
        continue;
      }
      if (n == StreamParser::Next::kNeedMore) {
        EXPECT_FALSE(pos == in.size()) << "kNeedMore after finish()";
        break;
      }
      if (n == StreamParser::Next::kError) {
        r.error = true;
        r.error_offset = parser.error()->offset;
        r.error_message = parser.error()->message;
      }
      done = true;
      break;
    }
    if (pos == in.size()) done = true;
  }
  r.passthrough_from = parser.passthrough_from();
  r.blocks = parser.ram_blocks();
  return r;
}

std::vector<ItemKind> kinds(const Parsed& p) {
  std::vector<ItemKind> k;
  for (const auto& c : p.items) k.push_back(c.kind);
  return k;
}

// A main-channel stream touching every item kind the main channel has, ending in EOF.
std::vector<uint8_t> sample_main(bool with_vmdesc = false) {
  StreamWriter w;
  w.header().config("pc-i440fx-7.2").config_caps({"x-ignore-shared"});
  w.open_rp().ping(1).advise_empty();
  w.start(2, "ram").mem_size(
      {{"pc.ram", 0x40000, 0, 0x0, true}, {"pc.bios", 0x2000, 0, 0xfffe0000, true}});
  w.zero("pc.ram", 0)
      .page("", 0x1000, 1)
      .page("pc.bios", 0x1000, 2)
      .xbzrle("", 0, {0x01, 0x02, 0xaa, 0xbb});
  w.compressed("pc.ram", 0x3000, {1, 2, 3, 4, 5}).multifd_flush().eos().footer(2);
  w.part(2).page("", 0x4000, 3).zero("pc.ram", 0x5000).eos().footer(2);
  w.discard("pc.ram", {{0, 0x1000}, {0x2000, 0x3000}}).ping(2);
  StreamWriter pkg;
  pkg.listen().full(7, "timer").fill(20, 0x33).footer(7);
  StreamWriter pkg2;  // the FULL forces opaque to the end of the blob; RUN is inside it
  pkg2.raw(pkg.bytes).ping(3).run();
  w.packaged(pkg2.bytes).ping(4);
  w.part(2).page("pc.ram", 0x6000, 4).eos().footer(2);
  w.end(2).zero("", 0x7000).eos().footer(2).eof();
  if (with_vmdesc) w.vmdesc("{\"page_size\":4096}");
  return w.bytes;
}

TEST(StreamParser, MainStreamItemsAndRebuild) {
  auto in = sample_main(true);
  auto p = parse(in);
  ASSERT_FALSE(p.error) << p.error_message;
  using K = ItemKind;
  std::vector<K> want = {K::kHeader,
                         K::kConfiguration,
                         K::kCommand,
                         K::kCommand,
                         K::kCommand,
                         K::kSectionHeader,
                         K::kRamBlockList,
                         K::kRamRecord,
                         K::kRamRecord,
                         K::kRamRecord,
                         K::kRamRecord,
                         K::kRamRecord,
                         K::kMultifdFlush,
                         K::kRamEos,
                         K::kFooter,
                         K::kSectionHeader,
                         K::kRamRecord,
                         K::kRamRecord,
                         K::kRamEos,
                         K::kFooter,
                         K::kCommand,
                         K::kCommand,
                         K::kCommand /*PACKAGED*/,
                         K::kCommand /*LISTEN*/,
                         K::kOpaque,
                         K::kPackagedEnd,
                         K::kCommand,
                         K::kSectionHeader,
                         K::kRamRecord,
                         K::kRamEos,
                         K::kFooter,
                         K::kSectionHeader,
                         K::kRamRecord,
                         K::kRamEos,
                         K::kFooter,
                         K::kEof,
                         K::kVmdesc,
                         K::kOpaque};
  EXPECT_EQ(kinds(p), want);
  EXPECT_EQ(p.rebuilt, in);
  EXPECT_EQ(p.passthrough_from, -1);
  ASSERT_EQ(p.blocks.size(), 2u);
  EXPECT_EQ(p.blocks[1].name, "pc.bios");
  EXPECT_EQ(p.blocks[1].mr_addr, 0xfffe0000u);
  EXPECT_EQ(p.items[1].info, "cfg pc-i440fx-7.2 xis");
  // CONTINUE resolution, also across sections.
  EXPECT_EQ(p.items[8].info, "ram t=1 c=1 f=0x28 off=0x1000 blk=pc.ram pl=4096 fill=0");
  EXPECT_EQ(p.items[10].info, "ram t=2 c=1 f=0x60 off=0x0 blk=pc.bios pl=4 fill=0");
  EXPECT_EQ(p.items[16].info, "ram t=1 c=1 f=0x28 off=0x4000 blk=pc.ram pl=4096 fill=0");
  EXPECT_EQ(p.items[20].info, "cmd POSTCOPY_RAM_DISCARD len=41 ping=0 pkg=0 blk=pc.ram n=2");
  EXPECT_TRUE(p.items[23].in_package);
  EXPECT_FALSE(p.items[22].in_package);
  EXPECT_EQ(p.items[24].opaque_of, OpaqueOf::kPackagedRest);
  EXPECT_EQ(p.items[32].info, "ram t=0 c=1 f=0x22 off=0x7000 blk=pc.ram pl=1 fill=0");
  EXPECT_EQ(p.items.back().opaque_of, OpaqueOf::kVmdescJson);
}

TEST(StreamParser, SplitInvariance) {
  for (bool vm : {false, true}) {
    auto in = sample_main(vm);
    auto whole = parse(in);
    ASSERT_FALSE(whole.error);
    for (uint32_t seed = 1; seed < 400; ++seed) {
      size_t maxp = seed % 4 == 0 ? 1 : seed % 4 == 1 ? 7 : seed % 4 == 2 ? 100 : 5000;
      auto split = parse(in, {}, seed, maxp);
      ASSERT_FALSE(split.error) << split.error_message << " seed " << seed;
      ASSERT_EQ(split.items, whole.items) << "seed " << seed;
      ASSERT_EQ(split.rebuilt, in) << "seed " << seed;
    }
  }
}

TEST(StreamParser, TruncationAtEveryOffsetIsAnError) {
  auto in = sample_main(false);
  for (size_t cut = 0; cut < in.size(); ++cut) {
    std::vector<uint8_t> prefix(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(cut));
    for (size_t maxp : {size_t{0}, size_t{3}}) {
      auto p = parse(prefix, {}, static_cast<uint32_t>(cut), maxp);
      ASSERT_TRUE(p.error) << "cut at " << cut;
      EXPECT_LE(p.error_offset, cut);
      EXPECT_FALSE(p.error_message.empty());
      // Everything before the error point was parsed and rebuilds exactly.
      ASSERT_LE(p.rebuilt.size(), cut);
      EXPECT_TRUE(std::equal(p.rebuilt.begin(), p.rebuilt.end(), in.begin()));
    }
  }
}

TEST(StreamParser, PassthroughAfterFullSectionStreams) {
  StreamWriter w;
  w.header().config("pc-i440fx-7.2").start(2, "ram").mem_size({{"pc.ram", 0x10000}});
  w.page("pc.ram", 0, 9).eos().footer(2).end(2).eos().footer(2);
  size_t full_at = w.bytes.size();
  w.full(3, "cpu").fill(100, 0x11).footer(3).eof().vmdesc("{}");
  auto in = w.bytes;
  StreamParser parser;
  // Feed only up to the middle of the device state: bytes must already come out.
  parser.push(std::span<const uint8_t>(in.data(), full_at + 50));
  Item it;
  size_t passthrough_bytes = 0;
  while (parser.next(it) == StreamParser::Next::kItem) {
    if (it.kind == ItemKind::kPassthrough) passthrough_bytes += it.raw.size();
  }
  EXPECT_EQ(passthrough_bytes, 50u);
  EXPECT_EQ(parser.passthrough_from(), static_cast<int64_t>(full_at));
  parser.push(std::span<const uint8_t>(in.data() + full_at + 50, in.size() - full_at - 50));
  parser.finish();
  StreamParser::Next n;
  while ((n = parser.next(it)) == StreamParser::Next::kItem) passthrough_bytes += it.raw.size();
  EXPECT_EQ(n, StreamParser::Next::kEnd);
  EXPECT_EQ(passthrough_bytes, in.size() - full_at);
}

TEST(StreamParser, PassthroughTriggers) {
  {  // non-ram START (e.g. block migration, 10.x early FULL sections)
    StreamWriter w;
    w.header().config("pc").start(1, "block", 0, 1).fill(10, 1);
    auto p = parse(w.bytes);
    EXPECT_FALSE(p.error);
    EXPECT_EQ(p.passthrough_from, 15);
    EXPECT_EQ(p.rebuilt, w.bytes);
  }
  {  // unknown configuration subsection
    StreamWriter w;
    w.header().config("pc").config_uuid().u8(0x05).str8("configuration/new").be32(1).fill(9, 2);
    auto p = parse(w.bytes);
    EXPECT_FALSE(p.error);
    EXPECT_EQ(p.passthrough_from, 8 + 7 + 1 + 1 + 18 + 4 + 16);
    EXPECT_EQ(p.rebuilt, w.bytes);
    EXPECT_EQ(p.items[1].kind, ItemKind::kConfiguration);
  }
  {  // ram START with a version QEMU would reject: not ours to judge, forward it
    StreamWriter w;
    w.header().start(1, "ram", 0, 5).fill(4, 0);
    auto p = parse(w.bytes);
    EXPECT_FALSE(p.error);
    EXPECT_EQ(p.passthrough_from, 8);
  }
  {  // PART of a non-ram iterable (dirty-bitmap during postcopy)
    StreamWriter w;
    w.header().start(2, "ram").mem_size({{"pc.ram", 0x2000}}).eos().footer(2).part(9).fill(3, 0);
    auto p = parse(w.bytes);
    EXPECT_FALSE(p.error);
    EXPECT_GT(p.passthrough_from, 0);
  }
}

TEST(StreamParser, PostcopyBlockListWithPageSizes) {
  // ADVISE 16 with a 2 MiB summary: hugetlbfs blocks carry a page_size word (§3.3).
  StreamWriter w;
  w.header().advise(0x201000, 4096).start(2, "ram");
  w.mem_size({{"pc.ram", 0x400000, 0x200000}, {"pc.bios", 0x40000}, {"last", 0x200000, 0x200000}});
  w.page("pc.ram", 0x3ff000, 1).eos().footer(2).eof();
  auto p = parse(w.bytes);
  ASSERT_FALSE(p.error) << p.error_message;
  ASSERT_EQ(p.blocks.size(), 3u);
  EXPECT_EQ(p.blocks[0].page_size, 0x200000u);
  EXPECT_EQ(p.blocks[1].page_size, 0u);
  EXPECT_EQ(p.blocks[2].page_size, 0x200000u);
  EXPECT_EQ(p.rebuilt, w.bytes);
  // And the same list where the last block has no page size.
  StreamWriter v;
  v.header().advise(0x201000, 4096).start(2, "ram");
  v.mem_size({{"pc.ram", 0x400000, 0x200000}, {"pc.bios", 0x40000}}).eos().footer(2).eof();
  auto q = parse(v.bytes);
  ASSERT_FALSE(q.error) << q.error_message;
  EXPECT_EQ(q.blocks[1].page_size, 0u);
}

TEST(StreamParser, RecoveryConnection) {
  StreamWriter w;
  w.recv_bitmap_cmd("pc.ram").resume().part(2).page("pc.ram", 0x1000, 1).page("", 0x2000, 2);
  w.eos().footer(2).end(2).eos().footer(2).eof();
  auto p = parse(w.bytes);
  ASSERT_FALSE(p.error) << p.error_message;
  EXPECT_EQ(p.items[0].info, "cmd RECV_BITMAP len=7 ping=0 pkg=0 blk=pc.ram n=0");
  EXPECT_EQ(p.items[3].kind, ItemKind::kRamRecord);
  EXPECT_EQ(p.rebuilt, w.bytes);
}

TEST(StreamParser, PreemptChannel) {
  StreamWriter w;
  w.page("pc.ram", 0x1000, 1).page("", 0x2000, 2).zero("", 0x3000).eos();
  ParserOptions o;
  o.role = ChannelRole::kPreempt;
  auto p = parse(w.bytes, o);
  ASSERT_FALSE(p.error) << p.error_message;
  EXPECT_EQ(p.items.size(), 4u);
  EXPECT_EQ(p.rebuilt, w.bytes);
  auto e = parse({}, o);
  EXPECT_FALSE(e.error);
}

TEST(StreamParser, MultifdChannel) {
  StreamWriter w;
  w.multifd_init(1);
  w.multifd_packet(0, "pc.ram", {0x1000, 0x5000}, 7);
  w.multifd_packet(1, "", {}, 8);                  // SYNC, empty
  w.multifd_packet(4, "pc.ram", {0x9000}, 9, 33);  // zstd: next_packet_size bytes
  ParserOptions o;
  o.role = ChannelRole::kMultifd;
  auto whole = parse(w.bytes, o);
  ASSERT_FALSE(whole.error) << whole.error_message;
  ASSERT_EQ(whole.items.size(), 4u);
  EXPECT_EQ(whole.items[1].info, "mf n=2 sync=0 c=0 blk=pc.ram data=8192 num=7");
  EXPECT_EQ(whole.items[2].info, "mf n=0 sync=1 c=0 blk= data=0 num=8");
  EXPECT_EQ(whole.items[3].info, "mf n=1 sync=0 c=4 blk=pc.ram data=33 num=9");
  EXPECT_EQ(whole.rebuilt, w.bytes);
  for (uint32_t seed = 1; seed < 50; ++seed) {
    auto s = parse(w.bytes, o, seed, seed * 97);
    ASSERT_EQ(s.items, whole.items);
  }
  // Page offsets are readable.
  StreamParser parser(o);
  parser.push(w.bytes);
  Item it;
  ASSERT_EQ(parser.next(it), StreamParser::Next::kItem);
  ASSERT_EQ(parser.next(it), StreamParser::Next::kItem);
  EXPECT_EQ(it.multifd.page_offset(1), 0x5000u);
}

TEST(StreamParser, ReturnPath) {
  StreamWriter w;
  w.rp_u32(2, 1).rp_req_pages_id(0xc0000, 4096, "pc.ram").rp_req_pages(0xc1000, 4096);
  w.rp_recv_bitmap("pc.ram", 24).rp_u32(6, 1).rp(7, {});
  w.rp_u32(1, 0);
  ParserOptions o;
  o.role = ChannelRole::kReturnPath;
  auto p = parse(w.bytes, o);
  ASSERT_FALSE(p.error) << p.error_message;
  std::vector<ItemKind> want = {ItemKind::kRpMessage, ItemKind::kRpMessage, ItemKind::kRpMessage,
                                ItemKind::kRpMessage, ItemKind::kOpaque,    ItemKind::kRpBitmapEnd,
                                ItemKind::kRpMessage, ItemKind::kRpMessage, ItemKind::kRpMessage};
  EXPECT_EQ(kinds(p), want);
  EXPECT_EQ(p.items[1].info, "rp REQ_PAGES_ID v=0 s=786432 l=4096 blk=pc.ram bm=0");
  EXPECT_EQ(p.items[3].info, "rp RECV_BITMAP v=0 s=0 l=0 blk=pc.ram bm=24");
  EXPECT_EQ(p.rebuilt, w.bytes);
  for (uint32_t seed = 1; seed < 100; ++seed) EXPECT_EQ(parse(w.bytes, o, seed, 5).items, p.items);
}

struct BadCase {
  const char* name;
  std::vector<uint8_t> bytes;
  ChannelRole role;
  uint64_t offset;
  const char* needle;
};

TEST(StreamParser, ErrorsCarryOffsetAndSentence) {
  auto main_prefix = [] {
    StreamWriter w;
    w.header().start(2, "ram").mem_size({{"pc.ram", 0x2000}});
    return w;
  };
  const size_t rec = main_prefix().bytes.size();
  std::vector<BadCase> cases;
  cases.push_back(
      {"bad magic", StreamWriter().be32(0x12345678).be32(3).bytes, ChannelRole::kMain, 0, "QEVM"});
  cases.push_back({"version 2", StreamWriter().be32(0x5145564D).be32(2).bytes, ChannelRole::kMain,
                   4, "version 2"});
  cases.push_back(
      {"unknown type", StreamWriter().header().u8(0x42).bytes, ChannelRole::kMain, 8, "0x42"});
  cases.push_back({"top-level subsection", StreamWriter().header().u8(0x05).bytes,
                   ChannelRole::kMain, 8, "subsection"});
  cases.push_back({"late configuration", StreamWriter().header().ping(1).config("pc").bytes,
                   ChannelRole::kMain, 17, "CONFIGURATION"});
  cases.push_back({"continue without block", main_prefix().page("", 0, 1).bytes, ChannelRole::kMain,
                   rec, "CONTINUE"});
  cases.push_back({"unknown block", main_prefix().page("nope", 0, 1).bytes, ChannelRole::kMain,
                   rec + 8, "nope"});
  cases.push_back({"offset beyond block", main_prefix().page("pc.ram", 0x2000, 1).bytes,
                   ChannelRole::kMain, rec, "beyond"});
  cases.push_back({"empty block name", main_prefix().be64(0x08).u8(0).bytes, ChannelRole::kMain,
                   rec + 8, "empty"});
  cases.push_back(
      {"bad flags", main_prefix().be64(0x0a).bytes, ChannelRole::kMain, rec, "flag combination"});
  cases.push_back({"hook", main_prefix().be64(0x80).bytes, ChannelRole::kMain, rec, "HOOK"});
  cases.push_back({"xbzrle encoding", main_prefix().word(0, 0x40, "pc.ram").u8(2).be16(1).bytes,
                   ChannelRole::kMain, rec + 15, "encoding"});
  cases.push_back({"xbzrle too long", main_prefix().word(0, 0x40, "pc.ram").u8(1).be16(4097).bytes,
                   ChannelRole::kMain, rec + 16, "exceeds"});
  cases.push_back({"compress too long", main_prefix().word(0, 0x100, "pc.ram").be32(99999).bytes,
                   ChannelRole::kMain, rec + 15, "compressBound"});
  cases.push_back(
      {"stray footer", StreamWriter().header().footer(2).bytes, ChannelRole::kMain, 8, "footer"});
  cases.push_back({"footer id", main_prefix().eos().footer(3).bytes, ChannelRole::kMain, rec + 8,
                   "names section 3"});
  cases.push_back(
      {"block list too long",
       StreamWriter().header().start(2, "ram").be64(0x1004).str8("a").be64(0x2000).bytes,
       ChannelRole::kMain, 35, "exceeds the MEM_SIZE"});
  cases.push_back({"ping length", StreamWriter().header().command(2, {1, 2}).bytes,
                   ChannelRole::kMain, 8, "PING"});
  cases.push_back({"invalid command", StreamWriter().header().command(0, {}).bytes,
                   ChannelRole::kMain, 8, "INVALID"});
  cases.push_back({"discard version", StreamWriter().header().command(6, {1, 0, 0}).bytes,
                   ChannelRole::kMain, 13, "version"});
  cases.push_back({"discard layout", StreamWriter().header().command(6, {0, 1, 'a', 0, 1}).bytes,
                   ChannelRole::kMain, 8, "16-byte"});
  {
    StreamWriter pkg;
    pkg.ping(3);
    StreamWriter w;
    w.header().u8(0x08).be16(7).be16(4).be32(5).raw(pkg.bytes);
    cases.push_back({"item crosses PACKAGED end", w.bytes, ChannelRole::kMain, 17, "PACKAGED"});
    StreamWriter n;
    n.header().u8(0x08).be16(7).be16(4).be32(9).u8(0x08).be16(7).be16(4).be32(0);
    cases.push_back({"nested PACKAGED", n.bytes, ChannelRole::kMain, 17, "nest"});
    // Found by the fuzzer (it used to spin): an opaque run inside PACKAGED that is longer
    // than the blob.
    StreamWriter v;
    v.header().u8(0x08).be16(7).be16(4).be32(6).u8(0x06).be32(16).u8(1).u8(2);
    cases.push_back({"vmdesc crosses PACKAGED end", v.bytes, ChannelRole::kMain, 23, "PACKAGED"});
  }
  cases.push_back({"multifd magic", StreamWriter().be32(1).fill(60, 0).bytes, ChannelRole::kMultifd,
                   0, "magic"});
  cases.push_back({"multifd page count",
                   StreamWriter()
                       .multifd_init(0)
                       .be32(0x11223344)
                       .be32(1)
                       .be32(0)
                       .be32(2)
                       .be32(3)
                       .fill(300, 0)
                       .bytes,
                   ChannelRole::kMultifd, 64 + 16, "slots"});
  cases.push_back({"rp type", StreamWriter().rp(9, {}).bytes, ChannelRole::kReturnPath, 0,
                   "unknown return-path"});
  cases.push_back({"rp too long", StreamWriter().be16(2).be16(600).bytes, ChannelRole::kReturnPath,
                   0, "at most 512"});
  cases.push_back(
      {"rp pong length", StreamWriter().rp(2, {1}).bytes, ChannelRole::kReturnPath, 0, "PONG"});
  cases.push_back({"rp bitmap end mark",
                   StreamWriter().be16(5).be16(2).str8("a").be64(8).fill(8, 1).be64(5).bytes,
                   ChannelRole::kReturnPath, 22, "end mark"});
  for (const auto& c : cases) {
    ParserOptions o;
    o.role = c.role;
    auto p = parse(c.bytes, o);
    ASSERT_TRUE(p.error) << c.name;
    EXPECT_EQ(p.error_offset, c.offset) << c.name << ": " << p.error_message;
    EXPECT_NE(p.error_message.find(c.needle), std::string::npos)
        << c.name << ": " << p.error_message;
    // Latched: the same error after more input, however it is split.
    for (uint32_t seed = 1; seed < 20; ++seed) {
      auto s = parse(c.bytes, o, seed, 3);
      ASSERT_TRUE(s.error) << c.name;
      EXPECT_EQ(s.error_offset, c.offset) << c.name;
    }
  }
}

TEST(StreamParser, RandomBytesNeverCrash) {
  std::mt19937 rng(42);
  auto base = sample_main(true);
  for (int iter = 0; iter < 3000; ++iter) {
    auto in = base;
    int flips = 1 + iter % 8;
    for (int f = 0; f < flips; ++f) {
      in[std::uniform_int_distribution<size_t>(0, in.size() - 1)(rng)] =
          static_cast<uint8_t>(rng());
    }
    for (auto role : {ChannelRole::kMain, ChannelRole::kReturnPath, ChannelRole::kMultifd,
                      ChannelRole::kPreempt}) {
      ParserOptions o;
      o.role = role;
      auto p = parse(in, o, static_cast<uint32_t>(iter), 64);
      if (!p.error) {
        EXPECT_EQ(p.rebuilt, in);
      } else {
        EXPECT_TRUE(std::equal(p.rebuilt.begin(), p.rebuilt.end(), in.begin()));
      }
    }
  }
}

TEST(StreamRebuilder, ContinueIsManagedPerChannel) {
  // A source that always names the block (allowed, §3.2) is reproduced exactly by append(),
  // and re-encoded with CONTINUE when the caller allows it.
  StreamWriter w;
  w.page("pc.ram", 0x1000, 1).page("pc.ram", 0x2000, 2).zero("pc.bios", 0).zero("pc.ram", 0x3000);
  w.zero("", 0x4000).eos();
  ParserOptions o;
  o.role = ChannelRole::kPreempt;
  auto p = parse(w.bytes, o);
  ASSERT_FALSE(p.error);
  EXPECT_EQ(p.rebuilt, w.bytes);

  StreamParser parser(o);
  parser.push(w.bytes);
  parser.finish();
  StreamRebuilder rb;
  std::vector<uint8_t> out;
  Item it;
  while (parser.next(it) == StreamParser::Next::kItem) {
    if (it.kind != ItemKind::kRamRecord) {
      rb.append(it, out);
      continue;
    }
    RamRecordOut r{it.ram.type, it.ram.offset, it.ram.block, it.ram.payload, it.ram.fill, true};
    ASSERT_TRUE(rb.append_ram_record(r, out));
  }
  StreamWriter expect;
  expect.page("pc.ram", 0x1000, 1).page("", 0x2000, 2).zero("pc.bios", 0).zero("pc.ram", 0x3000);
  expect.zero("", 0x4000).eos();
  EXPECT_EQ(out, expect.bytes);
  EXPECT_EQ(rb.names_written(), 3u);

  // Malformed records are refused without touching the state.
  std::vector<uint8_t> small(4);
  RamRecordOut bad{RamRecordType::kPage, 0x1000, "pc.ram", {}, 0, true};
  EXPECT_EQ(rb.write_ram_record(bad, small), 0u);
  RamRecordOut unaligned{RamRecordType::kZero, 0x1001, "pc.ram", {}, 0, true};
  EXPECT_FALSE(rb.append_ram_record(unaligned, out));
}

}  // namespace
}  // namespace ferry::qemu

// Writes the fuzz seed corpus (tests/fuzz/corpus/stream_parser) when FERRY_WRITE_CORPUS names
// a directory: `FERRY_WRITE_CORPUS=tests/fuzz/corpus/stream_parser <this test binary>
// --gtest_filter=*SeedCorpus*`. Each file is: role byte, split-seed byte, stream.
namespace ferry::qemu {
namespace {
TEST(StreamParser, SeedCorpus) {
  const char* dir = std::getenv("FERRY_WRITE_CORPUS");
  if (!dir) GTEST_SKIP() << "set FERRY_WRITE_CORPUS=<dir> to write the fuzz seed corpus";
  auto put = [&](const char* name, uint8_t role, const std::vector<uint8_t>& s) {
    std::string path = std::string(dir) + "/" + name;
    FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr) << path;
    uint8_t hdr[2] = {role, 7};
    std::fwrite(hdr, 1, 2, f);
    std::fwrite(s.data(), 1, s.size(), f);
    std::fclose(f);
  };
  put("main_sample", 0, sample_main(true));
  {
    StreamWriter w;
    w.header().config("pc").start(2, "ram").mem_size({{"pc.ram", 0x2000}}).zero("pc.ram", 0);
    w.zero("", 0x1000).eos().footer(2).full(3, "cpu").fill(8, 1).eof();
    put("main_passthrough", 0, w.bytes);
  }
  {
    StreamWriter w;
    w.recv_bitmap_cmd("pc.ram").resume().part(2).zero("pc.ram", 0x1000).eos().footer(2).eof();
    put("main_recovery", 0, w.bytes);
  }
  {
    StreamWriter w;
    w.header().advise(0x201000, 4096).start(2, "ram");
    w.mem_size({{"pc.ram", 0x400000, 0x200000}, {"pc.bios", 0x40000}}).eos().footer(2).eof();
    put("main_pagesizes", 0, w.bytes);
  }
  {
    StreamWriter w;
    w.multifd_init(1)
        .multifd_packet(1, "", {}, 8, -1, 4)
        .multifd_packet(4, "pc.ram", {0x9000}, 9, 5, 4);
    put("multifd", 1, w.bytes);
  }
  {
    StreamWriter w;
    w.zero("pc.ram", 0x1000).zero("", 0x2000).xbzrle("", 0, {1, 2, 3}).eos();
    put("preempt", 2, w.bytes);
  }
  {
    StreamWriter w;
    w.rp_u32(2, 1).rp_req_pages_id(0xc0000, 4096, "pc.ram").rp_req_pages(0xc1000, 4096);
    w.rp_recv_bitmap("pc.ram", 16).rp_u32(6, 1).rp(7, {}).rp_u32(1, 0);
    put("return_path", 3, w.bytes);
  }
}
}  // namespace
}  // namespace ferry::qemu
