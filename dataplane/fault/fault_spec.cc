// dataplane/fault/fault_spec.cc — parse_fault_spec (grammar in fault_port.h).
#include <cctype>
#include <charconv>
#include <optional>
#include <set>
#include <string>

#include "dataplane/fault/fault_port.h"

namespace ferry::dataplane::fault {
namespace {

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

// A leading decimal number; the rest is its unit.
std::optional<double> number(std::string_view s, std::string& unit) {
  double v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end == s.data() || !(v >= 0)) return std::nullopt;
  unit = lower(std::string_view(end, static_cast<size_t>(s.data() + s.size() - end)));
  return v;
}

std::optional<std::chrono::nanoseconds> duration(std::string_view s) {
  std::string unit;
  const auto v = number(s, unit);
  if (!v) return std::nullopt;
  double scale;
  if (unit == "ns") {
    scale = 1;
  } else if (unit == "us") {
    scale = 1e3;
  } else if (unit == "ms") {
    scale = 1e6;
  } else if (unit == "s") {
    scale = 1e9;
  } else if (unit.empty() && *v == 0) {
    scale = 0;
  } else {
    return std::nullopt;
  }
  return std::chrono::nanoseconds(static_cast<int64_t>(*v * scale));
}

std::optional<uint64_t> bytes(std::string_view s) {
  std::string unit;
  const auto v = number(s, unit);
  if (!v) return std::nullopt;
  double scale;
  if (unit.empty() || unit == "b") {
    scale = 1;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    scale = 1024.0;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    scale = 1024.0 * 1024;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    scale = 1024.0 * 1024 * 1024;
  } else {
    return std::nullopt;
  }
  return static_cast<uint64_t>(*v * scale);
}

// tc's units: *bit are bits per second (decimal), *bps bytes per second. Returns bytes/s.
std::optional<double> rate(std::string_view s) {
  std::string unit;
  const auto v = number(s, unit);
  if (!v) return std::nullopt;
  static constexpr struct {
    const char* unit;
    double bytes_per_s;
  } kUnits[] = {{"bit", 1.0 / 8}, {"kbit", 1e3 / 8}, {"mbit", 1e6 / 8}, {"gbit", 1e9 / 8},
                {"bps", 1},       {"kbps", 1e3},     {"mbps", 1e6},     {"gbps", 1e9}};
  for (const auto& u : kUnits) {
    if (unit == u.unit) return *v * u.bytes_per_s;
  }
  return std::nullopt;
}

Status bad(std::string_view item, const std::string& need) {
  return error(ErrorCode::kInvalidArgument, "fault spec: '" + std::string(item) + "': " + need);
}

}  // namespace

Result<FaultOptions> parse_fault_spec(std::string_view spec) {
  static constexpr const char* kKeys =
      "drop, dup, reorder, reorder_gap, delay, jitter, blackout, cut, rate, queue, burst, "
      "overhead, slots, seed";
  FaultOptions o;
  std::set<std::string> seen;
  while (!spec.empty()) {
    const size_t comma = spec.find(',');
    const std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == item.size()) {
      return bad(item, "expected key=value");
    }
    const std::string key = lower(item.substr(0, eq));
    const std::string_view val = item.substr(eq + 1);
    if (!seen.insert(key).second) return bad(item, "'" + key + "' is given twice");

    if (key == "drop" || key == "dup" || key == "reorder") {
      std::string unit;
      const auto p = number(val, unit);
      if (!p || !unit.empty() || *p > 1) return bad(item, "need a probability between 0 and 1");
      (key == "drop" ? o.drop : key == "dup" ? o.dup : o.reorder) = *p;
    } else if (key == "delay" || key == "jitter" || key == "reorder_gap") {
      const auto d = duration(val);
      if (!d) return bad(item, "need a duration with a unit: ns, us, ms or s (e.g. 5ms)");
      (key == "delay" ? o.delay : key == "jitter" ? o.jitter : o.reorder_gap) = *d;
    } else if (key == "blackout") {
      const size_t at = val.find('@');
      const auto len = duration(val.substr(0, at));
      const auto start = at == std::string_view::npos ? std::nullopt : duration(val.substr(at + 1));
      if (!len || !start) return bad(item, "need LENGTH@START, e.g. blackout=2s@3s");
      o.blackout_length = *len;
      o.blackout_start = *start;
    } else if (key == "cut" || key == "queue" || key == "overhead" || key == "burst") {
      const auto b = bytes(val);
      if (!b) return bad(item, "need a byte count, optionally with k, m or g (e.g. 64k)");
      if (key == "cut") {
        o.cut_after = *b;
      } else if (key == "queue") {
        o.queue = *b;
      } else if (key == "burst") {
        o.burst = *b;
      } else {
        o.overhead = *b;
      }
    } else if (key == "rate") {
      const auto r = rate(val);
      if (!r || *r <= 0) {
        return bad(item, "need a rate: bit, kbit, mbit or gbit per second (or bps, kbps, ...)");
      }
      o.rate = *r;
    } else if (key == "slots" || key == "seed") {
      uint64_t v = 0;
      const auto [end, ec] = std::from_chars(val.data(), val.data() + val.size(), v);
      if (ec != std::errc() || end != val.data() + val.size()) {
        return bad(item, "need a whole number");
      }
      if (key == "slots") {
        if (v == 0 || v > (1u << 20)) return bad(item, "slots must be 1 .. 1048576");
        o.slots = v;
      } else {
        o.seed = v;
      }
    } else {
      return bad(item, std::string("unknown key '") + key + "' (known: " + kKeys + ")");
    }
  }
  return o;
}

}  // namespace ferry::dataplane::fault
