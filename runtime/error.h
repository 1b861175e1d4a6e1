// Errors: every failure the library can report carries where it was raised and the values at
// fault. Library code throws smelt::Error; only tools/ turns it into a one-line message.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace smelt {

class Error : public std::runtime_error {
 public:
  Error(const char* file, int line, const std::string& message);
  // The message without the source location, for one-line user-facing output.
  const std::string& message() const { return message_; }
  const char* file() const { return file_; }
  int line() const { return line_; }

 private:
  std::string message_;
  const char* file_;
  int line_;
};

namespace detail {
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);
[[noreturn]] void assert_failed(const char* file, int line, const char* condition, const std::string& message);

// Streams any number of values into one string: str("shape ", 3, " vs ", 4).
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace smelt

// SMELT_CHECK(cond, values...): user-facing validation; throws smelt::Error when cond is false.
#define SMELT_CHECK(cond, ...)                                                                    \
  do {                                                                                            \
    if (!(cond)) ::smelt::detail::throw_error(__FILE__, __LINE__, ::smelt::detail::str(__VA_ARGS__)); \
  } while (0)

#define SMELT_FAIL(...) ::smelt::detail::throw_error(__FILE__, __LINE__, ::smelt::detail::str(__VA_ARGS__))

// SMELT_ASSERT: internal invariant, always on (also in Release); aborts, since the program state
// is no longer trustworthy.
#define SMELT_ASSERT(cond, ...)                                                                   \
  do {                                                                                            \
    if (!(cond))                                                                                  \
      ::smelt::detail::assert_failed(__FILE__, __LINE__, #cond, ::smelt::detail::str("" __VA_OPT__(,) __VA_ARGS__)); \
  } while (0)
