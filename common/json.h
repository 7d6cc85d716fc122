// common/json.h — a small JSON value type with a strict parser and a compact writer.
//
// Role: the control path speaks JSON in a few places (QMP with QEMU, `--json` events and the
// final report of `ferry migrate`, decision records of the policy engine). This is one value
// type for all of them; it is not meant for bulk data or hot paths.
//
// Properties:
//  * Value is a regular value type (copyable, movable, comparable with ==).
//  * Objects keep insertion order (so written events read in a stable, intended order); a
//    lookup is linear, which is right for the small objects QMP and ferry exchange. set()
//    replaces an existing key instead of adding a duplicate.
//  * parse() rejects an object with a duplicate key (an error naming the repeated key's byte
//    offset): QEMU's QDicts cannot hold one, so only a broken or hostile peer sends it, and
//    picking one of the values silently would leave ferry and the peer disagreeing on what
//    was said. The check is O(n log n) in the object's members.
//  * Numbers: an integer literal that fits int64 is kept exactly (QEMU counters are 64-bit);
//    any other number is a double. as_int()/as_double() convert between the two.
//  * parse() is strict RFC 8259 (no comments, no trailing commas, no NaN), treats input as
//    hostile: nesting is bounded (kMaxDepth), the first error is reported with its byte offset,
//    it never crashes. Strings are UTF-8; \u escapes (with surrogate pairs) become UTF-8.
//  * dump() writes compact JSON on one line (no newline; QMP and JSON-lines rely on this).
//    Non-finite doubles are written as null.
//
// Threading: a Value is a plain value; share it read-only or copy it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace ferry::json {

class Value;
using Array = std::vector<Value>;
using Member = std::pair<std::string, Value>;
using Object = std::vector<Member>;

enum class Type : uint8_t { kNull, kBool, kInt, kDouble, kString, kArray, kObject };

const char* type_name(Type type);

class Value {
 public:
  Value() = default;  // null
  Value(std::nullptr_t) {}
  Value(bool b) : type_(Type::kBool), b_(b) {}
  Value(int i) : type_(Type::kInt), i_(i) {}
  Value(long i) : type_(Type::kInt), i_(i) {}
  Value(long long i) : type_(Type::kInt), i_(i) {}
  Value(unsigned u) : type_(Type::kInt), i_(u) {}
  // Values above INT64_MAX become doubles (JSON has no unsigned type).
  Value(unsigned long u) { set_unsigned(u); }
  Value(unsigned long long u) { set_unsigned(u); }
  Value(double d) : type_(Type::kDouble), d_(d) {}
  Value(const char* s) : type_(Type::kString), s_(s) {}
  Value(std::string_view s) : type_(Type::kString), s_(s) {}
  Value(std::string s) : type_(Type::kString), s_(std::move(s)) {}
  Value(Array a);
  Value(Object o);

  // Builders: json::Value::object({{"execute", "query-status"}}), json::Value::array({1, 2}).
  static Value object(std::initializer_list<Member> members = {});
  static Value array(std::initializer_list<Value> items = {});

  Value(const Value& other);
  Value& operator=(const Value& other);
  Value(Value&&) noexcept;
  Value& operator=(Value&&) noexcept;
  ~Value();

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_int() const { return type_ == Type::kInt; }
  bool is_number() const { return type_ == Type::kInt || type_ == Type::kDouble; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  // Accessors return `fallback` when the type does not match (no exceptions, no asserts):
  // callers that must distinguish check the type first.
  bool as_bool(bool fallback = false) const { return is_bool() ? b_ : fallback; }
  int64_t as_int(int64_t fallback = 0) const;  // doubles are truncated if they fit int64
  double as_double(double fallback = 0.0) const;
  const std::string& as_string() const;  // "" unless a string

  // Arrays. items() is empty unless an array.
  const Array& items() const;
  size_t size() const;  // elements of an array or members of an object, else 0
  const Value& operator[](size_t index) const;  // null Value when out of range
  Value& push_back(Value v);                    // turns a null into an array first

  // Objects. members() is empty unless an object.
  const Object& members() const;
  const Value* find(std::string_view key) const;  // nullptr when absent or not an object
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  const Value& operator[](std::string_view key) const;  // null Value when absent
  const Value& operator[](const char* key) const { return (*this)[std::string_view(key)]; }
  // Adds or replaces `key`; turns a null into an object first. Returns *this for chaining.
  Value& set(std::string_view key, Value v);
  // Path lookup through nested objects: get({"ram", "remaining"}); null Value when absent.
  const Value& get(std::initializer_list<std::string_view> path) const;

  // Compact one-line JSON.
  std::string dump() const;
  void dump_to(std::string& out) const;

  friend bool operator==(const Value& a, const Value& b);

 private:
  void set_unsigned(unsigned long long u);
  Array& mutable_array();
  Object& mutable_object();

  Type type_ = Type::kNull;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0.0;
  std::string s_;
  // Containers are held by pointer (Value is incomplete inside its own members); copies are
  // deep, so two Values never share state.
  std::unique_ptr<Array> a_;
  std::unique_ptr<Object> o_;
};

constexpr int kMaxDepth = 256;

// Parses exactly one JSON value (surrounding whitespace allowed). On failure the Status is
// kProtocol with a sentence naming the byte offset, e.g.
// "JSON parse error at byte 17: expected ':' after object key".
Result<Value> parse(std::string_view text);

// Appends `s` to `out` as a quoted JSON string.
void write_string(std::string& out, std::string_view s);

// `v` rounded to `decimals` places, for a measured number whose further digits mean nothing
// (dump() writes the shortest form that reads back the same double: 0.1896, not 0.18960000001).
double rounded(double v, int decimals);

}  // namespace ferry::json
