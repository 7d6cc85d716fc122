// ferry inspect — parse a captured QEMU migration byte stream (any channel), print what it
// holds, and optionally rebuild it through the stream rebuilder to prove the round trip.
// Wiring only: parsing and rebuilding live in qemu-channel/.
#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "common/json.h"
#include "qemu-channel/stream_parser.h"
#include "qemu-channel/stream_rebuilder.h"

namespace ferry::apps {

namespace {

using qemu::ChannelRole;
using qemu::Item;
using qemu::ItemKind;
using qemu::StreamParser;

constexpr const char* kUsage =
    "usage: ferry inspect [options] FILE|-\n"
    "\n"
    "Parse a captured QEMU migration byte stream (e.g. from `migrate \"exec:cat > FILE\"`, or\n"
    "one direction of a socket recorded by a relay) and summarise it: header, machine type,\n"
    "RAM blocks, sections, commands, RAM pages by kind, bytes, where pass-through began and\n"
    "the first error with its byte offset. `-` reads standard input.\n"
    "\n"
    "options:\n"
    "  --json              print one JSON object instead of the human summary:\n"
    "                      {\"channel\", \"magic_ok\", \"machine\", "
    "\"ram_blocks\":[{\"name\",\"size\"}],\n"
    "                       \"sections\":{\"start\",\"part\",\"end\",\"full\"}, "
    "\"commands\":{NAME:n},\n"
    "                       \"pages\":{\"zero\",\"normal\",\"xbzrle\",\"compressed\"},\n"
    "                       \"bytes\":{\"page_payload\",\"opaque\",\"framing\",\"total\"},\n"
    "                       \"multifd\":{\"packets\",\"sync_packets\",\"accounted_bytes\"},\n"
    "                       \"return_path\":{NAME:n},\n"
    "                       \"eos\", \"multifd_flush\", \"eof\", \"vmdesc\", "
    "\"passthrough_from\":\n"
    "                       offset|null, \"passthrough_reason\", \"rebuild_identical\":\n"
    "                       true|false|null, \"error\": null|{\"offset\",\"message\"}}\n"
    "  --rebuild OUT       also rebuild the stream item by item through the rebuilder (which\n"
    "                      re-encodes every RAM record and owns the CONTINUE flag) into OUT;\n"
    "                      the bytes must equal the input, else exit 1\n"
    "  --channel C         main | multifd | preempt | return-path | auto (default auto:\n"
    "                      \"QEVM\" or 0x08 = main, 0x11223344 = multifd, a plausible\n"
    "                      return-path message = return-path, otherwise preempt)\n"
    "  --split-random SEED feed the parser in random pieces of 1 B..64 KiB (deterministic for\n"
    "                      a SEED); the output must equal an unsplit run\n"
    "  --simulate-codec    instead of the summary: run the stream through ferry send's page\n"
    "                      encoder at each codec level and report the bytes each would put\n"
    "                      on the link (frames included) and the encoder's speed on this\n"
    "                      machine; with --json one object {\"input_bytes\", \"codecs\":[...]}\n"
    "  --cache-mib N       page cache for --simulate-codec (default 1024, as ferry send)\n"
    "  --superseded        instead of the summary: count the PAGE/ZERO records a later copy\n"
    "                      of the same page makes redundant (no XBZRLE record of it and no\n"
    "                      barrier in between, stream doc 8.5), by how many stream bytes\n"
    "                      apart the copies are (256 KiB .. 64 MiB, anywhere): what dropping\n"
    "                      superseded pages could save when holding that much data back\n"
    "  -h, --help          this text\n"
    "\n"
    "Page counts and QEMU's query-migrate counters: ram.normal = normal (PAGE records on the\n"
    "main channel plus the pages in multifd packets); ram.duplicate = zero (ZERO records).\n"
    "With multifd, QEMU 7.2 sometimes puts a page into two consecutive packets but counts it\n"
    "once in ram.normal, so the packet page count can exceed ram.normal slightly; the exact\n"
    "match is multifd.accounted_bytes (sum over packets of pages*TP + packet header) summed\n"
    "over all multifd channels == ram.multifd-bytes.\n"
    "XBZRLE records are not in ram.normal: QEMU counts them in xbzrle-cache.pages, together\n"
    "with cache hits it skipped (page unchanged, nothing sent) and overflows (sent as PAGE and\n"
    "also counted in ram.normal), so xbzrle <= xbzrle-cache.pages. COMPRESS records are in\n"
    "compression.pages. \"page_payload\" is the payload bytes of PAGE, XBZRLE and\n"
    "COMPRESS records and of multifd packets; \"opaque\" is bytes forwarded without decoding\n"
    "(pass-through, PACKAGED device state, vmdesc JSON, RECV_BITMAP bitmaps); \"framing\" is\n"
    "the rest (headers, record words, block names, commands...).\n"
    "\n"
    "exit status: 0 parsed to a clean end; 1 the stream is malformed or truncated, or the\n"
    "rebuild differs (the report is still printed); 2 usage or I/O error.\n";

struct Counts {
  uint64_t zero = 0, normal = 0, xbzrle = 0, compressed = 0;
  uint64_t page_payload = 0, opaque = 0, total = 0;
  uint64_t mf_packets = 0, mf_sync = 0, mf_accounted = 0, eos = 0, flush = 0;
  bool eof = false, vmdesc = false;
  std::map<std::string, uint64_t> commands;
  std::map<std::string, uint64_t> rp;
};

void count(const Item& it, Counts& c, uint64_t tp) {
  c.total += it.raw.size();
  switch (it.kind) {
    case ItemKind::kRamRecord:
      switch (it.ram.type) {
        case qemu::RamRecordType::kZero:
          ++c.zero;
          break;
        case qemu::RamRecordType::kPage:
          ++c.normal;
          c.page_payload += it.ram.payload.size();
          break;
        case qemu::RamRecordType::kXbzrle:
          ++c.xbzrle;
          c.page_payload += it.ram.payload.size();
          break;
        case qemu::RamRecordType::kCompressed:
          ++c.compressed;
          c.page_payload += it.ram.payload.size();
          break;
      }
      break;
    case ItemKind::kMultifdPacket:
      ++c.mf_packets;
      if (it.multifd.sync) ++c.mf_sync;
      c.normal += it.multifd.normal_pages;
      c.zero += it.multifd.zero_pages;
      c.page_payload += it.multifd.data.size();
      // What QEMU 7.2 adds to multifd-bytes per packet: pages * TP + packet_len, whatever
      // the compression.
      c.mf_accounted += uint64_t{it.multifd.normal_pages} * tp + it.multifd.header.size();
      break;
    case ItemKind::kCommand:
      ++c.commands[qemu::command_name(it.command.cmd)];
      break;
    case ItemKind::kRpMessage:
      ++c.rp[qemu::rp_type_name(it.rp.type)];
      break;
    case ItemKind::kOpaque:
    case ItemKind::kPassthrough:
      c.opaque += it.raw.size();
      break;
    case ItemKind::kRamEos:
      ++c.eos;
      break;
    case ItemKind::kMultifdFlush:
      ++c.flush;
      break;
    case ItemKind::kEof:
      c.eof = true;
      break;
    case ItemKind::kVmdesc:
      c.vmdesc = true;
      break;
    default:
      break;
  }
}

}  // namespace

int run_inspect(int argc, char** argv) {
  bool json = false;
  bool simulate = false, superseded = false;
  unsigned long long cache_mib = 1024;
  const char* rebuild_path = nullptr;
  const char* path = nullptr;
  const char* channel = "auto";
  bool split = false;
  uint64_t seed = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* opt) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "ferry inspect: %s needs a value; see ferry inspect --help\n", opt);
        return nullptr;
      }
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--json") {
      json = true;
    } else if (a == "--simulate-codec") {
      simulate = true;
    } else if (a == "--superseded") {
      superseded = true;
    } else if (a == "--cache-mib") {
      const char* v = value("--cache-mib");
      if (!v) return 2;
      char* end = nullptr;
      cache_mib = std::strtoull(v, &end, 10);
      if (*v == '\0' || *end != '\0' || cache_mib > (1u << 20)) {
        std::fprintf(stderr, "ferry inspect: --cache-mib needs a number of MiB, got '%s'\n", v);
        return 2;
      }
    } else if (a == "--rebuild") {
      if (!(rebuild_path = value("--rebuild"))) return 2;
    } else if (a == "--channel") {
      if (!(channel = value("--channel"))) return 2;
    } else if (a == "--split-random") {
      const char* v = value("--split-random");
      if (!v) return 2;
      char* end = nullptr;
      seed = std::strtoull(v, &end, 10);
      if (*v == '\0' || *end != '\0') {
        std::fprintf(stderr, "ferry inspect: --split-random needs a number, got '%s'\n", v);
        return 2;
      }
      split = true;
    } else if (a.size() > 1 && a[0] == '-') {
      std::fprintf(stderr, "ferry inspect: unknown option '%s'; see ferry inspect --help\n",
                   a.c_str());
      return 2;
    } else if (path) {
      std::fprintf(stderr, "ferry inspect: only one input file may be given\n");
      return 2;
    } else {
      path = argv[i];
    }
  }
  if (!path) {
    std::fprintf(stderr, "ferry inspect: no input; give a FILE or - (see ferry inspect --help)\n");
    return 2;
  }
  if (simulate) return simulate_codecs(path, json, cache_mib << 20);
  if (superseded) return superseded_pages(path, json);
  bool autodetect_role = false;
  ChannelRole role = ChannelRole::kMain;
  std::string ch = channel;
  if (ch == "main")
    role = ChannelRole::kMain;
  else if (ch == "multifd")
    role = ChannelRole::kMultifd;
  else if (ch == "preempt")
    role = ChannelRole::kPreempt;
  else if (ch == "return-path")
    role = ChannelRole::kReturnPath;
  else if (ch == "auto")
    autodetect_role = true;
  else {
    std::fprintf(stderr,
                 "ferry inspect: unknown channel '%s'; use main, multifd, preempt, return-path or "
                 "auto\n",
                 channel);
    return 2;
  }

  FILE* in = std::strcmp(path, "-") == 0 ? stdin : std::fopen(path, "rb");
  if (!in) {
    std::fprintf(stderr, "ferry inspect: cannot open %s: %s\n", path, std::strerror(errno));
    return 2;
  }
  FILE* out = nullptr;
  if (rebuild_path) {
    out = std::fopen(rebuild_path, "wb");
    if (!out) {
      std::fprintf(stderr, "ferry inspect: cannot create %s: %s\n", rebuild_path,
                   std::strerror(errno));
      if (in != stdin) std::fclose(in);
      return 2;
    }
  }

  constexpr size_t kChunk = 1 << 20;
  std::vector<uint8_t> buf(kChunk);
  size_t got = std::fread(buf.data(), 1, kChunk, in);
  if (autodetect_role) role = qemu::guess_channel_role({buf.data(), got});
  qemu::ParserOptions opt;
  opt.role = role;
  StreamParser parser(opt);
  qemu::StreamRebuilder rebuilder;
  std::vector<uint8_t> rebuilt;
  bool rebuild_identical = true;
  uint64_t rebuild_mismatch_at = 0;
  Counts c;
  std::mt19937_64 rng(seed);
  Item it;
  bool io_error = false;
  bool done = false;
  while (!done) {
    const bool last = got < kChunk;
    if (last && std::ferror(in)) {
      std::fprintf(stderr, "ferry inspect: read error on %s: %s\n", path, std::strerror(errno));
      io_error = true;
      break;
    }
    size_t pos = 0;
    do {
      size_t piece = got - pos;
      if (split && piece > 0) {
        piece = std::min<size_t>(piece, 1 + rng() % (64 * 1024));
      }
      parser.push(std::span<const uint8_t>(buf.data() + pos, piece));
      pos += piece;
      if (last && pos == got) parser.finish();
      for (;;) {
        StreamParser::Next n = parser.next(it);
        if (n == StreamParser::Next::kItem) {
          count(it, c, parser.target_page_size());
          if (out) {
            rebuilt.clear();
            rebuilder.append(it, rebuilt);
            if (rebuild_identical &&
                (rebuilt.size() != it.raw.size() ||
                 !std::equal(rebuilt.begin(), rebuilt.end(), it.raw.begin()))) {
              rebuild_identical = false;
              rebuild_mismatch_at = it.stream_offset;
            }
            if (std::fwrite(rebuilt.data(), 1, rebuilt.size(), out) != rebuilt.size()) {
              std::fprintf(stderr, "ferry inspect: write error on %s: %s\n", rebuild_path,
                           std::strerror(errno));
              io_error = true;
              done = true;
              break;
            }
          }
          continue;
        }
        if (n != StreamParser::Next::kNeedMore) done = true;
        break;
      }
    } while (!done && pos < got);
    if (done || last) break;
    got = std::fread(buf.data(), 1, kChunk, in);
  }
  if (in != stdin) std::fclose(in);
  if (out && std::fclose(out) != 0 && !io_error) {
    std::fprintf(stderr, "ferry inspect: write error on %s: %s\n", rebuild_path,
                 std::strerror(errno));
    io_error = true;
  }
  if (io_error) return 2;

  const qemu::ParseError* err = parser.error();
  const uint64_t framing = c.total - c.page_payload - c.opaque;
  const char* role_name = qemu::channel_role_name(role);
  if (json) {
    using json::Value;
    Value blocks = Value::array();
    for (const auto& b : parser.ram_blocks()) {
      Value block = Value::object({{"name", b.name}, {"size", b.used_length}});
      if (b.page_size) block.set("page_size", b.page_size);
      blocks.push_back(std::move(block));
    }
    Value commands = Value::object(), rp = Value::object();
    for (const auto& [k, v] : c.commands) commands.set(k, v);
    for (const auto& [k, v] : c.rp) rp.set(k, v);
    const bool passthrough = parser.passthrough_from() >= 0;
    Value doc = Value::object({
        {"channel", role_name},
        {"magic_ok", parser.magic_ok()},
        {"machine", parser.machine().empty() ? Value() : Value(parser.machine())},
        {"ram_blocks", std::move(blocks)},
        {"sections", Value::object({{"start", parser.sections_seen(1)},
                                    {"part", parser.sections_seen(2)},
                                    {"end", parser.sections_seen(3)},
                                    {"full", parser.sections_seen(4)}})},
        {"commands", std::move(commands)},
        {"return_path", std::move(rp)},
        {"pages", Value::object({{"zero", c.zero},
                                 {"normal", c.normal},
                                 {"xbzrle", c.xbzrle},
                                 {"compressed", c.compressed}})},
        {"bytes", Value::object({{"page_payload", c.page_payload},
                                 {"opaque", c.opaque},
                                 {"framing", framing},
                                 {"total", c.total}})},
        {"multifd", Value::object({{"packets", c.mf_packets},
                                   {"sync_packets", c.mf_sync},
                                   {"accounted_bytes", c.mf_accounted}})},
        {"eos", c.eos},
        {"multifd_flush", c.flush},
        {"eof", c.eof},
        {"vmdesc", c.vmdesc},
        {"passthrough_from", passthrough ? Value(parser.passthrough_from()) : Value()},
        {"passthrough_reason", passthrough ? Value(parser.passthrough_reason()) : Value()},
        {"rebuild_identical", out ? Value(rebuild_identical) : Value()},
        {"error",
         err ? Value::object({{"offset", err->offset}, {"message", err->message}}) : Value()},
    });
    std::printf("%s\n", doc.dump().c_str());
  } else {
    std::printf("channel:      %s\n", role_name);
    if (role == ChannelRole::kMain) {
      std::printf("header:       %s%s\n", parser.magic_ok() ? "QEVM v3" : "none",
                  parser.recovery_connection() ? " (postcopy recovery connection)" : "");
      std::printf("machine:      %s\n",
                  parser.machine().empty() ? "(no CONFIGURATION)" : parser.machine().c_str());
      std::printf("ram blocks:   %zu\n", parser.ram_blocks().size());
      for (const auto& b : parser.ram_blocks()) {
        std::printf("  %-32s %12" PRIu64 " bytes\n", b.name.c_str(), b.used_length);
      }
      std::printf("sections:     start %" PRIu64 ", part %" PRIu64 ", end %" PRIu64
                  ", full %" PRIu64 "%s\n",
                  parser.sections_seen(1), parser.sections_seen(2), parser.sections_seen(3),
                  parser.sections_seen(4), parser.footers_seen() ? " (footers on)" : "");
      std::printf("commands:    ");
      if (c.commands.empty()) std::printf(" none");
      for (const auto& [k, v] : c.commands) std::printf(" %s x%" PRIu64, k.c_str(), v);
      std::printf("\n");
    }
    if (role == ChannelRole::kReturnPath) {
      std::printf("messages:    ");
      for (const auto& [k, v] : c.rp) std::printf(" %s x%" PRIu64, k.c_str(), v);
      std::printf("\n");
    }
    if (role == ChannelRole::kMultifd) {
      std::printf("packets:      %" PRIu64 " (%" PRIu64 " SYNC), accounted bytes %" PRIu64 "\n",
                  c.mf_packets, c.mf_sync, c.mf_accounted);
    }
    std::printf("pages:        normal %" PRIu64 ", zero %" PRIu64 ", xbzrle %" PRIu64
                ", compressed %" PRIu64 "\n",
                c.normal, c.zero, c.xbzrle, c.compressed);
    std::printf("bytes:        total %" PRIu64 ", page payload %" PRIu64 ", opaque %" PRIu64
                ", framing %" PRIu64 "\n",
                c.total, c.page_payload, c.opaque, framing);
    if (parser.passthrough_from() >= 0) {
      std::printf("pass-through: from offset %" PRId64 " (%s)\n", parser.passthrough_from(),
                  parser.passthrough_reason());
    }
    if (out) std::printf("rebuild:      %s\n", rebuild_identical ? "identical" : "DIFFERS");
    std::printf("result:       %s\n", err ? "ERROR" : "ok");
  }
  int rc = 0;
  if (err) {
    std::fprintf(stderr, "ferry inspect: %s: at offset %" PRIu64 ": %s\n", path, err->offset,
                 err->message.c_str());
    rc = 1;
  }
  if (out && !rebuild_identical) {
    std::fprintf(stderr,
                 "ferry inspect: rebuilt stream differs from %s at item offset %" PRIu64 "\n", path,
                 rebuild_mismatch_at);
    rc = 1;
  }
  return rc;
}

}  // namespace ferry::apps
