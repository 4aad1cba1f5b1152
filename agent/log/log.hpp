// Named loggers writing to stderr: journald priority prefixes ("<3>") when JOURNAL_STREAM says
// stderr is the journal, a UTC timestamp otherwise. One logger name per module.
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <string>
#include <string_view>
#include <utility>

namespace neco::log {

// syslog priorities, so the journald prefix is the numeric value.
enum class Level { error = 3, warning = 4, info = 6, debug = 7 };

// Parses "error", "warning", "info", "debug"; nullopt-like false on anything else.
bool parse_level(std::string_view text, Level& out);
std::string_view to_string(Level level);

// The process-wide threshold; messages above it (less important) are dropped.
void set_level(Level level);
Level level();

// Where lines go: decided once from the environment; tests may redirect to a string sink.
enum class Style { plain, journald };
void set_style(Style style);
void init_from_environment();

// Writes one complete line atomically (several threads may log at once).
void write(Level level, std::string_view logger, std::string_view message);

class Logger {
 public:
  explicit Logger(std::string name) : name_(std::move(name)) {}

  const std::string& name() const { return name_; }
  bool enabled(Level l) const { return static_cast<int>(l) <= static_cast<int>(level()); }

  template <class... Args>
  void error(fmt::format_string<Args...> f, Args&&... args) const {
    emit(Level::error, f, std::forward<Args>(args)...);
  }
  template <class... Args>
  void warning(fmt::format_string<Args...> f, Args&&... args) const {
    emit(Level::warning, f, std::forward<Args>(args)...);
  }
  template <class... Args>
  void info(fmt::format_string<Args...> f, Args&&... args) const {
    emit(Level::info, f, std::forward<Args>(args)...);
  }
  template <class... Args>
  void debug(fmt::format_string<Args...> f, Args&&... args) const {
    emit(Level::debug, f, std::forward<Args>(args)...);
  }

 private:
  template <class... Args>
  void emit(Level l, fmt::format_string<Args...> f, Args&&... args) const {
    if (!enabled(l)) return;
    write(l, name_, fmt::format(f, std::forward<Args>(args)...));
  }

  std::string name_;
};

}  // namespace neco::log
