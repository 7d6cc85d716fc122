// apps/cli.h — small helpers shared by the subcommands: argument reading with one clear
// message per mistake, writing a result file, and the list of transports for --help.
#pragma once

#include <chrono>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <string>

#include "common/log.h"
#include "common/status.h"
#include "dataplane/dpdk/dpdk_settings.h"
#include "dataplane/engine.h"
#include "dataplane/security/link_security.h"
#include "encoders/page_codec.h"
#include "metrics/exporter.h"

namespace ferry::pipeline {
class ChannelSet;
}  // namespace ferry::pipeline

namespace ferry::apps {

// Walks argv after the subcommand. Usage:
//   ArgReader args("ferry send", argc, argv);
//   while (args.next()) { if (args.is("--x")) x = args.value(); else args.unknown(); }
//   if (!args.ok()) return 2;
class ArgReader {
 public:
  ArgReader(const char* command, int argc, char** argv)
      : command_(command), argc_(argc), argv_(argv) {}

  bool next() { return ok_ && ++i_ < argc_; }
  bool is(const char* flag) const { return current() == flag; }
  const std::string current() const { return argv_[i_]; }
  // The value after the current flag; reports a missing one.
  std::string value();
  // The value as a positive number of seconds (may be fractional).
  double seconds();
  // The value as a whole number in [min, max].
  long long count(long long min, long long max);
  // The value as a --codec level (none|fast|max|auto).
  encoders::CodecLevel codec();
  // The value as a page cache policy (lru|aged-clock).
  encoders::CachePolicy cache_policy();
  // The value as a polling mode (adaptive|busy).
  dataplane::PollMode poll_mode();
  // The value as a log level (error|warn|info|debug).
  log::Level log_level();
  // The value as the index of one of names (0 when it is none of them: reported).
  size_t choice(std::initializer_list<const char*> names);
  void unknown();
  bool ok() const { return ok_; }

 private:
  void fail(const std::string& msg);

  const char* command_;
  int argc_;
  char** argv_;
  int i_ = 0;
  bool ok_ = true;
};

// --link-timeout's value: whole seconds within dataplane's bounds.
std::chrono::seconds link_timeout_value(ArgReader& args);
// --resume-within S: 0..kMaxResumeWithin.
std::chrono::seconds resume_within_value(ArgReader& args);

// The dpdk transport's flags, shared by send, recv and migrate: if the current flag is
// --dpdk-args or --dpdk-local, takes its value into `out` and returns true.
bool take_dpdk_flag(ArgReader& args, dataplane::dpdk::DpdkSettings& out);
// Hands the settings to the dpdk transport (empty fields fall back to FERRY_DPDK_ARGS /
// FERRY_DPDK_LOCAL). Fails at once, in one sentence, when they were given but this build has
// no DPDK, or the address is not IPv4.
Status apply_dpdk_settings(const dataplane::dpdk::DpdkSettings& given);
// The usage lines of those flags.
extern const char* const kDpdkUsage;

// The link security flags, shared by send, recv and migrate.
struct SecurityFlags {
  dataplane::SecurityOptions tls;
  bool insecure = false;
};
// If the current flag is one of --tls-x509-dir, --tls-psk-file, --tls-authz (a list; may
// repeat), --tls-hostname or --insecure, takes it into `out` and returns true.
bool take_security_flag(ArgReader& args, SecurityFlags& out);
// Loads the credentials for this side. Without them ferry talks only to or from this host
// (spec: --peer or --listen), unless --insecure (then one line on stderr says what that gives
// up). Null = no credentials (allowed); an error is one sentence for the user.
Result<std::shared_ptr<const dataplane::LinkSecurity>> load_security(const char* command,
                                                                     const SecurityFlags& flags,
                                                                     dataplane::TlsRole role,
                                                                     const std::string& spec);
// The usage lines of those flags.
extern const char* const kSecurityUsage;

// --metrics tcp:HOST:PORT, shared by send, recv and migrate: starts the Prometheus endpoint
// (metrics/exporter.h) on a thread of its own (which blocks every signal, so it may start
// before or after StopSignals); null when spec is empty. An error is one sentence (a bad
// address, the port taken).
Result<std::unique_ptr<metrics::Exporter>> start_metrics(const std::string& spec);
// A session's outcome for the metrics: completed, cancelled (by a signal) or failed.
const char* session_outcome(const std::string& error, const std::string& cancelled);
// The usage lines of --metrics.
extern const char* const kMetricsUsage;

// --log-level error|warn|info|debug, shared by send, recv and migrate: if it is the current
// flag, sets the level of ferry's diagnostic log (common/log.h; default warn, or $FERRY_LOG)
// and returns true.
bool take_log_flag(ArgReader& args);
extern const char* const kLogUsage;
// --vm NAME of send and migrate: empty (not given) or a name HELLO can carry
// (dataplane::check_vm_name); the error is one sentence naming the flag.
Status check_vm_flag(const std::string& name);

// Writes text to path (replacing it); the error names the file.
Status write_text_file(const std::string& path, const std::string& text);

// "tcp, loopback" (available transports), for --help.
std::string transport_names();

// The end of ferry send / ferry recv: writes --stats-json (if a path is given), prints the
// one-line result, returns the exit status (0 when error is empty).
// One line for a terminal: time, channels, stream and link bytes, link rate, pages.
std::string progress_line(const pipeline::ChannelSet& set);
// A progress line on stderr, redrawn in place, for a session's wait() tick (nothing until the
// first channel runs).
std::function<void()> progress_tick(const pipeline::ChannelSet& set);

int finish_session(const char* command, pipeline::ChannelSet& set, const std::string& stats_path,
                   const std::string& error, bool quiet);

}  // namespace ferry::apps
