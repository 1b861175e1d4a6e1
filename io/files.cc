#include "io/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

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

void write_file_atomic(const std::string& path, const std::string& contents) {
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

}  // namespace smelt
