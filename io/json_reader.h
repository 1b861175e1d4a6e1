// Reading JSON objects with errors a user can act on: each message names the file and the
// field path ("configs/tiny.json: model.hidden_size: expected an integer, got \"big\""), and
// unknown keys are refused (a typo must not be silently ignored).
#pragma once
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace smelt {

using json = nlohmann::json;

// Parses a whole file; throws naming the file (missing, unreadable, empty, malformed at byte N).
json read_json_file(const std::string& path);
// Parses JSON text; `source` names it in errors.
json parse_json_text(const std::string& text, const std::string& source);

class JsonReader {
 public:
  JsonReader(const json& j, std::string file, std::string path = "");

  bool has(const std::string& key) const { return obj_.contains(key); }
  int64_t integer(const std::string& key);
  int64_t integer(const std::string& key, int64_t fallback);
  double number(const std::string& key);
  double number(const std::string& key, double fallback);
  bool boolean(const std::string& key);
  bool boolean(const std::string& key, bool fallback);
  std::string string(const std::string& key);
  std::string string(const std::string& key, const std::string& fallback);
  std::vector<std::string> strings(const std::string& key, const std::vector<std::string>& fallback);
  // A nested object, read with its own reader (its path extends this one's).
  JsonReader object(const std::string& key);
  // Marks a key as known without reading it (fields we accept and ignore).
  void ignore(const std::string& key) { seen_.insert(key); }
  // Marks every key that starts with `prefix` as known.
  void ignore_prefix(const std::string& prefix);
  // Throws on the first key that was never read or ignored.
  void finish() const;

  std::string where(const std::string& key) const;  // "file: path.key"
  const json& raw(const std::string& key);

 private:
  const json& require(const std::string& key);
  const json& obj_;
  std::string file_, path_;
  std::set<std::string> seen_;
};

}  // namespace smelt
