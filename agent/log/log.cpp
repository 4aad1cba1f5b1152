#include "agent/log/log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

namespace neco::log {
namespace {

std::atomic<Level> g_level{Level::info};
std::atomic<Style> g_style{Style::plain};
std::mutex g_write_mutex;

}  // namespace

bool parse_level(std::string_view text, Level& out) {
  if (text == "error")
    out = Level::error;
  else if (text == "warning")
    out = Level::warning;
  else if (text == "info")
    out = Level::info;
  else if (text == "debug")
    out = Level::debug;
  else
    return false;
  return true;
}

std::string_view to_string(Level level) {
  switch (level) {
    case Level::error:
      return "error";
    case Level::warning:
      return "warning";
    case Level::info:
      return "info";
    case Level::debug:
      return "debug";
  }
  return "info";
}

void set_level(Level level) {
  g_level.store(level, std::memory_order_relaxed);
}
Level level() {
  return g_level.load(std::memory_order_relaxed);
}
void set_style(Style style) {
  g_style.store(style, std::memory_order_relaxed);
}

void init_from_environment() {
  // systemd sets JOURNAL_STREAM to "dev:inode" of the stream it connected to stderr; only trust
  // it when stderr still is that stream (a child that redirected stderr must not get prefixes).
  const char* js = std::getenv("JOURNAL_STREAM");
  unsigned long long dev = 0;
  unsigned long long ino = 0;
  struct stat st {};
  const bool journal = js != nullptr && std::sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
                       ::fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
  set_style(journal ? Style::journald : Style::plain);
}

void write(Level level, std::string_view logger, std::string_view message) {
  std::string line;
  if (g_style.load(std::memory_order_relaxed) == Style::journald) {
    line = fmt::format("<{}>{}: {}\n", static_cast<int>(level), logger, message);
  } else {
    const auto now = std::chrono::system_clock::now();
    const auto secs = std::chrono::system_clock::to_time_t(now);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
        1000;
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    line = fmt::format("{}.{:03}Z {:<7} {}: {}\n", stamp, ms, to_string(level), logger, message);
  }
  std::lock_guard lock(g_write_mutex);
  // One write(2) per line keeps lines whole even when another process shares stderr.
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace neco::log
