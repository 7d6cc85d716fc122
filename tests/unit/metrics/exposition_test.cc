// Unit tests of metrics/exposition.h: the text format's escapes, HELP/TYPE lines, values.
#include "metrics/exposition.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace ferry::metrics {
namespace {

TEST(Exposition, EscapesLabelValues) {
  EXPECT_EQ(escape_label_value("plain"), "plain");
  EXPECT_EQ(escape_label_value("a\\b"), "a\\\\b");
  EXPECT_EQ(escape_label_value("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(escape_label_value("two\nlines"), "two\\nlines");
  EXPECT_EQ(escape_label_value("\\\"\n"), "\\\\\\\"\\n");
  EXPECT_EQ(escape_label_value("utf-8 é"), "utf-8 é");  // bytes pass as they are
}

TEST(Exposition, EscapesHelpButNotQuotes) {
  EXPECT_EQ(escape_help("a \"quoted\" \\ word\nnext"), "a \"quoted\" \\\\ word\\nnext");
}

TEST(Exposition, FamilyAndSamples) {
  TextWriter w;
  w.family("ferry_x_total", "Things.\nMore", MetricType::kCounter);
  w.sample(uint64_t{3}, {{"side", "send"}, {"why", "a\"b"}});
  w.sample(uint64_t{18446744073709551615ull});
  w.family("ferry_g", "A gauge.", MetricType::kGauge);
  w.sample(0.5);
  EXPECT_EQ(w.text(),
            "# HELP ferry_x_total Things.\\nMore\n"
            "# TYPE ferry_x_total counter\n"
            "ferry_x_total{side=\"send\",why=\"a\\\"b\"} 3\n"
            "ferry_x_total 18446744073709551615\n"
            "# HELP ferry_g A gauge.\n"
            "# TYPE ferry_g gauge\n"
            "ferry_g 0.5\n");
}

TEST(Exposition, Values) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(-3), "-3");
  EXPECT_EQ(format_value(1e15), "1000000000000000");
  EXPECT_EQ(format_value(0.25), "0.25");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::nan("")), "NaN");
  EXPECT_DOUBLE_EQ(std::stod(format_value(1.0 / 3)), 1.0 / 3);  // round-trips
}

TEST(Exposition, Names) {
  EXPECT_TRUE(valid_name("ferry_link_sent_bytes_total"));
  EXPECT_TRUE(valid_name("a:b_c"));
  EXPECT_FALSE(valid_name("a:b", false));
  EXPECT_FALSE(valid_name("9lives"));
  EXPECT_FALSE(valid_name("has-dash"));
  EXPECT_FALSE(valid_name(""));
}

}  // namespace
}  // namespace ferry::metrics
