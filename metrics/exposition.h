// metrics/exposition.h — the Prometheus text exposition format, version 0.0.4: families with
// their # HELP and # TYPE lines, samples with escaped label values. Knows nothing of ferry or
// of HTTP (http_server.h serves what this writes; exporter.h decides what is exported).
//
// Grammar written (https://prometheus.io/docs/instrumenting/exposition_formats/):
//   family  = "# HELP " name " " escaped-help "\n" "# TYPE " name " " type "\n" sample*
//   sample  = name [ "{" label ( "," label )* "}" ] " " value "\n"
//   label   = label-name "=\"" escaped-value "\""
//   escaped-help  : "\" -> "\\", newline -> "\n"
//   escaped-value : "\" -> "\\", newline -> "\n", '"' -> "\""
//   value   = integer | float (%.17g) | "+Inf" | "-Inf" | "NaN"
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace ferry::metrics {

enum class MetricType { kCounter, kGauge };

struct Label {
  std::string_view name;   // [a-zA-Z_][a-zA-Z0-9_]*, checked by the caller's tests
  std::string_view value;  // any UTF-8; escaped here
};

// Builds one exposition. Not thread safe: one writer per scrape.
class TextWriter {
 public:
  // Starts a family; the samples that follow carry its name. name: [a-zA-Z_:][a-zA-Z0-9_:]*
  // (counters end in _total, by the conventions).
  void family(std::string_view name, std::string_view help, MetricType type);
  // One sample of the current family.
  void sample(uint64_t value, std::initializer_list<Label> labels = {});
  void sample(double value, std::initializer_list<Label> labels = {});

  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void sample_head(std::initializer_list<Label> labels);

  std::string out_;
  std::string name_;
};

// The escapes of the grammar above.
std::string escape_help(std::string_view s);
std::string escape_label_value(std::string_view s);
// A sample value: exact for integers up to 2^53, %.17g otherwise, +Inf/-Inf/NaN.
std::string format_value(double v);
// A valid metric (or, with colons false, label) name.
bool valid_name(std::string_view name, bool colons = true);

}  // namespace ferry::metrics
