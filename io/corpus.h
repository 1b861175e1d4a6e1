// Where training text comes from: files and folders named on the command line, plain text or
// JSONL. Folders are walked recursively and their files taken in sorted order (so a corpus is
// the same corpus on every machine); a glob on the file name picks which ones.
#pragma once
#include <string>
#include <vector>

#include "io/chat.h"

namespace smelt {

// Files named by `inputs` (each a file or a folder); folders contribute the files under them
// whose name matches `glob` (fnmatch syntax, e.g. "*.h"). Throws naming an input that does not
// exist or a folder with no matching file.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs, const std::string& glob = "*");
// Whether any of `inputs` is a folder (a --glob applies to folders only).
bool any_folder(const std::vector<std::string>& inputs);

// True for files read as JSON lines (by extension: .jsonl).
bool is_jsonl(const std::string& path);

// A plain text, or a conversation (instruct data).
struct Document {
  std::string text;
  std::vector<ChatMessage> messages;  // non-empty for a conversation
  bool is_chat() const { return !messages.empty(); }
  // The text of either kind (a conversation's contents joined by newlines): for tokenizer training.
  std::string plain_text() const;
};

// The documents of one file: a plain-text file is one document; in a .jsonl file each non-blank
// line is one: {"text": ...}, {"messages": [{"role", "content"}...]} or {"prompt", "response"}.
// Errors name the file, line and field.
std::vector<Document> read_documents(const std::string& path);
// The same from the file's bytes (`path` decides the format and names it in errors).
std::vector<Document> parse_documents(std::string bytes, const std::string& path);

}  // namespace smelt
