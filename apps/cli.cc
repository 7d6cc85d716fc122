// apps/cli.cc — see cli.h.
#include "apps/cli.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "dataplane/dpdk/dpdk_wire.h"
#include "dataplane/protocol.h"
#include "dataplane/transport.h"
#include "pipeline/channel_set.h"

namespace ferry::apps {

void ArgReader::fail(const std::string& msg) {
  if (!ok_) return;
  std::fprintf(stderr, "%s: %s (see %s --help)\n", command_, msg.c_str(), command_);
  ok_ = false;
}

std::string ArgReader::value() {
  if (i_ + 1 >= argc_) {
    fail(current() + " needs a value");
    return "";
  }
  return argv_[++i_];
}

size_t ArgReader::choice(std::initializer_list<const char*> names) {
  const std::string flag = current();
  const std::string v = value();
  if (!ok_) return 0;
  std::string expected;
  size_t i = 0;
  for (const char* name : names) {
    if (v == name) return i;
    expected += (i++ ? "|" : "") + std::string(name);
  }
  fail(flag + ": '" + v + "' is not one of " + expected);
  return 0;
}

double ArgReader::seconds() {
  std::string flag = current();
  std::string v = value();
  if (!ok_) return 0;
  char* end = nullptr;
  double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !(d > 0) || d > 1e6) {
    fail(flag + " wants a positive number of seconds, got '" + v + "'");
    return 0;
  }
  return d;
}

std::chrono::seconds link_timeout_value(ArgReader& args) {
  return std::chrono::seconds(
      args.count(dataplane::kMinLinkTimeout.count(), dataplane::kMaxLinkTimeout.count()));
}

std::chrono::seconds resume_within_value(ArgReader& args) {
  return std::chrono::seconds(args.count(0, dataplane::kMaxResumeWithin.count()));
}

long long ArgReader::count(long long min, long long max) {
  std::string flag = current();
  std::string v = value();
  if (!ok_) return min;
  char* end = nullptr;
  errno = 0;
  long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || n < min || n > max) {
    fail(flag + " wants a whole number from " + std::to_string(min) + " to " + std::to_string(max) +
         ", got '" + v + "'");
    return min;
  }
  return n;
}

encoders::CodecLevel ArgReader::codec() {
  const std::string flag = current();
  const std::string v = value();
  if (v == "none") return encoders::CodecLevel::kNone;
  if (v == "fast") return encoders::CodecLevel::kFast;
  if (v == "max") return encoders::CodecLevel::kMax;
  if (v != "auto") fail(flag + " wants none, fast, max or auto, got '" + v + "'");
  return encoders::CodecLevel::kAuto;
}

encoders::CachePolicy ArgReader::cache_policy() {
  const std::string flag = current();
  const std::string v = value();
  for (auto p : {encoders::CachePolicy::kLru, encoders::CachePolicy::kAgedClock}) {
    if (v == encoders::cache_policy_name(p)) return p;
  }
  fail(flag + " wants aged-clock or lru, got '" + v + "'");
  return encoders::kDefaultCachePolicy;
}

dataplane::PollMode ArgReader::poll_mode() {
  const std::string flag = current();
  auto mode = dataplane::parse_poll_mode(value());
  if (!mode) {
    fail(flag + ": " + mode.status().message());
    return dataplane::PollMode::kAdaptive;
  }
  return *mode;
}

log::Level ArgReader::log_level() {
  const std::string flag = current();
  const std::string v = value();
  log::Level level = log::Level::kWarn;
  if (ok_ && !log::parse_level(v.c_str(), &level)) {
    fail(flag + " wants error, warn, info or debug, got '" + v + "'");
  }
  return level;
}

bool take_dpdk_flag(ArgReader& args, dataplane::dpdk::DpdkSettings& out) {
  if (args.is("--dpdk-args")) {
    out.eal_args = args.value();
    return true;
  }
  if (args.is("--dpdk-local")) {
    out.local_ip = args.value();
    return true;
  }
  if (args.is("--dpdk-mtu")) {
    out.mtu = static_cast<unsigned>(args.count(dataplane::dpdk::kMinMtu, dataplane::dpdk::kMaxMtu));
    return true;
  }
  return false;
}

Status apply_dpdk_settings(const dataplane::dpdk::DpdkSettings& given) {
  if (!given.eal_args.empty() || !given.local_ip.empty() || given.mtu != 0) {
    for (const auto& t : dataplane::transports()) {
      if (std::string(t.name) == "dpdk" && !t.available) {
        return Status(ErrorCode::kUnavailable,
                      std::string("--dpdk-args/--dpdk-local/--dpdk-mtu: ") + t.why_not);
      }
    }
  }
  if (!given.local_ip.empty() && !dataplane::dpdk::parse_ipv4(given.local_ip)) {
    return Status(ErrorCode::kInvalidArgument,
                  "--dpdk-local wants an IPv4 address, got '" + given.local_ip + "'");
  }
  dataplane::dpdk::configure(given);
  return Status::ok();
}

const char* const kDpdkUsage =
    "  --dpdk-args \"EAL ARGS\" for dpdk: links, the DPDK EAL arguments naming the port, e.g.\n"
    "                         \"--no-pci --vdev net_af_packet0,iface=eth1,qdisc_bypass=0\" or\n"
    "                         \"-a 0000:3b:00.1\" (default: $FERRY_DPDK_ARGS; ferry adds -l, a\n"
    "                         --file-prefix, and --no-huge -m 512 when no hugepages are free)\n"
    "  --dpdk-local IPV4      this end's address on the DPDK port, answered by ferry's ARP; not\n"
    "                         one the kernel owns (default: $FERRY_DPDK_LOCAL; ferry recv: the\n"
    "                         --listen address)\n"
    "  --dpdk-mtu N           sets the DPDK port's MTU (576..9600; default: $FERRY_DPDK_MTU, else\n"
    "                         the port's own, 1500 unless set); a datagram fills one frame,\n"
    "                         so 9000 carries 6x the bytes per packet (docs/DPDK.md)\n";

bool take_security_flag(ArgReader& args, SecurityFlags& out) {
  if (args.is("--tls-x509-dir")) {
    out.tls.x509_dir = args.value();
  } else if (args.is("--tls-psk-file")) {
    out.tls.psk_file = args.value();
  } else if (args.is("--tls-hostname")) {
    out.tls.hostname = args.value();
  } else if (args.is("--tls-authz")) {
    const std::string list = args.value();
    for (size_t at = 0; at <= list.size();) {
      size_t comma = list.find(',', at);
      if (comma == std::string::npos) comma = list.size();
      if (comma > at) out.tls.authz.push_back(list.substr(at, comma - at));
      at = comma + 1;
    }
  } else if (args.is("--insecure")) {
    out.insecure = true;
  } else {
    return false;
  }
  return true;
}

Result<std::shared_ptr<const dataplane::LinkSecurity>> load_security(const char* command,
                                                                     const SecurityFlags& flags,
                                                                     dataplane::TlsRole role,
                                                                     const std::string& spec) {
  const bool server = role == dataplane::TlsRole::kServer;
  if (flags.insecure && flags.tls.any()) {
    return error(ErrorCode::kInvalidArgument,
                 "--insecure and --tls-x509-dir/--tls-psk-file exclude each other");
  }
  if (flags.tls.any()) return dataplane::LinkSecurity::load(flags.tls, role);
  if (!flags.tls.authz.empty() || !flags.tls.hostname.empty()) {
    return error(ErrorCode::kInvalidArgument,
                 "--tls-authz and --tls-hostname need --tls-x509-dir or --tls-psk-file");
  }
  if (dataplane::spec_is_local(spec)) return std::shared_ptr<const dataplane::LinkSecurity>();
  if (!flags.insecure) {
    return error(
        ErrorCode::kInvalidArgument,
        std::string(server ? "refusing to listen on " : "refusing to send to ") + spec +
            " without credentials: " +
            (server ? "anyone who reaches it could feed the destination QEMU"
                    : "the VM's memory would cross the network unauthenticated and in clear") +
            ". Give --tls-psk-file FILE or --tls-x509-dir DIR (scripts/make-credentials.sh "
            "makes test ones), or --insecure on a network you trust");
  }
  std::fprintf(stderr, "%s: --insecure: %s %s without authentication or encryption: %s\n", command,
               server ? "listening on" : "sending to", spec.c_str(),
               server ? "anyone who reaches it can feed the destination QEMU and read the VM"
                      : "anyone on the path can read the VM's memory or pose as ferry recv");
  return std::shared_ptr<const dataplane::LinkSecurity>();
}

const char* const kSecurityUsage =
    "  --tls-x509-dir DIR     authenticate both ends with x509 certificates, in QEMU's layout:\n"
    "                         ca-cert.pem, server-cert.pem + server-key.pem (ferry recv),\n"
    "                         client-cert.pem + client-key.pem (ferry send), ca-crl.pem if any\n"
    "  --tls-psk-file FILE    authenticate with a pre-shared key: identity:hexkey lines, as\n"
    "                         QEMU's keys.psk (ferry send uses the first line)\n"
    "  --tls-authz NAME,...   accept only these peers: a certificate's CN or full subject\n"
    "                         (RFC 2253, e.g. CN=src,O=Example), or PSK identities\n"
    "  --tls-hostname NAME    ferry send, x509: the name ferry recv's certificate must carry\n"
    "                         (default: the host of --peer)\n"
    "  --insecure             no credentials on a link that leaves this host: unauthenticated\n"
    "                         and unencrypted (without credentials, ferry talks only to or\n"
    "                         from 127.0.0.1/::1 unless given this). With credentials, TLS 1.3\n"
    "                         authenticates every link and AES-256-GCM seals every frame\n"
    "                         (docs/SECURITY.md)\n";

const char* const kMetricsUsage =
    "  --metrics tcp:HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics (bytes,\n"
    "                         pages by form, link rate, sessions by outcome, ...: see\n"
    "                         docs/METRICS.md). They hold no secrets but tell who migrates\n"
    "                         what and when: a HOST other than 127.0.0.1/::1 exposes them to\n"
    "                         whoever reaches it, which is the operator's choice\n";

Result<std::unique_ptr<metrics::Exporter>> start_metrics(const std::string& spec) {
  if (spec.empty()) return std::unique_ptr<metrics::Exporter>();
  auto e = metrics::Exporter::start(spec);
  if (!e) return Status(e.status().code(), "--metrics: " + e.status().message());
  return e;
}

const char* const kLogUsage =
    "  --log-level LEVEL      error, warn (default), info or debug: how much ferry logs\n"
    "                         beyond its one-line results. Under systemd each line carries\n"
    "                         its syslog priority (journalctl -p err shows the failures)\n";

bool take_log_flag(ArgReader& args) {
  if (!args.is("--log-level")) return false;
  const log::Level level = args.log_level();
  if (args.ok()) log::set_level(level);
  return true;
}

const char* session_outcome(const std::string& error, const std::string& cancelled) {
  if (!cancelled.empty()) return "cancelled";
  return error.empty() ? "completed" : "failed";
}

void ArgReader::unknown() { fail("unknown argument '" + current() + "'"); }

Status write_text_file(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return Status(ErrorCode::kIo, "cannot write " + path + ": " + std::strerror(errno));
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) return Status(ErrorCode::kIo, "cannot write " + path + ": " + std::strerror(errno));
  return Status::ok();
}

Status check_vm_flag(const std::string& name) {
  if (name.empty()) return Status::ok();
  if (auto st = dataplane::check_vm_name(name); !st) {
    return Status(
        ErrorCode::kInvalidArgument,
        "--vm: " + st.message() + " (use 1-64 of A-Z a-z 0-9 . _ -, not starting with '.')");
  }
  return Status::ok();
}

int finish_session(const char* command, pipeline::ChannelSet& set, const std::string& stats_path,
                   const std::string& error, bool quiet) {
  if (!stats_path.empty()) {
    auto st = write_text_file(
        stats_path, set.stats_json(error.empty() ? "completed" : "failed", error).dump() + "\n");
    if (!st) {
      std::fprintf(stderr, "%s: %s\n", command, st.message().c_str());
      if (error.empty()) return 1;
    }
  }
  if (!error.empty()) {
    std::fprintf(stderr, "%s%s: %s\n", log::journal_prefix(log::Level::kError), command,
                 error.c_str());
    return 1;
  }
  if (!quiet) {
    std::fprintf(stderr, "%s%s: done: %s\n", log::journal_prefix(log::Level::kInfo), command,
                 progress_line(set).c_str());
  }
  return 0;
}

std::string progress_line(const pipeline::ChannelSet& set) {
  const pipeline::SetCounters c = set.counters();
  const double s = c.seconds;
  const uint64_t stream = c.sender ? c.bytes_from_qemu : c.bytes_to_qemu;
  const uint64_t link = c.link_tx_bytes + c.link_rx_bytes;
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "%6.1f s  %zu channel%s  stream %.1f MB  link %.1f MB (%.1f MB/s)  %llu pages", s,
                c.channels, c.channels == 1 ? "" : "s", stream / 1e6, link / 1e6,
                s > 0 ? link / 1e6 / s : 0.0,
                static_cast<unsigned long long>(c.pages_normal + c.pages_zero));
  return buf;
}

std::function<void()> progress_tick(const pipeline::ChannelSet& set) {
  return [&set] {
    if (set.size()) std::fprintf(stderr, "\r%s", progress_line(set).c_str());
  };
}

std::string transport_names() {
  std::string s;
  for (const auto& t : dataplane::transports()) {
    if (!t.available || t.in_process) continue;
    if (!s.empty()) s += ", ";
    s += t.name;
  }
  return s;
}

}  // namespace ferry::apps
