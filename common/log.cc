#include "common/log.h"

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

void set_level(Level level) { g_level.store(level, std::memory_order_relaxed); }
Level level() { return g_level.load(std::memory_order_relaxed); }
void set_program(const char* tag) { g_program.store(tag, std::memory_order_relaxed); }

void write(Level l, const char* fmt, ...) {
  if (l > level()) return;
  char line[1024];
  int n = std::snprintf(line, sizeof line, "%s: %s: ", g_program.load(), level_name(l));
  if (n < 0) return;
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line + n, sizeof line - static_cast<size_t>(n), fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "%s\n", line);
}

}  // namespace ferry::log
