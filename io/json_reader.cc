#include "io/json_reader.h"

#include <cmath>
#include <cstdio>

#include "io/files.h"


namespace smelt {

namespace {
std::string type_of(const json& v) { return v.type_name(); }

// Bytes a terminal should not receive raw (control characters, invalid UTF-8 from a binary
// file) as \xNN, and at most `limit` of them: error messages quote parts of untrusted files.
std::string printable(const std::string& text, size_t limit = 120) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < limit; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  if (text.size() > limit) out += "…";
  return out;
}

// A value as an error quotes it: its type, and the value itself where that says more.
std::string describe(const json& v) {
  if (v.is_null() || v.is_object() || v.is_array()) return type_of(v);
  return type_of(v) + " " + printable(v.dump(), 60);
}

// nlohmann's message without its "[json.exception.parse_error.101] " tag, printable.
std::string json_error_text(const json::exception& e) {
  const std::string what = e.what();
  const size_t tag_end = what.rfind('[', 0) == 0 ? what.find("] ") : std::string::npos;
  return printable(tag_end == std::string::npos ? what : what.substr(tag_end + 2), 200);
}
}  // namespace

json read_json_file(const std::string& path) {
  return parse_json_text(read_file(path), path);
}

json parse_json_text(const std::string& text, const std::string& source) {
  SMELT_CHECK(!text.empty(), source, ": the file is empty");
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    SMELT_FAIL(source, ": malformed JSON at byte ", e.byte, ": ", json_error_text(e));
  } catch (const json::exception& e) {  // e.g. a number too large for a double (found by fuzzing)
    SMELT_FAIL(source, ": invalid JSON: ", json_error_text(e));
  }
}


JsonReader::JsonReader(const json& j, std::string file, std::string path) : obj_(j), file_(std::move(file)), path_(std::move(path)) {
  SMELT_CHECK(obj_.is_object(), file_, ": ", path_.empty() ? "top level" : path_, ": expected a JSON object, got ", type_of(obj_));
}

std::string JsonReader::where(const std::string& key) const {
  return file_ + ": " + (path_.empty() ? key : path_ + "." + key);
}

const json& JsonReader::require(const std::string& key) {
  seen_.insert(key);
  SMELT_CHECK(obj_.contains(key), where(key), ": missing required field");
  return obj_.at(key);
}

const json& JsonReader::raw(const std::string& key) { return require(key); }

int64_t JsonReader::integer(const std::string& key) {
  const json& v = require(key);
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    SMELT_FAIL(where(key), ": integer ", v.dump(), " is too large");
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    // A whole number written as a float (2e3). Range first: casting 1e103 to int64 is undefined
    // behaviour (found by fuzzing).
    const double x = v.get<double>();
    if (std::isfinite(x) && std::fabs(x) < 9.0e18 && x == std::floor(x)) return static_cast<int64_t>(x);
    if (std::isfinite(x) && x == std::floor(x)) SMELT_FAIL(where(key), ": integer ", v.dump(), " is too large");
  }
  SMELT_FAIL(where(key), ": expected an integer, got ", describe(v));
}
int64_t JsonReader::integer(const std::string& key, int64_t fallback) { return has(key) ? integer(key) : (seen_.insert(key), fallback); }

double JsonReader::number(const std::string& key) {
  const json& v = require(key);
  SMELT_CHECK(v.is_number(), where(key), ": expected a number, got ", describe(v));
  return v.get<double>();
}
double JsonReader::number(const std::string& key, double fallback) { return has(key) ? number(key) : (seen_.insert(key), fallback); }

bool JsonReader::boolean(const std::string& key) {
  const json& v = require(key);
  SMELT_CHECK(v.is_boolean(), where(key), ": expected true or false, got ", describe(v));
  return v.get<bool>();
}
bool JsonReader::boolean(const std::string& key, bool fallback) { return has(key) ? boolean(key) : (seen_.insert(key), fallback); }

std::string JsonReader::string(const std::string& key) {
  const json& v = require(key);
  SMELT_CHECK(v.is_string(), where(key), ": expected a string, got ", describe(v));
  return v.get<std::string>();
}
std::string JsonReader::string(const std::string& key, const std::string& fallback) {
  return has(key) ? string(key) : (seen_.insert(key), fallback);
}

std::vector<std::string> JsonReader::strings(const std::string& key, const std::vector<std::string>& fallback) {
  if (!has(key)) {
    seen_.insert(key);
    return fallback;
  }
  const json& v = require(key);
  SMELT_CHECK(v.is_array(), where(key), ": expected an array of strings, got ", type_of(v));
  std::vector<std::string> out;
  for (const json& e : v) {
    SMELT_CHECK(e.is_string(), where(key), ": expected an array of strings, found ", e.dump());
    out.push_back(e.get<std::string>());
  }
  return out;
}

JsonReader JsonReader::object(const std::string& key) {
  const json& v = require(key);
  return JsonReader(v, file_, path_.empty() ? key : path_ + "." + key);
}

void JsonReader::ignore_prefix(const std::string& prefix) {
  for (auto it = obj_.begin(); it != obj_.end(); ++it)
    if (it.key().rfind(prefix, 0) == 0) seen_.insert(it.key());
}

void JsonReader::finish() const {
  for (auto it = obj_.begin(); it != obj_.end(); ++it)
    SMELT_CHECK(seen_.count(it.key()), where(it.key()), ": unknown field (check the spelling)");
}

}  // namespace smelt
