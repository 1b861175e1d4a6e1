// Logging to stderr and a progress bar that shows rate and ETA on a terminal and degrades to
// one plain line every few seconds when stderr is a file or a pipe.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace smelt {

enum class LogLevel { Debug, Info, Warn, Error };
void set_log_level(LogLevel level);
// Quiet: only errors are logged and progress bars stay silent (the ranks of a job other than 0).
void set_quiet(bool quiet);
void log(LogLevel level, const std::string& message);
inline void log_info(const std::string& m) { log(LogLevel::Info, m); }
inline void log_warn(const std::string& m) { log(LogLevel::Warn, m); }

class ProgressBar {
 public:
  // `unit` names what is counted (e.g. "step"); `total` is the number of units expected.
  ProgressBar(std::string label, int64_t total, std::string unit = "it");
  ~ProgressBar();
  // Advances to `done` units; `suffix` is shown after the bar (loss, tokens/s...).
  void update(int64_t done, const std::string& suffix = "");
  void finish(const std::string& suffix = "");
  bool on_terminal() const { return tty_; }

 private:
  std::string label_, unit_;
  int64_t total_;
  bool tty_;
  bool finished_ = false;
  int64_t shown_ = -1;  // the count last printed
  std::chrono::steady_clock::time_point start_, last_print_;
};

std::string format_duration(double seconds);

// Peak resident memory of this process so far, in MiB (getrusage).
double peak_rss_mib();
// Resident memory of this process now, in MiB (/proc/self/statm; 0 where that is unreadable).
double current_rss_mib();

}  // namespace smelt
