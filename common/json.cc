// common/json.cc — see json.h.
#include "common/json.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace ferry::json {

namespace {

const Value& null_value() {
  static const Value kNull;
  return kNull;
}

const Array& empty_array() {
  static const Array kEmpty;
  return kEmpty;
}

const Object& empty_object() {
  static const Object kEmpty;
  return kEmpty;
}

const std::string& empty_string() {
  static const std::string kEmpty;
  return kEmpty;
}

// Recursive-descent parser over a string_view. Depth is bounded so hostile nesting cannot
// exhaust the stack; the first error is kept with its byte offset.
class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Result<Value> run() {
    Value v;
    skip_ws();
    if (!parse_value(v, 0)) return make_error();
    skip_ws();
    if (pos_ != text_.size()) {
      fail("unexpected data after the JSON value");
      return make_error();
    }
    return v;
  }

 private:
  bool fail(const char* what) {
    if (!failed_) {
      failed_ = true;
      err_pos_ = pos_;
      err_ = what;
    }
    return false;
  }

  Status make_error() const {
    return error(ErrorCode::kProtocol,
                 "JSON parse error at byte " + std::to_string(err_pos_) + ": " + err_);
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }

  void skip_ws() {
    while (!at_end()) {
      char c = peek();
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  bool expect_literal(std::string_view lit) {
    if (text_.substr(pos_, lit.size()) != lit) return fail("invalid literal");
    pos_ += lit.size();
    return true;
  }

  bool parse_value(Value& out, int depth) {
    if (depth >= kMaxDepth) return fail("nesting deeper than the limit");
    if (at_end()) return fail("unexpected end of input, expected a value");
    char c = peek();
    switch (c) {
      case '{':
        return parse_object(out, depth);
      case '[':
        return parse_array(out, depth);
      case '"': {
        std::string s;
        if (!parse_string(s)) return false;
        out = Value(std::move(s));
        return true;
      }
      case 't':
        if (!expect_literal("true")) return false;
        out = Value(true);
        return true;
      case 'f':
        if (!expect_literal("false")) return false;
        out = Value(false);
        return true;
      case 'n':
        if (!expect_literal("null")) return false;
        out = Value();
        return true;
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(out);
        return fail("unexpected character, expected a value");
    }
  }

  bool parse_object(Value& out, int depth) {
    ++pos_;  // '{'
    Object members;
    std::vector<size_t> key_at;  // byte offset of each member's key, for the duplicate error
    skip_ws();
    if (!at_end() && peek() == '}') {
      ++pos_;
      out = Value(std::move(members));
      return true;
    }
    for (;;) {
      skip_ws();
      if (at_end() || peek() != '"') return fail("expected a string object key");
      std::string key;
      key_at.push_back(pos_);
      if (!parse_string(key)) return false;
      skip_ws();
      if (at_end() || peek() != ':') return fail("expected ':' after object key");
      ++pos_;
      skip_ws();
      Value v;
      if (!parse_value(v, depth + 1)) return false;
      members.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (at_end()) return fail("unexpected end of input inside an object");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        break;
      }
      return fail("expected ',' or '}' in object");
    }
    if (const size_t dup = first_duplicate(members); dup != kNoDuplicate) {
      pos_ = key_at[dup];
      return fail("duplicate object key");
    }
    out = Value(std::move(members));
    return true;
  }

  static constexpr size_t kNoDuplicate = SIZE_MAX;

  // Index of the first member (in text order) whose key an earlier member already has, or
  // kNoDuplicate. O(n log n): a hostile peer's object of n distinct keys must not cost n^2
  // comparisons (nor may it flood a hash table, whose hash is not seeded).
  static size_t first_duplicate(const Object& members) {
    const size_t n = members.size();
    if (n < 2) return kNoDuplicate;
    if (n <= 8) {
      for (size_t i = 1; i < n; ++i) {
        for (size_t j = 0; j < i; ++j) {
          if (members[j].first == members[i].first) return i;
        }
      }
      return kNoDuplicate;
    }
    std::vector<size_t> order(n);
    for (size_t i = 0; i < n; ++i) order[i] = i;
    // Ties keep text order, so the second of each run of equal keys is its first repeat.
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return members[a].first < members[b].first; });
    size_t first = kNoDuplicate;
    for (size_t i = 1; i < n; ++i) {
      if (members[order[i]].first == members[order[i - 1]].first) {
        first = std::min<size_t>(first, order[i]);
      }
    }
    return first;
  }

  bool parse_array(Value& out, int depth) {
    ++pos_;  // '['
    Array items;
    skip_ws();
    if (!at_end() && peek() == ']') {
      ++pos_;
      out = Value(std::move(items));
      return true;
    }
    for (;;) {
      skip_ws();
      Value v;
      if (!parse_value(v, depth + 1)) return false;
      items.push_back(std::move(v));
      skip_ws();
      if (at_end()) return fail("unexpected end of input inside an array");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        break;
      }
      return fail("expected ',' or ']' in array");
    }
    out = Value(std::move(items));
    return true;
  }

  bool parse_hex4(uint32_t& out) {
    if (text_.size() - pos_ < 4) return fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text_[pos_ + i];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= uint32_t(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= uint32_t(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= uint32_t(c - 'A' + 10);
      } else {
        pos_ += i;
        return fail("invalid hex digit in \\u escape");
      }
    }
    pos_ += 4;
    out = v;
    return true;
  }

  static void append_utf8(std::string& s, uint32_t cp) {
    if (cp < 0x80) {
      s.push_back(char(cp));
    } else if (cp < 0x800) {
      s.push_back(char(0xC0 | (cp >> 6)));
      s.push_back(char(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s.push_back(char(0xE0 | (cp >> 12)));
      s.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
      s.push_back(char(0x80 | (cp & 0x3F)));
    } else {
      s.push_back(char(0xF0 | (cp >> 18)));
      s.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
      s.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
      s.push_back(char(0x80 | (cp & 0x3F)));
    }
  }

  bool parse_string(std::string& out) {
    ++pos_;  // opening quote
    for (;;) {
      // Copy the run of plain characters in one go.
      size_t start = pos_;
      while (!at_end()) {
        unsigned char c = static_cast<unsigned char>(peek());
        if (c == '"' || c == '\\' || c < 0x20) break;
        ++pos_;
      }
      out.append(text_.data() + start, pos_ - start);
      if (at_end()) return fail("unterminated string");
      char c = peek();
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c != '\\') return fail("raw control character in string");
      ++pos_;
      if (at_end()) return fail("unterminated escape in string");
      char e = peek();
      ++pos_;
      switch (e) {
        case '"':
          out.push_back('"');
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '/':
          out.push_back('/');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          uint32_t cp = 0;
          if (!parse_hex4(cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // A high surrogate must be followed by an escaped low surrogate.
            if (text_.substr(pos_, 2) != "\\u") return fail("lone high surrogate in \\u escape");
            pos_ += 2;
            uint32_t lo = 0;
            if (!parse_hex4(lo)) return false;
            if (lo < 0xDC00 || lo > 0xDFFF) return fail("invalid low surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return fail("lone low surrogate in \\u escape");
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --pos_;
          return fail("invalid escape character in string");
      }
    }
  }

  bool parse_number(Value& out) {
    size_t start = pos_;
    bool is_integer = true;
    if (peek() == '-') ++pos_;
    if (at_end()) return fail("truncated number");
    if (peek() == '0') {
      ++pos_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
    } else {
      return fail("invalid number");
    }
    if (!at_end() && peek() == '.') {
      is_integer = false;
      ++pos_;
      if (at_end() || peek() < '0' || peek() > '9') return fail("expected a digit after '.'");
      while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      is_integer = false;
      ++pos_;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
      if (at_end() || peek() < '0' || peek() > '9') return fail("expected a digit in exponent");
      while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    if (is_integer) {
      int64_t i = 0;
      auto [ptr, ec] = std::from_chars(first, last, i);
      if (ec == std::errc() && ptr == last) {
        out = Value(static_cast<long long>(i));
        return true;
      }
      // Out of int64 range: fall through to double.
    }
    double d = 0;
    auto [ptr, ec] = std::from_chars(first, last, d);
    if (ptr != last || (ec != std::errc() && ec != std::errc::result_out_of_range)) {
      pos_ = start;
      return fail("invalid number");
    }
    if (!std::isfinite(d)) {
      pos_ = start;
      return fail("number out of range");
    }
    out = Value(d);
    return true;
  }

  std::string_view text_;
  size_t pos_ = 0;
  bool failed_ = false;
  size_t err_pos_ = 0;
  std::string err_;
};

}  // namespace

const char* type_name(Type type) {
  switch (type) {
    case Type::kNull:
      return "null";
    case Type::kBool:
      return "bool";
    case Type::kInt:
      return "integer";
    case Type::kDouble:
      return "number";
    case Type::kString:
      return "string";
    case Type::kArray:
      return "array";
    case Type::kObject:
      return "object";
  }
  return "?";
}

Value::Value(Array a) : type_(Type::kArray), a_(std::make_unique<Array>(std::move(a))) {}
Value::Value(Object o) : type_(Type::kObject), o_(std::make_unique<Object>(std::move(o))) {}

Value::Value(const Value& other)
    : type_(other.type_), b_(other.b_), i_(other.i_), d_(other.d_), s_(other.s_) {
  if (other.a_) a_ = std::make_unique<Array>(*other.a_);
  if (other.o_) o_ = std::make_unique<Object>(*other.o_);
}

Value& Value::operator=(const Value& other) {
  if (this != &other) {
    Value copy(other);
    *this = std::move(copy);
  }
  return *this;
}

Value::Value(Value&&) noexcept = default;
Value& Value::operator=(Value&&) noexcept = default;
Value::~Value() = default;

Value Value::object(std::initializer_list<Member> members) {
  Value v{Object{}};
  for (const auto& [k, val] : members) v.set(k, val);
  return v;
}

Value Value::array(std::initializer_list<Value> items) { return Value{Array(items)}; }

void Value::set_unsigned(unsigned long long u) {
  if (u <= static_cast<unsigned long long>(std::numeric_limits<int64_t>::max())) {
    type_ = Type::kInt;
    i_ = static_cast<int64_t>(u);
  } else {
    type_ = Type::kDouble;
    d_ = static_cast<double>(u);
  }
}

int64_t Value::as_int(int64_t fallback) const {
  if (type_ == Type::kInt) return i_;
  if (type_ == Type::kDouble && std::isfinite(d_) && d_ >= -9.2e18 && d_ <= 9.2e18) {
    return static_cast<int64_t>(d_);
  }
  return fallback;
}

double Value::as_double(double fallback) const {
  if (type_ == Type::kDouble) return d_;
  if (type_ == Type::kInt) return static_cast<double>(i_);
  return fallback;
}

const std::string& Value::as_string() const { return is_string() ? s_ : empty_string(); }

const Array& Value::items() const { return (is_array() && a_) ? *a_ : empty_array(); }

const Object& Value::members() const { return (is_object() && o_) ? *o_ : empty_object(); }

size_t Value::size() const {
  if (is_array()) return items().size();
  if (is_object()) return members().size();
  return 0;
}

const Value& Value::operator[](size_t index) const {
  const Array& a = items();
  return index < a.size() ? a[index] : null_value();
}

Array& Value::mutable_array() {
  if (!is_array()) {
    *this = Value(Array{});
  }
  if (!a_) a_ = std::make_unique<Array>();
  return *a_;
}

Object& Value::mutable_object() {
  if (!is_object()) {
    *this = Value(Object{});
  }
  if (!o_) o_ = std::make_unique<Object>();
  return *o_;
}

Value& Value::push_back(Value v) {
  mutable_array().push_back(std::move(v));
  return *this;
}

const Value* Value::find(std::string_view key) const {
  for (const auto& [k, v] : members()) {
    if (k == key) return &v;
  }
  return nullptr;
}

const Value& Value::operator[](std::string_view key) const {
  const Value* v = find(key);
  return v ? *v : null_value();
}

Value& Value::set(std::string_view key, Value v) {
  Object& o = mutable_object();
  for (auto& [k, existing] : o) {
    if (k == key) {
      existing = std::move(v);
      return *this;
    }
  }
  o.emplace_back(std::string(key), std::move(v));
  return *this;
}

const Value& Value::get(std::initializer_list<std::string_view> path) const {
  const Value* cur = this;
  for (std::string_view key : path) {
    cur = cur->find(key);
    if (!cur) return null_value();
  }
  return *cur;
}

void write_string(std::string& out, std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xF]);
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

double rounded(double v, int decimals) {
  const double scale = std::pow(10.0, decimals);
  return std::round(v * scale) / scale;
}

void Value::dump_to(std::string& out) const {
  switch (type_) {
    case Type::kNull:
      out += "null";
      return;
    case Type::kBool:
      out += b_ ? "true" : "false";
      return;
    case Type::kInt: {
      char buf[24];
      auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, i_);
      (void)ec;
      out.append(buf, ptr);
      return;
    }
    case Type::kDouble: {
      if (!std::isfinite(d_)) {
        out += "null";
        return;
      }
      char buf[40];
      auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, d_);
      (void)ec;
      std::string_view text(buf, size_t(ptr - buf));
      out += text;
      // Keep doubles recognisable as doubles when read back ("2" would become an integer).
      if (text.find_first_of(".eE") == std::string_view::npos) out += ".0";
      return;
    }
    case Type::kString:
      write_string(out, s_);
      return;
    case Type::kArray: {
      out.push_back('[');
      bool first = true;
      for (const Value& v : items()) {
        if (!first) out.push_back(',');
        first = false;
        v.dump_to(out);
      }
      out.push_back(']');
      return;
    }
    case Type::kObject: {
      out.push_back('{');
      bool first = true;
      for (const auto& [k, v] : members()) {
        if (!first) out.push_back(',');
        first = false;
        write_string(out, k);
        out.push_back(':');
        v.dump_to(out);
      }
      out.push_back('}');
      return;
    }
  }
}

std::string Value::dump() const {
  std::string out;
  dump_to(out);
  return out;
}

bool operator==(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_int() && b.is_int()) return a.i_ == b.i_;
    return a.as_double() == b.as_double();
  }
  if (a.type_ != b.type_) return false;
  switch (a.type_) {
    case Type::kNull:
      return true;
    case Type::kBool:
      return a.b_ == b.b_;
    case Type::kString:
      return a.s_ == b.s_;
    case Type::kArray:
      return a.items() == b.items();
    case Type::kObject: {
      // Order-insensitive: JSON objects are unordered.
      const Object& ao = a.members();
      const Object& bo = b.members();
      if (ao.size() != bo.size()) return false;
      for (const auto& [k, v] : ao) {
        const Value* other = b.find(k);
        if (!other || !(*other == v)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

Result<Value> parse(std::string_view text) { return Parser(text).run(); }

}  // namespace ferry::json
