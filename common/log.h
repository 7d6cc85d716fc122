// common/log.h — minimal leveled logging for the control path (never per page or packet).
#pragma once

#include <cstdarg>

namespace ferry::log {

enum class Level { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

// Messages above this level are dropped. Default kWarn; FERRY_LOG=debug|info|warn|error sets it.
void set_level(Level level);
Level level();

// "error", "warn", "info" or "debug" (--log-level); false for anything else.
bool parse_level(const char* name, Level* out);

// When stderr is the systemd journal ($JOURNAL_STREAM names its device and inode, as systemd
// sets it for a service's output), the syslog priority to start a line with: "<3>" error,
// "<4>" warning, "<6>" info, "<7>" debug, so the journal files the line by severity
// (journalctl -p). "" otherwise: a terminal or a file gets the line as it is.
const char* journal_prefix(Level level);

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
