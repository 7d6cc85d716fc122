// libFuzzer target for qemu-channel's StreamParser + StreamRebuilder.
//
// Input: byte 0 picks the channel role and byte 1 seeds the split pattern; the rest is the
// stream. Checked properties (any violation aborts):
//  * rebuild(parse(x)) equals the consumed prefix of x, with and without an error;
//  * without an error the whole input is consumed;
//  * feeding the same bytes in small pieces gives the same items (opaque chunks merged), the
//    same end state and the same error offset.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "qemu-channel/stream_parser.h"
#include "qemu-channel/stream_rebuilder.h"

namespace {

using ferry::qemu::Item;
using ferry::qemu::ItemKind;
using ferry::qemu::StreamParser;

struct Run {
  std::vector<uint8_t> rebuilt;
  std::vector<uint64_t> boundaries;  // offset and kind of each non-chunk item
  bool error = false;
  uint64_t error_offset = 0;
  uint64_t consumed = 0;
};

Run run(const uint8_t* data, size_t size, ferry::qemu::ChannelRole role, uint32_t split_seed) {
  Run r;
  ferry::qemu::ParserOptions opt;
  opt.role = role;
  StreamParser parser(opt);
  ferry::qemu::StreamRebuilder rb;
  Item it;
  size_t pos = 0;
  uint32_t x = split_seed | 1;
  bool done = false;
  while (!done) {
    size_t piece = size - pos;
    if (split_seed != 0 && piece > 0) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      size_t p = 1 + x % 97;
      if (p < piece) piece = p;
    }
    // A private copy per piece: stale views into an earlier piece are caught by ASan.
    std::vector<uint8_t> buf(data + pos, data + pos + piece);
    pos += piece;
    parser.push(buf);
    if (pos == size) parser.finish();
    for (;;) {
      auto n = parser.next(it);
      if (n == StreamParser::Next::kItem) {
        rb.append(it, r.rebuilt);
        if (it.kind != ItemKind::kOpaque && it.kind != ItemKind::kPassthrough) {
          r.boundaries.push_back(it.stream_offset * 64 + static_cast<uint64_t>(it.kind));
        }
        continue;
      }
      if (n == StreamParser::Next::kError) {
        if (parser.error()->message.rfind("internal error", 0) == 0) std::abort();
        r.error = true;
        r.error_offset = parser.error()->offset;
        done = true;
      } else if (n == StreamParser::Next::kEnd) {
        done = true;
      }
      break;
    }
    if (pos == size) done = true;
  }
  r.consumed = parser.consumed();
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const auto role = static_cast<ferry::qemu::ChannelRole>(data[0] % 4);
  const uint32_t seed = data[1] + 1u;
  data += 2;
  size -= 2;
  Run whole = run(data, size, role, 0);
  if (whole.rebuilt.size() != whole.consumed ||
      (!whole.rebuilt.empty() &&
       std::memcmp(whole.rebuilt.data(), data, whole.rebuilt.size()) != 0)) {
    std::abort();  // rebuild is not the consumed prefix
  }
  if (!whole.error && whole.consumed != size) std::abort();
  Run split = run(data, size, role, seed);
  if (split.error != whole.error || split.error_offset != whole.error_offset ||
      split.boundaries != whole.boundaries || split.rebuilt != whole.rebuilt) {
    std::abort();  // split-variant parse
  }
  return 0;
}
