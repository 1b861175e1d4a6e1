#include "runtime/error.h"

#include <cstdio>
#include <cstdlib>

namespace smelt {

Error::Error(const char* file, int line, const std::string& message)
    : std::runtime_error(message + " [" + file + ":" + std::to_string(line) + "]"),
      message_(message),
      file_(file),
      line_(line) {}

namespace detail {
void throw_error(const char* file, int line, const std::string& message) { throw Error(file, line, message); }

void assert_failed(const char* file, int line, const char* condition, const std::string& message) {
  std::fprintf(stderr, "smelt: internal invariant broken at %s:%d: %s %s\n", file, line, condition, message.c_str());
  std::abort();
}
}  // namespace detail

}  // namespace smelt
