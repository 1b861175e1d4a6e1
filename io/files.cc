#include "io/files.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "runtime/error.h"

namespace smelt {

std::string read_file(const std::string& path) {
  SMELT_CHECK(std::filesystem::exists(path), path, ": does not exist");
  SMELT_CHECK(std::filesystem::is_regular_file(path), path, ": is not a regular file");
  std::ifstream in(path, std::ios::binary);
  SMELT_CHECK(in.good(), path, ": cannot open (", std::strerror(errno), ")");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::shared_ptr<Storage> map_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  SMELT_CHECK(fd >= 0, path, ": cannot open (", std::strerror(errno), ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    SMELT_FAIL(path, ": not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    SMELT_FAIL(path, ": the file is empty");
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  SMELT_CHECK(p != MAP_FAILED, path, ": mmap failed (", std::strerror(errno), ")");
  return std::make_shared<Storage>(p, size, Device::cpu(), [p, size] { ::munmap(p, size); });
}

namespace {

// An output directory's path, absolute and without a trailing separator ("m1/" and "." name the
// directory itself), so that the temporary and the set-aside names land beside it.
std::filesystem::path output_dir_path(const std::string& dir) {
  namespace fs = std::filesystem;
  SMELT_CHECK(!dir.empty(), "the output directory's name is empty");
  fs::path p = fs::absolute(dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  SMELT_CHECK(p.has_filename() && p.has_parent_path() && p != p.root_path(), dir, ": cannot be an output directory");
  return p;
}

// Whether `inner` is `outer` or lies below it, comparing whole path components.
bool within(const std::filesystem::path& inner, const std::filesystem::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i)
    if (i == inner.end() || *i != *o) return false;
  return true;
}

// The path with links resolved where they exist (an unreadable folder: as written).
std::filesystem::path resolved(const std::string& path) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::weakly_canonical(std::filesystem::absolute(path), ec);
  if (ec) p = std::filesystem::absolute(path).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p;
}

}  // namespace

bool same_path(const std::string& a, const std::string& b) {
  return a == b || (!a.empty() && !b.empty() && resolved(a) == resolved(b));
}

// Replacing is for smelt's own output of the same kind (a run repeated into the same --out): a
// directory it did not write, or a file, is refused rather than deleted with everything in it.
void check_output_dir(const std::string& dir, const char* marker) {
  namespace fs = std::filesystem;
  const fs::path target = output_dir_path(dir);
  if (!fs::exists(target)) return;
  SMELT_CHECK(fs::is_directory(target), target.string(), ": exists and is not a directory; refusing to replace it");
  SMELT_CHECK(fs::is_empty(target) || fs::exists(target / marker), target.string(), ": exists and holds no ", marker,
              ", so it is not smelt's output of this kind; refusing to replace it (remove it, or give another output directory)");
}

void check_output_file(const std::string& path) {
  struct stat st {};
  SMELT_CHECK(!path.empty(), "the output file's name is empty");
  SMELT_CHECK(::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode), path, ": is a directory; a file path was expected here");
}

void check_output_apart(const std::string& option, const std::string& out, const std::vector<std::string>& inputs) {
  if (out.empty()) return;
  const std::filesystem::path o = resolved(out);
  for (const std::string& input : inputs) {
    if (input.empty()) continue;
    const std::filesystem::path i = resolved(input);
    SMELT_CHECK(!within(i, o) && !within(o, i), option, " ", out, ": ",
                i == o ? "is" : within(i, o) ? "holds" : "lies inside", " the input ", input, "; write the output elsewhere");
  }
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  check_output_file(path);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  SMELT_CHECK(fd >= 0, tmp, ": cannot create (", std::strerror(errno), ")");
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      SMELT_FAIL(tmp, ": write failed (", std::strerror(err), "); the previous ", path, " is untouched");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    SMELT_FAIL(tmp, ": fsync/close failed (", std::strerror(err), "); the previous ", path, " is untouched");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    SMELT_FAIL(path, ": rename failed (", std::strerror(err), ")");
  }
}

void write_dir_atomic(const std::string& dir, const std::function<void(const std::string& tmp_dir)>& fill, const char* marker) {
  namespace fs = std::filesystem;
  const fs::path target = output_dir_path(dir);
  const fs::path parent = target.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  SMELT_CHECK(!ec, parent.string(), ": cannot create directory (", ec.message(), ")");
  // A process killed while writing leaves NAME.tmp.PID (or NAME.old.PID) behind: remove those
  // whose process is gone (never another live writer's).
  const std::string stem = target.filename().string();
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string name = e.path().filename().string();
    for (const char* kind : {".tmp.", ".old."}) {
      const std::string prefix = stem + kind;
      if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
      const std::string digits = name.substr(prefix.size());
      if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) continue;
      const pid_t owner = static_cast<pid_t>(std::stol(digits));
      if (owner == ::getpid() || ::kill(owner, 0) == 0 || errno != ESRCH) continue;
      // Killed between moving the previous version aside and renaming the new one in: the
      // previous version is the good one, so it goes back into place.
      if (std::string(kind) == ".old." && !fs::exists(target)) fs::rename(e.path(), target, ec);
      else fs::remove_all(e.path(), ec);
    }
  }
  ec.clear();
  check_output_dir(target.string(), marker);
  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = parent / (target.filename().string() + ".tmp." + pid);
  const fs::path old = parent / (target.filename().string() + ".old." + pid);
  fs::remove_all(tmp, ec);
  fs::create_directory(tmp, ec);
  SMELT_CHECK(!ec, tmp.string(), ": cannot create directory (", ec.message(), ")");
  try {
    fill(tmp.string());
  } catch (const Error& e) {
    fs::remove_all(tmp, ec);
    SMELT_FAIL(target.string(), ": not written (", e.message(), ")", fs::exists(target) ? "; the previous version is untouched" : "");
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  const bool had_old = fs::exists(target);
  if (had_old) {
    fs::rename(target, old, ec);
    SMELT_CHECK(!ec, target.string(), ": cannot move the previous version aside (", ec.message(), ")");
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    if (had_old) fs::rename(old, target);
    SMELT_FAIL(target.string(), ": cannot rename the new directory into place (", ec.message(), ")");
  }
  if (had_old) fs::remove_all(old, ec);
}

int64_t mapping_resident_bytes(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t a = reinterpret_cast<uintptr_t>(address);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &begin, &end) == 2 && line.find(':') > line.find(' ')) {  // a mapping's header
      inside = a >= begin && a < end;
      continue;
    }
    long kib = 0;
    if (inside && std::sscanf(line.c_str(), "Rss: %ld kB", &kib) == 1) return static_cast<int64_t>(kib) * 1024;
  }
  return -1;
}

void release_mapped_pages(const Storage& mapping) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(mapping.data()) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(mapping.data()) + mapping.nbytes()) / page * page;
  if (end <= begin) return;
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  // Experts are read where tokens choose them, not in sequence: no readahead around each fault.
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_RANDOM);
}

}  // namespace smelt
