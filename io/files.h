// Whole-file reads, memory maps and atomic writes: the ways smelt touches a file's bytes.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/storage.h"

namespace smelt {

// The file memory-mapped as CPU storage (a private, copy-on-write mapping: tensors viewing it
// may be changed in place without touching the file); unmapped when the last view goes.
// Throws naming the path when it is missing, not a regular file, empty or cannot be mapped.
std::shared_ptr<Storage> map_file(const std::string& path);

// The file's bytes; throws naming the path when it is missing, not a regular file or unreadable.
std::string read_file(const std::string& path);

// Writes `contents` to path atomically (temporary file, fsync, rename): a crash or a full disk
// leaves the previous file untouched.
void write_file_atomic(const std::string& path, const std::string& contents);

// Builds a directory atomically: `fill` writes the files into a fresh temporary directory beside
// `dir`, which then replaces `dir` (the previous version is moved aside until the new one is in
// place). A crash or an exception in `fill` leaves the previous `dir` as it was; leftovers of a
// writer that was killed (NAME.tmp.PID, NAME.old.PID with PID gone) are removed on the next write.
// An existing `dir` is replaced only when it is empty or holds `marker`, the file every output of
// this kind has (config.json for models and checkpoints, manifest.json for prepared data,
// teacher_cache.json for a teacher cache): a directory smelt did not write, or wrote as another
// kind (a model over token shards), is refused, never deleted.
void write_dir_atomic(const std::string& dir, const std::function<void(const std::string& tmp_dir)>& fill,
                      const char* marker = "config.json");

// The same refusals up front, for commands to call before their work, so that a long run does
// not end refused: `dir` as a directory write_dir_atomic may replace, `path` as a file (not a
// directory) write_file_atomic may write.
void check_output_dir(const std::string& dir, const char* marker = "config.json");
void check_output_file(const std::string& path);

// Refuses an output (`option` names it in the error) that is one of the command's inputs, lies
// inside one, or holds one: a command never writes over what it reads. Inputs may be files or
// directories; empty names are skipped.
void check_output_apart(const std::string& option, const std::string& out, const std::vector<std::string>& inputs);

// Whether two names are the same path (./moe is moe; links resolved where they exist). Two empty
// names are the same, an empty one and another are not.
bool same_path(const std::string& a, const std::string& b);

// Bytes of the memory mapping that holds `address` which are in this process's memory now
// (/proc/self/smaps' Rss of that mapping; -1 when none holds it): how much of a mapped file the
// process has read. (mincore would count pages that are merely in the page cache.)
int64_t mapping_resident_bytes(const void* address);
// Drops a mapped file's pages from this process's memory (madvise DONTNEED; the file is unchanged
// and later reads fault them in again). For mappings nothing has written to.
void release_mapped_pages(const Storage& mapping);

}  // namespace smelt
