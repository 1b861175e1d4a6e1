// Whole-file reads and atomic writes: the two ways smelt touches a file's bytes.
#pragma once
#include <string>

namespace smelt {

// The file's bytes; throws naming the path when it is missing, not a regular file or unreadable.
std::string read_file(const std::string& path);

// Writes `contents` to path atomically (temporary file, fsync, rename): a crash or a full disk
// leaves the previous file untouched.
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace smelt
