// Where training text comes from: files and folders named on the command line, plain text or
// JSONL. Folders are walked recursively and their files taken in sorted order (so a corpus is
// the same corpus on every machine); a glob on the file name picks which ones.
#pragma once
#include <string>
#include <vector>

namespace smelt {

// Files named by `inputs` (each a file or a folder); folders contribute the files under them
// whose name matches `glob` (fnmatch syntax, e.g. "*.h"). Throws naming an input that does not
// exist or a folder with no matching file.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs, const std::string& glob = "*");

// True for files read as JSON lines (by extension: .jsonl).
bool is_jsonl(const std::string& path);

// The documents of one file: a plain-text file is one document; in a .jsonl file each line is
// one: {"text": ...}, or the contents of {"messages": [{"role", "content"}...]} or of
// {"prompt", "response"} joined by newlines. Errors name the file, line and field.
std::vector<std::string> read_documents(const std::string& path);

}  // namespace smelt
