// apps/inspect_simulate.cc — `ferry inspect --simulate-codec`: what each codec level of
// ferry send would put on the link for a captured stream, and how fast it encodes here.
// Wiring only: the encoder is pipeline/page_stream.h's, frames are dataplane/'s.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "common/json.h"
#include "pipeline/page_stream.h"

namespace ferry::apps {
namespace {

using pipeline::PageCodecOptions;
using pipeline::PageStreamEncoder;

struct Level {
  const char* name;
  int effort;  // -1: none (QEMU's bytes in OPAQUE frames)
  const char* what;
};

constexpr Level kLevels[] = {
    {"none", -1, "QEMU's bytes, framed"},
    {"fast", 1, "zero, same, delta, RLE per page"},
    {"effort-2", 2, "fast + LZ4 per page"},
    {"effort-3", 3, "zero/same/delta + zstd -1 stream"},
    {"effort-4", 4, "zero/same/delta + zstd -3 stream"},
    {"effort-5", 5, "zero/same/delta + zstd -9 stream"},
    {"max", 6, "zero/same/delta + LZMA2 stream"},
};

struct Result {
  uint64_t link_bytes = 0;
  double seconds = 0;
  std::string error;
};

Result run_level(const std::vector<uint8_t>& in, const Level& level, size_t cache_bytes) {
  Result r;
  ByteQueue q;
  uint64_t seq = 0, frames = 0;
  pipeline::FrameWriter w(q, seq, frames);
  const auto t0 = std::chrono::steady_clock::now();
  constexpr size_t kChunk = 256u << 10;  // what the pump reads from QEMU at most
  if (level.effort < 0) {
    r.link_bytes = in.size() + (in.size() + kChunk - 1) / kChunk * dataplane::kFrameHeaderSize;
  } else {
    PageCodecOptions opt;
    opt.fixed_effort = level.effort;
    opt.cache_bytes = cache_bytes;
    PageStreamEncoder enc(opt);
    for (size_t at = 0; at < in.size() && r.error.empty(); at += kChunk) {
      const size_t n = std::min(kChunk, in.size() - at);
      if (auto st = enc.encode({in.data() + at, n}, w); !st) r.error = st.message();
      r.link_bytes += q.size();
      q.consume(q.size());  // the link took it
    }
    if (r.error.empty()) {
      if (auto st = enc.finish(w); !st) r.error = st.message();
    }
    r.link_bytes += q.size() + dataplane::kFrameHeaderSize;  // + END
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace

int simulate_codecs(const char* path, bool json, size_t cache_bytes) {
  FILE* f = std::strcmp(path, "-") == 0 ? stdin : std::fopen(path, "rb");
  if (!f) {
    std::fprintf(stderr, "ferry inspect: cannot open %s: %s\n", path, std::strerror(errno));
    return 2;
  }
  std::vector<uint8_t> in;
  std::vector<uint8_t> buf(1 << 20);
  size_t got;
  while ((got = std::fread(buf.data(), 1, buf.size(), f)) > 0) {
    in.insert(in.end(), buf.begin(), buf.begin() + static_cast<long>(got));
  }
  const bool read_error = std::ferror(f);
  if (f != stdin) std::fclose(f);
  if (read_error) {
    std::fprintf(stderr, "ferry inspect: read error on %s\n", path);
    return 2;
  }
  int status = 0;
  json::Value codecs = json::Value::array();
  if (!json) {
    std::printf("%s: %zu bytes of QEMU stream; page cache %zu MiB\n", path, in.size(),
                cache_bytes >> 20);
    std::printf("%-9s %14s %8s %12s  %s\n", "codec", "link bytes", "ratio", "encode MB/s", "what");
  }
  for (const auto& level : kLevels) {
    Result r = run_level(in, level, cache_bytes);
    const double ratio = in.empty() ? 0 : static_cast<double>(r.link_bytes) / in.size();
    // "none" does no work worth timing.
    const double mbps = level.effort >= 0 && r.seconds > 0 ? in.size() / 1e6 / r.seconds : 0;
    if (!r.error.empty()) status = 1;
    if (json) {
      codecs.push_back(
          json::Value::object({{"codec", level.name},
                               {"link_bytes", r.link_bytes},
                               {"ratio", json::rounded(ratio, 4)},
                               {"encode_mb_per_s", json::rounded(mbps, 1)},
                               {"error", r.error.empty() ? json::Value() : json::Value(r.error)}}));
    } else if (r.error.empty()) {
      std::printf("%-9s %14llu %8.4f %12s  %s\n", level.name,
                  static_cast<unsigned long long>(r.link_bytes), ratio,
                  level.effort < 0 ? "-" : std::to_string(static_cast<int>(mbps)).c_str(),
                  level.what);
    } else {
      std::printf("%-9s failed: %s\n", level.name, r.error.c_str());
    }
  }
  if (json) {
    const json::Value doc =
        json::Value::object({{"input_bytes", in.size()}, {"codecs", std::move(codecs)}});
    std::printf("%s\n", doc.dump().c_str());
  }
  return status;
}

}  // namespace ferry::apps
