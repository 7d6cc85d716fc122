// apps/inspect_superseded.cc — `ferry inspect --superseded`: how many RAM page records of a
// captured main stream a later copy of the same page makes redundant, by how far apart the
// two copies are in the stream. ../shared/docs/qemu-migration-stream.md §8.5 lets a proxy drop
// such an older ZERO/PAGE record (pre-copy, no XBZRLE record of that page in between, no
// barrier in between) — but only inside data it already holds, since holding data back
// distorts QEMU's bandwidth estimate. The distance tells how much ferry would have to hold to
// drop each one: ferry holds about one read (256 KiB) plus ~25 ms of link.
// Wiring only: the parser is qemu-channel/'s.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "apps/commands.h"
#include "common/json.h"
#include "qemu-channel/stream_parser.h"

namespace ferry::apps {
namespace {

using qemu::Item;
using qemu::ItemKind;
using qemu::StreamParser;

// Windows reported: a copy is droppable within W when its successor starts at most W bytes
// later in the stream.
constexpr uint64_t kWindows[] = {256u << 10, 1u << 20, 4u << 20, 16u << 20, 64u << 20, UINT64_MAX};

struct Seen {
  uint64_t offset;
  uint64_t bytes;
};

}  // namespace

int superseded_pages(const char* path, bool json) {
  FILE* f = std::strcmp(path, "-") == 0 ? stdin : std::fopen(path, "rb");
  if (!f) {
    std::fprintf(stderr, "ferry inspect: cannot open %s: %s\n", path, std::strerror(errno));
    return 2;
  }
  StreamParser parser;
  std::unordered_map<std::string, std::unordered_map<uint64_t, Seen>> last;  // block -> page
  uint64_t pages = 0, page_bytes = 0;
  uint64_t count[std::size(kWindows)] = {}, bytes[std::size(kWindows)] = {};
  std::vector<uint8_t> buf(1 << 20);
  std::string error;
  bool done = false;
  while (!done) {
    const size_t got = std::fread(buf.data(), 1, buf.size(), f);
    if (got > 0) {
      parser.push({buf.data(), got});
    } else {
      parser.finish();
    }
    Item it;
    for (;;) {
      auto r = parser.next(it);
      if (r == StreamParser::Next::kNeedMore) break;
      if (r == StreamParser::Next::kEnd) {
        done = true;
        break;
      }
      if (r == StreamParser::Next::kError) {
        error =
            parser.error()->message + " at byte offset " + std::to_string(parser.error()->offset);
        done = true;
        break;
      }
      const bool page = it.kind == ItemKind::kRamRecord && !it.in_package &&
                        (it.ram.type == qemu::RamRecordType::kPage ||
                         (it.ram.type == qemu::RamRecordType::kZero && it.ram.fill == 0));
      if (page) {
        ++pages;
        page_bytes += it.raw.size();
        auto& block = last[std::string(it.ram.block)];
        auto [slot, fresh] =
            block.try_emplace(it.ram.offset, Seen{it.stream_offset, it.raw.size()});
        if (!fresh) {
          const uint64_t distance = it.stream_offset - slot->second.offset;
          for (size_t w = 0; w < std::size(kWindows); ++w) {
            if (distance <= kWindows[w]) {
              ++count[w];
              bytes[w] += slot->second.bytes;
            }
          }
          slot->second = {it.stream_offset, it.raw.size()};
        }
      } else if (it.kind == ItemKind::kRamRecord) {
        // An XBZRLE (or COMPRESS, or packaged) record of a page: an older copy is its base.
        if (auto b = last.find(std::string(it.ram.block)); b != last.end()) {
          b->second.erase(it.ram.offset);
        }
      } else if (it.kind != ItemKind::kSectionHeader && it.kind != ItemKind::kRamEos &&
                 it.kind != ItemKind::kFooter && it.kind != ItemKind::kRamBlockList) {
        last.clear();  // a barrier (§8.1): commands, other sections, EOF, multifd flushes
      }
    }
    if (got == 0) done = true;
  }
  const bool read_error = std::ferror(f);
  if (f != stdin) std::fclose(f);
  if (read_error) {
    std::fprintf(stderr, "ferry inspect: read error on %s\n", path);
    return 2;
  }
  if (json) {
    json::Value windows = json::Value::array();
    for (size_t w = 0; w < std::size(kWindows); ++w) {
      windows.push_back(json::Value::object(
          {{"window_bytes", kWindows[w] == UINT64_MAX ? json::Value() : json::Value(kWindows[w])},
           {"superseded", count[w]},
           {"bytes", bytes[w]}}));
    }
    const json::Value doc =
        json::Value::object({{"page_records", pages},
                             {"page_record_bytes", page_bytes},
                             {"windows", std::move(windows)},
                             {"error", error.empty() ? json::Value() : json::Value(error)}});
    std::printf("%s\n", doc.dump().c_str());
  } else {
    std::printf("%s: %llu page records (%llu bytes)\n", path,
                static_cast<unsigned long long>(pages),
                static_cast<unsigned long long>(page_bytes));
    std::printf("%-12s %12s %14s %8s\n", "within", "superseded", "their bytes", "share");
    for (size_t w = 0; w < std::size(kWindows); ++w) {
      const std::string name = kWindows[w] == UINT64_MAX ? "anywhere"
                               : kWindows[w] >= (1u << 20)
                                   ? std::to_string(kWindows[w] >> 20) + " MiB"
                                   : std::to_string(kWindows[w] >> 10) + " KiB";
      std::printf("%-12s %12llu %14llu %7.2f%%\n", name.c_str(),
                  static_cast<unsigned long long>(count[w]),
                  static_cast<unsigned long long>(bytes[w]),
                  page_bytes ? 100.0 * static_cast<double>(bytes[w]) / page_bytes : 0.0);
    }
    if (!error.empty()) std::printf("stream error: %s\n", error.c_str());
  }
  return error.empty() ? 0 : 1;
}

}  // namespace ferry::apps
