#include "runtime/log.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>

namespace smelt {
namespace {
LogLevel g_level = LogLevel::Info;
bool g_quiet = false;
std::mutex g_log_mu;
}  // namespace

void set_log_level(LogLevel level) { g_level = level; }
void set_quiet(bool quiet) { g_quiet = quiet; }

void log(LogLevel level, const std::string& message) {
  if (level < g_level || (g_quiet && level < LogLevel::Error)) return;
  static const char* names[] = {"debug", "info", "warn", "error"};
  std::lock_guard<std::mutex> g(g_log_mu);
  std::fprintf(stderr, "[smelt %s] %s\n", names[static_cast<int>(level)], message.c_str());
}

double peak_rss_mib() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux reports KiB
}

double current_rss_mib() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0.0;
  long pages_total = 0, pages_resident = 0;
  const int read = std::fscanf(f, "%ld %ld", &pages_total, &pages_resident);
  std::fclose(f);
  if (read != 2) return 0.0;
  return static_cast<double>(pages_resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

std::string format_duration(double s) {
  char buf[32];
  if (s < 0) s = 0;
  int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", static_cast<long>(t / 3600), static_cast<long>(t / 60 % 60), static_cast<long>(t % 60));
  else std::snprintf(buf, sizeof buf, "%02ld:%02ld", static_cast<long>(t / 60), static_cast<long>(t % 60));
  return buf;
}

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), tty_(isatty(STDERR_FILENO) == 1) {
  start_ = last_print_ = std::chrono::steady_clock::now();
  finished_ = g_quiet;  // a quiet process draws no bar at all
}

ProgressBar::~ProgressBar() {
  if (!finished_ && tty_) std::fprintf(stderr, "\n");
}

void ProgressBar::update(int64_t done, const std::string& suffix) {
  if (g_quiet) return;
  auto now = std::chrono::steady_clock::now();
  double since_print = std::chrono::duration<double>(now - last_print_).count();
  bool last = done >= total_;
  // A terminal redraws ~10 times a second; a log file gets a line every 5 seconds.
  if (!last && since_print < (tty_ ? 0.1 : 5.0)) return;
  if (!tty_ && done == shown_) return;  // a log file gets each count once
  last_print_ = now;
  shown_ = done;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double rate = elapsed > 0 ? done / elapsed : 0;
  double eta = rate > 0 ? (total_ - done) / rate : 0;
  double frac = total_ > 0 ? static_cast<double>(done) / total_ : 1.0;
  std::lock_guard<std::mutex> g(g_log_mu);
  if (tty_) {
    const int width = 24;
    int filled = static_cast<int>(frac * width);
    std::string bar(filled, '#');
    bar += std::string(width - filled, '.');
    std::fprintf(stderr, "\r%s [%s] %ld/%ld %s %s<%s %s\033[K", label_.c_str(), bar.c_str(), static_cast<long>(done),
                 static_cast<long>(total_), unit_.c_str(), format_duration(elapsed).c_str(), format_duration(eta).c_str(),
                 suffix.c_str());
  } else {
    std::fprintf(stderr, "%s %ld/%ld %s (%3.0f%%) elapsed %s eta %s %s\n", label_.c_str(), static_cast<long>(done),
                 static_cast<long>(total_), unit_.c_str(), frac * 100, format_duration(elapsed).c_str(),
                 format_duration(eta).c_str(), suffix.c_str());
  }
  std::fflush(stderr);
}

void ProgressBar::finish(const std::string& suffix) {
  if (finished_) return;
  update(total_, suffix);
  if (tty_) std::fprintf(stderr, "\n");
  finished_ = true;
}

}  // namespace smelt
