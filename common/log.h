// common/log.h — minimal leveled logging for the control path (never per page or packet).
#pragma once

#include <cstdarg>

namespace ferry::log {

enum class Level { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

// Messages above this level are dropped. Default kWarn; FERRY_LOG=debug|info|warn|error sets it.
void set_level(Level level);
Level level();

// printf-style; writes one line to stderr prefixed with the program tag and level.
void write(Level level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void set_program(const char* tag);

}  // namespace ferry::log

#define FERRY_LOG_ERROR(...) ::ferry::log::write(::ferry::log::Level::kError, __VA_ARGS__)
#define FERRY_LOG_WARN(...) ::ferry::log::write(::ferry::log::Level::kWarn, __VA_ARGS__)
#define FERRY_LOG_INFO(...)                                         \
  do {                                                              \
    if (::ferry::log::level() >= ::ferry::log::Level::kInfo)        \
      ::ferry::log::write(::ferry::log::Level::kInfo, __VA_ARGS__); \
  } while (0)
#define FERRY_LOG_DEBUG(...)                                         \
  do {                                                               \
    if (::ferry::log::level() >= ::ferry::log::Level::kDebug)        \
      ::ferry::log::write(::ferry::log::Level::kDebug, __VA_ARGS__); \
  } while (0)
