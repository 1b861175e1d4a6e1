#include "io/corpus.h"

#include <fnmatch.h>

#include <algorithm>
#include <filesystem>

#include "io/files.h"
#include "io/json_reader.h"

namespace smelt {

namespace fs = std::filesystem;

bool any_folder(const std::vector<std::string>& inputs) {
  std::error_code ec;
  return std::any_of(inputs.begin(), inputs.end(), [&](const std::string& input) { return fs::is_directory(input, ec); });
}

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs, const std::string& glob) {
  SMELT_CHECK(!inputs.empty(), "no input files given");
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(input, ec);
    SMELT_CHECK(!ec && fs::exists(st), input, ": no such file or folder");
    if (!fs::is_directory(st)) {
      files.push_back(input);
      continue;
    }
    std::vector<std::string> found;
    for (auto it = fs::recursive_directory_iterator(input, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_regular_file(ec) && fnmatch(glob.c_str(), it->path().filename().c_str(), 0) == 0) found.push_back(it->path().string());
    }
    SMELT_CHECK(!ec, input, ": cannot list folder: ", ec.message());
    SMELT_CHECK(!found.empty(), input, ": no file under this folder matches \"", glob, "\"");
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

bool is_jsonl(const std::string& path) { return fs::path(path).extension() == ".jsonl"; }

std::string Document::plain_text() const {
  if (!is_chat()) return text;
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i) out += '\n';
    out += messages[i].content;
  }
  return out;
}

std::vector<Document> read_documents(const std::string& path) { return parse_documents(read_file(path), path); }

std::vector<Document> parse_documents(std::string bytes, const std::string& path) {
  if (!is_jsonl(path)) return {Document{std::move(bytes), {}}};
  std::vector<Document> docs;
  size_t line_no = 0;
  for (size_t pos = 0; pos < bytes.size();) {
    size_t end = bytes.find('\n', pos);
    if (end == std::string::npos) end = bytes.size();
    ++line_no;
    std::string_view line(bytes.data() + pos, end - pos);
    pos = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank lines are allowed
    const std::string where = path + ":" + std::to_string(line_no);
    const json record = parse_json_text(std::string(line), where);
    if (is_chat_record(record)) {
      docs.push_back(Document{"", parse_chat_record(record, where)});
      continue;
    }
    SMELT_CHECK(record.is_object() && record.contains("text"), where, ": expected a \"text\", \"messages\" or \"prompt\"/\"response\" field");
    SMELT_CHECK(record["text"].is_string(), where, ": text: expected a string, got ", record["text"].type_name());
    docs.push_back(Document{record["text"].get<std::string>(), {}});
  }
  SMELT_CHECK(!docs.empty(), path, ": no records (every line is blank)");
  return docs;
}

}  // namespace smelt
