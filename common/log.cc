#include "common/log.h"

#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ferry::log {
namespace {

Level initial_level() {
  const char* env = std::getenv("FERRY_LOG");
  if (env == nullptr) return Level::kWarn;
  if (std::strcmp(env, "debug") == 0) return Level::kDebug;
  if (std::strcmp(env, "info") == 0) return Level::kInfo;
  if (std::strcmp(env, "error") == 0) return Level::kError;
  return Level::kWarn;
}

std::atomic<Level> g_level{initial_level()};
std::atomic<const char*> g_program{"ferry"};

const char* level_name(Level l) {
  switch (l) {
    case Level::kError:
      return "error";
    case Level::kWarn:
      return "warn";
    case Level::kInfo:
      return "info";
    case Level::kDebug:
      return "debug";
  }
  return "?";
}

}  // namespace

bool parse_level(const char* name, Level* out) {
  for (Level l : {Level::kError, Level::kWarn, Level::kInfo, Level::kDebug}) {
    if (std::strcmp(name, level_name(l)) == 0) {
      *out = l;
      return true;
    }
  }
  return false;
}

const char* journal_prefix(Level l) {
  // Decided once: the service's stderr does not change while it runs.
  static const bool journal = [] {
    const char* env = std::getenv("JOURNAL_STREAM");
    struct stat st;
    if (env == nullptr || ::fstat(2, &st) != 0) return false;
    unsigned long long dev = 0, ino = 0;
    return std::sscanf(env, "%llu:%llu", &dev, &ino) == 2 &&
           dev == static_cast<unsigned long long>(st.st_dev) &&
           ino == static_cast<unsigned long long>(st.st_ino);
  }();
  if (!journal) return "";
  switch (l) {
    case Level::kError:
      return "<3>";
    case Level::kWarn:
      return "<4>";
    case Level::kInfo:
      return "<6>";
    case Level::kDebug:
      return "<7>";
  }
  return "";
}

void set_level(Level level) { g_level.store(level, std::memory_order_relaxed); }
Level level() { return g_level.load(std::memory_order_relaxed); }
void set_program(const char* tag) { g_program.store(tag, std::memory_order_relaxed); }

void write(Level l, const char* fmt, ...) {
  if (l > level()) return;
  char line[1024];
  int n = std::snprintf(line, sizeof line, "%s%s: %s: ", journal_prefix(l), g_program.load(),
                        level_name(l));
  if (n < 0) return;
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line + n, sizeof line - static_cast<size_t>(n), fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "%s\n", line);
}

}  // namespace ferry::log
